/* The caller-driven loop a mobile UI runs: one step per call, a preview read between steps, a
 * progress bar, and a cancel button (here: a step number after which the cancel is "pressed").
 *
 *   steps MODEL_DIR [BACKEND] [DIGIT] [STEPS] [OUT.f32] [CANCEL_AFTER]
 *
 * Without CANCEL_AFTER the final sample equals drt_generate's (and `drt generate --class DIGIT
 * --seed 7 --steps STEPS`) bit for bit; OUT.f32, when given, receives it. Exit status: 0 done,
 * 1 error, 2 cancelled. */
#include <stdio.h>
#include <stdlib.h>

#include "diffusion_rt.h"

static void log_to_stderr(drt_log_level level, const char *target, const char *message, void *user_data) {
    (void)user_data;
    fprintf(stderr, "[%d %s] %s\n", (int)level, target, message);
}

/* Share of the preview that is ink (above mid-grey): a cheap stand-in for drawing it. */
static float ink(const float *x, size_t n) {
    size_t on = 0;
    for (size_t i = 0; i < n; i++) on += x[i] > 0.0f;
    return (float)on / (float)n;
}

static void bar(uint32_t done, uint32_t total, float preview_ink) {
    char cells[21];
    uint32_t filled = total ? 20 * done / total : 0;
    for (uint32_t i = 0; i < 20; i++) cells[i] = i < filled ? '#' : '.';
    cells[20] = '\0';
    printf("\r[%s] %2u/%u  preview ink %.2f", cells, (unsigned)done, (unsigned)total, preview_ink);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/digits";
    int exit_code = 1;
    if (drt_abi_version() != DRT_ABI_VERSION) {
        fprintf(stderr, "library ABI %u, header ABI %u\n", drt_abi_version(), DRT_ABI_VERSION);
        return 1;
    }
    drt_set_log_callback(log_to_stderr, DRT_LOG_WARN, NULL);

    drt_model_params mp = drt_model_params_default();
    if (argc > 2 && argv[2][0] != 'a') mp.backend = argv[2];
    drt_generate_params gp = drt_generate_params_default();
    gp.seed = 7;
    gp.class_label = argc > 3 ? atoi(argv[3]) : 3;
    if (argc > 4) gp.steps = (uint32_t)strtoul(argv[4], NULL, 10);
    const char *raw = argc > 5 ? argv[5] : NULL;
    long cancel_after = argc > 6 ? atol(argv[6]) : -1;

    drt_model *model = NULL;
    drt_session *session = NULL;
    float *preview = NULL;
    const char *what = "drt_model_load";
    drt_status s = drt_model_load(dir, &mp, &model);
    if (s == DRT_OK) {
        what = "drt_session_create";
        s = drt_session_create(model, NULL, &session);
    }
    size_t len = drt_model_sample_len(model);
    uint32_t total = 0, done = 0;
    if (s == DRT_OK) {
        what = "drt_generate_begin";
        s = drt_generate_begin(session, &gp, &total);
    }
    if (s == DRT_OK && !(preview = malloc(len * sizeof(float)))) s = DRT_ERR_OUT_OF_MEMORY;
    while (s == DRT_OK && done < total) {
        what = "drt_generate_step";
        s = drt_generate_step(session, &done);
        if (s != DRT_OK) break;
        what = "drt_generate_read";
        s = drt_generate_read(session, DRT_READ_PREDICTION, preview, len);
        if (s != DRT_OK) break;
        bar(done, total, ink(preview, len));
        /* A UI thread would call this from its cancel button; the next step then stops. */
        if ((long)done == cancel_after) drt_session_cancel(session);
    }
    if (total) printf("\n");
    if (s == DRT_OK) {
        what = "drt_generate_finish";
        s = drt_generate_finish(session, preview, len);
    }
    if (s == DRT_OK) {
        exit_code = 0;
        FILE *f = raw ? fopen(raw, "wb") : NULL;
        if (raw && (!f || fwrite(preview, sizeof(float), len, f) != len)) {
            perror(raw);
            exit_code = 1;
        }
        if (f) fclose(f);
        printf("digit %d done in %u steps\n", gp.class_label, (unsigned)total);
    } else if (s == DRT_ERR_CANCELLED) {
        exit_code = 2;
        printf("cancelled after %u of %u steps: %s\n", (unsigned)done, (unsigned)total, drt_last_error());
    } else {
        fprintf(stderr, "%s failed: %s: %s\n", what, drt_status_string(s), drt_last_error());
    }
    free(preview);
    drt_session_free(session);
    drt_model_free(model);
    drt_set_log_callback(NULL, DRT_LOG_OFF, NULL);
    return exit_code;
}
