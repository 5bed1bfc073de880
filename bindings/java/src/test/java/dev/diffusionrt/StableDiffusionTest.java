package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
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
        SdParams q = new SdParams()
                .prompts("a red cat", "an old castle at night, 4k")
                .negativePrompts("", "blurry")
                .width(32)
                .height(32);
        GenerateParams p = new GenerateParams()
                .sampler("ddim")
                .steps(6)
                .guidance(5f)
                .noise(Fixtures.npy("tests/fixtures/sd-tiny/reference/ddim_latents.npy"));
        for (String backend : Fixtures.backends()) {
            try (StableDiffusion sd = StableDiffusion.load(
                    Fixtures.path("tests/fixtures/sd-tiny/export"), Fixtures.options(backend), false, 0)) {
                ImageSize size = sd.imageSize(q, p);
                assertEquals(32, size.width);
                assertEquals(32, size.height);
                assertEquals(2, size.batch);
                int[] steps = {0};
                float[] pixels = sd.generate(q, p, (step, total) -> {
                    steps[0] = step;
                    return total == 6;
                });
                assertEquals(6, steps[0]);
                double d = Fixtures.relL2(pixels, want);
                System.out.printf("sd-tiny ddim on %s: relative L2 %.2e%n", backend, d);
                assertTrue(d <= 1e-4, backend + ": relative L2 " + d);

                // Whole attention and mapped weights: the same images (the default slices it in 8).
                try (StableDiffusion whole = StableDiffusion.load(Fixtures.path("tests/fixtures/sd-tiny/export"),
                        Fixtures.options(backend).attentionSlices(1).mappedWeights(true), false, 0)) {
                    double w = Fixtures.relL2(whole.generate(q, p), pixels);
                    assertTrue(w <= 1e-6, backend + ": whole attention differs by " + w);
                }

                byte[] rgb = sd.generateRgb8(q, p);
                assertEquals(2 * 32 * 32 * 3, rgb.length);
                for (int i = 0; i < rgb.length; i++) {
                    float exact = pixels[i] * 255f;
                    assertTrue(Math.abs((rgb[i] & 0xff) - exact) <= 1f, "byte " + i + ": " + (rgb[i] & 0xff) + " for " + exact);
                }

                // Step by step on a session, with a preview between steps: the same images.
                try (SdSession session = new SdSession(sd)) {
                    assertEquals(6, session.begin(q, p));
                    for (int k = 1; k <= 6; k++) {
                        assertEquals(k, session.step());
                        // The tiny export's VAE has a factor of 2: 4 channels of 16 × 16 latents.
                        assertEquals(2 * 4 * 16 * 16, session.readLatents().length);
                        assertEquals(rgb.length, session.previewRgb8().length);
                    }
                    assertArrayEquals(rgb, session.finishRgb8());
                    assertArrayEquals(rgb, session.generateRgb8(q, p));
                    // A cancel from another thread, between steps, stops the next one.
                    session.begin(q, p);
                    session.step();
                    Thread t = new Thread(session::cancel);
                    t.start();
                    t.join();
                    DiffusionRtException e = assertThrows(DiffusionRtException.class, session::step);
                    assertEquals(Status.CANCELLED, e.status());
                }
            }
        }
    }

    /** Pixels as an Android app holds them (RGBA, any size) are converted and resized by the library. */
    @Test
    void startImagePixelsAreConvertedAndSized() throws Exception {
        try (StableDiffusion sd = StableDiffusion.load(Fixtures.path("tests/fixtures/sd-tiny/export"))) {
            byte[] rgba = new byte[49 * 41 * 4];
            for (int i = 0; i < rgba.length; i++) {
                rgba[i] = (byte) (i * 7 % 251);
            }
            SdParams q = new SdParams().prompts("a red cat").startImage(rgba, 49, 41, 4);
            GenerateParams p = new GenerateParams().steps(2);
            ImageSize size = sd.imageSize(q, p);
            assertEquals(48, size.width);
            assertEquals(40, size.height);
            assertEquals(48 * 40 * 3, sd.generateRgb8(q, p).length);
            q.startImage(rgba, 49, 41, 2);
            DiffusionRtException e = assertThrows(DiffusionRtException.class, () -> sd.imageSize(q, p));
            assertEquals(Status.INVALID_ARGUMENT, e.status());
            assertTrue(e.getMessage().contains("the start image"), e.getMessage());
        }
    }
}
