//! Text to image from a Stable Diffusion export as optimum writes it (tests/fixtures/sd-tiny: tiny
//! random weights, made by its make.py), against optimum's ORTStableDiffusionPipeline given the same
//! latents, prompts and settings: DDIM, Euler, DPM-Solver++ 2M (default and Karras sigmas), one- and
//! four-step LCM, with and without negative prompts, on both backends.

mod common;

use std::path::PathBuf;

use common::{backends, options, rel_l2};
use diffusion_rt::backend::BackendKind;
use diffusion_rt::npy;
use diffusion_rt::schedule::SigmaSpacing;
use diffusion_rt::sd::{Images, SdOptions, StableDiffusion, TextToImage};
use diffusion_rt::{Error, GenerateParams};
use serde::Deserialize;

fn fixture() -> PathBuf {
    common::repo().join("tests/fixtures/sd-tiny")
}

#[derive(Deserialize)]
struct Case {
    scheduler: String,
    config: serde_json::Value,
    steps: u32,
    guidance: f32,
    prompts: Vec<String>,
    negative_prompts: Option<Vec<String>>,
    height: usize,
    width: usize,
    /// img2img's share of the schedule.
    strength: Option<f32>,
}

const CASES: [&str; 6] = ["ddim", "euler", "dpmpp2m", "dpmpp2m_karras", "lcm_1step", "lcm_4step"];
const FP16_CASES: [&str; 4] = ["ddim", "euler", "dpmpp2m", "lcm_1step"];

/// The request optimum's pipeline ran for `name` (with the random draws it recorded), and its images.
fn request(name: &str) -> (TextToImage, Vec<f32>) {
    let dir = fixture().join("reference");
    let case: Case =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("case")).expect("json");
    let sampler = match case.scheduler.as_str() {
        "DDIMScheduler" => "ddim",
        "EulerDiscreteScheduler" => "euler",
        "DPMSolverMultistepScheduler" => "dpmpp-2m",
        "LCMScheduler" => "lcm",
        other => panic!("unknown scheduler {other}"),
    };
    let karras = case.config.get("use_karras_sigmas").and_then(|v| v.as_bool()).unwrap_or(false);
    let latents = npy::read(&dir.join(format!("{name}_latents.npy"))).expect("latents");
    let step_noise = npy::read(&dir.join(format!("{name}_step_noise.npy"))).ok().map(|a| {
        let per = a.data.len() / a.shape[0];
        let mut draws: Vec<Vec<f32>> = a.data.chunks(per).map(<[f32]>::to_vec).collect();
        draws.push(Vec::new()); // the last step draws nothing
        draws
    });
    let encoder_noise = npy::read(&dir.join(format!("{name}_encoder_noise.npy"))).ok().map(|a| a.data);
    let images = npy::read(&dir.join(format!("{name}_images.npy"))).expect("images");
    let req = TextToImage {
        prompts: case.prompts.clone(),
        negative_prompts: case.negative_prompts.unwrap_or_default(),
        width: Some(case.width),
        height: Some(case.height),
        vae_tile: None,
        init_image: None,
        encoder_noise,
        mask_image: None,
        params: GenerateParams {
            sampler: Some(sampler.into()),
            spacing: if karras { SigmaSpacing::Karras } else { SigmaSpacing::Default },
            steps: Some(case.steps),
            guidance: Some(case.guidance),
            batch: case.prompts.len(),
            noise: Some(latents.data),
            step_noise,
            strength: case.strength,
            ..GenerateParams::default()
        },
    };
    (req, images.data)
}

/// The export in `dir` on `backend`.
fn load(dir: &str, backend: BackendKind) -> StableDiffusion {
    StableDiffusion::load(&fixture().join(dir), &options(backend), SdOptions::default()).expect("load")
}

/// Runs `req` on `sd` and holds its images within relative L2 `bound` of optimum's `want`.
fn assert_like_optimum(sd: &StableDiffusion, req: &TextToImage, want: &[f32], what: &str, bound: f64) -> Images {
    let got = sd.generate(req).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(got.pixels.len(), want.len(), "{what}");
    let d = rel_l2(&got.pixels, want);
    println!("{what}: rel L2 {d:.2e}, {} steps, {} passes", got.steps, got.nfe);
    assert!(d <= bound, "{what}: relative L2 {d:.2e} to optimum's images");
    got
}

#[test]
fn images_equal_optimums_pipeline() {
    for backend in backends() {
        let sd = load("export", backend);
        for name in CASES {
            let (req, want) = request(name);
            let got = assert_like_optimum(&sd, &req, &want, &format!("{name} on {backend:?}"), 1e-4);
            let guided = req.params.guidance.unwrap() > 1.0;
            assert_eq!(got.nfe, req.params.steps.unwrap() as usize * if guided { 2 } else { 1 }, "{name}");
        }
    }
}

