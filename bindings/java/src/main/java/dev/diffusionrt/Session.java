package dev.diffusionrt;

/**
 * One generation at a time over a model, whole ({@link #generate}) or step by step ({@link #begin},
 * {@link #step}, {@link #readPrediction}, {@link #finish}). Not for concurrent use (calls from several
 * threads wait for each other), except {@link #cancel()}, which any thread may call at any time.
 */
public final class Session implements AutoCloseable {
    /** {@link #Session(Model, int)}: no cap on a generation's buffers. */
    public static final int UNLIMITED = -1;

    private final NativeHandle handle;
    private final long sampleLength;
    /** Floats of the samples of the generation begun last. */
    private volatile long runLength;

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
        long m = model.acquire();
        try {
            sampleLength = model.sampleLength();
            handle = new NativeHandle("Session", Native.sessionCreate(m, memoryLimitMb), Native::sessionFree);
        } finally {
            model.release();
        }
    }

    /** Runs a whole generation: {@code batch × sampleLength} floats, samples one after another. */
    public float[] generate(GenerateParams params) {
        return generate(params, null);
    }

    /** As {@link #generate(GenerateParams)}, calling {@code listener} after every step. */
    public float[] generate(GenerateParams params, ProgressListener listener) {
        long length = outLength(params);
        long s = handle.acquire();
        try {
            return Native.generate(s, length, params, listener);
        } finally {
            handle.release();
        }
    }

    /**
     * Asks the running generation to stop: {@link #generate} throws {@link Status#CANCELLED} once the
     * step in flight ends, and the next {@link #step()} throws it without stepping. Safe from any
     * thread; does nothing on a closed session. The next generation begun clears the request.
     */
    public void cancel() {
        long s = handle.tryAcquire();
        if (s != 0) {
            try {
                Native.sessionCancel(s);
            } finally {
                handle.release();
            }
        }
    }

    /**
     * Begins a caller-driven generation: checks {@code params} as {@link #generate} does and draws the
     * initial sample. Returns the number of {@link #step()} calls it takes. A generation in progress
     * is dropped.
     */
    public int begin(GenerateParams params) {
        long length = outLength(params);
        long s = handle.acquire();
        try {
            int total = Native.begin(s, params);
            runLength = length;
            return total;
        } finally {
            handle.release();
        }
    }

    /** Takes the next step; returns the steps done so far. Any error ends the generation. */
    public int step() {
        long s = handle.acquire();
        try {
            return Native.step(s);
        } finally {
            handle.release();
        }
    }

    /** The sample as it stands, noisy until the last step. */
    public float[] readSample() {
        return read(false);
    }

    /** The clean result the last step predicted: a preview of the final sample (after the first step). */
    public float[] readPrediction() {
        return read(true);
    }

    private float[] read(boolean prediction) {
        long s = handle.acquire();
        try {
            return Native.read(s, prediction, runLength);
        } finally {
            handle.release();
        }
    }

    /** Ends the generation whose steps are all done and returns its samples, as {@link #generate} would. */
    public float[] finish() {
        long s = handle.acquire();
        try {
            return Native.finish(s, runLength);
        } finally {
            handle.release();
        }
    }

    /** Drops the generation in progress, if any. */
    public void abandon() {
        long s = handle.acquire();
        try {
            Native.abandon(s);
        } finally {
            handle.release();
        }
    }

    /**
     * Cancels a generation running on another thread, waits for it to return, and frees the session.
     * Closing again does nothing.
     */
    @Override
    public void close() {
        handle.close(Native::sessionCancel);
    }

    private long outLength(GenerateParams params) {
        if (params == null) {
            throw DiffusionRt.invalid("params is null");
        }
        return params.resolvedBatch() * sampleLength;
    }
}
