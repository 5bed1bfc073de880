//! Attention in slices of queries (`BackendOptions::attention_slices`, src/backend/attention.rs):
//! the rewritten UNet of the tiny Stable Diffusion export gives the whole graph's outputs on every
//! backend, for slice counts that divide the queries, that do not, and that outnumber them; the same
//! holds when the weights live in an external-data file, as optimum writes them for large UNets,
//! loaded from memory after the rewrite and, with mapped weights, read in place.

mod common;

use std::path::Path;

use common::{backends, rel_l2, repo, TempDir};
use diffusion_rt::backend::attention::slice_attention;
use diffusion_rt::backend::{
    load_graph, load_graph_fixed, BackendKind, BackendOptions, DType, Graph, Input, InputData,
};
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataLocation, ModelProto, StringStringEntryProto};

fn unet() -> std::path::PathBuf {
    repo().join("tests/fixtures/sd-tiny/export/unet/model.onnx")
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The UNet's output for a batch of 2 at `side` × `side` latents, at timestep 500.
fn run(graph: &dyn Graph, side: usize) -> Vec<f32> {
    let batch = 2;
    let shapes: Vec<Vec<usize>> = graph
        .inputs()
        .iter()
        .map(|info| match info.name.as_str() {
            "sample" => vec![batch, 4, side, side],
            "encoder_hidden_states" => vec![batch, 77, 32],
            "timestep" => info.shape.iter().map(|d| d.unwrap_or(batch)).collect(),
            other => panic!("unexpected input {other}"),
        })
        .collect();
    let floats: Vec<Vec<f32>> = graph
        .inputs()
        .iter()
        .zip(&shapes)
        .enumerate()
        .map(|(k, (info, shape))| {
            let n = shape.iter().product();
            if info.name == "timestep" {
                vec![500.0; n]
            } else {
                values(n, k as u64)
            }
        })
        .collect();
    let ints: Vec<Vec<i64>> = floats.iter().map(|v| v.iter().map(|&x| x as i64).collect()).collect();
    let inputs: Vec<Input> = graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(k, info)| {
            let data = match info.dtype {
                DType::F32 => InputData::F32(&floats[k]),
                DType::I64 => InputData::I64(&ints[k]),
                other => panic!("unexpected dtype {other:?}"),
            };
            Input { index: k, shape: &shapes[k], data }
        })
        .collect();
    let mut out = vec![0f32; batch * 4 * side * side];
    graph.runner().expect("runner").run(&inputs, 0, &mut out).expect("run");
    out
}

fn load(path: &Path, backend: BackendKind, slices: usize, mapped: bool, side: usize) -> std::sync::Arc<dyn Graph> {
    let opts = BackendOptions {
        backend,
        threads: Some(1),
        attention_slices: Some(slices),
        mapped_weights: mapped,
        ..BackendOptions::default()
    };
    // tract needs the latent size fixed, as the Stable Diffusion pipeline fixes it.
    let fixed = [("sample", 2, side), ("sample", 3, side), ("encoder_hidden_states", 1, 77)];
    load_graph_fixed(path, &opts, &fixed)
        .unwrap_or_else(|e| panic!("{} on {backend:?} in {slices} slices: {e}", path.display()))
}

#[test]
fn the_rewrite_finds_every_attention() {
    let mut model = ModelProto::decode(std::fs::read(unet()).expect("read").as_slice()).expect("decode");
    let softmaxes = |m: &ModelProto| m.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == "Softmax").count();
    let before = softmaxes(&model);
    assert!(before >= 2, "the tiny UNet has self- and cross-attention: {before} softmaxes");
    assert_eq!(slice_attention(&mut model, 1), 0, "one slice is the graph as it is");
    assert_eq!(slice_attention(&mut model, 4), before);
    assert_eq!(softmaxes(&model), 4 * before);
    assert_eq!(slice_attention(&mut model, 4), 0, "a sliced graph has no whole attention left");
}

#[test]
fn sliced_attention_gives_the_whole_graphs_output() {
    for backend in backends() {
        // Its attentions see 8 × 8 = 64 queries at 16 × 16 latents: 3 slices do not divide them,
        // 64 give one query each; at 8 × 8 latents 64 slices outnumber the 16 queries, and most
        // slices are empty.
        for (side, slice_counts) in [(16, &[2, 3, 8, 64][..]), (8, &[64][..])] {
            let whole = run(&*load(&unet(), backend, 1, false, side), side);
            for &slices in slice_counts {
                let sliced = run(&*load(&unet(), backend, slices, false, side), side);
                let d = rel_l2(&sliced, &whole);
                println!("{backend:?}, {side}² latents, {slices} slices: relative L2 {d:.1e}");
                assert!(d <= 1e-6, "{backend:?}, {side}² latents, {slices} slices: relative L2 {d:e}");
            }
        }
    }
}

/// The UNet with every initializer moved to `weights.bin` beside it, as external data.
fn with_external_data(dir: &Path) -> std::path::PathBuf {
    let mut model = ModelProto::decode(std::fs::read(unet()).expect("read").as_slice()).expect("decode");
    let mut data = Vec::new();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        if t.raw_data.len() < 64 {
            continue;
        }
        let entry = |key: &str, value: String| StringStringEntryProto { key: key.into(), value };
        t.external_data = vec![
            entry("location", "weights.bin".into()),
            entry("offset", data.len().to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        data.append(&mut t.raw_data);
    }
    std::fs::write(dir.join("weights.bin"), &data).expect("write");
    let path = dir.join("unet.onnx");
    std::fs::write(&path, model.encode_to_vec()).expect("write");
    path
}

#[test]
fn external_data_is_found_after_the_rewrite_and_can_stay_mapped() {
    let tmp = TempDir::new("attention-external");
    let path = with_external_data(tmp.path());
    let whole = run(&*load(&unet(), BackendKind::Tract, 1, false, 16), 16);
    for backend in backends() {
        for (slices, mapped) in [(1, false), (8, false), (8, true), (1, true)] {
            let got = run(&*load(&path, backend, slices, mapped, 16), 16);
            let d = rel_l2(&got, &whole);
            assert!(d <= 1e-5, "{backend:?}, external data, {slices} slices, mapped {mapped}: relative L2 {d:e}");
        }
    }
}

#[test]
fn too_many_slices_are_refused() {
    let opts = BackendOptions { backend: BackendKind::Tract, attention_slices: Some(65), ..BackendOptions::default() };
    let err = load_graph(&unet(), &opts).err().expect("refused");
    assert!(err.to_string().contains("attention slices must be at most 64, got 65"), "{err}");
}