/// optimum's `--dtype fp16` export: float16 inputs and outputs on every graph. drt does diffusers'
/// float16 step arithmetic on it (`sampler/half.rs`), so on ONNX Runtime DDIM, Euler and LCM give
/// optimum's images to the bit. Bit for bit is what the bound asks here: optimum's own float16
/// pipeline moves by 0.9-2.1e-4 when its input latents move by one float32 ulp (2e-7 for the
/// float32 export; benches/peer/sd_sensitivity.py), because every float16 rounding inside the UNet
/// can flip. DPM-Solver++ 2M stays 2e-4 away: diffusers takes its step coefficients from torch's
/// float32 `pow`, which is not correctly rounded, and those last bits are the ulp above. tract runs the graph in float32, where ONNX
/// Runtime rounds to float16 between some operators: 2-4e-4.
#[test]
fn float16_export_equals_optimums_pipeline() {
    for backend in backends() {
        let sd = load("export-fp16", backend);
        for name in FP16_CASES {
            let (req, want) = request(&format!("fp16_{name}"));
            let bound = match (backend, name) {
                (BackendKind::Tract, _) | (_, "dpmpp2m") => 5e-4,
                _ => 1e-4,
            };
            assert_like_optimum(&sd, &req, &want, &format!("fp16 {name} on {backend:?}"), bound);
        }
    }
}

/// The comparison above would pass for a pipeline that ignored its prompts if the images did not
/// depend on them: they do, and on the negative prompt too.
#[test]
fn prompts_and_negative_prompts_change_the_image() {
    let sd = load("export", backends()[0]);
    let (mut base, _) = request("ddim");
    // Both images start from the first image's latents.
    let noise = base.params.noise.take().expect("latents");
    base.params.noise = Some(noise[..noise.len() / 2].repeat(2));
    let run = |prompts: &[&str], negatives: &[&str]| {
        let mut r = base.clone();
        r.prompts = prompts.iter().map(|s| s.to_string()).collect();
        r.negative_prompts = negatives.iter().map(|s| s.to_string()).collect();
        sd.generate(&r).expect("generate").pixels
    };
    let a = run(&["a red cat", "a red cat"], &["", ""]);
    let b = run(&["a red cat", "a blue cat"], &["", ""]);
    let c = run(&["a red cat", "a red cat"], &["", "blurry"]);
    let half = a.len() / 2;
    // Equal up to the backend's batch-position rounding.
    assert!(rel_l2(&a[..half], &a[half..]) < 1e-5, "same prompt, same latents: same image");
    assert!(rel_l2(&a[..half], &b[..half]) < 1e-5, "the first image's request did not change");
    assert!(rel_l2(&a[half..], &b[half..]) > 1e-3, "the prompt must matter");
    assert!(rel_l2(&a[half..], &c[half..]) > 1e-3, "the negative prompt must matter");
}

#[test]
fn bad_requests_and_exports_are_clear_errors() {
    let sd = load("export", backends()[0]);
    let (base, _) = request("euler");
    let cases: Vec<(TextToImage, &str)> = vec![
        (TextToImage { width: Some(33), ..base.clone() }, "width 33"),
        (TextToImage { height: Some(100_000), ..base.clone() }, "height"),
        (TextToImage { prompts: vec!["a".into(), "b".into(), "c".into()], ..base.clone() }, "3 prompts"),
        (
            TextToImage { params: GenerateParams { guidance: Some(f32::NAN), ..base.params.clone() }, ..base.clone() },
            "guidance",
        ),
        (TextToImage { params: GenerateParams { classes: vec![1], ..base.params.clone() }, ..base.clone() }, "classes"),
        (
            TextToImage { params: GenerateParams { noise: Some(vec![0.0; 7]), ..base.params.clone() }, ..base.clone() },
            "noise",
        ),
    ];
    for (req, needle) in cases {
        let err = sd.generate(&req).err().unwrap_or_else(|| panic!("{needle}: accepted"));
        assert!(matches!(err, Error::InvalidArgument(_)), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    let tmp = common::TempDir::new("sd-bad");
    let err =
        StableDiffusion::load(tmp.path(), &options(backends()[0]), SdOptions::default()).err().expect("empty dir");
    assert!(err.to_string().contains("model_index.json"), "{err}");
}

/// The CLI on the export directory: one PNG per image, `--save-raw` as diffusers' `output_type="np"`,
/// `--save-latents` the final latents; prompts and negative prompts per image.
#[test]
fn cli_writes_images_raw_pixels_and_latents() {
    let tmp = common::TempDir::new("sd-cli");
    let reference = fixture().join("reference");
    let out = tmp.path().join("img.png");
    let (raw, latents) = (tmp.path().join("raw.npy"), tmp.path().join("latents.npy"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--backend", "tract", "--quiet", "--model"])
        .arg(fixture().join("export"))
        .args([
            "--prompt",
            "astronaut riding a horse",
            "--prompt",
            "a bowl of fruit",
            "--negative-prompt",
            "low quality",
            "--negative-prompt",
            "",
            "--sampler",
            "dpmpp-2m",
            "--steps",
            "6",
            "--guidance",
            "7.5",
            "--width",
            "32",
            "--height",
            "32",
            "--noise",
        ])
        .arg(reference.join("dpmpp2m_latents.npy"))
        .arg("--out")
        .arg(&out)
        .arg("--save-raw")
        .arg(&raw)
        .arg("--save-latents")
        .arg(&latents)
        .output()
        .expect("drt");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = npy::read(&raw).expect("raw");
    let want = npy::read(&reference.join("dpmpp2m_images.npy")).expect("reference");
    assert_eq!(got.shape, [2, 32, 32, 3]);
    assert!(rel_l2(&got.data, &want.data) <= 1e-4, "{}", rel_l2(&got.data, &want.data));
    assert_eq!(npy::read(&latents).expect("latents").shape, [2, 4, 16, 16]);
    for i in 0..2 {
        let png = tmp.path().join(format!("img-{i}.png"));
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).expect("png written")));
        let reader = decoder.read_info().expect("png");
        let info = reader.info();
        assert_eq!((info.width, info.height, info.color_type), (32, 32, png::ColorType::Rgb), "{}", png.display());
    }

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["inspect", "--backend", "tract", "--model"])
        .arg(fixture().join("export"))
        .output()
        .expect("drt");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && shown.contains("sampler     ddim") && shown.contains("sample: float32[?, 4, 16, 16]"),
        "{shown}"
    );

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--backend", "tract", "--quiet", "--prompt", "a cat", "--save-raw", "/dev/null", "--model"])
        .arg(common::model_dir("digits"))
        .output()
        .expect("drt");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Stable Diffusion exports"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Low-memory mode loads each part only while it runs and gives the same images; tiled VAE
