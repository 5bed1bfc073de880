//! Attention in slices of queries: a load-time rewrite of every `MatMul(Q, Kᵀ) → Softmax(last
//! axis) → MatMul(·, V)` into `slices` runs of the same three nodes over consecutive rows of Q (its
//! second-to-last axis, the queries), concatenated. A row of the scores depends on its own query
//! alone, so every output row is computed by the same operations as before; what changes is the
//! largest intermediate, the `batch × heads × queries × keys` scores, of which one slice is alive
//! at a time. For Stable Diffusion 1.5 at 512 × 512 that is 1 GiB per attention map in float32.
//!
//! Row ranges are computed in the graph from Q's shape (`ceil(queries / slices)` rows each), so
//! one rewritten graph serves every image size; when there are fewer queries than slices, the
//! trailing slices are empty.

use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto};
use tract_onnx::pb::{OperatorSetIdProto, TensorProto};

/// The smallest opset whose Softmax normalises along one axis (earlier ones flatten the trailing
/// axes into one, which is another computation on rank-4 scores).
const MIN_OPSET: i64 = 13;

/// Names of the nodes a rewrite adds start with this; their attentions are not sliced again.
const PREFIX: &str = "drt_attention_slice_";

/// Most slices a rewrite makes (each adds six nodes per attention).
pub const MAX_SLICES: usize = 64;

fn node(op: &str, name: String, input: Vec<String>, output: Vec<String>, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto { op_type: op.into(), name, input, output, attribute, ..Default::default() }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i, ..Default::default() }
}

fn int64s(name: String, dims: Vec<i64>, values: Vec<i64>) -> TensorProto {
    TensorProto { name, dims, data_type: DataType::Int64 as i32, int64_data: values, ..Default::default() }
}

/// The default ONNX domain's opset the model imports.
fn opset(model: &ModelProto) -> i64 {
    let default = |o: &&OperatorSetIdProto| o.domain.is_empty() || o.domain == "ai.onnx";
    model.opset_import.iter().find(default).map_or(0, |o| o.version)
}

/// Whether a Softmax normalises along the last axis (its default from opset 13 on).
fn on_last_axis(softmax: &NodeProto) -> bool {
    softmax.attribute.iter().find(|a| a.name == "axis").is_none_or(|a| a.i == -1)
}

/// The graph in `path`, decoded, with its attentions in `slices` slices, and how many it sliced.
/// Reads only the graph when its weights are in external data.
pub fn read_sliced(path: &std::path::Path, slices: usize) -> crate::error::Result<(ModelProto, usize)> {
    use crate::error::Error;
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::Model(format!("{}: not an ONNX model: {e}", path.display())))?;
    drop(bytes);
    let sliced = slice_attention(&mut model, slices);
    log::debug!("{}: {sliced} attentions in {slices} slices", path.display());
    Ok((model, sliced))
}

