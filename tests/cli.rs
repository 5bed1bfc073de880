//! The `drt` binary as a user runs it: files really written, errors really reported.

mod common;

use std::process::Command;

use common::{model_dir, TempDir};
use diffusion_rt::backend::ort_lib::{self, Location};

fn drt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drt")).args(args).output().expect("run drt")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generate_writes_a_png_grid_and_raw_samples() {
    let tmp = TempDir::new("cli");
    let png = tmp.path().join("digits.png");
    let raw = tmp.path().join("digits.npy");
    let model = model_dir("digits");
    let o = drt(&[
        "generate",
        "--model",
        model.to_str().expect("utf8"),
        "--backend",
        "tract",
        "--class",
        "0,1,2,3,4,5,6,7,8,9",
        "--steps",
        "10",
        "--out",
        png.to_str().expect("utf8"),
        "--save-raw",
        raw.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("10 × digits with dpmpp-2m (10 steps"), "summary line: {}", stderr(&o));

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).expect("png written")));
    let mut reader = decoder.read_info().expect("valid PNG");
    let info = reader.info();
    assert_eq!((info.width, info.height), (10 * 17 - 1, 16), "ten 16×16 tiles with 1-pixel gaps");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    reader.next_frame(&mut buf).expect("pixels");
    assert!(buf.iter().any(|&p| p > 200) && buf.iter().any(|&p| p < 50), "white strokes on black");

    let arr = diffusion_rt::npy::read(&raw).expect("npy written");
    assert_eq!(arr.shape, vec![10, 1, 16, 16]);

    // --noise replays the initial noise: feeding the seeded run's noise back gives the same samples.
    let noise = tmp.path().join("noise.npy");
    let mut unit = vec![0f32; 2 * 256];
    diffusion_rt::rng::PhiloxNoise::new(0).initial(&mut unit);
    diffusion_rt::npy::write(&noise, &[2, 1, 16, 16], &unit).expect("write noise");
    let run = |extra: &[&str], out: &std::path::Path| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().expect("utf8"),
            "--backend",
            "tract",
            "--class",
            "3,4",
            "--steps",
            "5",
            "--quiet",
            "--save-raw",
            out.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let o = drt(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(o.stderr.is_empty(), "--quiet prints nothing: {}", stderr(&o));
        diffusion_rt::npy::read(out).expect("raw").data
    };
    let seeded = run(&["--seed", "0"], &tmp.path().join("a.npy"));
    let replayed = run(&["--noise", noise.to_str().expect("utf8"), "--seed", "999"], &tmp.path().join("b.npy"));
    assert_eq!(seeded, replayed);
}

