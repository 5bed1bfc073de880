//! drt's Lanczos resize against Pillow's (tests/fixtures/pil-resize, made by its make.py), byte for
//! byte: up, down, both ways at once, one axis only and the same size, in RGB and greyscale.

mod common;

use diffusion_rt::image::read_png;
use diffusion_rt::sd::resize::lanczos_resize;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    input: String,
    mode: String,
    width: usize,
    height: usize,
    output: String,
}

/// The PNG's bytes, with `channels` of the three read_png gives (greyscale repeats its channel).
fn bytes(name: &str, channels: usize) -> (usize, usize, Vec<u8>) {
    let (w, h, rgb) = read_png(&common::repo().join("tests/fixtures/pil-resize").join(name)).expect(name);
    let px = rgb.chunks(3).flat_map(|p| p[..channels].iter().map(|&v| (v * 255.0).round() as u8).collect::<Vec<_>>());
    (w, h, px.collect())
}

#[test]
fn lanczos_equals_pillow() {
    let dir = common::repo().join("tests/fixtures/pil-resize");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases")).expect("json");
    assert_eq!(cases.len(), 22);
    for c in cases {
        let channels = if c.mode == "RGB" { 3 } else { 1 };
        let (w, h, input) = bytes(&c.input, channels);
        let (ow, oh, want) = bytes(&c.output, channels);
        assert_eq!((ow, oh), (c.width, c.height));
        let got = lanczos_resize(&input, w, h, channels, c.width, c.height).expect("resize");
        let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{}: {differ} of {} bytes differ from Pillow's", c.output, want.len());
    }
}

#[test]
fn bad_sizes_are_refused() {
    assert!(lanczos_resize(&[0; 12], 2, 2, 3, 0, 4).is_err());
    assert!(lanczos_resize(&[0; 11], 2, 2, 3, 4, 4).is_err());
}
