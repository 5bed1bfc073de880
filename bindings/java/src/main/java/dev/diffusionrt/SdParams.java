package dev.diffusionrt;

/**
 * What only text to image has ({@code drt_sd_params}): prompts, size, VAE tiling, a start image and
 * a mask. The sampling settings (seed, steps, guidance, sampler, batch) are a {@link GenerateParams}
 * beside it. Unset fields hold {@code drt_sd_params_default()}'s values, read once from the native
 * library. Setters copy the arrays they are given.
 */
public final class SdParams {
    // Read and, for the defaults, written by name from src/java.rs.
    String[] prompts;
    String[] negativePrompts;
    int width;
    int height;
    int vaeTile;
    float[] initImage;
    float strength;
    float[] mask;
    byte[] startPixels;
    int startWidth;
    int startHeight;
    int startChannels;
    byte[] maskPixels;
    int maskWidth;
    int maskHeight;
    int maskChannels;

    private static final SdParams DEFAULTS = Native.sdDefaults(new SdParams(null));

    /** The C defaults: the UNet's size, the empty prompt, no tiling, text to image. */
    public SdParams() {
        width = DEFAULTS.width;
        height = DEFAULTS.height;
        vaeTile = DEFAULTS.vaeTile;
        strength = DEFAULTS.strength;
    }

    private SdParams(Void template) {}

    /** One prompt for all images, or one per image (with batch 0, one image per prompt). */
    public SdParams prompts(String... prompts) {
        this.prompts = prompts == null ? null : prompts.clone();
        return this;
    }

    /** The unconditional branch's prompts: none, one, or one per image. */
    public SdParams negativePrompts(String... prompts) {
        this.negativePrompts = prompts == null ? null : prompts.clone();
        return this;
    }

    /** Image width in pixels; 0 = the UNet's training size. */
    public SdParams width(int width) {
        this.width = width;
        return this;
    }

    /** Image height in pixels; 0 = the UNet's training size. */
    public SdParams height(int height) {
        this.height = height;
        return this;
    }

    /** Decode in overlapping tiles of this many latents per side; 0 = whole. */
    public SdParams vaeTile(int latents) {
        this.vaeTile = latents;
        return this;
    }

    /**
     * img2img: the starting image as an app holds it (an Android {@code Bitmap}'s ARGB_8888 pixels
     * copied out are RGBA), any size: converted to RGB and resized as diffusers does. With no width
     * and height set, the images are its size rounded down to a multiple of 8.
     *
     * @param channels 1 (grey), 3 (RGB) or 4 (RGBA; alpha is dropped)
     */
    public SdParams startImage(byte[] pixels, int width, int height, int channels) {
        this.startPixels = pixels == null ? null : pixels.clone();
        this.startWidth = width;
        this.startHeight = height;
        this.startChannels = channels;
        return this;
    }

    /** Inpainting with {@link #startImage}: white = repaint, black = keep, any size and channels. */
    public SdParams maskImage(byte[] pixels, int width, int height, int channels) {
        this.maskPixels = pixels == null ? null : pixels.clone();
        this.maskWidth = width;
        this.maskHeight = height;
        this.maskChannels = channels;
        return this;
    }

    /**
     * img2img with values instead of {@link #startImage}: height × width × 3 floats in [0, 1] at the
     * images' size, rows top to bottom.
     */
    public SdParams initImage(float[] image) {
        this.initImage = image == null ? null : image.clone();
        return this;
    }

    /** img2img: the fraction of the schedule run on the start image, in (0, 1]; 0 = diffusers' default. */
    public SdParams strength(float strength) {
        this.strength = strength;
        return this;
    }

    /** Inpainting with {@link #initImage}: height × width floats at the images' size, at least 0.5 = repaint. */
    public SdParams mask(float[] mask) {
        this.mask = mask == null ? null : mask.clone();
        return this;
    }
}