/// decoding equals whole decoding when the tile covers the image, and stays close to it otherwise
/// (each tile's GroupNorm and attention see only the tile).
#[test]
fn low_memory_and_tiled_decoding() {
    for backend in backends() {
        let (req, _) = request("ddim");
        let sd = load("export", backend);
        let whole = sd.generate(&req).expect("generate");
        let low = StableDiffusion::load(
            &fixture().join("export"),
            &options(backend),
            SdOptions { low_memory: true, ..SdOptions::default() },
        )
        .expect("load");
        let lean = low.generate(&req).expect("low memory");
        assert!(lean.pixels == whole.pixels, "{backend:?}: low-memory mode changes nothing");

        let [_, h, w] = whole.latent_shape;
        let covering = sd.decode(&whole.latents, whole.batch, whole.latent_shape, Some(h.max(w))).expect("decode");
        assert!(covering == whole.pixels, "{backend:?}: one tile is the whole image");
        for tile in [8, 6] {
            let tiled = sd.decode(&whole.latents, whole.batch, whole.latent_shape, Some(tile)).expect("tiled");
            assert_eq!(tiled.len(), whole.pixels.len());
            let d = rel_l2(&tiled, &whole.pixels);
            println!("{backend:?}: tile {tile}: rel L2 {d:.3} to whole decoding");
            assert!(d > 0.0 && d < 0.25, "{backend:?}: tile {tile}: {d}");
            assert!(tiled.iter().all(|v| (0.0..=1.0).contains(v)));
        }
        let err = sd.decode(&whole.latents, whole.batch, whole.latent_shape, Some(0)).expect_err("tile 0");
        assert!(err.to_string().contains("tile"), "{err}");
    }
}

/// A memory budget: a generous one keeps the parts loaded and gives the unbudgeted images; one
/// below the smallest plan is refused before any work, naming the budget that plan needs, which
/// then loads; the C field and the CLI option say the same.
#[test]
fn a_memory_budget_plans_the_generation() {
    use diffusion_rt::ffi::*;
    let export = fixture().join("export");
    for backend in backends() {
        let (req, _) = request("ddim");
        let free = load("export", backend).generate(&req).expect("generate");
        let budgeted = |mb: u64| {
            StableDiffusion::load(
                &export,
                &options(backend),
                SdOptions { memory_budget_mb: Some(mb), ..SdOptions::default() },
            )
        };
        let sd = budgeted(4000).expect("load");
        let plan = sd.plan(&req).expect("plan").expect("a budget gives a plan");
        assert!(plan.resident && plan.unet_segments == 1 && plan.vae_tile.is_none(), "{plan}");
        assert!(plan.peak_bytes <= 4000 << 20, "{plan}");
        let images = sd.generate(&req).expect("generate");
        let d = rel_l2(&images.pixels, &free.pixels);
        assert!(d <= 1e-5, "{backend:?}: planned images differ by {d:e}");
        let Err(Error::OutOfMemory(msg)) = budgeted(60) else { panic!("{backend:?}: 60 MB accepted") };
        let need: u64 = msg
            .split("the smallest plan needs ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no smallest budget in: {msg}"));
        assert!(need > 60, "{msg}");
        let sd = budgeted(need).unwrap_or_else(|e| panic!("{backend:?}: the budget named, {need} MB, fails: {e}"));
        assert!(sd.plan(&req).expect("plan").is_some());
    }
    let dir = std::ffi::CString::new(export.to_str().expect("utf8")).expect("cstr");
    let mut lp = drt_sd_load_params_default();
    lp.memory_budget_mb = 60;
    let mut sd = std::ptr::null_mut();
    unsafe {
        assert_eq!(drt_sd_load(dir.as_ptr(), std::ptr::null(), &lp, &mut sd), drt_status::DRT_ERR_OUT_OF_MEMORY);
        let msg = std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().into_owned();
        assert!(msg.contains("a memory budget of 60 MB cannot be met"), "{msg}");
    }
    let drt = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt")).args(args).output().expect("drt");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let path = export.to_str().expect("utf8");
    let (ok, out, err) = drt(&["inspect", "--model", path, "--memory-budget", "4000"]);
    assert!(ok && out.contains("plan        budget 4000 MB: estimated peak"), "{out}{err}");
    let tmp = common::TempDir::new("sd-budget");
    let png = tmp.path().join("cat.png");
    let args = [
        "generate",
        "--model",
        path,
        "--prompt",
        "a cat",
        "--memory-budget",
        "60",
        "--out",
        png.to_str().expect("utf8"),
    ];
    let (ok, _, err) = drt(&args);
    assert!(!ok && err.contains("a memory budget of 60 MB cannot be met"), "{err}");
    assert!(!png.exists(), "nothing is written when the budget cannot be met");
    let digits = common::model_dir("digits");
    let npy = tmp.path().join("digit.npy");
    let args = [
        "generate",
        "--model",
        digits.to_str().expect("utf8"),
        "--memory-budget",
        "60",
        "--save-raw",
        npy.to_str().expect("utf8"),
    ];
    let (ok, _, err) = drt(&args);
    assert!(!ok && err.contains("--memory-budget are for Stable Diffusion exports"), "{err}");
}

