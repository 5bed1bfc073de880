// The C++ API (include/diffusion_rt.hpp): one sample of each digit with a progress lambda, then the
// caller-driven loop with a preview, and the errors a bad call throws.
//
//   digits MODEL_DIR [BACKEND] [OUT.f32] [STEPS] [COUNT]
//
// OUT.f32 receives the digits 0 to COUNT - 1 (default all ten), which equal `drt generate --class
// 0,1,...,9 --seed 42` (without STEPS, the model's default steps, guidance and sampler). Exit
// status 0 when every check held.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "diffusion_rt.hpp"

int main(int argc, char **argv) {
    const std::string dir = argc > 1 ? argv[1] : "models/digits";
    drt::ModelOptions options;
    if (argc > 2 && std::string(argv[2]) != "auto") options.backend = argv[2];
    try {
        drt::check_abi();
        drt::Model model = drt::Model::load(dir, options);
        drt::Session session(model);

        const int32_t digits[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
        drt_generate_params p = drt::generate_params();
        p.seed = 42;
        p.batch = 10;
        p.classes = digits;
        if (argc > 4) p.steps = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10));
        if (argc > 5) p.batch = static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10));
        if (p.batch < 1 || p.batch > 10) {
            std::fprintf(stderr, "COUNT must be 1 to 10\n");
            return 2;
        }
        p.classes_len = p.batch;
        uint32_t steps = 0;
        std::vector<float> samples = session.generate(p, [&](uint32_t step, uint32_t) {
            steps = step;
            return true;
        });
        std::printf("drt %s: %zu values in %u steps\n", drt::version().c_str(), samples.size(), steps);
        if (argc > 3) {
            FILE *f = std::fopen(argv[3], "wb");
            if (!f || std::fwrite(samples.data(), sizeof(float), samples.size(), f) != samples.size()) {
                std::perror(argv[3]);
                return 1;
            }
            std::fclose(f);
        }

        // The loop a UI drives: a preview between steps, and the same samples at the end.
        uint32_t total = session.begin(p);
        for (uint32_t done = 0; done < total;) {
            done = session.step();
            if (session.read(DRT_READ_PREDICTION).size() != samples.size()) return 1;
        }
        if (session.finish() != samples) {
            std::fprintf(stderr, "the caller-driven loop gave other samples\n");
            return 1;
        }

        // A lambda that throws cancels the run; its exception comes back here, not through C.
        try {
            session.generate(p, [](uint32_t step, uint32_t) -> bool {
                if (step == 1) throw std::runtime_error("stop at step 1");
                return true;
            });
            return 1;
        } catch (const std::runtime_error &e) {
            std::printf("progress threw: %s\n", e.what());
        }

        // Bad calls are statuses turned into exceptions; a moved-from handle is one too.
        p.class_label = 42;
        p.classes = nullptr;
        p.classes_len = 0;
        p.batch = 1;
        try {
            session.generate(p);
            return 1;
        } catch (const drt::Error &e) {
            if (e.status() != DRT_ERR_INVALID_ARGUMENT) return 1;
            std::printf("class 42: %s\n", e.what());
        }
        drt::Session moved = std::move(session);
        try {
            session.step();
            return 1;
        } catch (const drt::Error &e) {
            std::printf("moved-from session: %s\n", e.what());
        }
        moved.abandon();
    } catch (const drt::Error &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    try {
        drt::Model::load(dir + "/no-such-model", options);
        return 1;
    } catch (const drt::Error &e) {
        std::printf("missing model: %s\n", e.what());
        return e.status() == DRT_ERR_IO ? 0 : 1;
    }
}
