/* diffusion-rt C++ API: RAII handles and exceptions over the C API in diffusion_rt.h, header only,
 * C++17. It adds no behaviour: every call is the C call of the same name, and the defaults, the
 * threading rules and the errors are the C API's (see diffusion_rt.h).
 *
 *   drt::Model model = drt::Model::load("models/digits");
 *   drt::Session session(model);
 *   drt_generate_params p = drt::generate_params();   // the model's defaults
 *   p.seed = 42;
 *   p.class_label = 7;
 *   std::vector<float> digit = session.generate(p, [](uint32_t step, uint32_t total) { return true; });
 *
 * - Handles are move-only and freed by their destructors; a moved-from handle is empty, and using
 *   it throws drt::Error with DRT_ERR_INVALID_ARGUMENT, as the C API does for NULL.
 * - Every failed call throws drt::Error, carrying the drt_status and drt_last_error()'s message.
 * - An exception thrown by a progress callback cancels the generation and is rethrown from the
 *   call that ran it (it never crosses the C library).
 */
#ifndef DIFFUSION_RT_HPP
#define DIFFUSION_RT_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "diffusion_rt.h"

namespace drt {

/** A failed call: its status and the library's message. */
class Error : public std::runtime_error {
  public:
    Error(drt_status status, const std::string &message)
        : std::runtime_error(std::string(drt_status_string(status)) + ": " + message), status_(status) {}
    drt_status status() const noexcept { return status_; }

  private:
    drt_status status_;
};

namespace detail {
inline void check(drt_status s) {
    if (s != DRT_OK) throw Error(s, drt_last_error());
}

inline const char *c_str_or_null(const std::string &s) { return s.empty() ? nullptr : s.c_str(); }
} // namespace detail

/** The defaults of drt_generate_params_default(): the model's own steps, guidance and sampler. */
inline drt_generate_params generate_params() { return drt_generate_params_default(); }

/** How a model is loaded; empty strings and 0 are the C defaults. */
struct ModelOptions {
    std::string backend;            /* "tract", "ort", or "" for automatic */
    std::string ort_library;        /* "" = $DRT_ORT_LIB, $ORT_DYLIB_PATH, then the system loader */
    std::string execution_provider; /* "" = cpu; cuda, tensorrt, coreml, nnapi, xnnpack */
    uint32_t threads = 0;           /* 0 = the number of physical cores, at most 8 */
    uint32_t attention_slices = 0;  /* 0 = the model's default, 1 = whole attention */
    bool mapped_weights = false;    /* ort: weights read from the mapped file, not copied */
};

namespace detail {
inline drt_model_params model_params(const ModelOptions &options) {
    drt_model_params p = drt_model_params_default();
    p.backend = c_str_or_null(options.backend);
    p.ort_library_path = c_str_or_null(options.ort_library);
    p.execution_provider = c_str_or_null(options.execution_provider);
    p.threads = options.threads;
    p.attention_slices = options.attention_slices;
    p.mapped_weights = options.mapped_weights ? 1u : 0u;
    return p;
}
} // namespace detail

/** Called after every step with (steps done, steps in all); false cancels the generation. */
using Progress = std::function<bool(uint32_t step, uint32_t total)>;

namespace detail {
/** The progress lambda behind the C callback; an exception it throws stops the run and is kept
 * for the caller to rethrow. */
struct Callback {
    const Progress &progress;
    std::exception_ptr error;
    static bool call(uint32_t step, uint32_t total, void *user_data) noexcept {
        Callback *self = static_cast<Callback *>(user_data);
        try {
            return self->progress(step, total);
        } catch (...) {
            self->error = std::current_exception();
            return false;
        }
    }
    /** `params` with this callback in place of its own, when a lambda is given. */
    drt_generate_params wire(const drt_generate_params &params) {
        drt_generate_params p = params;
        if (progress) {
            p.progress = &Callback::call;
            p.user_data = this;
        }
        return p;
    }
    void rethrow_or_check(drt_status s) const {
        if (error) std::rethrow_exception(error);
        check(s);
    }
};

} // namespace detail

/** A loaded model, immutable and shareable by any number of sessions and threads. */
class Model {
  public:
    static Model load(const std::string &dir, const ModelOptions &options = {}) {
        drt_model_params p = detail::model_params(options);
        drt_model *m = nullptr;
        detail::check(drt_model_load(dir.c_str(), &p, &m));
        return Model(m);
    }

    Model(Model &&other) noexcept : model_(std::exchange(other.model_, nullptr)) {}
    Model &operator=(Model &&other) noexcept {
        if (this != &other) {
            drt_model_free(model_);
            model_ = std::exchange(other.model_, nullptr);
        }
        return *this;
    }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;
    ~Model() { drt_model_free(model_); }

    /** Floats of one sample. */
    size_t sample_len() const { return drt_model_sample_len(get()); }

