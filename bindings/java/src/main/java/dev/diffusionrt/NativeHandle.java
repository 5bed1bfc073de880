package dev.diffusionrt;

import java.util.function.LongConsumer;
import java.util.function.LongFunction;

/**
 * A C handle shared by the calls that use it and the close that frees it: a call holds the handle
 * while it runs ({@link #call}), and {@link #close} frees it only once no call holds it, so no
 * native call ever runs on freed memory, whatever threads do.
 */
final class NativeHandle {
    private final String what;
    private final LongConsumer free;
    private long handle;
    private int users;

    NativeHandle(String what, long handle, LongConsumer free) {
        this.what = what;
        this.handle = handle;
        this.free = free;
    }

    /** Runs {@code call} on the handle, which stays alive until it returns; throws once closed. */
    <T> T call(LongFunction<T> call) {
        long h = enter();
        if (h == 0) {
            throw new DiffusionRtException(Status.INVALID_ARGUMENT, "the " + what + " is closed");
        }
        try {
            return call.apply(h);
        } finally {
            leave();
        }
    }

    /** As {@link #call} for a call without a result. */
    void run(LongConsumer call) {
        call(h -> {
            call.accept(h);
            return null;
        });
    }

    /** As {@link #run}, but nothing (and no exception) once closed. */
    void runIfOpen(LongConsumer call) {
        long h = enter();
        if (h != 0) {
            try {
                call.accept(h);
            } finally {
                leave();
            }
        }
    }

    /** The handle, now held by one more call; 0 (and not held) once closed. */
    private synchronized long enter() {
        if (handle != 0) {
            users++;
        }
        return handle;
    }

    private synchronized void leave() {
        if (--users == 0) {
            notifyAll();
        }
    }

    /**
     * Stops new calls, runs {@code beforeWait} on the handle while calls still hold it (a session
     * cancels its generation there), waits for them to return, and frees the handle. Closing again
     * does nothing.
     */
    void close(LongConsumer beforeWait) {
        long h;
        synchronized (this) {
            h = handle;
            if (h == 0) {
                return;
            }
            handle = 0;
            if (users > 0 && beforeWait != null) {
                beforeWait.accept(h);
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
        free.accept(h);
    }
}
