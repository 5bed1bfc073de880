package dev.diffusionrt;

/** Called on the generating thread after every step; returning false cancels the generation. */
@FunctionalInterface
public interface ProgressListener {
    /**
     * @param step the steps done so far, 1 to {@code total}
     * @param total the steps of the whole generation
     * @return true to go on, false to cancel ({@link Status#CANCELLED})
     */
    boolean onStep(int step, int total);
}
