package dev.diffusionrt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.HashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.function.Executable;

/** Every mistake a caller can make is a DiffusionRtException naming it; none crashes the JVM. */
class BadInputTest {
    private static Model model;
    private static Session session;

    @BeforeAll
    static void load() {
        model = Fixtures.digits("tract");
        session = new Session(model);
    }

    @AfterAll
    static void free() {
        session.close();
        model.close();
    }

    private static DiffusionRtException fails(Status status, String words, Executable call) {
        DiffusionRtException e = assertThrows(DiffusionRtException.class, call);
        assertEquals(status, e.status(), e.getMessage());
        assertTrue(e.getMessage().contains(words), "'" + e.getMessage() + "' does not say '" + words + "'");
        // The status is e.status(); the message says the kind once, as the library words it.
        assertFalse(e.getMessage().startsWith(status.name()), e.getMessage());
        return e;
    }

    private static void refused(String words, GenerateParams p) {
        fails(Status.INVALID_ARGUMENT, words, () -> session.generate(p));
    }

    /** The Java enum is the C header's drt_status, value for value. */
    @Test
    void statusesAreTheHeaders() throws Exception {
        String header = new String(
                Files.readAllBytes(Fixtures.repo().resolve("include/diffusion_rt.h")), StandardCharsets.UTF_8);
        Matcher m = Pattern.compile("\\bDRT_(OK|ERR_[A-Z_]+) = (\\d+)").matcher(header);
        Map<String, Integer> c = new HashMap<>();
        while (m.find()) {
            c.put(m.group(1).replaceFirst("^ERR_", ""), Integer.parseInt(m.group(2)));
        }
        assertEquals(Status.values().length, c.size(), c.toString());
        for (Status s : Status.values()) {
            assertEquals(c.get(s.name()), s.code(), s.name());
        }
        assertEquals(Status.INTERNAL, Status.of(1000));
    }

    @Test
    void badLoads() {
        fails(Status.INVALID_ARGUMENT, "model_dir is NULL", () -> Model.load(null));
        fails(Status.INVALID_ARGUMENT, "options is null", () -> Model.load(Fixtures.path("models/digits"), null));
        fails(Status.IO, "no-such-model", () -> Model.load(Fixtures.path("no-such-model")));
        fails(Status.INVALID_ARGUMENT, "nope", () -> Model.load(
                Fixtures.path("models/digits"), new ModelOptions().backend("nope")));
        fails(Status.INVALID_ARGUMENT, "threads", () -> Model.load(
                Fixtures.path("models/digits"), new ModelOptions().threads(-1)));
        fails(Status.INVALID_ARGUMENT, "NUL", () -> Model.load("models\0digits"));
        fails(Status.OUT_OF_MEMORY, "a memory budget of 60 MB cannot be met", () -> StableDiffusion.load(
                Fixtures.path("tests/fixtures/sd-tiny/export"), new ModelOptions(), false, 60));
        fails(Status.INVALID_ARGUMENT, "memoryBudgetMb must be 0 or more", () -> StableDiffusion.load(
                Fixtures.path("tests/fixtures/sd-tiny/export"), new ModelOptions(), false, -1));
        fails(Status.INVALID_ARGUMENT, "attentionSlices must be 0 or more", () -> Model.load(
                Fixtures.path("models/digits"), new ModelOptions().attentionSlices(-1)));
        fails(Status.INVALID_ARGUMENT, "attention slices must be at most 64", () -> Model.load(
                Fixtures.path("models/digits"), new ModelOptions().attentionSlices(65)));
        fails(Status.BACKEND_UNAVAILABLE, "/no/such/libonnxruntime.so", () -> Model.load(
                Fixtures.path("models/digits"),
                new ModelOptions().backend("ort").ortLibraryPath("/no/such/libonnxruntime.so")));
        fails(Status.INVALID_ARGUMENT, "dir is NULL", () -> StableDiffusion.load(null));
        fails(Status.INVALID_ARGUMENT, "model is null", () -> new Session(null));
        fails(Status.INVALID_ARGUMENT, "memoryLimitMb", () -> new Session(model, -2));
    }

