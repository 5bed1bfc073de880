/* One model shared by several threads, each with its own session: every thread's samples must
 * equal the same generation run alone, bit for bit.
 *
 *   threads MODEL_DIR [BACKEND] [THREADS] [STEPS] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion_rt.h"

#define MAX_THREADS 16

typedef struct {
    const drt_model *model;
    int digit;
    float *out;
    size_t len;
    drt_status status;
} job;

static uint32_t steps = 8;

static drt_status run(const drt_model *model, int digit, float *out, size_t len) {
    drt_session *session = NULL;
    drt_status s = drt_session_create(model, NULL, &session);
    if (s != DRT_OK) return s;
    drt_generate_params p = drt_generate_params_default();
    p.steps = steps;
    p.seed = 100 + (uint64_t)digit;
    p.class_label = digit;
    s = drt_generate(session, &p, out, len);
    drt_session_free(session);
    return s;
}

static void *worker(void *arg) {
    job *j = arg;
    j->status = run(j->model, j->digit, j->out, j->len);
    return NULL;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/digits";
    int n = argc > 3 ? atoi(argv[3]) : 4;
    if (n < 1 || n > MAX_THREADS) n = 4;
    if (argc > 4) steps = (uint32_t)strtoul(argv[4], NULL, 10);
    drt_model_params mp = drt_model_params_default();
    if (argc > 2 && argv[2][0] != 'a') mp.backend = argv[2];
    drt_model *model = NULL;
    drt_status s = drt_model_load(dir, &mp, &model);
    if (s != DRT_OK) {
        fprintf(stderr, "load: %s: %s\n", drt_status_string(s), drt_last_error());
        return 1;
    }
    size_t len = drt_model_sample_len(model);
    float *parallel = calloc((size_t)n * len, sizeof(float));
    float *sequential = calloc((size_t)n * len, sizeof(float));
    job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int failed = !parallel || !sequential, started = 0;
    for (; started < n && !failed; started++) {
        jobs[started] = (job){model, started % 10, parallel + (size_t)started * len, len, DRT_OK};
        failed = pthread_create(&tids[started], NULL, worker, &jobs[started]) != 0;
        if (failed) break;
    }
    for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
    for (int i = 0; i < n && !failed; i++) {
        if (jobs[i].status != DRT_OK) {
            fprintf(stderr, "thread %d: %s\n", i, drt_status_string(jobs[i].status));
            failed = 1;
        } else if (run(model, i % 10, sequential + (size_t)i * len, len) != DRT_OK) {
            fprintf(stderr, "sequential %d: %s\n", i, drt_last_error());
            failed = 1;
        } else if (memcmp(parallel + (size_t)i * len, sequential + (size_t)i * len, len * sizeof(float)) != 0) {
            fprintf(stderr, "thread %d differs from the sequential run\n", i);
            failed = 1;
        }
    }
    if (!failed) printf("%d threads, one model: every result equals the sequential one\n", n);
    free(parallel);
    free(sequential);
    drt_model_free(model);
    return failed;
}
