package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * Tensor inputs through the Java API, on the observation-conditioned vp fixture of
 * tests/fixtures/vp/make.py: the guided DPM-Solver++ 2M run equals that script's float64
 * reference, and tensors given wrong are exceptions naming the input.
 */
class TensorInputTest {
    private static Model fixture(String backend) {
        return Model.load(Fixtures.path("tests/fixtures/vp"), Fixtures.options(backend));
    }

    private static GenerateParams params() throws Exception {
        return new GenerateParams().sampler("dpmpp-2m").steps(10).guidance(2.5f).batch(2)
                .noise(Fixtures.npy("tests/fixtures/vp/noise.npy"));
    }

    @Test
    void anObservationConditionsTheRun() throws Exception {
        float[] want = Fixtures.npy("tests/fixtures/vp/dpmpp_2m_10_g2.5.npy");
        for (String backend : Fixtures.backends()) {
            try (Model model = fixture(backend);
                    Session session = new Session(model)) {
                float[] got = session.generate(params().tensor("obs", Fixtures.npy("tests/fixtures/vp/obs.npy")));
                double d = Fixtures.relL2(got, want);
                assertTrue(d <= 1e-4, backend + ": relative L2 " + d);
            }
        }
    }

    @Test
    void tensorsGivenWrongAreRefused() throws Exception {
        try (Model model = fixture("tract");
                Session session = new Session(model)) {
            String[][] cases = {{"needs its tensor input `obs`", null}, {"`obs` has 5 values", "short"},
                    {"no tensor input `goal`", "goal"}, {"tensorValues[0] is null", "null"}};
            for (String[] c : cases) {
                GenerateParams p = params();
                if ("short".equals(c[1])) {
                    p.tensor("obs", new float[5]);
                } else if ("goal".equals(c[1])) {
                    p.tensor("obs", new float[3]).tensor("goal", new float[3]);
                } else if ("null".equals(c[1])) {
                    p.tensor("obs", null);
                }
                DiffusionRtException e = assertThrows(DiffusionRtException.class, () -> session.generate(p));
                assertEquals(Status.INVALID_ARGUMENT, e.status(), e.getMessage());
                assertTrue(e.getMessage().contains(c[0]), "'" + e.getMessage() + "' does not say '" + c[0] + "'");
            }
        }
    }
}
