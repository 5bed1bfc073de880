//! Attention in slices of queries (`BackendOptions::attention_slices`, src/backend/attention.rs):
//! the rewritten UNet of the tiny Stable Diffusion export gives the whole graph's outputs on every
//! backend, for slice counts that divide the queries, that do not, and that outnumber them; the same
//! holds when the weights live in an external-data file, as optimum writes them for large UNets,
//! loaded from memory after the rewrite and, with mapped weights, read in place.

mod common;

use common::unet::{load, run, unet, with_external_data};
use common::{backends, rel_l2, TempDir};
use diffusion_rt::backend::attention::slice_attention;
use diffusion_rt::backend::{load_graph, BackendKind, BackendOptions};
use prost::Message;
use tract_onnx::pb::ModelProto;

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