#[test]
fn inspect_shows_the_graph() {
    let model = model_dir("digits");
    let o = drt(&["inspect", "--model", model.to_str().expect("utf8"), "--backend", "tract"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "sample: float32[?, 1, 16, 16]",
        "timestep: float32[?]",
        "class_labels: int64[?]",
        "out_sample",
        "tract",
        "prediction  epsilon",
        "discrete, 1000 train timesteps, linear betas 0.0001 to 0.02",
        "defaults    dpmpp-2m, 10 steps, guidance 1.5 where σ is in [0, 5]",
    ] {
        assert!(out.contains(needle), "inspect output lacks `{needle}`:\n{out}");
    }
    for debug in ["Some(", "None", "Discrete(", "{", "\""] {
        assert!(!out.contains(debug), "inspect prints Rust debug output (`{debug}`):\n{out}");
    }

    let o = drt(&["inspect", "--model", model.to_str().expect("utf8"), "--backend", "tract", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(j["manifest"]["name"], "digits");
    assert_eq!(
        j["defaults"],
        serde_json::json!({"sampler": "dpmpp-2m", "steps": 10, "guidance": 1.5,
        "guidance_interval": [0.0, 5.0], "sigmas": null})
    );
    assert_eq!(j["inputs"][0], serde_json::json!({"name": "sample", "dtype": "float32", "shape": [null, 1, 16, 16]}));

    let sd = common::repo().join("tests/fixtures/sd-tiny/export");
    let o = drt(&["inspect", "--model", sd.to_str().expect("utf8"), "--backend", "tract"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("scaled_linear betas 0.00085 to 0.012, leading spacing"), "{out}");
    assert!(!out.contains('{') && !out.contains("Default"), "{out}");
    let o = drt(&["inspect", "--model", sd.to_str().expect("utf8"), "--backend", "tract", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!((j["kind"].as_str(), j["sampler"].as_str()), (Some("stable-diffusion"), Some("ddim")));
    assert_eq!(j["parts"]["unet"]["inputs"][0]["name"], "sample");
}

/// The README's model.json is the shipped one, so pasting it next to the shipped graph works.
#[test]
fn the_readme_shows_the_shipped_manifest() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README");
    let marker = "The shipped\n`models/digits/model.json`:\n\n```json\n";
    let start = readme.find(marker).expect("the README introduces the shipped manifest") + marker.len();
    let block = &readme[start..start + readme[start..].find("```").expect("block ends")];
    let shipped = std::fs::read_to_string(model_dir("digits").join("model.json")).expect("model.json");
    assert_eq!(block, shipped, "README's block and models/digits/model.json differ");
}

/// Output paths are checked before the model is even loaded: a typo costs no generation.
#[test]
fn bad_output_paths_are_refused_before_any_work() {
    for (out, needle) in
        [("x.jpg", "give a name ending in .png"), ("/no/such/dir/x.png", "/no/such/dir does not exist")]
    {
        let o = drt(&["generate", "--model", "/no/such/model", "--out", out]);
        let e = stderr(&o);
        assert!(!o.status.success() && e.contains(needle) && !e.contains("/no/such/model"), "{out}: {e}");
    }
    let o = drt(&["bench", "--model", "/no/such/model", "--json", "/no/such/dir/r.json"]);
    assert!(stderr(&o).contains("/no/such/dir does not exist"), "{}", stderr(&o));
}

#[test]
fn errors_exit_nonzero_with_a_message() {
    let tmp = TempDir::new("cli-err");
    let model = model_dir("digits");
    let m = model.to_str().expect("utf8");
    let out = tmp.path().join("x.png");
    let o = out.to_str().expect("utf8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "--model", "/no/such/model", "--out", o], "/no/such/model"),
        (
            vec!["generate", "--model", m, "--backend", "tract", "--sampler", "nope", "--out", o],
            "unknown sampler 'nope'",
        ),
        (vec!["generate", "--model", m, "--backend", "tract", "--class", "12", "--out", o], "class 12 is out of range"),
        (vec!["generate", "--model", m, "--backend", "tract", "--cond", "x", "--out", o], "NAME=VALUE"),
        (vec!["generate", "--model", m, "--backend", "tract", "--schedule", "cosine", "--out", o], "cosine"),
        (vec!["generate", "--model", m, "--backend", "tract"], "nothing to write"),
        (vec!["generate", "--model", m, "--backend", "gpu", "--out", o], "unknown backend"),
        (
            vec!["generate", "--model", m, "--backend", "tract", "--steps", "2", "--out", "/no/such/dir/x.png"],
            "/no/such/dir/x.png",
        ),
        (vec!["generate", "--model", m, "--backend", "tract", "--noise", "/no/noise.npy", "--out", o], "/no/noise.npy"),
        (
            vec!["generate", "--model", m, "--backend", "ort", "--ort-lib", "/no/libonnxruntime.so", "--out", o],
            "install-onnxruntime.sh",
        ),
    ];
    for (args, needle) in cases {
        let r = drt(&args);
        assert!(!r.status.success(), "{args:?} should fail");
        let e = stderr(&r);
        assert!(e.starts_with("error: ") && e.contains(needle), "{args:?}: `{e}` should mention `{needle}`");
        assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
    }
}

/// `--dump-inputs` records what the network was fed on every call, with the graph's names and
/// dtypes: guided calls carry the batch twice (conditional, then the null class) at the timesteps
/// the sampler walks.
#[test]
fn dump_inputs_records_every_network_call() {
    let tmp = TempDir::new("dump");
    let dump = tmp.path().join("inputs");
    let raw = tmp.path().join("x.npy");
    let model = model_dir("digits");
    let o = drt(&[
        "generate",
        "--model",
        model.to_str().expect("utf8"),
        "--backend",
        "tract",
        "--class",
        "4,2",
        "--steps",
        "3",
        "--sampler",
        "ddim",
        "--guidance",
        "2",
        "--save-raw",
        raw.to_str().expect("utf8"),
        "--dump-inputs",
        dump.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(&dump)
        .expect("dump dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "three calls of three inputs: {names:?}");
    let read = |f: &str| std::fs::read(dump.join(f)).expect(f);
    let mut timesteps = Vec::new();
    for call in 0..3 {
        let bytes = read(&format!("{call:05}_sample.npy"));
        assert_eq!(npyz::NpyFile::new(&bytes[..]).expect("npy").shape(), &[4, 1, 16, 16]);
        let t: Vec<f32> =
            npyz::NpyFile::new(&read(&format!("{call:05}_timestep.npy"))[..]).expect("npy").into_vec().expect("f32");
        let labels: Vec<i64> = npyz::NpyFile::new(&read(&format!("{call:05}_class_labels.npy"))[..])
            .expect("npy")
            .into_vec()
            .expect("i64");
        assert_eq!(labels, [4, 2, 10, 10]);
        assert!(t.iter().all(|&v| v == t[0]));
        timesteps.push(t[0]);
    }
    // DDIM, 3 steps, diffusers' default `leading` spacing with steps_offset 0: 666, 333, 0.
    assert_eq!(timesteps, [666.0, 333.0, 0.0]);
}

/// `--ort-lib` with a bare file name is found by the system loader's search (as on Android, where the
/// app's libraries have no path), not in the working directory; without the search path it is a
/// clear error naming the name.
#[test]
fn a_bare_ort_library_name_is_searched_for_by_the_system_loader() {
    let Ok(Location::Path(lib)) = ort_lib::find(None) else {
        assert!(std::env::var_os("DRT_REQUIRE_ORT").is_none(), "DRT_REQUIRE_ORT is set but ONNX Runtime is missing");
        return;
    };
    let (dir, name) = (lib.parent().expect("folder"), lib.file_name().and_then(|n| n.to_str()).expect("name"));
    let tmp = TempDir::new("bare-ort");
    let model = model_dir("digits");
    let run = |search: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drt"));
        cmd.current_dir(tmp.path())
            .env_remove("DRT_ORT_LIB")
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("LD_LIBRARY_PATH");
        if let Some(dir) = search {
            cmd.env("LD_LIBRARY_PATH", dir);
        }
        cmd.args(["generate", "--model", model.to_str().expect("utf8"), "--backend", "ort", "--ort-lib", name])
            .args(["--steps", "2", "--quiet", "--save-raw", "out.npy"])
            .output()
            .expect("run drt")
    };
    let o = run(Some(dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(tmp.path().join("out.npy").is_file());
    let o = run(None);
    assert!(!o.status.success());
    let msg = stderr(&o);
    assert!(msg.contains("cannot load ONNX Runtime") && msg.matches(name).count() == 1, "{msg}");
}

/// A library planted where the working directory's `.ort/lib/` would be (what the install script
/// makes inside a checkout) is never loaded: with no --ort-lib, DRT_ORT_LIB or ORT_DYLIB_PATH the
/// runtime asks the system loader for the bare name only. The planted library announces a load by
/// writing a file from its constructor.
#[test]
fn a_library_planted_in_the_working_directory_is_not_loaded() {
    let tmp = TempDir::new("planted-ort");
    let lib_dir = tmp.path().join(".ort/lib");
    std::fs::create_dir_all(&lib_dir).expect("mkdir");
    let marker = tmp.path().join("loaded");
    let src = tmp.path().join("planted.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {{\n\
             FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            marker.display()
        ),
    )
    .expect("write source");
    let so = lib_dir.join(ort_lib::default_name());
    let cc = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&so).arg(&src).output().expect("run cc");
    assert!(cc.status.success(), "{}", stderr(&cc));
    let model = model_dir("digits");
    for backend in ["ort", "auto"] {
        let o = Command::new(env!("CARGO_BIN_EXE_drt"))
            .current_dir(tmp.path())
            .env_remove("DRT_ORT_LIB")
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .args(["generate", "--model", model.to_str().expect("utf8"), "--backend", backend])
            .args(["--steps", "2", "--quiet", "--save-raw", "out.npy"])
            .output()
            .expect("run drt");
        assert!(!marker.exists(), "--backend {backend} loaded the planted library: {}", stderr(&o));
        if backend == "ort" {
            let msg = stderr(&o);
            assert!(
                !o.status.success() && msg.contains("cannot load ONNX Runtime: failed to load from `libonnxruntime"),
                "{msg}"
            );
        } else {
            assert!(o.status.success(), "auto falls back to tract: {}", stderr(&o));
        }
    }
}

/// What a newcomer ran into, answered: a manifest file given as --model, negative numbers, bad
/// output names, a tensor model drawn as a PNG, argument errors before "nothing to write", a
/// typo in the manifest's sampler, a --threads tract ignores, a reader that closes the pipe.
#[test]
fn first_mistakes_get_clear_answers() {
    let tmp = TempDir::new("newcomer");
    let digits = model_dir("digits");
    let m = digits.to_str().expect("utf8");
    let manifest = digits.join("model.json");
    let raw = tmp.path().join("x.npy");
    let r = raw.to_str().expect("utf8");
    let policy = model_dir("point-policy");
    let wrong_sampler = tmp.path().join("typo");
    std::fs::create_dir(&wrong_sampler).expect("mkdir");
    std::fs::copy(digits.join("denoiser.onnx"), wrong_sampler.join("denoiser.onnx")).expect("copy");
    let text = std::fs::read_to_string(&manifest).expect("manifest").replace("\"dpmpp-2m\"", "\"dpmpp2m\"");
    std::fs::write(wrong_sampler.join("model.json"), text).expect("write");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--guidance", "-1", "--save-raw", r], "guidance must be a finite number in [0, 100], got -1".into()),
        (vec!["--class", "-1"], "class -1 is out of range".into()),
        (vec!["--class", "11"], "class 11 is out of range".into()),
        (vec!["--save-raw", "x.png"], "give a name ending in .npy".into()),
        (vec!["--save-raw", r, "--out", r], "give a name ending in .png".into()),
        (vec!["--memory-limit", "0", "--save-raw", r], "--memory-limit must be at least 1 MiB".into()),
        (vec!["--model", tmp.path().to_str().expect("utf8"), "--save-raw", r], "holds neither model.json".into()),
        (
            vec!["--model", wrong_sampler.to_str().expect("utf8"), "--save-raw", r],
            format!(
                "{}: key `defaults.sampler`: unknown sampler 'dpmpp2m'",
                wrong_sampler.join("model.json").display()
            ),
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["generate", "--backend", "tract"];
        if !extra.contains(&"--model") {
            args.extend(["--model", m]);
        }
        args.extend(&extra);
        let o = drt(&args);
        let e = stderr(&o);
        assert!(!o.status.success() && e.contains(&needle), "{args:?}: `{e}` should mention `{needle}`");
    }
    let same = tmp.path().join("same.npy");
    let same = same.to_str().expect("utf8");
    let o = drt(&["generate", "--model", m, "--backend", "tract", "--save-raw", same, "--save-latents", same]);
    assert!(stderr(&o).contains("--save-raw and --save-latents name the same file"), "{}", stderr(&o));
    let png = tmp.path().join("trajectory.png");
    let obs = tmp.path().join("obs.npy");
    diffusion_rt::npy::write(&obs, &[2], &[0.1, -0.2]).expect("obs");
    let tensor = format!("obs={}", obs.display());
    let args = ["generate", "--model", policy.to_str().expect("utf8"), "--backend", "tract", "--tensor", &tensor];
    let o = drt(&[&args[..], &["--out", png.to_str().expect("utf8")]].concat());
    assert!(stderr(&o).contains("--out draws images") && !png.exists(), "{}", stderr(&o));

    // The manifest file names its directory; a summary counts in words; tract says it ignores --threads.
    let args = ["generate", "--model", manifest.to_str().expect("utf8"), "--backend", "tract", "--class", "3"];
    let o = drt(&[&args[..], &["--steps", "1", "--threads", "2", "--save-raw", r]].concat());
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("warning: --threads is ignored on tract")
            && e.contains("(1 step, guidance 1.5, 1 network pass per sample)"),
        "{e}"
    );

    // A reader that stops early ends the output quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_drt"))
        .args(["inspect", "--model", m, "--backend", "tract", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success() && !stderr(&o).contains("panicked"), "{}", stderr(&o));

    let regression = model_dir("point-policy-regression");
    let o = drt(&["policy-eval", "--model", regression.to_str().expect("utf8"), "--episodes", "1"]);
    assert!(stderr(&o).contains("has no task.json: give the task with --task FILE"), "{}", stderr(&o));
    let o = drt(&["policy-eval", "--model", policy.to_str().expect("utf8"), "--warm-start", "0", "--episodes", "1"]);
    assert!(stderr(&o).contains("warm start must be a fraction of the schedule in (0, 1], got 0"), "{}", stderr(&o));
}

/// Splits a shell command line on spaces, keeping double- and single-quoted words whole.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, any) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (_, c) => (word, any) = (word + &c.to_string(), true),
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// Every `drt` command the README and docs/ show in a shell block parses: each subcommand and flag
/// exists and takes the values shown (clap checks them before `--help` prints).
#[test]
fn every_drt_command_in_the_docs_parses() {
    let repo = common::repo();
    let mut files = vec![repo.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(repo.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for block in text.split("```sh\n").skip(1).filter_map(|b| b.split("```").next()) {
            let block = block.replace("\\\n", " ");
            for line in block.lines() {
                let line = line.split(" #").next().unwrap_or("").trim();
                let Some(rest) =
                    ["drt ", "./drt ", "cargo run --release -- "].iter().find_map(|p| line.strip_prefix(p))
                else {
                    continue;
                };
                // What follows a pipe or `&&` is another program's.
                let rest = rest.split(['|', '&']).next().unwrap_or("");
                let mut args = shell_words(rest);
                args.push("--help".into());
                let o = Command::new(env!("CARGO_BIN_EXE_drt")).args(&args).output().expect("run drt");
                assert!(o.status.success(), "{}: `drt {rest}` does not parse: {}", file.display(), stderr(&o));
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} drt commands found in the README and docs/");
}