    /** The C handle (still owned by this object); throws when empty. */
    drt_model *get() const {
        if (!model_) throw Error(DRT_ERR_INVALID_ARGUMENT, "the drt::Model is empty (moved from)");
        return model_;
    }

  private:
    explicit Model(drt_model *m) noexcept : model_(m) {}
    drt_model *model_;
};

/** One generation at a time over a model (which it keeps alive). Not for concurrent use; cancel()
 * alone may be called from any thread. */
class Session {
  public:
    explicit Session(const Model &model, uint32_t memory_limit_mb = 0) : sample_len_(model.sample_len()) {
        drt_session_params p = drt_session_params_default();
        if (memory_limit_mb != 0) p.memory_limit_mb = memory_limit_mb;
        detail::check(drt_session_create(model.get(), &p, &session_));
    }

    Session(Session &&other) noexcept
        : session_(std::exchange(other.session_, nullptr)), sample_len_(other.sample_len_) {}
    Session &operator=(Session &&other) noexcept {
        if (this != &other) {
            drt_session_free(session_);
            session_ = std::exchange(other.session_, nullptr);
            sample_len_ = other.sample_len_;
        }
        return *this;
    }
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;
    ~Session() { drt_session_free(session_); }

    /** Runs a whole generation: batch * sample_len floats (the batch by the library's rule,
     * drt_generate_batch). `params.progress` and `user_data` are replaced by `progress` when one
     * is given. */
    std::vector<float> generate(const drt_generate_params &params, const Progress &progress = {}) {
        std::vector<float> out(static_cast<size_t>(batch(params)) * sample_len_);
        generate(params, out.data(), out.size(), progress);
        return out;
    }

    /** As generate(), into the caller's `len` floats at `out`. */
    void generate(const drt_generate_params &params, float *out, size_t len, const Progress &progress = {}) {
        detail::Callback cb{progress, nullptr};
        drt_generate_params p = cb.wire(params);
        cb.rethrow_or_check(drt_generate(get(), &p, out, len));
    }

    /** Cancels the generation running on this session; safe from any thread. */
    void cancel() const noexcept { drt_session_cancel(session_); }

    /** The caller-driven loop: begin() returns the number of steps, step() the steps done. */
    uint32_t begin(const drt_generate_params &params) {
        uint32_t total = 0;
        uint32_t n = batch(params);
        detail::check(drt_generate_begin(get(), &params, &total));
        batch_ = n;
        return total;
    }
    uint32_t step() {
        uint32_t done = 0;
        detail::check(drt_generate_step(get(), &done));
        return done;
    }
    /** The current sample or, after a step, the prediction it was based on (a preview). */
    std::vector<float> read(uint32_t what = DRT_READ_PREDICTION) const {
        std::vector<float> out(static_cast<size_t>(batch_) * sample_len_);
        detail::check(drt_generate_read(get(), what, out.data(), out.size()));
        return out;
    }
    std::vector<float> finish() {
        std::vector<float> out(static_cast<size_t>(batch_) * sample_len_);
        detail::check(drt_generate_finish(get(), out.data(), out.size()));
        return out;
    }
    void abandon() noexcept { drt_generate_abandon(session_); }

    /** The C handle (still owned by this object); throws when empty. */
    drt_session *get() const {
        if (!session_) throw Error(DRT_ERR_INVALID_ARGUMENT, "the drt::Session is empty (moved from)");
        return session_;
    }

  private:
    uint32_t batch(const drt_generate_params &params) const {
        uint32_t n = 0;
        detail::check(drt_generate_batch(get(), &params, &n));
        return n;
    }

    drt_session *session_ = nullptr;
    size_t sample_len_;
    uint32_t batch_ = 0;
};

/** The defaults of drt_sd_params_default(): the UNet's size, the empty prompt, text to image. */
inline drt_sd_params sd_params() { return drt_sd_params_default(); }

/** The size of the images a request makes: pixels per side and images. */
struct ImageSize {
    uint32_t width = 0, height = 0, batch = 0;
    size_t rgb_len() const { return static_cast<size_t>(width) * height * batch * 3; }
};

/** A Stable Diffusion export (optimum's text-to-image layout). Generations may run on several
 * threads at once. */
class StableDiffusion {
  public:
    static StableDiffusion load(const std::string &dir, const ModelOptions &options = {},
                                const drt_sd_load_params &load = drt_sd_load_params_default()) {
        drt_model_params p = detail::model_params(options);
        drt_sd *sd = nullptr;
        detail::check(drt_sd_load(dir.c_str(), &p, &load, &sd));
        return StableDiffusion(sd);
    }

    StableDiffusion(StableDiffusion &&other) noexcept : sd_(std::exchange(other.sd_, nullptr)) {}
    StableDiffusion &operator=(StableDiffusion &&other) noexcept {
        if (this != &other) {
            drt_sd_free(sd_);
            sd_ = std::exchange(other.sd_, nullptr);
        }
        return *this;
    }
    StableDiffusion(const StableDiffusion &) = delete;
    StableDiffusion &operator=(const StableDiffusion &) = delete;
    ~StableDiffusion() { drt_sd_free(sd_); }

