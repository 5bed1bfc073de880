package dev.diffusionrt;

/**
 * The native methods, each one call of the C API (src/java.rs). Handles are the C pointers as longs,
 * owned by {@link NativeHandle}s; src/java.rs sizes the output arrays.
 */
final class Native {
    /** The C API's DRT_ABI_VERSION this code was written against. */
    static final int ABI_VERSION = 3;

    static {
        // The system property lets tests and apps with their own layout name the file itself.
        String path = System.getProperty("dev.diffusionrt.library");
        if (path != null) {
            // System.load takes only absolute paths; a relative one is the working directory's.
            System.load(new java.io.File(path).getAbsolutePath());
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

    static native long sdLoad(String dir, ModelOptions options, boolean lowMemory, int memoryBudgetMb);

    static native void sdFree(long sd);

    static native int[] sdImageSize(long sd, SdParams sdParams, GenerateParams params);

    static native byte[] sdGenerateRgb8(long sd, SdParams sdParams, GenerateParams params, ProgressListener listener);

    static native float[] sdGenerate(long sd, SdParams sdParams, GenerateParams params, ProgressListener listener);

    static native long sdSessionCreate(long sd);

    static native void sdSessionFree(long session);

    static native void sdSessionCancel(long session);

    static native int sdSessionBegin(long session, SdParams sdParams, GenerateParams params);

    static native int sdSessionStep(long session);

    static native float[] sdSessionRead(long session, boolean prediction);

    static native byte[] sdSessionPreviewRgb8(long session);

    static native byte[] sdSessionFinishRgb8(long session);

    static native void sdSessionAbandon(long session);

    // The C defaults, written into a template object that is then returned.
    static native void fillGenerateDefaults(GenerateParams template);

    static native void fillSdDefaults(SdParams template);

    static native void fillModelDefaults(ModelOptions template);

    static GenerateParams generateDefaults(GenerateParams template) {
        fillGenerateDefaults(template);
        return template;
    }

    static SdParams sdDefaults(SdParams template) {
        fillSdDefaults(template);
        return template;
    }

    static ModelOptions modelDefaults(ModelOptions template) {
        fillModelDefaults(template);
        return template;
    }
}
