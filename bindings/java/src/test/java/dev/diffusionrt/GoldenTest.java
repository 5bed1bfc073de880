package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * The golden references of tests/fixtures/make_golden.py (diffusers' schedulers driving the shipped
 * denoiser through onnxruntime's Python API), reached through the Java API on every backend: the
 * shipped models/digits with the fixture's sampler, steps, guidance, classes and initial noise.
 */
class GoldenTest {
    private static final double TOLERANCE = 1e-4;
    private static final int[] CLASSES = {0, 3, 7, 9};

    private static GenerateParams fixtureParams() throws Exception {
        return new GenerateParams()
                .guidance(3.0f)
                .classes(CLASSES)
                .noise(Fixtures.npy("tests/fixtures/golden/init_noise.npy"));
    }

    private static void check(String backend, String name, GenerateParams params) throws Exception {
        try (Model model = Fixtures.digits(backend);
                Session session = new Session(model)) {
            float[] got = session.generate(params);
            float[] want = Fixtures.npy("tests/fixtures/golden/" + name + ".npy");
            assertEquals(CLASSES.length * model.sampleLength(), got.length, name);
            double d = Fixtures.relL2(got, want);
            System.out.printf("%s on %s: relative L2 %.2e%n", name, backend, d);
            assertTrue(d <= TOLERANCE, name + " on " + backend + ": relative L2 " + d);
        }
    }

    @Test
    void samplersEqualDiffusers() throws Exception {
        String[][] cases = {{"dpmpp_2m_10", "dpmpp-2m"}, {"euler_10", "euler"}, {"heun_10", "heun"}};
        for (String backend : Fixtures.backends()) {
            for (String[] c : cases) {
                check(backend, c[0], fixtureParams().sampler(c[1]).steps(10));
            }
        }
    }

    /**
     * The step table diffusers' Euler walked, given as an explicit table instead of a step count.
     * (A Karras table would not do: diffusers' DPM-Solver feeds the network its timesteps rounded to
     * integers, which a table of sigmas does not carry.)
     */
    @Test
    void sigmaTableEqualsDiffusers() throws Exception {
        double[] sigmas = Fixtures.goldenArray("euler_10", "sigmas");
        assertEquals(11, sigmas.length);
        for (String backend : Fixtures.backends()) {
            check(backend, "euler_10", fixtureParams().sampler("euler").sigmas(sigmas));
        }
    }
}
