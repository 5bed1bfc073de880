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
    let mut mp = drt_model_params_default();
    mp.memory_budget_mb = 60;
    let mut sd = std::ptr::null_mut();
    unsafe {
        assert_eq!(drt_sd_load(dir.as_ptr(), &mp, 0, &mut sd), drt_status::DRT_ERR_OUT_OF_MEMORY);
        let msg = std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().into_owned();
        assert!(msg.contains("a memory budget of 60 MB cannot be met"), "{msg}");
        let digits = std::ffi::CString::new(common::model_dir("digits").to_str().expect("utf8")).expect("cstr");
        let mut model = std::ptr::null_mut();
        assert_eq!(drt_model_load(digits.as_ptr(), &mp, &mut model), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(model.is_null());
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
        assert_eq!(drt_sd_load(dir.as_ptr(), std::ptr::null(), 0, &mut sd), drt_status::DRT_OK);
        let mut gp = drt_generate_params_default();
        gp.steps = 2;
        gp.width = 33;
        let mut out = vec![0u8; 32 * 32 * 3];
        assert_eq!(drt_sd_generate_rgb8(sd, &gp, out.as_mut_ptr(), out.len()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().contains("width 33"));
        gp.width = 0;
        assert_eq!(drt_sd_generate_rgb8(sd, &gp, out.as_mut_ptr(), 100), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().contains("need 3072"));
        gp.prompts_len = 2;
        assert_eq!(drt_sd_generate_rgb8(sd, &gp, out.as_mut_ptr(), out.len()), drt_status::DRT_ERR_INVALID_ARGUMENT);
        assert!(std::ffi::CStr::from_ptr(drt_last_error()).to_string_lossy().contains("prompts is NULL"));
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
        assert_eq!(drt_sd_generate_rgb8(sd, &gp, out.as_mut_ptr(), out.len()), drt_status::DRT_ERR_CANCELLED);
        assert_eq!(seen, [(1, 4), (2, 4)]);
        assert!(out.iter().all(|&b| b == 7), "a cancelled generation writes nothing");
        drt_sd_free(sd);
        assert_eq!(drt_sd_load(dir.as_ptr(), std::ptr::null(), 4, &mut sd), drt_status::DRT_ERR_INVALID_ARGUMENT);
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
