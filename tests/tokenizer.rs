//! The CLIP tokenizer against transformers' CLIPTokenizer on the real CLIP vocabulary: 300
//! prompts (punctuation, digits, many scripts, emoji, control characters, special-token spellings,
//! prompts far over 77 tokens), with CLIP's and Stable Diffusion 2's padding token.
//! Fixture and expected ids: tests/fixtures/clip-tokenizer/make.py.

use std::path::PathBuf;

use diffusion_rt::sd::ClipTokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<i64>,
    full: Vec<i64>,
    ids_pad_bang: Vec<i64>,
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tokenizer")
}

fn cases() -> Vec<Case> {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("ids.json")).expect("ids.json")).expect("json")
}

#[test]
fn ids_equal_transformers_clip_tokenizer() {
    let tok = ClipTokenizer::load(&fixture().join("tokenizer")).expect("tokenizer");
    let cases = cases();
    assert!(cases.len() >= 200);
    assert!(cases.iter().any(|c| c.full.len() > 77), "the fixture must hold prompts over the limit");
    let mut wrong = Vec::new();
    for c in &cases {
        let full: Vec<i64> = [49406].into_iter().chain(tok.tokens(&c.prompt)).chain([49407]).collect();
        if tok.encode(&c.prompt) != c.ids || full != c.full {
            wrong.push(format!("{:?}\n  transformers {:?}\n  drt          {:?}", c.prompt, c.full, full));
        }
    }
    assert!(wrong.is_empty(), "{} of {} prompts differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

/// Stable Diffusion 2 pads with `!`, which transformers then also splits the text at.
#[test]
fn exclamation_mark_padding_equals_transformers() {
    let tmp = std::env::temp_dir().join(format!("drt-tok-bang-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(fixture().join("tokenizer").join(f), tmp.join(f)).expect("copy");
    }
    let config = std::fs::read_to_string(fixture().join("tokenizer/tokenizer_config.json")).expect("config");
    let config = config.replace("\"pad_token\": \"<|endoftext|>\"", "\"pad_token\": \"!\"");
    assert!(config.contains("\"pad_token\": \"!\""));
    std::fs::write(tmp.join("tokenizer_config.json"), config).expect("write");
    let tok = ClipTokenizer::load(&tmp).expect("tokenizer");
    let _ = std::fs::remove_dir_all(&tmp);
    let cases = cases();
    assert!(cases.iter().filter(|c| c.ids != c.ids_pad_bang).count() > 200, "the padding must show");
    let wrong: Vec<&str> =
        cases.iter().filter(|c| tok.encode(&c.prompt) != c.ids_pad_bang).map(|c| c.prompt.as_str()).collect();
    assert!(wrong.is_empty(), "{} prompts differ: {wrong:?}", wrong.len());
}

#[test]
fn broken_tokenizer_folders_are_model_errors() {
    let err = ClipTokenizer::load(&fixture().join("missing")).err().expect("missing folder");
    assert!(err.to_string().contains("vocab.json"), "{err}");
    let tmp = std::env::temp_dir().join(format!("drt-tok-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    std::fs::write(tmp.join("vocab.json"), "{\"a\": 0}").expect("write");
    std::fs::write(tmp.join("merges.txt"), "#version: 0.2\n").expect("write");
    let err = ClipTokenizer::load(&tmp).err().expect("no special tokens");
    assert!(err.to_string().contains("<|startoftext|>"), "{err}");
    std::fs::write(tmp.join("vocab.json"), "not json").expect("write");
    let err = ClipTokenizer::load(&tmp).err().expect("bad json");
    assert!(err.to_string().contains("vocab.json"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}
