package dev.diffusionrt;

/** How a model is loaded ({@code drt_model_params}); unset fields are the C defaults. */
public final class ModelOptions {
    // Read and, for the defaults, written by name from src/java.rs.
    String backend;
    String ortLibraryPath;
    String executionProvider;
    int threads;
    int attentionSlices;
    boolean mappedWeights;

    private static final ModelOptions DEFAULTS = Native.modelDefaults(new ModelOptions(null));

    /** The C defaults ({@code drt_model_params_default()}, read once from the native library). */
    public ModelOptions() {
        threads = DEFAULTS.threads;
        attentionSlices = DEFAULTS.attentionSlices;
        mappedWeights = DEFAULTS.mappedWeights;
    }

    private ModelOptions(Void template) {}

    /** "tract" (pure Rust), "ort" (ONNX Runtime), or null for automatic: ort when its library is found. */
    public ModelOptions backend(String backend) {
        this.backend = backend;
        return this;
    }

    /**
     * The ONNX Runtime shared library (a file, its folder, or a bare name for the system loader);
     * null: $DRT_ORT_LIB, then $ORT_DYLIB_PATH, then the system loader's search.
     */
    public ModelOptions ortLibraryPath(String path) {
        this.ortLibraryPath = path;
        return this;
    }

    /** "cpu" (null), "cuda", "tensorrt", "coreml", "nnapi" or "xnnpack". */
    public ModelOptions executionProvider(String provider) {
        this.executionProvider = provider;
        return this;
    }

    /** Intra-op threads for ONNX Runtime; 0 = the number of physical cores, at most 8. */
    public ModelOptions threads(int threads) {
        this.threads = threads;
        return this;
    }

    /**
     * Attention computed in this many slices of queries (the same result with smaller attention
     * maps); 0 = the model's default (8 for a Stable Diffusion export, else whole), 1 = whole.
     */
    public ModelOptions attentionSlices(int slices) {
        this.attentionSlices = slices;
        return this;
    }

    /** ONNX Runtime reads an external-data graph's weights from the mapped file instead of copies. */
    public ModelOptions mappedWeights(boolean mapped) {
        this.mappedWeights = mapped;
        return this;
    }
}
