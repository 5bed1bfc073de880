package dev.diffusionrt;

/** The outcome of a call: the C API's {@code drt_status} values, named without their prefix. */
public enum Status {
    OK(0),
    /** A null or malformed argument, an out-of-range value, a closed handle, or a call out of sequence. */
    INVALID_ARGUMENT(1),
    /** A file or directory could not be read or written. */
    IO(2),
    /** The ONNX graph is invalid, unsupported by the backend, or failed while running. */
    MODEL(3),
    /** model.json is malformed or disagrees with the graph. */
    MANIFEST(4),
    /** The requested backend or execution provider is not available (e.g. no ONNX Runtime library). */
    BACKEND_UNAVAILABLE(5),
    /** The run was cancelled by {@link Session#cancel()} or a progress listener. */
    CANCELLED(6),
    /** The network produced NaN or infinity. */
    NON_FINITE(7),
    /** The request needs more memory than allowed or available. */
    OUT_OF_MEMORY(8),
    /** A bug in diffusion-rt; the message says where. */
    INTERNAL(9);

    private final int code;

    Status(int code) {
        this.code = code;
    }

    /** The C value ({@code DRT_OK} is 0). */
    public int code() {
        return code;
    }

    /** The status of a C value; an unknown one (a newer library) is {@link #INTERNAL}. */
    public static Status of(int code) {
        for (Status s : values()) {
            if (s.code == code) {
                return s;
            }
        }
        return INTERNAL;
    }
}
