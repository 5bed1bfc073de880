package dev.diffusionrt;

/** The loaded native library. */
public final class DiffusionRt {
    private DiffusionRt() {}

    /** The native library's version, e.g. "0.1.0". */
    public static String version() {
        return Native.version();
    }

    /** The native library's C ABI version (checked against this jar's when the library loads). */
    public static int abiVersion() {
        return Native.abiVersion();
    }

    static DiffusionRtException invalid(String message) {
        return new DiffusionRtException(Status.INVALID_ARGUMENT, message);
    }
}
