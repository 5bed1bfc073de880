package dev.diffusionrt;

/**
 * Text to image one generation at a time over a {@link StableDiffusion}, whole ({@link
 * #generateRgb8}) or step by step as a UI drives it ({@link #begin}, {@link #step}, {@link
 * #previewRgb8}, {@link #finishRgb8}). Not for concurrent use (calls from several threads wait for
 * each other), except {@link #cancel()}, which any thread may call at any time. The session keeps
 * the export alive: the export may be closed first.
 */
public final class SdSession implements AutoCloseable {
    private final NativeHandle handle;

    public SdSession(StableDiffusion sd) {
        if (sd == null) {
            throw DiffusionRt.invalid("sd is null");
        }
        long s = sd.call(Native::sdSessionCreate);
        handle = new NativeHandle("SdSession", s, Native::sdSessionFree);
    }

    /** Runs a whole generation: 8-bit RGB, rows top to bottom, images one after another. */
    public byte[] generateRgb8(SdParams sdParams, GenerateParams params) {
        return generateRgb8(sdParams, params, null);
    }

    /** As {@link #generateRgb8(SdParams, GenerateParams)}, calling {@code listener} after every step. */
    public byte[] generateRgb8(SdParams sdParams, GenerateParams params, ProgressListener listener) {
        // The steps a caller would take: the same native code, so the same images, bit for bit.
        int total = begin(sdParams, params);
        for (int done = 0; done < total; ) {
            done = step();
            if (listener != null && !listener.onStep(done, total)) {
                abandon();
                throw new DiffusionRtException(Status.CANCELLED, "cancelled by the progress listener at step " + done);
            }
        }
        return finishRgb8();
    }

    /**
     * Asks the running generation to stop: the next {@link #step()} (and so {@link #generateRgb8})
     * throws {@link Status#CANCELLED} without stepping once the step in flight ends. Safe from any
     * thread; does nothing on a closed session. The next generation begun clears the request.
     */
    public void cancel() {
        handle.runIfOpen(Native::sdSessionCancel);
    }

    /**
     * Begins a caller-driven generation: encodes the prompts and the start image, loads the UNet and
     * draws the initial latents. Returns the number of {@link #step()} calls it takes. A generation
     * in progress is dropped.
     */
    public int begin(SdParams sdParams, GenerateParams params) {
        return handle.call(s -> Native.sdSessionBegin(s, sdParams, params));
    }

    /** Takes the next step; returns the steps done so far. Any error ends the generation. */
    public int step() {
        return handle.call(Native::sdSessionStep);
    }

    /** The latents as they stand (batch × channels × height/8 × width/8), noisy until the last step. */
    public float[] readLatents() {
        return handle.call(s -> Native.sdSessionRead(s, false));
    }

    /** The clean latents the last step predicted (after the first step). */
    public float[] readPrediction() {
        return handle.call(s -> Native.sdSessionRead(s, true));
    }

    /** The last step's prediction decoded as 8-bit RGB images: one VAE decode, so call it every few steps. */
    public byte[] previewRgb8() {
        return handle.call(Native::sdSessionPreviewRgb8);
    }

    /** Ends the generation whose steps are all done and returns its images, as {@link #generateRgb8} would. */
    public byte[] finishRgb8() {
        return handle.call(Native::sdSessionFinishRgb8);
    }

    /** Drops the generation in progress, if any. */
    public void abandon() {
        handle.run(Native::sdSessionAbandon);
    }

    /**
     * Cancels a generation running on another thread, waits for it to return, and frees the session.
     * Closing again does nothing.
     */
    @Override
    public void close() {
        handle.close(Native::sdSessionCancel);
    }
}
