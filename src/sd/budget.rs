//! A generation planned to stay under a memory budget: which parts stay loaded, how many slices
//! the attention is computed in, how many segments the UNet runs as, and how large the VAE's
//! tiles are, chosen from estimates of each stage's resident memory before any work is done.
//!
//! The stages run one after another (text encoder, UNet steps, VAE decoder), so the peak is the
//! largest stage, plus the runtime itself; with room for all three, the parts stay loaded between
//! generations. A stage's estimate is its weights as they sit in memory plus its activations:
//!
//! - weights kept inside a graph file are read into memory (and a quarter more while ONNX
//!   Runtime parses them); weights in an external-data file are used where the system maps them,
//!   and a UNet in segments holds one segment's at a time (see [`crate::backend::segments`]);
//! - float16 weights are held twice more in bytes: the CPU kernels compute in float32, so ONNX
//!   Runtime casts each float16 weight to a float32 copy at load (measured: a float16 UNet
//!   segment of 848 MB held 1,705 MB of private memory beside its 848 MB of mapped file);
//! - activations scale with the latent or image area and the width of the network's first block:
//!   measured on Stable Diffusion 1.5's shapes (docs/stable-diffusion.md, "Memory budget"), they are the constants
//!   below, and attention scores shrink with the slices.
//!
//! Choices go from cheapest to dearest in time: more attention slices cost nothing measurable,
//! tiles change the decoded image slightly at the tile seams, and every UNet segment is set up
//! again on every step, so segments are the last resort.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::config::read_json;
use crate::error::{Error, Result};

const MB: u64 = 1 << 20;

/// The runtime, ONNX Runtime's library and thread pools, the tokenizer, latents and embeddings
/// (about 55 MB measured between stages), with room for the allocator's slack.
pub const BASE_BYTES: u64 = 120 * MB;
/// UNet activations per latent pixel and image of the UNet's batch, for a first block 320 wide
/// (Stable Diffusion 1.x/2.x), besides the attention scores.
const UNET_BYTES_PER_LATENT: u64 = 32 << 10;
/// VAE decoder activations per output pixel, for a first block 128 wide.
const VAE_BYTES_PER_PIXEL: u64 = 7 << 9;
/// The text encoder's activations for a batch of prompts (77 tokens each).
const TEXT_ACTIVATION_BYTES: u64 = 40 * MB;

/// Attention slices, UNet segments and VAE tiles (latents per side) the planner chooses from.
const SLICES: [usize; 4] = [8, 16, 32, 64];
const SEGMENTS: [usize; 10] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32];
const TILES: [usize; 6] = [64, 48, 32, 24, 16, 8];

/// Weight bytes of one part of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Weights {
    /// Inside the graph file.
    pub inline: u64,
    /// In external-data files beside it.
    pub external: u64,
}

impl Weights {
    /// The sizes of the files in `dir`: the graph file's own (weights inline, and the graph's
    /// few kilobytes) and the others'.
    pub fn of_dir(dir: &Path) -> Result<Weights> {
        let mut w = Weights::default();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let len = entry.metadata().map_err(|e| Error::io(&entry.path(), e))?.len();
            match name.to_str() {
                Some("model.onnx") => w.inline += len,
                Some(n) if n.ends_with(".json") || n.ends_with(".txt") => {}
                _ => w.external += len,
            }
        }
        Ok(w)
    }

    fn total(self) -> u64 {
        self.inline + self.external
    }

    /// Resident while the graph is loaded whole: ONNX Runtime's parse of inline weights holds a
    /// quarter more for a while (measured on SD 1.5's text encoder), and float16 weights (`half`)
    /// get their float32 copies.
    fn loaded(self, half: bool) -> u64 {
        self.inline + self.inline / 4 + self.external + widened(self.total(), half)
    }
}

/// The float32 copies that `bytes` of float16 weights get, if `half`.
fn widened(bytes: u64, half: bool) -> u64 {
    if half {
        2 * bytes
    } else {
        0
    }
}

