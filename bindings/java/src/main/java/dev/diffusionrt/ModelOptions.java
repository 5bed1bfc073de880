package dev.diffusionrt;

/** How a model is loaded ({@code drt_model_params}); null and 0 are the C defaults. */
public final class ModelOptions {
    String backend;
    String ortLibraryPath;
    String executionProvider;
    int threads;
    int attentionSlices;
    boolean mappedWeights;
    int memoryBudgetMb;

    /** "tract" (pure Rust), "ort" (ONNX Runtime), or null for automatic: ort when its library is found. */
    public ModelOptions backend(String backend) {
        this.backend = backend;
        return this;
    }

    /** The ONNX Runtime shared library; null: $DRT_ORT_LIB, $ORT_DYLIB_PATH, then the library search path. */
    public ModelOptions ortLibraryPath(String path) {
        this.ortLibraryPath = path;
        return this;
    }

    /** "cpu" (null), "cuda", "tensorrt", "coreml", "nnapi" or "xnnpack". */
    public ModelOptions executionProvider(String provider) {
        this.executionProvider = provider;
        return this;
    }

    /** Intra-op threads for ONNX Runtime; 0 = the number of physical cores. */
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

    /**
     * Stable Diffusion exports: megabytes of resident memory every generation must stay under; the
     * runtime plans how the parts load to fit, and a budget it cannot meet throws
     * {@code OUT_OF_MEMORY} naming the smallest it could. 0 = none. Not for model.json models.
     */
    public ModelOptions memoryBudgetMb(int megabytes) {
        this.memoryBudgetMb = megabytes;
        return this;
    }
}