    @Test
    void closedHandlesThrow() {
        Model m = Fixtures.digits("tract");
        Session s = new Session(m);
        s.close();
        s.close();
        s.cancel();
        fails(Status.INVALID_ARGUMENT, "Session is closed", () -> s.generate(new GenerateParams()));
        fails(Status.INVALID_ARGUMENT, "Session is closed", s::step);
        fails(Status.INVALID_ARGUMENT, "Session is closed", s::finish);
        fails(Status.INVALID_ARGUMENT, "Session is closed", s::readSample);
        m.close();
        m.close();
        fails(Status.INVALID_ARGUMENT, "Model is closed", () -> new Session(m));
        StableDiffusion sd = StableDiffusion.load(Fixtures.path("tests/fixtures/sd-tiny/export"));
        sd.close();
        fails(Status.INVALID_ARGUMENT, "StableDiffusion is closed",
                () -> sd.generateRgb8(new SdParams().prompts("a cat"), new GenerateParams()));
    }

    @Test
    void badArraysAreRefusedBeforeTheyAreRead() {
        fails(Status.INVALID_ARGUMENT, "params is null", () -> session.generate(null));
        refused("noise has 255 values, expected batch 1 × 256", new GenerateParams().noise(new float[255]));
        refused("noise has 512 values, expected batch 1 × 256", new GenerateParams().batch(1).noise(new float[512]));
        refused("3 classes for a batch of 2", new GenerateParams().batch(2).classes(1, 2, 3));
        refused("classes is empty", new GenerateParams().classes());
        refused("noise is empty", new GenerateParams().noise(new float[0]));
        refused("init", new GenerateParams().init(new float[3]));
        refused("sigma", new GenerateParams().sigmas(new double[] {1.0}));
    }

    @Test
    void badValuesAreRefused() {
        refused("steps must be 0 or more, got -1", new GenerateParams().steps(-1));
        refused("batch must be 0 or more, got -3", new GenerateParams().batch(-3));
        refused("steps", new GenerateParams().steps(1_000_000));
        refused("guidance", new GenerateParams().guidance(Float.NaN));
        refused("nope", new GenerateParams().sampler("nope"));
        refused("NUL", new GenerateParams().sampler("dd\0im"));
        refused("class", new GenerateParams().classLabel(-7));
        refused("class", new GenerateParams().classLabel(99));
        refused("cacheMaxSkips must be 0 or more", new GenerateParams().stepCache(StepCache.SKIP).cacheMaxSkips(-1));
        refused("threshold", new GenerateParams().stepCache(StepCache.SKIP).cacheThreshold(Float.NaN));
        fails(Status.INVALID_ARGUMENT, "no-such-input", () -> session.generate(new GenerateParams().cond("no-such-input", 1f)));
        refused("NULL", new GenerateParams().cond(null, 1f));
    }

    @Test
    void callsOutOfSequence() {
        try (Session s = new Session(model)) {
            fails(Status.INVALID_ARGUMENT, "no generation in progress", s::step);
            fails(Status.INVALID_ARGUMENT, "no generation in progress", s::readSample);
            fails(Status.INVALID_ARGUMENT, "no generation in progress", s::finish);
            int total = s.begin(new GenerateParams().steps(2));
            s.step();
            fails(Status.INVALID_ARGUMENT, "1 of 2 steps are done", s::finish);
            s.step();
            fails(Status.INVALID_ARGUMENT, "all 2 steps are done", s::step);
            assertEquals(256, s.finish().length);
            s.begin(new GenerateParams());
            s.abandon();
            fails(Status.INVALID_ARGUMENT, "no generation in progress", s::step);
            assertEquals(2, total);
        }
    }

    @Test
    void badStableDiffusionRequests() {
        try (StableDiffusion sd = StableDiffusion.load(
                Fixtures.path("tests/fixtures/sd-tiny/export"), Fixtures.options("tract"), false, 0)) {
            SdParams cat = new SdParams().prompts("a cat");
            fails(Status.INVALID_ARGUMENT, "prompts[1] is NULL",
                    () -> sd.generateRgb8(new SdParams().prompts("a cat", null), new GenerateParams()));
            fails(Status.INVALID_ARGUMENT, "noise has 3 values",
                    () -> sd.generateRgb8(cat, new GenerateParams().noise(new float[3])));
            fails(Status.INVALID_ARGUMENT, "width must be 0 or more",
                    () -> sd.generateRgb8(new SdParams().prompts("a cat").width(-32), new GenerateParams()));
            fails(Status.INVALID_ARGUMENT, "class", () -> sd.generate(cat, new GenerateParams().classLabel(3)));
            fails(Status.INVALID_ARGUMENT, "init_image", () -> sd.generate(cat, new GenerateParams().init(new float[3])));
            fails(Status.INVALID_ARGUMENT, "sdParams is null", () -> sd.imageSize(null, new GenerateParams()));
            fails(Status.INVALID_ARGUMENT, "params is null", () -> sd.imageSize(cat, null));
        }
    }
}
