/* Text to image the way an app's UI drives it, with the C++ API: a session stepped by the caller,
 * a decoded preview every PREVIEW_EVERY steps, and a cancel from another thread.
 *
 *   sd_preview EXPORT_DIR PROMPT [STEPS] [BACKEND] [PREVIEW_EVERY]
 *
 * Checks that the stepped images are those of one whole call and prints what it saw. */
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "diffusion_rt.hpp"

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s EXPORT_DIR PROMPT [STEPS] [BACKEND] [PREVIEW_EVERY]\n", argv[0]);
        return 2;
    }
    try {
        drt::check_abi();
        drt::ModelOptions options;
        if (argc > 4 && argv[4][0] != 'a') options.backend = argv[4];
        uint32_t every = argc > 5 ? static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10)) : 1;
        drt::StableDiffusion sd = drt::StableDiffusion::load(argv[1], options);

        const char *prompts[1] = {argv[2]};
        drt_sd_params q = drt::sd_params();
        q.prompts = prompts;
        q.prompts_len = 1;
        drt_generate_params p = drt::generate_params();
        if (argc > 3) p.steps = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
        std::vector<uint8_t> whole = sd.generate_rgb8(p, q);

        drt::SdSession session(sd);
        uint32_t total = session.begin(p, q), previews = 0;
        for (uint32_t done = 0; done < total;) {
            done = session.step();
            if (every > 0 && done % every == 0) {
                if (session.preview_rgb8().size() != whole.size()) return 1;
                previews++;
            }
        }
        drt::ImageSize size = session.image_size();
        if (session.finish_rgb8() != whole) {
            std::fprintf(stderr, "the stepped images differ from the whole call's\n");
            return 1;
        }
        std::printf("%u steps, %u previews, %ux%u: the stepped images are the whole call's\n", total, previews,
                    size.width, size.height);

        // A cancel from another thread lands between steps: the next step throws.
        session.begin(p, q);
        session.step();
        std::thread([&session] { session.cancel(); }).join();
        try {
            session.step();
            return 1;
        } catch (const drt::Error &e) {
            if (e.status() != DRT_ERR_CANCELLED) throw;
            std::printf("cancelled: %s\n", e.what());
        }
    } catch (const drt::Error &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
