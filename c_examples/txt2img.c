/* Text to image from a Stable Diffusion ONNX export (optimum-cli export onnx --task text-to-image)
 * with the C API, written as a binary PPM.
 *
 *   txt2img EXPORT_DIR PROMPT [OUT.ppm] [STEPS] [BACKEND] [NEGATIVE_PROMPT]
 *
 * The image equals `drt generate --model EXPORT_DIR --prompt PROMPT --steps STEPS --seed 0` at the
 * export's default size, sampler and guidance; without STEPS, the export's own step count (as
 * `drt generate` without --steps). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "diffusion_rt.h"

/* Called after every sampling step; returning false would cancel the generation. */
static bool progress(uint32_t step, uint32_t total, void *user_data) {
    (void)user_data;
    fprintf(stderr, "\rstep %u/%u", (unsigned)step, (unsigned)total);
    if (step == total) fputc('\n', stderr);
    return true;
}

static int fail(const char *what, drt_status s) {
    fprintf(stderr, "%s failed: %s: %s\n", what, drt_status_string(s), drt_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s EXPORT_DIR PROMPT [OUT.ppm] [STEPS] [BACKEND] [NEGATIVE_PROMPT]\n", argv[0]);
        return 2;
    }
    const char *out_path = argc > 3 ? argv[3] : "image.ppm";
    drt_model_params mp = drt_model_params_default();
    if (argc > 5 && argv[5][0] != 'a') mp.backend = argv[5];

    drt_sd *sd = NULL;
    drt_status s = drt_sd_load(argv[1], &mp, NULL, &sd);
    if (s != DRT_OK) return fail("drt_sd_load", s);

    const char *prompts[1] = {argv[2]};
    const char *negatives[1] = {argc > 6 ? argv[6] : ""};
    drt_sd_params sp = drt_sd_params_default();
    sp.prompts = prompts;
    sp.prompts_len = 1;
    sp.negative_prompts = negatives;
    sp.negative_prompts_len = 1;
    drt_generate_params gp = drt_generate_params_default();
    if (argc > 4) gp.steps = (uint32_t)strtoul(argv[4], NULL, 10);
    gp.progress = progress;

    uint32_t width = 0, height = 0, batch = 0;
    s = drt_sd_image_size(sd, &gp, &sp, &width, &height, &batch);
    if (s != DRT_OK) {
        drt_sd_free(sd);
        return fail("drt_sd_image_size", s);
    }
    size_t len = (size_t)batch * width * height * 3;
    unsigned char *rgb = malloc(len);
    if (!rgb) {
        drt_sd_free(sd);
        return 1;
    }
    s = drt_sd_generate_rgb8(sd, &gp, &sp, rgb, len);
    drt_sd_free(sd);
    if (s != DRT_OK) {
        free(rgb);
        return fail("drt_sd_generate_rgb8", s);
    }
    FILE *f = fopen(out_path, "wb");
    if (!f) {
        free(rgb);
        perror(out_path);
        return 1;
    }
    fprintf(f, "P6\n%u %u\n255\n", (unsigned)width, (unsigned)(height * batch));
    size_t wrote = fwrite(rgb, 1, len, f);
    free(rgb);
    if (fclose(f) != 0 || wrote != len) {
        perror(out_path);
        return 1;
    }
    printf("%s: %u x %u\n", out_path, (unsigned)width, (unsigned)height);
    return 0;
}
