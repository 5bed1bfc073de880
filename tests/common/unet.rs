//! The tiny Stable Diffusion export's UNet as the graph-rewrite tests run it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffusion_rt::backend::{load_graph_fixed, BackendKind, BackendOptions, DType, Graph, Input, InputData};
use prost::Message;
use tract_onnx::pb::{tensor_proto::DataLocation, ModelProto, StringStringEntryProto};

use super::repo;

pub fn unet() -> PathBuf {
    repo().join("tests/fixtures/sd-tiny/export/unet/model.onnx")
}

/// Deterministic values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The UNet's output for a batch of 2 at `side` × `side` latents, at timestep 500.
pub fn run(graph: &dyn Graph, side: usize) -> Vec<f32> {
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

pub fn load(path: &Path, backend: BackendKind, slices: usize, mapped: bool, side: usize) -> Arc<dyn Graph> {
    load_with(
        path,
        BackendOptions { backend, attention_slices: Some(slices), mapped_weights: mapped, ..BackendOptions::default() },
        side,
    )
}

/// Loads with `opts` on one thread, the latent size fixed for tract.
pub fn load_with(path: &Path, opts: BackendOptions, side: usize) -> Arc<dyn Graph> {
    let opts = BackendOptions { threads: Some(1), ..opts };
    // tract needs the latent size fixed, as the Stable Diffusion pipeline fixes it.
    let fixed = [("sample", 2, side), ("sample", 3, side), ("encoder_hidden_states", 1, 77)];
    load_graph_fixed(path, &opts, &fixed).unwrap_or_else(|e| panic!("{} with {opts:?}: {e}", path.display()))
}

/// The UNet with every initializer moved to `weights.bin` beside it, as external data.
pub fn with_external_data(dir: &Path) -> PathBuf {
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