/// What the estimates are made from: the export's parts and the generation's shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    pub text_encoder: Weights,
    pub unet: Weights,
    pub vae_decoder: Weights,
    /// Latents per side.
    pub latent: (usize, usize),
    /// Images per UNet call: the batch, twice with guidance.
    pub unet_batch: usize,
    /// Pixels per latent along a side.
    pub vae_factor: usize,
    /// Channels of the UNet's and the VAE decoder's first block, and the UNet's attention heads
    /// at full latent resolution.
    pub unet_width: usize,
    pub unet_heads: usize,
    pub vae_width: usize,
    /// The backend can run the UNet in segments ([`crate::backend::can_run_in_segments`]).
    pub segments_possible: bool,
    /// The weights are float16 (the UNet takes float16 latents).
    pub half: bool,
}

impl Inputs {
    /// The parts' files and configs in the export `dir`, for latents of `latent` and a UNet
    /// batch of `unet_batch`.
    pub fn read(
        dir: &Path,
        latent: (usize, usize),
        unet_batch: usize,
        vae_factor: usize,
        segments_possible: bool,
        half: bool,
    ) -> Result<Inputs> {
        let unet_config = read_json(&dir.join("unet/config.json"))?;
        let vae_config = read_json(&dir.join("vae_decoder/config.json"))?;
        let first = |v: &serde_json::Value, key: &str| match v.get(key) {
            Some(serde_json::Value::Array(a)) => a.first().and_then(serde_json::Value::as_u64),
            Some(n) => n.as_u64(),
            None => None,
        };
        // diffusers' `attention_head_dim` of SD 1.x/2.x UNets holds the number of heads.
        let heads = first(&unet_config, "num_attention_heads").or_else(|| first(&unet_config, "attention_head_dim"));
        Ok(Inputs {
            text_encoder: Weights::of_dir(&dir.join("text_encoder"))?,
            unet: Weights::of_dir(&dir.join("unet"))?,
            vae_decoder: Weights::of_dir(&dir.join("vae_decoder"))?,
            latent,
            unet_batch,
            vae_factor,
            unet_width: first(&unet_config, "block_out_channels").unwrap_or(320) as usize,
            unet_heads: heads.unwrap_or(8) as usize,
            vae_width: first(&vae_config, "block_out_channels").unwrap_or(128) as usize,
            segments_possible,
            half,
        })
    }
}

/// One stage's estimate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub weight_bytes: u64,
    pub activation_bytes: u64,
}

impl Stage {
    fn bytes(&self) -> u64 {
        BASE_BYTES + self.weight_bytes + self.activation_bytes
    }
}

/// A generation's plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub budget_mb: u64,
    /// The parts stay loaded between generations (else each loads while it runs).
    pub resident: bool,
    pub attention_slices: usize,
    pub unet_segments: usize,
    /// Latents per side of the VAE's tiles; `None` decodes whole.
    pub vae_tile: Option<usize>,
    pub stages: Vec<Stage>,
    /// The estimated peak: the largest stage (all of them, when resident).
    pub peak_bytes: u64,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |b: u64| b.div_ceil(MB);
        write!(
            f,
            "budget {} MB: estimated peak {} MB; parts {}, attention in {} slices, UNet in {} segment{}, VAE {}",
            self.budget_mb,
            mb(self.peak_bytes),
            if self.resident { "kept loaded" } else { "loaded while each runs" },
            self.attention_slices,
            self.unet_segments,
            if self.unet_segments == 1 { "" } else { "s" },
            self.vae_tile.map_or("whole".to_string(), |t| format!("in tiles of {t} latents")),
        )?;
        for s in &self.stages {
            write!(
                f,
                "\n  {:<13} {:>6} MB weights + {:>5} MB activations",
                s.name,
                mb(s.weight_bytes),
                mb(s.activation_bytes)
            )?;
        }
        Ok(())
    }
}

