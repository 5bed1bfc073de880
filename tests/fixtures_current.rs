//! Fixtures made by Python scripts that CI cannot run (they need torch, diffusers, optimum) record
//! what they wrote in generated.json: the script's own sha256 and every file's. The committed files
//! must be exactly those, and the script the one that made them; a changed script or a hand-edited
//! fixture fails here until the script is run again.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

fn sha(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "__pycache__") {
                files_under(root, &path, out);
            }
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_string_lossy().into_owned());
        }
    }
}

fn check(name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("generated.json")).expect("generated.json"))
            .expect("json");
    let rerun = format!("run tests/fixtures/{name}/make.py again");
    assert_eq!(
        record["script_sha256"].as_str(),
        Some(sha(&root.join("make.py")).as_str()),
        "{name}: make.py changed since it made the fixture; {rerun}"
    );
    let recorded: BTreeMap<String, String> = serde_json::from_value(record["files"].clone()).expect("files");
    let mut present = Vec::new();
    files_under(&root, &root, &mut present);
    present.retain(|f| f != "generated.json" && f != "make.py");
    present.sort();
    let listed: Vec<String> = recorded.keys().cloned().collect();
    assert_eq!(present, listed, "{name}: files differ from those make.py wrote; {rerun}");
    for (file, want) in &recorded {
        assert_eq!(&sha(&root.join(file)), want, "{name}/{file} is not what make.py wrote; {rerun}");
    }
}

#[test]
fn stable_diffusion_fixture_is_what_its_script_makes() {
    check("sd-tiny");
}

#[test]
fn clip_tokenizer_fixture_is_what_its_script_makes() {
    check("clip-tokenizer");
}

#[test]
fn pillow_resize_fixture_is_what_its_script_makes() {
    check("pil-resize");
}

#[test]
fn matmul_nbits_fixture_is_what_its_script_makes() {
    check("nbits");
}

#[test]
fn vp_fixture_is_what_its_script_makes() {
    check("vp");
}
