package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * The tiny Stable Diffusion export of tests/fixtures/sd-tiny against optimum's pipeline on it (the
 * reference tests/sd.rs holds the Rust API to), through the Java API.
 */
class StableDiffusionTest {
    @Test
    void imagesEqualOptimumsPipeline() throws Exception {
        float[] want = Fixtures.npy("tests/fixtures/sd-tiny/reference/ddim_images.npy");
        GenerateParams p = new GenerateParams()
                .prompts("a red cat", "an old castle at night, 4k")
                .negativePrompts("", "blurry")
                .sampler("ddim")
                .steps(6)
                .guidance(5f)
                .width(32)
                .height(32)
                .noise(Fixtures.npy("tests/fixtures/sd-tiny/reference/ddim_latents.npy"));
        for (String backend : Fixtures.backends()) {
            try (StableDiffusion sd = StableDiffusion.load(
                    Fixtures.path("tests/fixtures/sd-tiny/export"), Fixtures.options(backend), false)) {
                ImageSize size = sd.imageSize(p);
                assertEquals(32, size.width);
                assertEquals(32, size.height);
                assertEquals(2, size.batch);
                int[] steps = {0};
                float[] pixels = sd.generate(p, (step, total) -> {
                    steps[0] = step;
                    return total == 6;
                });
                assertEquals(6, steps[0]);
                double d = Fixtures.relL2(pixels, want);
                System.out.printf("sd-tiny ddim on %s: relative L2 %.2e%n", backend, d);
                assertTrue(d <= 1e-4, backend + ": relative L2 " + d);

                // Whole attention and mapped weights: the same images (the default slices it in 8).
                try (StableDiffusion whole = StableDiffusion.load(Fixtures.path("tests/fixtures/sd-tiny/export"),
                        Fixtures.options(backend).attentionSlices(1).mappedWeights(true), false)) {
                    double w = Fixtures.relL2(whole.generate(p), pixels);
                    assertTrue(w <= 1e-6, backend + ": whole attention differs by " + w);
                }

                byte[] rgb = sd.generateRgb8(p);
                assertEquals(2 * 32 * 32 * 3, rgb.length);
                for (int i = 0; i < rgb.length; i++) {
                    float exact = pixels[i] * 255f;
                    assertTrue(Math.abs((rgb[i] & 0xff) - exact) <= 1f, "byte " + i + ": " + (rgb[i] & 0xff) + " for " + exact);
                }
            }
        }
    }
}
