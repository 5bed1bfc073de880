package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** One model shared by threads; cancelling and closing from another thread. */
class ThreadsTest {
    private static final int THREADS = 8;

    /** Eight threads, a session each over one model: every result equals the same run made alone. */
    @Test
    void eightThreadsShareOneModel() throws Exception {
        for (String backend : Fixtures.backends()) {
            try (Model model = Fixtures.digits(backend)) {
                float[][] alone = new float[THREADS][];
                try (Session s = new Session(model)) {
                    for (int i = 0; i < THREADS; i++) {
                        alone[i] = s.generate(params(i));
                    }
                }
                ExecutorService pool = Executors.newFixedThreadPool(THREADS);
                try {
                    CountDownLatch go = new CountDownLatch(1);
                    List<Future<float[]>> runs = new ArrayList<>();
                    for (int i = 0; i < THREADS; i++) {
                        final int seed = i;
                        runs.add(pool.submit(() -> {
                            try (Session s = new Session(model)) {
                                go.await();
                                float[] out = null;
                                for (int r = 0; r < 3; r++) {
                                    out = s.generate(params(seed));
                                }
                                return out;
                            }
                        }));
                    }
                    go.countDown();
                    for (int i = 0; i < THREADS; i++) {
                        assertArrayEquals(alone[i], runs.get(i).get(120, TimeUnit.SECONDS), backend + " seed " + i);
                    }
                } finally {
                    pool.shutdownNow();
                }
            }
        }
    }

    private static GenerateParams params(int seed) {
        return new GenerateParams().seed(seed).classLabel(seed % 10).steps(8);
    }

    /** cancel() from another thread stops a generation that is running. */
    @Test
    void cancelFromAnotherThread() throws Exception {
        try (Model model = Fixtures.digits("tract");
                Session session = new Session(model)) {
            CountDownLatch started = new CountDownLatch(1);
            CountDownLatch cancelled = new CountDownLatch(1);
            ExecutorService pool = Executors.newSingleThreadExecutor();
            try {
                Future<float[]> run = pool.submit(() -> session.generate(
                        new GenerateParams().steps(50), (step, total) -> {
                            started.countDown();
                            try {
                                cancelled.await(30, TimeUnit.SECONDS);
                            } catch (InterruptedException e) {
                                Thread.currentThread().interrupt();
                            }
                            return true;
                        }));
                assertTrue(started.await(60, TimeUnit.SECONDS));
                session.cancel();
                cancelled.countDown();
                java.util.concurrent.ExecutionException e =
                        assertThrows(java.util.concurrent.ExecutionException.class, () -> run.get(60, TimeUnit.SECONDS));
                assertTrue(e.getCause() instanceof DiffusionRtException, String.valueOf(e.getCause()));
                assertEquals(Status.CANCELLED, ((DiffusionRtException) e.getCause()).status());
            } finally {
                pool.shutdownNow();
            }
        }
    }

    /**
     * close() while another thread generates cancels that generation, waits for it, and frees the
     * session; later calls throw instead of touching freed memory.
     */
    @Test
    void closeWhileGenerating() throws Exception {
        Model model = Fixtures.digits("tract");
        Session session = new Session(model);
        CountDownLatch started = new CountDownLatch(1);
        ExecutorService pool = Executors.newSingleThreadExecutor();
        try {
            Future<float[]> run = pool.submit(() -> session.generate(
                    new GenerateParams().steps(200), (step, total) -> {
                        started.countDown();
                        return true;
                    }));
            assertTrue(started.await(60, TimeUnit.SECONDS));
            session.close();
            java.util.concurrent.ExecutionException e =
                    assertThrows(java.util.concurrent.ExecutionException.class, () -> run.get(60, TimeUnit.SECONDS));
            assertEquals(Status.CANCELLED, ((DiffusionRtException) e.getCause()).status());
            DiffusionRtException closed =
                    assertThrows(DiffusionRtException.class, () -> session.generate(new GenerateParams()));
            assertEquals(Status.INVALID_ARGUMENT, closed.status());
            assertTrue(closed.getMessage().contains("closed"), closed.getMessage());
            session.cancel();
            session.close();
        } finally {
            pool.shutdownNow();
            model.close();
        }
    }
}
