package dev.diffusionrt;

/**
 * The native methods, each one call of the C API (src/java.rs). Handles are the C pointers as longs,
 * owned by {@link NativeHandle}s; src/java.rs sizes the output arrays.
 */
final class Native {
    /** The C API's DRT_ABI_VERSION this code was written against. */
    static final int ABI_VERSION = 2;

    static {
        // The system property lets tests and apps with their own layout name the file itself.
        String path = System.getProperty("dev.diffusionrt.library");
        if (path != null) {
            System.load(path);
        } else {
            System.loadLibrary("diffusion_rt");
        }
        int abi = abiVersion();
        if (abi != ABI_VERSION) {
            throw new UnsatisfiedLinkError(
                    "libdiffusion_rt has ABI version " + abi + "; this jar needs " + ABI_VERSION);
        }
    }

    private Native() {}

    static native int abiVersion();

    static native String version();

    static native long modelLoad(String dir, ModelOptions options);

    static native void modelFree(long model);

    static native long modelSampleLength(long model);

    static native long sessionCreate(long model, int memoryLimitMb);

    static native void sessionFree(long session);

    static native void sessionCancel(long session);

    static native float[] generate(long session, GenerateParams params, ProgressListener listener);

    static native int begin(long session, GenerateParams params);

    static native int step(long session);

    static native float[] read(long session, boolean prediction);

    static native float[] finish(long session);

    static native void abandon(long session);

    static native long sdLoad(String dir, ModelOptions options, boolean lowMemory);

    static native void sdFree(long sd);

    static native int[] sdImageSize(long sd, GenerateParams params);

    static native byte[] sdGenerateRgb8(long sd, GenerateParams params, ProgressListener listener);

    static native float[] sdGenerate(long sd, GenerateParams params, ProgressListener listener);
}
