package dev.diffusionrt;

/**
 * A Stable Diffusion export as {@code optimum-cli export onnx} writes it (model_index.json,
 * tokenizer/, text_encoder/, unet/, vae_decoder/). Thread-safe: generations may run on several
 * threads at once. A progress listener that returns false cancels its generation.
 */
public final class StableDiffusion implements AutoCloseable {
    private final NativeHandle handle;

    private StableDiffusion(long handle) {
        this.handle = new NativeHandle("StableDiffusion", handle, Native::sdFree);
    }

    public static StableDiffusion load(String dir) {
        return load(dir, new ModelOptions(), false);
    }

    /**
     * @param lowMemory load the text encoder, UNet and VAE decoder only while each runs (peak memory
     *     of the largest part, at the cost of loading them for every generation)
     */
    public static StableDiffusion load(String dir, ModelOptions options, boolean lowMemory) {
        return new StableDiffusion(Native.sdLoad(dir, options, lowMemory));
    }

    /** The size and number of the images {@code params} make. */
    public ImageSize imageSize(GenerateParams params) {
        int[] s = handle.call(sd -> Native.sdImageSize(sd, params));
        return new ImageSize(s[0], s[1], s[2]);
    }

    /** The images as 8-bit RGB, rows top to bottom, images one after another. */
    public byte[] generateRgb8(GenerateParams params) {
        return generateRgb8(params, null);
    }

    public byte[] generateRgb8(GenerateParams params, ProgressListener listener) {
        return handle.call(sd -> Native.sdGenerateRgb8(sd, params, listener));
    }

    /** The images as floats in [0, 1] (diffusers' {@code output_type="np"}), laid out as {@link #generateRgb8}. */
    public float[] generate(GenerateParams params) {
        return generate(params, null);
    }

    public float[] generate(GenerateParams params, ProgressListener listener) {
        return handle.call(sd -> Native.sdGenerate(sd, params, listener));
    }

    /** Waits for generations running on other threads, then frees the export. Closing again does nothing. */
    @Override
    public void close() {
        handle.close(null);
    }
}
