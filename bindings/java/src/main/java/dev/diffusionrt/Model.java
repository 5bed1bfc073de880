package dev.diffusionrt;

import java.util.function.LongFunction;

/**
 * A loaded model directory (model.json and its ONNX files): immutable, shared by any number of
 * sessions and threads. Sessions keep what they need alive, so a model may be closed before them.
 */
public final class Model implements AutoCloseable {
    private final NativeHandle handle;
    private final long sampleLength;

    private Model(long handle) {
        this.handle = new NativeHandle("Model", handle, Native::modelFree);
        this.sampleLength = Native.modelSampleLength(handle);
    }

    /** Loads {@code dir} with the default options (automatic backend, CPU). */
    public static Model load(String dir) {
        return load(dir, new ModelOptions());
    }

    public static Model load(String dir, ModelOptions options) {
        return new Model(Native.modelLoad(dir, options));
    }

    /** Floats of one sample (the product of model.json's sample_shape). */
    public long sampleLength() {
        return sampleLength;
    }

    /** Runs {@code call} on the C handle (see {@link NativeHandle#call}). */
    <T> T call(LongFunction<T> call) {
        return handle.call(call);
    }

    /** Frees the model (sessions made from it keep working). Closing again does nothing. */
    @Override
    public void close() {
        handle.close(null);
    }
}
