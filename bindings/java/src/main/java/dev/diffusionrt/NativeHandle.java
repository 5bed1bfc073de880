package dev.diffusionrt;

/**
 * A C handle shared by the calls that use it and the close that frees it: a call holds the handle
 * from {@link #acquire()} to {@link #release()}, and {@link #close} frees it only once no call holds it,
 * so no native call ever runs on freed memory, whatever threads do.
 */
final class NativeHandle {
    /** A native call on the handle. */
    interface Call {
        void run(long handle);
    }

    private final String what;
    private final Call free;
    private long handle;
    private int users;

    NativeHandle(String what, long handle, Call free) {
        this.what = what;
        this.handle = handle;
        this.free = free;
    }

    /** The handle, held until {@link #release()}; throws once closed. */
    synchronized long acquire() {
        if (handle == 0) {
            throw new DiffusionRtException(Status.INVALID_ARGUMENT, "the " + what + " is closed");
        }
        users++;
        return handle;
    }

    /** As {@link #acquire()}, but 0 (and nothing to release) once closed. */
    synchronized long tryAcquire() {
        if (handle == 0) {
            return 0;
        }
        users++;
        return handle;
    }

    synchronized void release() {
        if (--users == 0) {
            notifyAll();
        }
    }

    /**
     * Stops new calls, runs {@code beforeWait} on the handle while calls still hold it (a session
     * cancels its generation there), waits for them to return, and frees the handle. Closing again
     * does nothing.
     */
    void close(Call beforeWait) {
        long h;
        synchronized (this) {
            h = handle;
            if (h == 0) {
                return;
            }
            handle = 0;
            if (users > 0 && beforeWait != null) {
                beforeWait.run(h);
            }
            boolean interrupted = false;
            while (users > 0) {
                try {
                    wait();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
        free.run(h);
    }
}
