package dev.diffusionrt;

/**
 * A failed call: its {@link Status} and the library's message (which already says what kind of
 * failure it is, e.g. "I/O error: ..."). Unchecked, as Kotlin sees every exception.
 */
public class DiffusionRtException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final Status status;

    public DiffusionRtException(Status status, String message) {
        super(message);
        this.status = status;
    }

    /** Thrown by the native side, which knows the C value. */
    DiffusionRtException(int code, String message) {
        this(Status.of(code), message);
    }

    public Status status() {
        return status;
    }
}
