/* A robot's control loop at a fixed rate with a diffusion policy (models/point-policy). Each control
 * period runs one action on a point robot; when the current plan's actions are used up, the
 * period first plans a new action chunk from the robot's position. Planning runs the caller-driven
 * step loop and stops at the period's deadline, taking the clean chunk the last step predicted
 * (the best estimate so far) when not every step fit. A plan that ends after the deadline (even its
 * first step did not fit) is a missed deadline.
 *
 *   policy MODEL_DIR [BACKEND] [PERIOD_US] [EPISODES]
 *
 * Prints one line per episode and a summary. The robot and its task are the numbers of
 * models/point-policy/task.json, copied here to keep the example self-contained. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "diffusion_rt.h"

enum { HORIZON = 16, EXECUTE = 8, MAX_STEPS = 80 };
static const double MAX_SPEED = 0.05, GOAL_Y = 1.0, GOAL_RADIUS = 0.08, OBSTACLE_Y = 0.5, OBSTACLE_RADIUS = 0.2;

static long long now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void sleep_until_us(long long when) {
    struct timespec t = {(time_t)(when / 1000000), (long)(when % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) != 0) {
    }
}

/* A NaN action (a != a) stands still, as in the runtime's simulator. */
static double clip(double a) { return a != a ? 0.0 : a < -1.0 ? -1.0 : a > 1.0 ? 1.0 : a; }

static int within(double x, double y, double cy, double r) { return x * x + (y - cy) * (y - cy) < r * r; }

typedef struct {
    long plans, cut_short, missed;
    long long worst_us;
} stats;

/* Plans a chunk from `obs` into `chunk`, stepping until every step ran or `deadline` passed. */
static drt_status plan(drt_session *s, drt_generate_params *gp, long long deadline, float *chunk, stats *st) {
    uint32_t total = 0, done = 0;
    long long started = now_us();
    drt_status r = drt_generate_begin(s, gp, &total);
    while (r == DRT_OK && done < total && (done == 0 || now_us() < deadline)) r = drt_generate_step(s, &done);
    if (r == DRT_OK && done == total) {
        r = drt_generate_finish(s, chunk, 2 * HORIZON);
    } else if (r == DRT_OK) {
        r = drt_generate_read(s, DRT_READ_PREDICTION, chunk, 2 * HORIZON);
        drt_generate_abandon(s);
        st->cut_short++;
    }
    long long took = now_us() - started;
    st->plans++;
    st->missed += now_us() > deadline;
    if (took > st->worst_us) st->worst_us = took;
    return r;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "models/point-policy";
    long long period = argc > 3 ? atoll(argv[3]) : 1000;
    int episodes = argc > 4 ? atoi(argv[4]) : 10;
    if (drt_abi_version() != DRT_ABI_VERSION || period <= 0 || episodes <= 0) {
        fprintf(stderr, "usage: policy MODEL_DIR [BACKEND] [PERIOD_US > 0] [EPISODES > 0]\n");
        return 1;
    }
    drt_model_params mp = drt_model_params_default();
    if (argc > 2 && argv[2][0] != 'a') mp.backend = argv[2];
    mp.threads = 1;
    drt_model *model = NULL;
    drt_session *session = NULL;
    drt_status r = drt_model_load(dir, &mp, &model);
    if (r == DRT_OK) r = drt_session_create(model, NULL, &session);
    if (r == DRT_OK && drt_model_sample_len(model) != 2 * HORIZON) {
        fprintf(stderr, "%s does not plan chunks of %d actions\n", dir, HORIZON);
        r = DRT_ERR_INVALID_ARGUMENT;
    }

    float obs[2], chunk[2 * HORIZON];
    const char *names[1] = {"obs"};
    const float *values[1] = {obs};
    size_t lens[1] = {2};
    drt_generate_params gp = drt_generate_params_default();
    gp.tensor_names = names;
    gp.tensor_values = values;
    gp.tensor_lens = lens;
    gp.tensor_count = 1;
    stats st = {0, 0, 0, 0};
    int reached = 0, collided = 0;
    for (int e = 0; r == DRT_OK && e < episodes; e++) {
        /* Starts spread over the task's start box, deterministically. */
        double x = -0.05 + 0.1 * ((e * 7) % 11) / 10.0, y = -0.05 + 0.1 * ((e * 3) % 5) / 4.0;
        int step = 0, next = EXECUTE, outcome = 0; /* 1 reached, -1 collided */
        long long tick = now_us();
        for (; r == DRT_OK && step < MAX_STEPS && outcome == 0; step++, next++) {
            long long deadline = tick + period;
            if (next == EXECUTE) {
                obs[0] = (float)x;
                obs[1] = (float)y;
                gp.seed = (uint64_t)(e * 1000 + step);
                r = plan(session, &gp, deadline, chunk, &st);
                next = 0;
            }
            x += MAX_SPEED * clip(chunk[2 * next]);
            y += MAX_SPEED * clip(chunk[2 * next + 1]);
            if (within(x, y, OBSTACLE_Y, OBSTACLE_RADIUS)) outcome = -1;
            else if (within(x, y, GOAL_Y, GOAL_RADIUS)) outcome = 1;
            tick = deadline;
            if (now_us() < tick) sleep_until_us(tick);
            else tick = now_us(); /* late: the next period starts now rather than piling up */
        }
        reached += outcome == 1;
        collided += outcome == -1;
        if (r == DRT_OK)
            printf("episode %d: %s after %d steps\n", e, outcome > 0 ? "goal" : outcome < 0 ? "collision" : "timeout", step);
    }
    if (r == DRT_OK) {
        printf("%d episodes at a %lld us period: %d reached the goal, %d collided; %ld plans, %ld cut short at the "
               "deadline, %ld missed deadlines, slowest plan %lld us\n",
               episodes, period, reached, collided, st.plans, st.cut_short, st.missed, st.worst_us);
    } else {
        fprintf(stderr, "error: %s: %s\n", drt_status_string(r), drt_last_error());
    }
    drt_session_free(session);
    drt_model_free(model);
    return r == DRT_OK ? 0 : 1;
}