/// c_examples/txt2img.c: the C API's RGB8 image equals the CLI's for the same prompt, steps and
/// seed; bad calls are errors with a message.
#[test]
fn c_api_generates_the_clis_image() {
    use common::c::{backend_name, build_example, run};
    let tmp = common::TempDir::new("sd-c");
    let exe = build_example("txt2img", tmp.path());
    for backend in backends() {
        let name = backend_name(backend);
        let ppm = tmp.path().join(format!("{name}.ppm"));
        run(std::process::Command::new(&exe)
            .arg(fixture().join("export"))
            .arg("a red cat")
            .arg(&ppm)
            .arg("4")
            .arg(name)
            .arg("blurry"));
        let bytes = std::fs::read(&ppm).expect("ppm written");
        let header = b"P6\n32 32\n255\n";
        assert!(bytes.starts_with(header) && bytes.len() == header.len() + 32 * 32 * 3, "{name}");

        let raw = tmp.path().join(format!("{name}.npy"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
            .args([
                "generate",
                "--quiet",
                "--backend",
                name,
                "--prompt",
                "a red cat",
                "--negative-prompt",
                "blurry",
                "--steps",
                "4",
                "--model",
            ])
            .arg(fixture().join("export"))
            .arg("--save-raw")
            .arg(&raw)
            .output()
            .expect("drt");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let cli: Vec<u8> = npy::read(&raw).expect("raw").data.iter().map(|v| (v * 255.0).round() as u8).collect();
        assert!(bytes[header.len()..] == cli[..], "{name}: the C API must give the CLI's image");
    }

    use diffusion_rt::ffi::*;
    use std::ptr::null_mut;
    unsafe {
        let dir = std::ffi::CString::new(fixture().join("export").to_str().expect("utf8")).expect("cstr");
        let mut sd = null_mut();
        assert_eq!(drt_sd_load(dir.as_ptr(), std::ptr::null(), std::ptr::null(), &mut sd), drt_status::DRT_OK);
        let mut gp = drt_generate_params_default();
        gp.steps = 2;
        let mut q = drt_sd_params_default();
        q.width = 33;
        let mut out = vec![0u8; 32 * 32 * 3];
        let message = || std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().into_owned();
        assert_eq!(
            drt_sd_generate_rgb8(sd, &gp, &q, out.as_mut_ptr(), out.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("width 33"), "{}", message());
        q.width = 0;
        assert_eq!(drt_sd_generate_rgb8(sd, &gp, &q, out.as_mut_ptr(), 100), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(message().contains("need 3072"), "{}", message());
        q.prompts_len = 2;
        assert_eq!(
            drt_sd_generate_rgb8(sd, &gp, &q, out.as_mut_ptr(), out.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("prompts is NULL"), "{}", message());
        q.prompts_len = 0;
        // A model.json start sample is not a Stable Diffusion start image.
        let init = [0.5f32; 32 * 32 * 3];
        (gp.init, gp.init_len) = (init.as_ptr(), init.len());
        assert_eq!(
            drt_sd_generate_rgb8(sd, &gp, &q, out.as_mut_ptr(), out.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("drt_sd_params.init_image"), "{}", message());
        // Lengths are required: an image pointer with no length is refused, not read on trust.
        (gp.init, gp.init_len) = (std::ptr::null(), 0);
        q.init_image = init.as_ptr();
        assert_eq!(
            drt_sd_generate_rgb8(sd, &gp, &q, out.as_mut_ptr(), out.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("init_image is set with init_image_len 0"), "{}", message());
        // Progress after every step; false cancels, and the buffer is left as it was.
        unsafe extern "C" fn count(step: u32, total: u32, user_data: *mut std::ffi::c_void) -> bool {
            let seen = &mut *(user_data as *mut Vec<(u32, u32)>);
            seen.push((step, total));
            step < 2
        }
        let mut seen: Vec<(u32, u32)> = Vec::new();
        let mut gp = drt_generate_params_default();
        gp.steps = 4;
        gp.progress = Some(count);
        gp.user_data = &mut seen as *mut Vec<(u32, u32)> as *mut std::ffi::c_void;
        let mut out = vec![7u8; 32 * 32 * 3];
        assert_eq!(
            drt_sd_generate_rgb8(sd, &gp, std::ptr::null(), out.as_mut_ptr(), out.len()),
            drt_status::DRT_ERR_CANCELLED
        );
        assert_eq!(seen, [(1, 4), (2, 4)]);
        assert!(out.iter().all(|&b| b == 7), "a cancelled generation writes nothing");
        drt_sd_free(sd);
        let mut lp = drt_sd_load_params_default();
        lp.struct_size = 6;
        assert_eq!(drt_sd_load(dir.as_ptr(), std::ptr::null(), &lp, &mut sd), drt_status::DRT_ERR_INVALID_ARGUMENT);
    }
}

/// img2img through `vae_encoder/`: optimum's ORTStableDiffusionImg2ImgPipeline on the same image,
/// prompts and random draws (the VAE posterior's sample, the noise added to the encoded image).
#[test]
fn img2img_equals_optimums_pipeline() {
    let reference = fixture().join("reference");
    let (_, _, image) = diffusion_rt::image::read_png(&reference.join("init.png")).expect("init.png");
    for backend in backends() {
        let sd = load("export", backend);
        for name in ["img2img_ddim", "img2img_euler"] {
            let (mut req, want) = request(name);
            assert!(
                req.params.strength.is_some() && req.encoder_noise.is_some(),
                "{name}: strength and posterior draws recorded"
            );
            req.init_image = Some(image.clone());
            assert_like_optimum(&sd, &req, &want, &format!("{name} on {backend:?}"), 1e-4);
        }
    }

    // The CLI reads the start image from a PNG of the request's size.
    let tmp = common::TempDir::new("sd-img2img");
    let raw = tmp.path().join("raw.npy");
    let cli = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
            .args(["generate", "--quiet", "--backend", "tract", "--prompt", "a red cat", "--steps", "4", "--model"])
            .arg(fixture().join("export"))
            .arg("--init")
            .arg(reference.join("init.png"))
            .arg("--save-raw")
            .arg(&raw)
            .args(extra)
            .output()
            .expect("drt")
    };
    let shape = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        npy::read(&raw).expect("raw").shape
    };
    assert_eq!(shape(cli(&["--strength", "0.5"])), [1, 32, 32, 3]);
    // A size of its own: the start image is resized to it (tests/resize.rs: as Pillow resizes).
    assert_eq!(shape(cli(&["--width", "64", "--height", "48"])), [1, 48, 64, 3]);

    // Without --width/--height the start image gives the size, rounded down to the VAE's factor
    // as diffusers' img2img does, here not the UNet's own (32×32).
    let odd = tmp.path().join("49x41.png");
    let pixels = (0..49 * 41 * 3).map(|i| (i * 7 % 251) as u8).collect();
    diffusion_rt::image::write_png(&odd, &diffusion_rt::image::Picture { width: 49, height: 41, channels: 3, pixels })
        .expect("png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--quiet", "--backend", "tract", "--prompt", "a red cat", "--steps", "4", "--model"])
        .arg(fixture().join("export"))
        .arg("--init")
        .arg(&odd)
        .arg("--save-raw")
        .arg(&raw)
        .output()
        .expect("drt");
    assert_eq!(shape(o), [1, 40, 48, 3]);

    // A start image as values must be the image's [height, width, 3]; the error says so.
    let latents_shaped = tmp.path().join("latents.npy");
    npy::write(&latents_shaped, &[4, 16, 16], &[0.5; 4 * 16 * 16]).expect("npy");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--quiet", "--backend", "tract", "--prompt", "a red cat", "--steps", "2", "--model"])
        .arg(fixture().join("export"))
        .arg("--init")
        .arg(&latents_shaped)
        .arg("--save-raw")
        .arg(&raw)
        .output()
        .expect("drt");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--init") && err.contains("[height, width, 3]"), "{err}");
    assert!(err.contains("here [32, 32, 3]; the file holds [4, 16, 16]"), "{err}");
    // The same values as a PNG would give, as [height, width, 3]: accepted.
    let values = tmp.path().join("values.npy");
    let (_, _, pixels) = diffusion_rt::image::read_png(&reference.join("init.png")).expect("init.png");
    npy::write(&values, &[32, 32, 3], &pixels).expect("npy");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["generate", "--quiet", "--backend", "tract", "--prompt", "a red cat", "--steps", "4", "--model"])
        .arg(fixture().join("export"))
        .arg("--init")
        .arg(&values)
        .arg("--save-raw")
        .arg(&raw)
        .output()
        .expect("drt");
    assert_eq!(shape(o), [1, 32, 32, 3]);
}

/// Inpainting by latent blending (a 4-channel UNet) and through a 9-channel inpainting UNet:
/// optimum's ORTStableDiffusionInpaintPipeline on the same image, mask, prompts and random draws.
#[test]
fn inpainting_equals_optimums_pipeline() {
    let reference = fixture().join("reference");
    let (_, _, image) = diffusion_rt::image::read_png(&reference.join("init.png")).expect("init.png");
    let (_, _, mask_rgb) = diffusion_rt::image::read_png(&reference.join("mask.png")).expect("mask.png");
    let mask: Vec<f32> = mask_rgb.chunks(3).map(|c| c[0]).collect();
    for backend in backends() {
        let (sd, nine) = (load("export", backend), load("export-inpaint", backend));
        for (export, names) in
            [(&sd, ["inpaint_ddim", "inpaint_dpmpp2m"]), (&nine, ["inpaint9_ddim", "inpaint9_dpmpp2m"])]
        {
            for name in names {
                let (mut req, want) = request(name);
                assert!(req.encoder_noise.is_some(), "{name}: posterior draws recorded");
                req.init_image = Some(image.clone());
                req.mask_image = Some(mask.clone());
                assert_like_optimum(export, &req, &want, &format!("{name} on {backend:?}"), 1e-4);
            }
        }
        let (plain, _) = request("ddim");
        assert!(nine.generate(&plain).expect_err("no mask").to_string().contains("inpainting UNet"));

        let (mut req, _) = request("inpaint_ddim");
        req.mask_image = Some(mask.clone());
        assert!(sd.generate(&req).expect_err("mask without image").to_string().contains("init image"));
        req.init_image = Some(image.clone());
        req.mask_image = Some(vec![1.0; 5]);
        assert!(sd.generate(&req).expect_err("short mask").to_string().contains("mask has 5 values"));
    }

    // The CLI: the UNet's size unless told, as diffusers' inpainting pipeline; image and mask are
    // resized to a size of its own.
    let tmp = common::TempDir::new("sd-inpaint");
    let raw = tmp.path().join("raw.npy");
    for (extra, want) in [(&[][..], [1, 32, 32, 3]), (&["--width", "48", "--height", "40"][..], [1, 40, 48, 3])] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
            .args(["generate", "--quiet", "--backend", "tract", "--prompt", "a red cat", "--steps", "3", "--model"])
            .arg(fixture().join("export"))
            .arg("--init")
            .arg(reference.join("init.png"))
            .arg("--mask")
            .arg(reference.join("mask.png"))
            .arg("--save-raw")
            .arg(&raw)
            .args(extra)
            .output()
            .expect("drt");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(npy::read(&raw).expect("raw").shape, want);
    }
}

/// The caller-driven session (begin, step, preview, finish) gives the images a whole generation
/// gives, bit for bit, for text to image and img2img; a cancel from another thread stops it at the
/// next step.
#[test]
fn a_session_steps_to_the_images_generate_makes() {
    use diffusion_rt::sd::SdSession;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let reference = fixture().join("reference");
    let (_, _, image) = diffusion_rt::image::read_png(&reference.join("init.png")).expect("init.png");
    for backend in backends() {
        let sd = Arc::new(load("export", backend));
        let mut session = SdSession::new(Arc::clone(&sd));
        let (plain, _) = request("dpmpp2m");
        let (mut img2img, _) = request("img2img_euler");
        img2img.init_image = Some(image.clone());
        for (name, req) in [("dpmpp2m", &plain), ("img2img_euler", &img2img)] {
            let whole = sd.generate(req).expect("generate");
            let total = session.begin(req).expect("begin");
            assert_eq!(total, whole.steps, "{name}");
            assert!(session.preview().is_err(), "no preview before the first step");
            let mut previews = Vec::new();
            for k in 1..=total {
                assert_eq!(session.step().expect("step"), k);
                assert_eq!(session.current_latents().map(<[f32]>::len), Some(whole.latents.len()));
                previews.push(session.preview().expect("preview"));
            }
            assert!(session.step().is_err(), "no step past the last");
            let stepped = session.finish().expect("finish");
            assert!(stepped.pixels == whole.pixels && stepped.latents == whole.latents, "{name} on {backend:?}");
            // The previews converge on the image: the last step predicts the result.
            let (first, last) = (rel_l2(&previews[0], &whole.pixels), rel_l2(&previews[total - 1], &whole.pixels));
            assert!(last < 1e-3 && first > last, "{name}: previews {first:.2e} .. {last:.2e} from the image");
        }

        // A cancel asked for between steps, from another thread, ends the run at the next step.
        session.begin(&plain).expect("begin");
        session.step().expect("step");
        let flag = session.cancel_flag();
        std::thread::spawn(move || flag.store(true, Ordering::SeqCst)).join().expect("thread");
        match session.step() {
            Err(Error::Cancelled { step: 1 }) => {}
            other => panic!("expected a cancel at step 1: {other:?}"),
        }
        assert!(session.finish().is_err(), "a cancelled generation is over");
        assert!(session.generate(&plain, &mut |_, _| true).is_ok(), "the next generation clears the cancel");
    }
}

/// The C session: stepped with previews, its images are drt_sd_generate_rgb8's; the latents and
/// a preview are read between steps; drt_sd_session_cancel from another thread, handed over
/// inside the progress callback, cancels the whole-generation call at the next step.
#[test]
fn c_sd_session_steps_previews_and_cancels() {
    use diffusion_rt::ffi::*;
    use std::ffi::c_void;
    use std::ptr::{null, null_mut};
    unsafe {
        let dir = std::ffi::CString::new(fixture().join("export").to_str().expect("utf8")).expect("cstr");
        let message = || std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().into_owned();
        let mut sd = null_mut();
        assert_eq!(drt_sd_load(dir.as_ptr(), null(), null(), &mut sd), drt_status::DRT_OK, "{}", message());
        let prompt = c"a red cat";
        let prompts = [prompt.as_ptr()];
        let mut q = drt_sd_params_default();
        (q.prompts, q.prompts_len) = (prompts.as_ptr(), 1);
        let mut gp = drt_generate_params_default();
        gp.steps = 3;
        let mut whole = vec![0u8; 32 * 32 * 3];
        assert_eq!(drt_sd_generate_rgb8(sd, &gp, &q, whole.as_mut_ptr(), whole.len()), drt_status::DRT_OK);

        let mut s = null_mut();
        assert_eq!(drt_sd_session_create(sd, &mut s), drt_status::DRT_OK);
        // The session keeps the export alive.
        drt_sd_free(sd);
        let mut preview = vec![0u8; whole.len()];
        assert_eq!(
            drt_sd_session_preview_rgb8(s, preview.as_mut_ptr(), preview.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("drt_sd_session_begin"), "{}", message());
        let mut total = 0;
        assert_eq!(drt_sd_session_begin(s, &gp, &q, &mut total), drt_status::DRT_OK, "{}", message());
        assert_eq!(total, 3);
        let mut latents = vec![0f32; 4 * 16 * 16]; // the tiny VAE's factor is 2
        assert_eq!(
            drt_sd_session_read(s, DRT_READ_PREDICTION, latents.as_mut_ptr(), latents.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        assert!(message().contains("before the first step"), "{}", message());
        assert_eq!(
            drt_sd_session_read(s, 2, latents.as_mut_ptr(), latents.len()),
            drt_status::DRT_ERR_INVALID_ARGUMENT
        );
        let mut done = 0;
        for k in 1..=3 {
            assert_eq!(drt_sd_session_step(s, &mut done), drt_status::DRT_OK, "{}", message());
            assert_eq!(done, k);
            assert_eq!(
                drt_sd_session_read(s, DRT_READ_SAMPLE, latents.as_mut_ptr(), latents.len()),
                drt_status::DRT_OK
            );
            assert!(latents.iter().all(|v| v.is_finite()));
            assert_eq!(drt_sd_session_preview_rgb8(s, preview.as_mut_ptr(), 10), drt_status::DRT_ERR_INVALID_ARGUMENT);
            assert!(message().contains("need 3072"), "{}", message());
            assert_eq!(drt_sd_session_preview_rgb8(s, preview.as_mut_ptr(), preview.len()), drt_status::DRT_OK);
        }
        let bytes = |v: &[u8]| v.iter().map(|&b| f32::from(b)).collect::<Vec<_>>();
        assert!(rel_l2(&bytes(&preview), &bytes(&whole)) < 1e-2, "the last step's preview is about the image");
        let mut stepped = vec![0u8; whole.len()];
        assert_eq!(drt_sd_session_finish_rgb8(s, stepped.as_mut_ptr(), stepped.len()), drt_status::DRT_OK);
        assert_eq!(stepped, whole, "the stepped images are the whole generation's");
        assert_eq!(drt_sd_session_step(s, &mut done), drt_status::DRT_ERR_INVALID_ARGUMENT);

        // The handshake: at step 1 the callback hands the session to another thread, which cancels
        // it; the callback returns true once the cancel is in, and the next step is not taken.
        struct Handoff {
            session: *const drt_sd_session,
            steps: Vec<u32>,
        }
        unsafe extern "C" fn cancel_from_a_thread(step: u32, _total: u32, user_data: *mut c_void) -> bool {
            let h = &mut *(user_data as *mut Handoff);
            h.steps.push(step);
            if step == 1 {
                let s = h.session as usize;
                std::thread::spawn(move || drt_sd_session_cancel(s as *const drt_sd_session)).join().expect("thread");
            }
            true
        }
        let mut h = Handoff { session: s, steps: Vec::new() };
        gp.progress = Some(cancel_from_a_thread);
        gp.user_data = &mut h as *mut Handoff as *mut c_void;
        let mut out = vec![7u8; whole.len()];
        assert_eq!(
            drt_sd_session_generate_rgb8(s, &gp, &q, out.as_mut_ptr(), out.len()),
            drt_status::DRT_ERR_CANCELLED
        );
        assert_eq!(h.steps, [1]);
        assert!(out.iter().all(|&b| b == 7), "a cancelled generation writes nothing");
        gp.progress = None;
        assert_eq!(drt_sd_session_generate_rgb8(s, &gp, &q, out.as_mut_ptr(), out.len()), drt_status::DRT_OK);
        assert_eq!(out, whole, "the next generation clears the cancel");
        drt_sd_session_free(s);
    }
}

/// The C++ API's session (c_examples/sd_preview.cpp): stepped with previews, the images of one
/// whole call; a cancel from another thread.
#[test]
fn cpp_sd_session_example_runs() {
    use common::c::{backend_name, build_example, run};
    let tmp = common::TempDir::new("sd-cpp");
    let exe = build_example("sd_preview", tmp.path());
    for backend in backends() {
        let o = run(std::process::Command::new(&exe).arg(fixture().join("export")).arg("a red cat").args([
            "3",
            backend_name(backend),
            "1",
        ]));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("3 steps, 3 previews, 32x32: the stepped images are the whole call's"), "{out}");
        assert!(out.contains("cancelled: DRT_ERR_CANCELLED"), "{out}");
    }
}

/// Start images and masks as apps hold them (8-bit grey, RGB or RGBA, any size) are converted and
/// resized by the library for every entry point: RGBA pixels give the RGB image's result, and with
/// no size asked for, the images take the start image's, rounded down to the VAE's factor.
#[test]
fn start_images_and_masks_from_pixels() {
    use diffusion_rt::ffi::*;
    use diffusion_rt::sd::image_input::Pixels;
    let reference = fixture().join("reference");
    let (w, h, c, rgb) = diffusion_rt::image::read_png_u8(&reference.join("init.png")).expect("init.png");
    let (mw, mh, mc, mask) = diffusion_rt::image::read_png_u8(&reference.join("mask.png")).expect("mask.png");
    assert_eq!(c, 3);
    let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 200]).collect();
    let sd = load("export", BackendKind::Tract);
    let (_, _, values) = diffusion_rt::image::read_png(&reference.join("init.png")).expect("init.png");
    let (_, _, mask_rgb) = diffusion_rt::image::read_png(&reference.join("mask.png")).expect("mask.png");
    let mask_values: Vec<f32> = mask_rgb.chunks(3).map(|c| c[0]).collect();
    let (mut by_values, _) = request("inpaint_ddim");
    (by_values.init_image, by_values.mask_image) = (Some(values), Some(mask_values));
    let (mut by_pixels, _) = request("inpaint_ddim");
    let start = Pixels { width: w, height: h, channels: 4, data: &rgba };
    let m = Pixels { width: mw, height: mh, channels: mc, data: &mask };
    sd.set_images(&mut by_pixels, Some(start), Some(m)).expect("pixels");
    assert_eq!(by_pixels.init_image, by_values.init_image);
    assert_eq!(by_pixels.mask_image, by_values.mask_image);
    let e = sd.set_images(&mut by_pixels, Some(start), None).expect_err("both");
    assert!(e.to_string().contains("both as values and as pixels"), "{e}");

    // Through C: the size of a 49×41 start image with none asked for.
    let odd: Vec<u8> = (0..49 * 41).map(|i| (i * 7 % 251) as u8).collect();
    unsafe {
        let dir = std::ffi::CString::new(fixture().join("export").to_str().expect("utf8")).expect("cstr");
        let mut sd = std::ptr::null_mut();
        assert_eq!(drt_sd_load(dir.as_ptr(), std::ptr::null(), std::ptr::null(), &mut sd), drt_status::DRT_OK);
        let mut q = drt_sd_params_default();
        q.start_image =
            drt_image { pixels: odd.as_ptr(), pixels_len: odd.len(), width: 49, height: 41, channels: 1, reserved: 0 };
        let (mut width, mut height, mut batch) = (0, 0, 0);
        let status = drt_sd_image_size(sd, std::ptr::null(), &q, &mut width, &mut height, &mut batch);
        assert_eq!(status, drt_status::DRT_OK);
        assert_eq!((width, height, batch), (48, 40, 1));
        q.start_image.channels = 2;
        q.start_image.pixels_len = 49 * 41 * 2;
        let status = drt_sd_image_size(sd, std::ptr::null(), &q, &mut width, &mut height, &mut batch);
        assert_eq!(status, drt_status::DRT_ERR_INVALID_ARGUMENT);
        let msg = std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().into_owned();
        assert!(msg.contains("the start image: 2 channels"), "{msg}");
        drt_sd_free(sd);
    }
}

/// The CLI on an export: the summary names the backend and counts in words, `inspect` lists the
/// VAE encoder, and a memory budget of 0 is refused.
#[test]
fn sd_cli_summary_inspect_and_a_zero_budget() {
    let tmp = common::TempDir::new("sd-cli-words");
    let raw = tmp.path().join("raw.npy");
    let drt = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_drt"))
            .args(args)
            .arg("--model")
            .arg(fixture().join("export"))
            .args(["--backend", "tract"])
            .output()
            .expect("drt")
    };
    let o = drt(&[
        "generate",
        "--prompt",
        "a red cat",
        "--steps",
        "1",
        "--guidance",
        "0",
        "--save-raw",
        raw.to_str().expect("utf8"),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("1 image of 32×32 with")
            && err.contains("(1 step, no guidance, 1 UNet pass per image) on tract [cpu]"),
        "{err}"
    );
    let o = drt(&["inspect"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("vae_encoder") && text.contains("vae_decoder"), "{text}");
    let o =
        drt(&["generate", "--prompt", "a red cat", "--memory-budget", "0", "--save-raw", raw.to_str().expect("utf8")]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("a memory budget of 0 MB cannot be met"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