/// Rewrites every attention of `model` into `slices` slices of queries (see the module's
/// documentation) and returns how many it rewrote; a graph without the pattern, or an opset before
/// 13, is left as it is (0).
pub fn slice_attention(model: &mut ModelProto, slices: usize) -> usize {
    let slices = slices.clamp(1, MAX_SLICES);
    if slices == 1 || opset(model) < MIN_OPSET {
        return 0;
    }
    let Some(graph) = model.graph.as_mut() else { return 0 };
    let mut uses = std::collections::HashMap::<&str, usize>::new();
    for n in &graph.node {
        for i in &n.input {
            *uses.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *uses.entry(o.name.as_str()).or_default() += 1;
    }
    let producer: std::collections::HashMap<&str, usize> =
        graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    // (first MatMul, Softmax, second MatMul) by node index.
    let mut found = Vec::new();
    for (s, sm) in graph.node.iter().enumerate() {
        let ours = sm.name.starts_with(PREFIX);
        if sm.op_type != "Softmax" || !sm.domain.is_empty() || !on_last_axis(sm) || sm.output.len() != 1 || ours {
            continue;
        }
        let Some(&m1) = sm.input.first().and_then(|i| producer.get(i.as_str())) else { continue };
        let scores = &graph.node[m1];
        if scores.op_type != "MatMul" || uses.get(sm.input[0].as_str()) != Some(&1) {
            continue;
        }
        let weights = sm.output[0].as_str();
        if uses.get(weights) != Some(&1) {
            continue;
        }
        let Some(m2) = graph
            .node
            .iter()
            .position(|n| n.op_type == "MatMul" && n.input.first().map(String::as_str) == Some(weights))
        else {
            continue;
        };
        found.push((m1, s, m2));
    }
    if found.is_empty() {
        return 0;
    }
    let (mut replace, mut drop) = (std::collections::HashMap::new(), std::collections::HashSet::new());
    let mut initializers = Vec::new();
    for (k, &(m1, s, m2)) in found.iter().enumerate() {
        let p = format!("{PREFIX}{k}");
        let (q, kt) = (graph.node[m1].input[0].clone(), graph.node[m1].input[1].clone());
        let (v, out) = (graph.node[m2].input[1].clone(), graph.node[m2].output[0].clone());
        let name = |what: &str| format!("{p}/{what}");
        initializers.push(int64s(name("queries_axis"), vec![], vec![-2]));
        initializers.push(int64s(name("axes"), vec![1], vec![-2]));
        initializers.push(int64s(name("slices_minus_1"), vec![], vec![slices as i64 - 1]));
        initializers.push(int64s(name("slices"), vec![], vec![slices as i64]));
        let mut nodes = vec![
            node("Shape", name("shape"), vec![q.clone()], vec![name("shape")], vec![]),
            node("Gather", name("queries"), vec![name("shape"), name("queries_axis")], vec![name("queries")], vec![]),
            node(
                "Add",
                name("rounded_up"),
                vec![name("queries"), name("slices_minus_1")],
                vec![name("rounded_up")],
                vec![],
            ),
            node("Div", name("rows"), vec![name("rounded_up"), name("slices")], vec![name("rows")], vec![]),
        ];
        let mut parts = Vec::with_capacity(slices);
        for i in 0..slices {
            let at = |what: &str| format!("{p}/{i}/{what}");
            initializers.push(int64s(at("index"), vec![1], vec![i as i64]));
            initializers.push(int64s(at("next"), vec![1], vec![i as i64 + 1]));
            nodes.extend([
                node("Mul", at("start"), vec![name("rows"), at("index")], vec![at("start")], vec![]),
                node("Mul", at("end"), vec![name("rows"), at("next")], vec![at("end")], vec![]),
                node("Slice", at("q"), vec![q.clone(), at("start"), at("end"), name("axes")], vec![at("q")], vec![]),
                node("MatMul", at("scores"), vec![at("q"), kt.clone()], vec![at("scores")], vec![]),
                node("Softmax", at("weights"), vec![at("scores")], vec![at("weights")], vec![int_attr("axis", -1)]),
                node("MatMul", at("out"), vec![at("weights"), v.clone()], vec![at("out")], vec![]),
            ]);
            parts.push(at("out"));
        }
        nodes.push(node("Concat", name("concat"), parts, vec![out], vec![int_attr("axis", -2)]));
        drop.extend([m1, s]);
        replace.insert(m2, nodes);
    }
    let removed: std::collections::HashSet<String> =
        drop.iter().flat_map(|&i| graph.node[i].output.iter().cloned()).collect();
    let old = std::mem::take(&mut graph.node);
    for (i, n) in old.into_iter().enumerate() {
        if let Some(nodes) = replace.remove(&i) {
            graph.node.extend(nodes);
        } else if !drop.contains(&i) {
            graph.node.push(n);
        }
    }
    graph.value_info.retain(|v| !removed.contains(&v.name));
    graph.initializer.extend(initializers);
    found.len()
}
