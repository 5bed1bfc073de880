package dev.diffusionrt;

import java.util.Arrays;

/**
 * What a generation makes ({@code drt_generate_params}), one fluent setter per field. Unset fields
 * hold what {@code drt_generate_params_default()} returns (read once from the native library),
 * which are the model's own: its sampler, step count, guidance scale and interval. With a seed and a class set, the result is what {@code drt generate} makes with no
 * sampling options, bit for bit. Setters copy the arrays they are given.
 *
 * <pre>{@code
 * float[] digit = session.generate(new GenerateParams().seed(42L).classLabel(7));
 * }</pre>
 */
public final class GenerateParams {
    // Read and, for the defaults, written by name from src/java.rs.
    long seed;
    int steps;
    float guidance;
    String sampler;
    int classLabel;
    int batch;
    int[] classes;
    float[] noise;
    String[] condNames = new String[0];
    float[] condValues;
    String[] tensorNames = new String[0];
    float[][] tensorValues = new float[0][];
    float[] init;
    float strength;
    float adaptiveGuidance;
    float guidanceIntervalLo;
    float guidanceIntervalHi;
    double[] sigmas;
    int stepCache;
    float cacheThreshold;
    int cacheMaxSkips;

    private static final GenerateParams DEFAULTS = Native.generateDefaults(new GenerateParams(null));

    /** The C defaults. */
    public GenerateParams() {
        seed = DEFAULTS.seed;
        steps = DEFAULTS.steps;
        guidance = DEFAULTS.guidance;
        classLabel = DEFAULTS.classLabel;
        batch = DEFAULTS.batch;
        strength = DEFAULTS.strength;
        adaptiveGuidance = DEFAULTS.adaptiveGuidance;
        guidanceIntervalLo = DEFAULTS.guidanceIntervalLo;
        guidanceIntervalHi = DEFAULTS.guidanceIntervalHi;
        stepCache = DEFAULTS.stepCache;
        cacheThreshold = DEFAULTS.cacheThreshold;
        cacheMaxSkips = DEFAULTS.cacheMaxSkips;
    }

    /** The template the native library fills. */
    private GenerateParams(Void template) {}

    /** Fixes the initial noise and every stochastic sampler's noise. */
    public GenerateParams seed(long seed) {
        this.seed = seed;
        return this;
    }

    /** Sampler steps; 0 = the model's default. */
    public GenerateParams steps(int steps) {
        this.steps = steps;
        return this;
    }

    /** Classifier-free guidance scale; negative = the model's default (with its guidance interval). */
    public GenerateParams guidance(float guidance) {
        this.guidance = guidance;
        return this;
    }

    /** "ddim", "euler", "dpmpp-2m", ...; null = the model's default. */
    public GenerateParams sampler(String sampler) {
        this.sampler = sampler;
        return this;
    }

    /** The class of every sample; -1 = none. */
    public GenerateParams classLabel(int classLabel) {
        this.classLabel = classLabel;
        return this;
    }

    /** Number of samples; 0 (the default) = as many as {@link #classes} or {@link #noise} give, else 1. */
    public GenerateParams batch(int batch) {
        this.batch = batch;
        return this;
    }

    /** One class per sample, overriding {@link #classLabel}. */
    public GenerateParams classes(int... classes) {
        this.classes = copy(classes);
        return this;
    }

    /** The initial standard-normal noise, {@code batch × sampleLength} floats (instead of seeded noise). */
    public GenerateParams noise(float[] noise) {
        this.noise = copy(noise);
        return this;
    }

    /**
     * Sets one of the model's tensor inputs (model.json {@code tensor_inputs}, e.g. a robot's
     * observation): one sample's tensor in the graph's per-sample shape, row-major, for every
     * sample, or {@code batch} of them one after another. Repeatable, one call per input.
     */
    public GenerateParams tensor(String name, float[] values) {
        int n = tensorNames.length;
        tensorNames = Arrays.copyOf(tensorNames, n + 1);
        tensorNames[n] = name;
        tensorValues = Arrays.copyOf(tensorValues, n + 1);
        tensorValues[n] = values == null ? null : values.clone();
        return this;
    }

    /** Sets one of the model's float conditioning inputs (model.json {@code cond_inputs}); repeatable. */
    public GenerateParams cond(String name, float value) {
        int n = condNames.length;
        condNames = Arrays.copyOf(condNames, n + 1);
        condNames[n] = name;
        condValues = condValues == null ? new float[1] : Arrays.copyOf(condValues, n + 1);
        condValues[n] = value;
        return this;
    }

    /** img2img: the starting sample(s) (for a Stable Diffusion export: {@link SdParams#initImage}). */
    public GenerateParams init(float[] init) {
        this.init = copy(init);
        return this;
    }

    /** img2img: the fraction of the schedule run on {@link #init}, in (0, 1]. */
    public GenerateParams strength(float strength) {
        this.strength = strength;
        return this;
    }

    /** Stop guiding once the conditional and guided predictions' cosine similarity reaches this; 0 = off. */
    public GenerateParams adaptiveGuidance(float threshold) {
        this.adaptiveGuidance = threshold;
        return this;
    }

    /** Guide only where the noise level sigma lies in [lo, hi]; (0, 0) = none asked for. */
    public GenerateParams guidanceInterval(float lo, float hi) {
        this.guidanceIntervalLo = lo;
        this.guidanceIntervalHi = hi;
        return this;
    }

    /** An explicit step table of noise levels, last one included, replacing the sampler's schedule and steps. */
    public GenerateParams sigmas(double[] sigmas) {
        this.sigmas = sigmas == null ? null : sigmas.clone();
        return this;
    }

    public GenerateParams stepCache(StepCache mode) {
        this.stepCache = mode == null ? StepCache.OFF.code : mode.code;
        return this;
    }

    /** Step cache: largest |third difference| / |first difference| to skip at; 0 = 0.5. */
    public GenerateParams cacheThreshold(float threshold) {
        this.cacheThreshold = threshold;
        return this;
    }

    /** Step cache: most steps skipped in a row; 0 = 1. */
    public GenerateParams cacheMaxSkips(int skips) {
        this.cacheMaxSkips = skips;
        return this;
    }

    private static float[] copy(float[] a) {
        return a == null ? null : a.clone();
    }

    private static int[] copy(int[] a) {
        return a == null ? null : a.clone();
    }
}
