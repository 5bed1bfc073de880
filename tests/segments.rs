//! A graph run in segments (`BackendOptions::segments`, src/backend/segments.rs and
//! ort_segments.rs): the cut keeps every node once, in order, with weights shared out about
//! evenly; the tiny UNet run segment by segment on ONNX Runtime gives the whole graph's output,
//! with its weights inside the graph or in external data, with its attention sliced or not; what
//! cannot be cut, or cut on tract, is refused with a message that says why.

mod common;

use std::collections::HashSet;

use common::unet::{load, load_with, run, unet, with_external_data};
use common::{ort_available, rel_l2, TempDir};
use diffusion_rt::backend::segments::{split, tensor_bytes, weight_bytes, MAX_SEGMENTS};
use diffusion_rt::backend::{largest_segments, load_graph, BackendKind, BackendOptions};
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto};

fn model() -> ModelProto {
    ModelProto::decode(std::fs::read(unet()).expect("read").as_slice()).expect("decode")
}

#[test]
fn the_cut_keeps_every_node_once_and_shares_the_weights_out() {
    let model = model();
    let graph = model.graph.as_ref().unwrap();
    let total = weight_bytes(&model);
    let largest = graph.initializer.iter().map(tensor_bytes).max().unwrap();
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    for n in [1, 2, 3, 5, 8] {
        let segments = split(&model, n).expect("split");
        assert_eq!(segments.len(), n);
        // The nodes, in their order.
        let nodes: Vec<&NodeProto> = segments.iter().flat_map(|s| &s.model.graph.as_ref().unwrap().node).collect();
        assert_eq!(nodes.len(), graph.node.len());
        assert!(nodes.iter().zip(&graph.node).all(|(a, b)| *a == b), "{n} segments reorder the nodes");
        // Each reads what the graph or an earlier segment gives it.
        let mut available: HashSet<String> = graph_inputs.iter().map(|s| s.to_string()).collect();
        for (k, s) in segments.iter().enumerate() {
            for i in &s.inputs {
                assert!(available.contains(i), "segment {k} of {n} reads `{i}`, which nothing before it makes");
            }
            available.extend(s.outputs.iter().cloned());
            let cap = total.div_ceil(n as u64) + largest;
            assert!(s.weight_bytes <= cap, "segment {k} of {n}: {} weight bytes, over {cap}", s.weight_bytes);
        }
        assert!(graph.output.iter().all(|o| available.contains(&o.name)), "{n} segments: an output is missing");
        let held: u64 = segments.iter().map(|s| s.weight_bytes).sum();
        assert!(held >= total, "{n} segments hold {held} of {total} weight bytes");
    }
}

#[test]
fn segments_give_the_whole_graphs_output() {
    if !ort_available() {
        return;
    }
    let tmp = TempDir::new("segments");
    let external = with_external_data(tmp.path());
    let side = 16;
    let whole = run(&*load(&unet(), BackendKind::Ort, 1, false, side), side);
    // Segments load as mapped weights do (no prepacking, no level-3 layouts): the same kernels.
    let same_kernels = run(&*load(&unet(), BackendKind::Ort, 1, true, side), side);
    for path in [unet(), external] {
        for (segments, slices) in [(2, 1), (3, 1), (7, 1), (5, 4)] {
            let opts = BackendOptions {
                backend: BackendKind::Ort,
                segments: Some(segments),
                attention_slices: Some(slices),
                ..BackendOptions::default()
            };
            let graph = load_with(&path, opts, side);
            // Twice: a run leaves nothing behind that the next depends on.
            for _ in 0..2 {
                let got = run(&*graph, side);
                let (d, same) = (rel_l2(&got, &whole), rel_l2(&got, &same_kernels));
                let what = format!("{}: {segments} segments, {slices} slices", path.display());
                println!("{what}: relative L2 {d:.1e}, {same:.1e} against the same kernels");
                assert!(d <= 1e-6, "{what}: relative L2 {d:e}");
                assert!(same == 0.0, "{what}: relative L2 {same:e} against the same kernels");
            }
        }
    }
}

#[test]
fn the_largest_segments_are_read_from_the_graph_as_a_load_cuts_it() {
    let tmp = TempDir::new("segment-weights");
    let external = with_external_data(tmp.path());
    let largest = |n| split(&model(), n).unwrap().iter().map(|s| s.weight_bytes).max().unwrap();
    let expected = vec![largest(2), largest(4)];
    assert_eq!(largest_segments(&external, 1, &[2, 4]).expect("weights"), expected);
    assert_eq!(largest_segments(&unet(), 1, &[2, 4]).expect("weights"), expected);
}

#[test]
fn what_cannot_be_cut_is_refused() {
    let model = model();
    for n in [0, MAX_SEGMENTS + 1] {
        let err = split(&model, n).unwrap_err().to_string();
        assert!(err.contains(&format!("segments must be 1 to {MAX_SEGMENTS}, got {n}")), "{err}");
    }
    // More segments than nodes: one node each.
    let graph = model.graph.clone().unwrap();
    let small = ModelProto { graph: Some(GraphProto { node: graph.node[..3].to_vec(), ..graph }), ..model.clone() };
    assert_eq!(split(&small, 8).unwrap().len(), 3);
    // Control flow: a subgraph reads tensors of the graph around it.
    let mut with_if = model.clone();
    let branch = AttributeProto {
        name: "then_branch".into(),
        r#type: AttributeType::Graph as i32,
        g: Some(GraphProto::default()),
        ..AttributeProto::default()
    };
    let node =
        NodeProto { op_type: "If".into(), name: "choice".into(), attribute: vec![branch], ..NodeProto::default() };
    with_if.graph.as_mut().unwrap().node.push(node);
    let err = split(&with_if, 2).unwrap_err().to_string();
    assert!(err.contains("node `choice` (If) has a subgraph"), "{err}");
    // tract keeps weights in its own form: segments would not free them.
    let opts = BackendOptions { backend: BackendKind::Tract, segments: Some(2), ..BackendOptions::default() };
    let err = load_graph(&unet(), &opts).err().expect("refused").to_string();
    assert!(err.contains("a graph in segments needs the ort backend"), "{err}");
}