    ImageSize image_size(const drt_generate_params &params, const drt_sd_params &sd_params) const {
        ImageSize size;
        detail::check(drt_sd_image_size(get(), &params, &sd_params, &size.width, &size.height, &size.batch));
        return size;
    }

    /** 8-bit RGB images, rows top to bottom, one after another. */
    std::vector<uint8_t> generate_rgb8(const drt_generate_params &params, const drt_sd_params &sd_params,
                                       const Progress &progress = {}) const {
        std::vector<uint8_t> out(image_size(params, sd_params).rgb_len());
        detail::Callback cb{progress, nullptr};
        drt_generate_params p = cb.wire(params);
        cb.rethrow_or_check(drt_sd_generate_rgb8(get(), &p, &sd_params, out.data(), out.size()));
        return out;
    }

    drt_sd *get() const {
        if (!sd_) throw Error(DRT_ERR_INVALID_ARGUMENT, "the drt::StableDiffusion is empty (moved from)");
        return sd_;
    }

  private:
    explicit StableDiffusion(drt_sd *sd) noexcept : sd_(sd) {}
    drt_sd *sd_;
};

/** Text to image step by step over an export (which it keeps alive), as a UI drives it. Not for
 * concurrent use; cancel() alone may be called from any thread. */
class SdSession {
  public:
    explicit SdSession(const StableDiffusion &sd) { detail::check(drt_sd_session_create(sd.get(), &session_)); }
    SdSession(SdSession &&other) noexcept : session_(std::exchange(other.session_, nullptr)), size_(other.size_) {}
    SdSession &operator=(SdSession &&other) noexcept {
        if (this != &other) {
            drt_sd_session_free(session_);
            session_ = std::exchange(other.session_, nullptr);
            size_ = other.size_;
        }
        return *this;
    }
    SdSession(const SdSession &) = delete;
    SdSession &operator=(const SdSession &) = delete;
    ~SdSession() { drt_sd_session_free(session_); }

    /** A whole generation: the steps a caller would take, `progress` between them (false, or an
     * exception, stops it), cancellable from another thread with cancel(). */
    std::vector<uint8_t> generate_rgb8(const drt_generate_params &params, const drt_sd_params &sd_params,
                                       const Progress &progress = {}) {
        uint32_t total = begin(params, sd_params);
        for (uint32_t done = 0; done < total;) {
            done = step();
            bool go = true;
            try {
                go = !progress || progress(done, total);
            } catch (...) {
                abandon();
                throw;
            }
            if (!go) {
                abandon();
                throw Error(DRT_ERR_CANCELLED, "cancelled by the progress callback");
            }
        }
        return finish_rgb8();
    }

    void cancel() const noexcept { drt_sd_session_cancel(session_); }

    /** The caller-driven loop: begin() returns the number of steps, step() the steps done. */
    uint32_t begin(const drt_generate_params &params, const drt_sd_params &sd_params) {
        uint32_t total = 0;
        detail::check(drt_sd_session_begin(get(), &params, &sd_params, &total));
        detail::check(drt_sd_session_image_size(get(), &size_.width, &size_.height, &size_.batch));
        return total;
    }
    uint32_t step() {
        uint32_t done = 0;
        detail::check(drt_sd_session_step(get(), &done));
        return done;
    }
    /** The size of the generation begun. */
    ImageSize image_size() const { return size_; }
    /** The last step's prediction, decoded: a preview of the images. */
    std::vector<uint8_t> preview_rgb8() const {
        std::vector<uint8_t> out(size_.rgb_len());
        detail::check(drt_sd_session_preview_rgb8(get(), out.data(), out.size()));
        return out;
    }
    std::vector<uint8_t> finish_rgb8() {
        std::vector<uint8_t> out(size_.rgb_len());
        detail::check(drt_sd_session_finish_rgb8(get(), out.data(), out.size()));
        return out;
    }
    void abandon() noexcept { drt_sd_session_abandon(session_); }

    drt_sd_session *get() const {
        if (!session_) throw Error(DRT_ERR_INVALID_ARGUMENT, "the drt::SdSession is empty (moved from)");
        return session_;
    }

  private:
    drt_sd_session *session_ = nullptr;
    ImageSize size_;
};

/** The library's version, e.g. "0.1.0". */
inline std::string version() { return drt_version(); }

/** Throws unless the loaded library has this header's ABI. */
inline void check_abi() {
    if (drt_abi_version() != DRT_ABI_VERSION)
        throw Error(DRT_ERR_INVALID_ARGUMENT, "library ABI " + std::to_string(drt_abi_version()) + ", header ABI " +
                                                  std::to_string(DRT_ABI_VERSION));
}

} // namespace drt

#endif /* DIFFUSION_RT_HPP */
