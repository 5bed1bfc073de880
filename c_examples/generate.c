/* Generates one sample of each digit in one batch with the C API and writes them as a PGM strip.
 *
 *   generate MODEL_DIR [BACKEND] [OUT.pgm] [OUT.f32] [STEPS]
 *
 * BACKEND is "tract", "ort" or "auto"; OUT.f32, when given, receives the raw float samples. The
 * result equals `drt generate --class 0,1,2,3,4,5,6,7,8,9 --seed 42 --steps STEPS`, and without
 * STEPS `drt generate --class 0,1,2,3,4,5,6,7,8,9 --seed 42`: the model's own defaults. */
#include <stdio.h>
#include <stdlib.h>

#include "diffusion_rt.h"

static int fail(const char *what, drt_status s) {
    fprintf(stderr, "%s failed: %s: %s\n", what, drt_status_string(s), drt_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/digits";
    const char *pgm = argc > 3 ? argv[3] : "digits.pgm";
    drt_model_params mp = drt_model_params_default();
    if (argc > 2 && argv[2][0] != 'a') mp.backend = argv[2];

    drt_model *model = NULL;
    drt_status s = drt_model_load(dir, &mp, &model);
    if (s != DRT_OK) return fail("drt_model_load", s);
    drt_session *session = NULL;
    s = drt_session_create(model, NULL, &session);
    if (s != DRT_OK) {
        drt_model_free(model);
        return fail("drt_session_create", s);
    }

    size_t len = drt_model_sample_len(model); /* 256 for a 1x16x16 digit */
    float *samples = malloc(10 * len * sizeof(float));
    if (!samples) {
        drt_session_free(session);
        drt_model_free(model);
        return 1;
    }
    const int32_t digits[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    drt_generate_params gp = drt_generate_params_default();
    gp.seed = 42;
    gp.batch = 10;
    gp.classes = digits;
    gp.classes_len = 10;
    if (argc > 5) gp.steps = (uint32_t)strtoul(argv[5], NULL, 10);
    s = drt_generate(session, &gp, samples, 10 * len);
    drt_session_free(session);
    drt_model_free(model);
    if (s != DRT_OK) {
        free(samples);
        return fail("drt_generate", s);
    }

    /* 16x16 tiles side by side, [-1, 1] mapped to 0..255. */
    FILE *f = fopen(pgm, "wb");
    if (!f) {
        free(samples);
        perror(pgm);
        return 1;
    }
    fprintf(f, "P5\n%d %d\n255\n", 160, 16);
    for (int y = 0; y < 16; y++)
        for (int d = 0; d < 10; d++)
            for (int x = 0; x < 16; x++) {
                float v = (samples[d * len + y * 16 + x] + 1.0f) * 127.5f;
                fputc(v < 0 ? 0 : v > 255 ? 255 : (int)(v + 0.5f), f);
            }
    fclose(f);
    if (argc > 4) {
        FILE *raw = fopen(argv[4], "wb");
        if (!raw || fwrite(samples, sizeof(float), 10 * len, raw) != 10 * len) {
            free(samples);
            perror(argv[4]);
            return 1;
        }
        fclose(raw);
    }
    free(samples);
    printf("wrote %s with drt %s\n", pgm, drt_version());
    return 0;
}