/// Given attention slices and counts of segments, the weight bytes of the largest UNet segment
/// of each cut.
pub type LargestSegments<'a> = dyn FnMut(usize, &[usize]) -> Result<Vec<u64>> + 'a;

/// The cheapest plan for `inputs` under `budget_mb`, or an out-of-memory error naming the smallest
/// budget any plan meets. `vae_tile`, when the caller set one, is kept; `largest` gives the
/// weights of the largest segment of each cut (it reads the UNet's graph).
pub fn plan(
    budget_mb: u64,
    inputs: &Inputs,
    vae_tile: Option<usize>,
    largest: &mut LargestSegments<'_>,
) -> Result<Plan> {
    let budget = budget_mb.saturating_mul(MB);
    let text = Stage {
        name: "text_encoder",
        weight_bytes: inputs.text_encoder.loaded(inputs.half),
        activation_bytes: TEXT_ACTIVATION_BYTES,
    };
    // Segments only help with weights the segments do not all hold.
    let cuttable = inputs.segments_possible && inputs.unet.external > inputs.unet.inline;
    let segment_counts: &[usize] = if cuttable { &SEGMENTS } else { &SEGMENTS[..1] };
    let mut unet_options = Vec::new();
    for &slices in &SLICES {
        let cut = if segment_counts.len() > 1 { largest(slices, &segment_counts[1..])? } else { vec![] };
        for (k, &segments) in segment_counts.iter().enumerate() {
            let weight_bytes = match k {
                0 => inputs.unet.loaded(inputs.half),
                _ => {
                    let segment = cut.get(k - 1).copied().unwrap_or(0);
                    inputs.unet.inline + segment + widened(segment, inputs.half)
                }
            };
            let stage = Stage { name: "unet", weight_bytes, activation_bytes: unet_activations(inputs, slices) };
            unet_options.push((segments, slices, stage));
        }
    }
    // Fewest segments first (each is set up again on every step), then fewest slices.
    unet_options.sort_by_key(|(segments, slices, _)| (*segments, *slices));
    let tiles: Vec<Option<usize>> = match vae_tile {
        Some(t) => vec![Some(t)],
        None => std::iter::once(None)
            .chain(TILES.iter().filter(|&&t| t < inputs.latent.0.max(inputs.latent.1)).map(|&t| Some(t)))
            .collect(),
    };
    let vae_options: Vec<(Option<usize>, Stage)> = tiles.into_iter().map(|t| (t, vae_stage(inputs, t))).collect();
    let fits = |s: &Stage| s.bytes() <= budget;
    let unet = unet_options.iter().find(|(_, _, s)| fits(s));
    let vae = vae_options.iter().find(|(_, s)| fits(s));
    let (Some((segments, slices, unet)), Some((tile, vae)), true) = (unet, vae, fits(&text)) else {
        let smallest = |stages: &mut dyn Iterator<Item = &Stage>| stages.map(Stage::bytes).min().unwrap_or(0);
        let need = [
            text.bytes(),
            smallest(&mut unet_options.iter().map(|(_, _, s)| s)),
            smallest(&mut vae_options.iter().map(|(_, s)| s)),
        ];
        let (h, w) = inputs.latent;
        return Err(Error::OutOfMemory(format!(
            "a memory budget of {budget_mb} MB cannot be met for {}×{} images at {} UNet images per call: the \
             smallest plan needs {} MB (text encoder {} MB, UNet {} MB, VAE decoder {} MB, each with {} MB for \
             the runtime){}",
            w * inputs.vae_factor,
            h * inputs.vae_factor,
            inputs.unet_batch,
            need.iter().max().copied().unwrap_or(0).div_ceil(MB),
            need[0].div_ceil(MB),
            need[1].div_ceil(MB),
            need[2].div_ceil(MB),
            BASE_BYTES / MB,
            if need[1] > budget && inputs.segments_possible && !cuttable {
                "; the UNet's weights are inside its graph file, so it runs whole: with them in external data \
                 (models/train/quantize.py --export SRC DEST --bits none) it can run in segments"
            } else if need[0] > budget {
                "; the text encoder runs whole, so its size is the least a budget can be"
            } else {
                ""
            },
        )));
    };
    let stages = vec![text.clone(), unet.clone(), vae.clone()];
    let largest = stages.iter().map(Stage::bytes).max().unwrap_or(BASE_BYTES);
    // Everything loaded at once: every part's weights, the largest activations.
    let all_weights = inputs.text_encoder.total() + inputs.unet.total() + inputs.vae_decoder.total();
    let all = BASE_BYTES + all_weights + stages.iter().map(|s| s.activation_bytes).max().unwrap_or(0);
    let resident = *segments == 1 && all <= budget;
    Ok(Plan {
        budget_mb,
        resident,
        attention_slices: *slices,
        unet_segments: *segments,
        vae_tile: *tile,
        peak_bytes: if resident { all } else { largest },
        stages,
    })
}

