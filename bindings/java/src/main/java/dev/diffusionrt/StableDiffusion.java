package dev.diffusionrt;

/**
 * A Stable Diffusion export as {@code optimum-cli export onnx} writes it (model_index.json,
 * tokenizer/, text_encoder/, unet/, vae_decoder/). Thread-safe: generations may run on several
 * threads at once. A progress listener that returns false cancels its generation; an {@link
 * SdSession} adds step-by-step generation and a cancel from any thread.
 */
public final class StableDiffusion implements AutoCloseable {
    private final NativeHandle handle;

    private StableDiffusion(long handle) {
        this.handle = new NativeHandle("StableDiffusion", handle, Native::sdFree);
    }

    public static StableDiffusion load(String dir) {
        return load(dir, new ModelOptions(), false, 0);
    }

    /**
     * @param lowMemory load the text encoder, UNet and VAE decoder only while each runs (peak memory
     *     of the largest part, at the cost of loading them for every generation)
     * @param memoryBudgetMb megabytes of resident memory every generation must stay under; the
     *     runtime plans how the parts load to fit, and a budget it cannot meet throws
     *     {@code OUT_OF_MEMORY} naming the smallest it could. 0 = none.
     */
    public static StableDiffusion load(String dir, ModelOptions options, boolean lowMemory, int memoryBudgetMb) {
        return new StableDiffusion(Native.sdLoad(dir, options, lowMemory, memoryBudgetMb));
    }

    /** The size and number of the images the parameters make. */
    public ImageSize imageSize(SdParams sdParams, GenerateParams params) {
        int[] s = handle.call(sd -> Native.sdImageSize(sd, sdParams, params));
        return new ImageSize(s[0], s[1], s[2]);
    }

    /** The images as 8-bit RGB, rows top to bottom, images one after another. */
    public byte[] generateRgb8(SdParams sdParams, GenerateParams params) {
        return generateRgb8(sdParams, params, null);
    }

    public byte[] generateRgb8(SdParams sdParams, GenerateParams params, ProgressListener listener) {
        return handle.call(sd -> Native.sdGenerateRgb8(sd, sdParams, params, listener));
    }

    /** The images as floats in [0, 1] (diffusers' {@code output_type="np"}), laid out as {@link #generateRgb8}. */
    public float[] generate(SdParams sdParams, GenerateParams params) {
        return generate(sdParams, params, null);
    }

    public float[] generate(SdParams sdParams, GenerateParams params, ProgressListener listener) {
        return handle.call(sd -> Native.sdGenerate(sd, sdParams, params, listener));
    }

    /** Runs {@code call} on the C handle (see {@link NativeHandle#call}). */
    <T> T call(java.util.function.LongFunction<T> call) {
        return handle.call(call);
    }

    /** Waits for generations running on other threads, then frees the export. Closing again does nothing. */
    @Override
    public void close() {
        handle.close(null);
    }
}
