/* The benchmark through the C API, for devices where only the library is deployed: prints the
 * same JSON report as `drt bench --json`.
 *
 *   bench MODEL_DIR [BACKEND] [STEPS] [BATCH] [RUNS] [CLASSIFIER_DIR] [THREADS]
 *
 * BACKEND is "tract", "ort" or "auto"; without CLASSIFIER_DIR (or with "-") nothing is judged. */
#include <stdio.h>
#include <stdlib.h>

#include "diffusion_rt.h"

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/digits";
    drt_model_params mp = drt_model_params_default();
    if (argc > 2 && argv[2][0] != 'a') mp.backend = argv[2];
    if (argc > 7) mp.threads = (uint32_t)strtoul(argv[7], NULL, 10);
    drt_generate_params gp = drt_generate_params_default();
    if (argc > 3) gp.steps = (uint32_t)strtoul(argv[3], NULL, 10);
    if (argc > 4) gp.batch = (uint32_t)strtoul(argv[4], NULL, 10);
    drt_bench_params bp = drt_bench_params_default();
    if (argc > 5) bp.runs = (uint32_t)strtoul(argv[5], NULL, 10);
    if (argc > 6 && argv[6][0] != '-') bp.classifier_dir = argv[6];

    drt_bench_report *report = NULL;
    drt_status s = drt_bench_run(dir, &mp, &gp, &bp, &report);
    char *json = NULL;
    size_t needed = 0;
    if (s == DRT_OK) s = drt_bench_report_json(report, NULL, 0, &needed);
    if (s == DRT_OK && !(json = malloc(needed))) s = DRT_ERR_OUT_OF_MEMORY;
    if (s == DRT_OK) s = drt_bench_report_json(report, json, needed, NULL);
    if (s == DRT_OK) printf("%s\n", json);
    else fprintf(stderr, "bench failed: %s: %s\n", drt_status_string(s), drt_last_error());
    free(json);
    drt_bench_report_free(report);
    return s == DRT_OK ? 0 : 1;
}
