package dev.diffusionrt;

/**
 * One generation at a time over a model, whole ({@link #generate}) or step by step ({@link #begin},
 * {@link #step}, {@link #readPrediction}, {@link #finish}). Not for concurrent use (calls from several
 * threads wait for each other), except {@link #cancel()}, which any thread may call at any time.
 * Outputs hold {@code batch × model.sampleLength()} floats, samples one after another.
 */
public final class Session implements AutoCloseable {
    /** {@link #Session(Model, int)}: no cap on a generation's buffers. */
    public static final int UNLIMITED = -1;

    private final NativeHandle handle;

    /** A session with the default cap on a generation's buffers (2048 MiB). */
    public Session(Model model) {
        this(model, 0);
    }

    /**
     * @param memoryLimitMb refuse generations whose buffers need more than this many MiB
     *     ({@link Status#OUT_OF_MEMORY}); 0 = the default, {@link #UNLIMITED} = no cap
     */
    public Session(Model model, int memoryLimitMb) {
        if (model == null) {
            throw DiffusionRt.invalid("model is null");
        }
        long s = model.call(m -> Native.sessionCreate(m, memoryLimitMb));
        handle = new NativeHandle("Session", s, Native::sessionFree);
    }

    /** Runs a whole generation. */
    public float[] generate(GenerateParams params) {
        return generate(params, null);
    }

    /** As {@link #generate(GenerateParams)}, calling {@code listener} after every step. */
    public float[] generate(GenerateParams params, ProgressListener listener) {
        return handle.call(s -> Native.generate(s, params, listener));
    }

    /**
     * Asks the running generation to stop: {@link #generate} throws {@link Status#CANCELLED} once the
     * step in flight ends, and the next {@link #step()} throws it without stepping. Safe from any
     * thread; does nothing on a closed session. The next generation begun clears the request.
     */
    public void cancel() {
        handle.runIfOpen(Native::sessionCancel);
    }

    /**
     * Begins a caller-driven generation: checks {@code params} as {@link #generate} does and draws the
     * initial sample. Returns the number of {@link #step()} calls it takes. A generation in progress
     * is dropped.
     */
    public int begin(GenerateParams params) {
        return handle.call(s -> Native.begin(s, params));
    }

    /** Takes the next step; returns the steps done so far. Any error ends the generation. */
    public int step() {
        return handle.call(Native::step);
    }

    /** The sample as it stands, noisy until the last step. */
    public float[] readSample() {
        return handle.call(s -> Native.read(s, false));
    }

    /** The clean result the last step predicted: a preview of the final sample (after the first step). */
    public float[] readPrediction() {
        return handle.call(s -> Native.read(s, true));
    }

    /** Ends the generation whose steps are all done and returns its samples, as {@link #generate} would. */
    public float[] finish() {
        return handle.call(Native::finish);
    }

    /** Drops the generation in progress, if any. */
    public void abandon() {
        handle.run(Native::abandon);
    }

    /**
     * Cancels a generation running on another thread, waits for it to return, and frees the session.
     * Closing again does nothing.
     */
    @Override
    public void close() {
        handle.close(Native::sessionCancel);
    }
}