/// The UNet's activations for one call: the feature maps, and the attention scores at full latent
/// resolution (one slice's scores and their softmax at a time).
fn unet_activations(inputs: &Inputs, slices: usize) -> u64 {
    let (h, w) = inputs.latent;
    let (queries, batch) = ((h * w) as u64, inputs.unet_batch as u64);
    let maps = UNET_BYTES_PER_LATENT * queries * batch * inputs.unet_width as u64 / 320;
    let scores = 2 * 4 * batch * inputs.unet_heads as u64 * queries.div_ceil(slices as u64) * queries;
    maps + scores
}

/// The VAE decoder stage: its weights, and the activations of one image or tile, with its
/// mid-block's single-head attention whole (a plan leaves the decoder's graph as it is).
fn vae_stage(inputs: &Inputs, tile: Option<usize>) -> Stage {
    let (h, w) = inputs.latent;
    let (th, tw) = match tile {
        Some(t) => (t.min(h), t.min(w)),
        None => (h, w),
    };
    let f = inputs.vae_factor as u64;
    let pixels = th as u64 * f * tw as u64 * f;
    let maps = VAE_BYTES_PER_PIXEL * pixels * inputs.vae_width as u64 / 128;
    let queries = (th * tw) as u64;
    let scores = 2 * 4 * queries * queries;
    // The whole image's pixels are kept while tiles are decoded into it.
    let image = 3 * 4 * (h as u64 * f) * (w as u64 * f);
    Stage {
        name: "vae_decoder",
        weight_bytes: inputs.vae_decoder.loaded(inputs.half),
        activation_bytes: maps + scores + image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stable Diffusion 1.5's shapes at 512 × 512 with guidance.
    fn sd15() -> Inputs {
        Inputs {
            text_encoder: Weights { inline: 492 * MB, external: 0 },
            unet: Weights { inline: MB, external: 3278 * MB },
            vae_decoder: Weights { inline: 189 * MB, external: 0 },
            latent: (64, 64),
            unet_batch: 2,
            vae_factor: 8,
            unet_width: 320,
            unet_heads: 8,
            vae_width: 128,
            segments_possible: true,
            half: false,
        }
    }

    /// Segments of equal weights.
    fn even(total: u64) -> impl FnMut(usize, &[usize]) -> Result<Vec<u64>> {
        move |_, counts| Ok(counts.iter().map(|&n| total.div_ceil(n as u64)).collect())
    }

    #[test]
    fn a_large_budget_keeps_everything_loaded_and_whole() {
        let p = plan(16_000, &sd15(), None, &mut even(3278 * MB)).unwrap();
        assert!(p.resident);
        assert_eq!((p.attention_slices, p.unet_segments, p.vae_tile), (8, 1, None));
        assert!(p.peak_bytes <= 16_000 * MB);
    }

    #[test]
    fn tighter_budgets_load_parts_in_turn_then_cut_the_unet_and_tile_the_decoder() {
        let p = plan(5_000, &sd15(), None, &mut even(3278 * MB)).unwrap();
        assert!(!p.resident, "{p}");
        assert_eq!(p.unet_segments, 1, "{p}");
        let p = plan(1_500, &sd15(), None, &mut even(3278 * MB)).unwrap();
        assert!(p.unet_segments > 1, "{p}");
        assert!(p.peak_bytes <= 1_500 * MB, "{p}");
        assert!(p.stages.iter().all(|s| s.bytes() <= 1_500 * MB), "{p}");
        let q = plan(1_200, &sd15(), None, &mut even(3278 * MB)).unwrap();
        assert!(q.unet_segments > p.unet_segments, "{q}");
        assert!(q.vae_tile.is_some(), "{q}");
    }

    #[test]
    fn the_caller_s_tile_is_kept() {
        let p = plan(16_000, &sd15(), Some(16), &mut even(3278 * MB)).unwrap();
        assert_eq!(p.vae_tile, Some(16));
    }

    #[test]
    fn a_budget_below_the_smallest_plan_names_it() {
        let err = plan(600, &sd15(), None, &mut even(3278 * MB)).unwrap_err();
        let Error::OutOfMemory(msg) = &err else { panic!("{err}") };
        // The text encoder bounds it: 492 MB and a quarter more while parsed, 40 MB activations,
        // the runtime.
        let need = (492 + 123 + 40 + BASE_BYTES / MB).to_string();
        assert!(msg.contains(&format!("the smallest plan needs {need} MB")), "{msg}");
        assert!(msg.contains("512×512"), "{msg}");
        let ok = plan(need.parse().unwrap(), &sd15(), None, &mut even(3278 * MB));
        assert!(ok.is_ok(), "the budget named is met: {ok:?}");
    }

    #[test]
    fn float16_weights_are_counted_with_their_float32_copies() {
        // SD 1.5 in float16: half the bytes on disk, each segment held as stored and widened.
        let mut half = sd15();
        (half.half, half.unet.external, half.text_encoder.inline) = (true, 1639 * MB, 246 * MB);
        let whole = plan(16_000, &half, None, &mut even(1639 * MB)).unwrap();
        assert_eq!(whole.stages[1].weight_bytes, MB + MB / 4 + 1639 * MB + 2 * 1640 * MB, "{whole}");
        let p = plan(1_500, &half, None, &mut even(1639 * MB)).unwrap();
        let segment = 1639 * MB / p.unet_segments as u64 + 1;
        assert_eq!(p.stages[1].weight_bytes, MB + 3 * segment, "{p}");
        assert!(p.peak_bytes <= 1_500 * MB && p.unet_segments >= 6, "{p}");
    }

    #[test]
    fn a_unet_with_inline_weights_or_on_tract_is_not_cut() {
        let mut inline = sd15();
        inline.unet = Weights { inline: 1640 * MB, external: 0 };
        let mut on_tract = sd15();
        on_tract.segments_possible = false;
        for (inputs, hint) in [(inline, true), (on_tract, false)] {
            let mut asked = false;
            let err = plan(1_500, &inputs, None, &mut |_, _| {
                asked = true;
                Ok(vec![])
            });
            assert!(!asked, "{err:?}");
            let msg = err.expect_err("too small").to_string();
            assert_eq!(msg.contains("inside its graph file"), hint, "{msg}");
        }
    }

    #[test]
    fn a_budget_under_the_text_encoder_says_so_not_to_cut_the_unet() {
        let mut inputs = sd15();
        (inputs.unet, inputs.text_encoder.inline) = (Weights { inline: 1640 * MB, external: 0 }, 3200 * MB);
        let msg = plan(2_900, &inputs, None, &mut |_, _| Ok(vec![])).expect_err("too small").to_string();
        assert!(msg.contains("the text encoder runs whole") && !msg.contains("inside its graph file"), "{msg}");
    }
}
