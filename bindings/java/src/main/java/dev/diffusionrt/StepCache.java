package dev.diffusionrt;

/** Output-level step caching on steps where the trajectory is stable ({@code drt_generate_params.step_cache}). */
public enum StepCache {
    /** No step caching. */
    OFF(0),
    /** A skipped step reuses the last prediction. */
    SKIP(1),
    /** A skipped step extrapolates the last two predictions (Adams-Bashforth). */
    ADAMS_BASHFORTH(2);

    final int code;

    StepCache(int code) {
        this.code = code;
    }
}
