package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Whole and caller-driven generations, progress and cancellation, on every backend. */
class SessionTest {
    @Test
    void theLibraryIsTheOneThisJarWasWrittenFor() {
        assertEquals(Native.ABI_VERSION, DiffusionRt.abiVersion());
        assertTrue(DiffusionRt.version().matches("\\d+\\.\\d+\\.\\d+.*"), DiffusionRt.version());
    }

    /** The defaults are the model's: 10 steps of its sampler, one sample of 1 × 16 × 16. */
    @Test
    void defaultsAreTheModels() {
        for (String backend : Fixtures.backends()) {
            try (Model model = Fixtures.digits(backend);
                    Session session = new Session(model)) {
                assertEquals(256, model.sampleLength());
                List<int[]> calls = new ArrayList<>();
                GenerateParams p = new GenerateParams().seed(42L).classLabel(7);
                float[] a = session.generate(p, (step, total) -> calls.add(new int[] {step, total}));
                assertEquals(256, a.length);
                assertEquals(10, calls.size());
                for (int i = 0; i < calls.size(); i++) {
                    assertArrayEquals(new int[] {i + 1, 10}, calls.get(i));
                }
                assertArrayEquals(a, session.generate(p), "the same seed, the same sample");
                assertFalse(java.util.Arrays.equals(a, session.generate(new GenerateParams().seed(43L).classLabel(7))));
            }
        }
    }

    /** Stepping by hand gives what generate() gives, with previews between the steps. */
    @Test
    void callerDrivenLoopEqualsGenerate() {
        for (String backend : Fixtures.backends()) {
            try (Model model = Fixtures.digits(backend);
                    Session session = new Session(model)) {
                GenerateParams p = new GenerateParams().seed(7L).classes(1, 2).steps(6).sampler("euler");
                float[] whole = session.generate(p);
                assertEquals(2 * 256, whole.length);
                int total = session.begin(p);
                assertEquals(6, total);
                float[] start = session.readSample();
                assertEquals(whole.length, start.length);
                DiffusionRtException e = assertThrows(DiffusionRtException.class, session::readPrediction);
                assertEquals(Status.INVALID_ARGUMENT, e.status());
                for (int i = 1; i <= total; i++) {
                    assertEquals(i, session.step());
                    assertEquals(whole.length, session.readPrediction().length);
                }
                assertNotEquals(start[0], session.readSample()[0]);
                assertArrayEquals(whole, session.finish());
            }
        }
    }

    @Test
    void aListenerCancels() {
        try (Model model = Fixtures.digits("tract");
                Session session = new Session(model)) {
            int[] seen = {0};
            DiffusionRtException e = assertThrows(
                    DiffusionRtException.class,
                    () -> session.generate(new GenerateParams(), (step, total) -> ++seen[0] < 3));
            assertEquals(Status.CANCELLED, e.status());
            assertEquals(3, seen[0]);
            assertEquals(256, session.generate(new GenerateParams()).length, "the session goes on");
        }
    }

    /** A listener's exception cancels the generation and comes out of generate() as it was thrown. */
    @Test
    void aListenersExceptionComesThrough() {
        try (Model model = Fixtures.digits("tract");
                Session session = new Session(model)) {
            IllegalStateException e = assertThrows(
                    IllegalStateException.class,
                    () -> session.generate(new GenerateParams(), (step, total) -> {
                        if (step == 2) {
                            throw new IllegalStateException("the app stopped at 2");
                        }
                        return true;
                    }));
            assertEquals("the app stopped at 2", e.getMessage());
            assertEquals(256, session.generate(new GenerateParams()).length, "the session goes on");
        }
    }

    @Test
    void cancelStopsTheNextStep() {
        try (Model model = Fixtures.digits("tract");
                Session session = new Session(model)) {
            session.begin(new GenerateParams());
            session.step();
            session.cancel();
            DiffusionRtException e = assertThrows(DiffusionRtException.class, session::step);
            assertEquals(Status.CANCELLED, e.status());
            e = assertThrows(DiffusionRtException.class, session::step);
            assertEquals(Status.INVALID_ARGUMENT, e.status(), "the generation ended: " + e.getMessage());
        }
    }

    /** The session keeps the model's network alive: closing the model first is fine. */
    @Test
    void aSessionOutlivesItsModel() {
        Model model = Fixtures.digits("tract");
        try (Session session = new Session(model)) {
            float[] before = session.generate(new GenerateParams().seed(3L));
            model.close();
            assertArrayEquals(before, session.generate(new GenerateParams().seed(3L)));
            assertEquals(256, model.sampleLength());
        }
    }

    @Test
    void aMemoryCapRefusesLargeRequests() {
        try (Model model = Fixtures.digits("tract");
                Session small = new Session(model, 1);
                Session unlimited = new Session(model, Session.UNLIMITED)) {
            DiffusionRtException e = assertThrows(
                    DiffusionRtException.class, () -> small.generate(new GenerateParams().batch(4096).steps(1)));
            assertEquals(Status.OUT_OF_MEMORY, e.status(), e.getMessage());
            assertEquals(2 * 256, unlimited.generate(new GenerateParams().batch(2).steps(1)).length);
        }
    }
}
