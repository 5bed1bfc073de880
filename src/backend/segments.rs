//! A graph cut into segments that run one after another, each holding a share of the weights:
//! a runtime that loads a segment only while it runs holds the weights of one segment at a time
//! instead of the whole graph's (the UNet of Stable Diffusion 1.5 keeps 3.4 GB in float32).
//!
//! The nodes of an ONNX graph are stored in an order where every tensor is produced before it is
//! used, so any cut of that list into consecutive runs gives segments that can run in order: a
//! segment's inputs are the graph inputs and earlier segments' tensors it reads, its outputs the
//! tensors it makes that a later segment or the graph's caller reads. Each node runs exactly as
//! in the whole graph, on the same values, so the outputs are the same numbers.
//!
//! Cuts are placed so that the segments hold about equal weight bytes. A tensor crossing a cut
//! becomes a graph input or output, which ONNX types, so the element type of every tensor is
//! worked out from the graph (exporters seldom record it).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::type_proto::{Tensor, Value};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto, TypeProto, ValueInfoProto};

use crate::error::{Error, Result};

/// Most segments a graph is cut into.
pub const MAX_SEGMENTS: usize = 64;

/// One segment: a model of its own, and the names it exchanges with the others.
#[derive(Clone, Debug)]
pub struct Segment {
    pub model: ModelProto,
    /// Graph inputs and earlier segments' outputs it reads, in its graph's input order.
    pub inputs: Vec<String>,
    /// Tensors later segments or the caller read.
    pub outputs: Vec<String>,
    /// Bytes of the weights it holds (its initializers, inline or external).
    pub weight_bytes: u64,
}

/// Bytes of a tensor's data, wherever it is kept.
pub fn tensor_bytes(t: &TensorProto) -> u64 {
    if t.data_location == Some(DataLocation::External as i32) {
        let length = t.external_data.iter().find(|e| e.key == "length").and_then(|e| e.value.parse().ok());
        return length.unwrap_or_else(|| dense_bytes(t));
    }
    if !t.raw_data.is_empty() {
        return t.raw_data.len() as u64;
    }
    (t.float_data.len() * 4
        + t.int32_data.len() * 4
        + t.int64_data.len() * 8
        + t.double_data.len() * 8
        + t.uint64_data.len() * 8) as u64
}

/// Bytes of a tensor of `t`'s shape and element type.
fn dense_bytes(t: &TensorProto) -> u64 {
    let elements: u64 = t.dims.iter().map(|&d| d.max(0) as u64).product();
    elements * element_size(t.data_type)
}

fn element_size(data_type: i32) -> u64 {
    match DataType::try_from(data_type) {
        Ok(DataType::Double | DataType::Int64 | DataType::Uint64) => 8,
        Ok(DataType::Float | DataType::Int32 | DataType::Uint32) => 4,
        Ok(DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16) => 2,
        _ => 1,
    }
}

/// Weight bytes of the whole graph.
pub fn weight_bytes(model: &ModelProto) -> u64 {
    model.graph.as_ref().map_or(0, |g| g.initializer.iter().map(tensor_bytes).sum())
}

/// For each count of `segments`, the weight bytes of the largest segment of `path`'s graph cut
/// into that many after slicing its attention, as a load in segments cuts it; the graph is read
/// once.
pub fn largest_segments(path: &Path, attention_slices: usize, segments: &[usize]) -> Result<Vec<u64>> {
    let (model, _) = super::attention::read_sliced(path, attention_slices)?;
    let largest = |n: usize| -> Result<u64> {
        let cut = split(&model, n).map_err(|e| Error::Model(format!("{}: {e}", path.display())))?;
        Ok(cut.iter().map(|s| s.weight_bytes).max().unwrap_or(0))
    };
    segments.iter().map(|&n| largest(n)).collect()
}

/// Cuts `model` into at most `segments` segments of about equal weight bytes (fewer when the
/// graph has fewer nodes). Refuses graphs with control flow (a subgraph reads tensors of the
/// graph around it, which a cut would hide) and cuts across tensors whose element type cannot be
/// worked out.
pub fn split(model: &ModelProto, segments: usize) -> Result<Vec<Segment>> {
    if segments == 0 || segments > MAX_SEGMENTS {
        return Err(Error::InvalidArgument(format!("segments must be 1 to {MAX_SEGMENTS}, got {segments}")));
    }
    let graph = model.graph.as_ref().ok_or_else(|| Error::Model("the model has no graph".into()))?;
    let subgraph = |n: &&NodeProto| {
        n.attribute
            .iter()
            .any(|a| matches!(AttributeType::try_from(a.r#type), Ok(AttributeType::Graph | AttributeType::Graphs)))
    };
    if let Some(n) = graph.node.iter().find(subgraph) {
        return Err(Error::Model(format!(
            "node `{}` ({}) has a subgraph; a graph with control flow cannot run in segments",
            n.name, n.op_type
        )));
    }
    let initializers: HashMap<&str, &TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let bounds = cuts(graph, &initializers, segments);
    let types = elem_types(graph);
    // The last segment that reads each tensor, and whether the caller does.
    let segment_of = |node: usize| bounds.partition_point(|&(_, end)| end <= node);
    let mut last_reader: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            last_reader.insert(input.as_str(), segment_of(i));
        }
    }
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let graph_inputs: HashMap<&str, &ValueInfoProto> = graph.input.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut out = Vec::with_capacity(bounds.len());
    for (k, &(start, end)) in bounds.iter().enumerate() {
        let nodes = &graph.node[start..end];
        let made: HashSet<&str> = nodes.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
        let (mut inputs, mut weights, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
        for name in nodes.iter().flat_map(|n| n.input.iter()).filter(|s| !s.is_empty()) {
            if made.contains(name.as_str()) || !seen.insert(name.as_str()) {
                continue;
            }
            match initializers.get(name.as_str()) {
                Some(t) => weights.push((*t).clone()),
                None => inputs.push(name.clone()),
            }
        }
        let mut outputs = Vec::new();
        for n in nodes {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                let later = last_reader.get(o.as_str()).is_some_and(|&r| r > k);
                if later || graph_outputs.contains(o.as_str()) {
                    outputs.push(o.clone());
                }
            }
        }
        let info = |name: &String| -> Result<ValueInfoProto> {
            if let Some(declared) = graph_inputs.get(name.as_str()) {
                return Ok((*declared).clone());
            }
            if let Some(declared) = graph.output.iter().find(|o| &o.name == name) {
                return Ok(declared.clone());
            }
            let elem_type = *types.get(name.as_str()).ok_or_else(|| {
                Error::Model(format!("cannot cut the graph at tensor `{name}`: its element type is not known"))
            })?;
            let ty =
                TypeProto { value: Some(Value::TensorType(Tensor { elem_type, shape: None })), ..Default::default() };
            Ok(ValueInfoProto { name: name.clone(), r#type: Some(ty), ..Default::default() })
        };
        let weight_bytes = weights.iter().map(tensor_bytes).sum();
        let segment_graph = GraphProto {
            name: format!("{}_segment_{k}", graph.name),
            node: nodes.to_vec(),
            initializer: weights,
            input: inputs.iter().map(info).collect::<Result<_>>()?,
            output: outputs.iter().map(info).collect::<Result<_>>()?,
            ..Default::default()
        };
        let model = ModelProto { graph: Some(segment_graph), ..header(model) };
        out.push(Segment { model, inputs, outputs, weight_bytes });
    }
    Ok(out)
}

/// The model's header (IR version, opsets, producer, functions) without its graph, which may hold
/// gigabytes.
fn header(model: &ModelProto) -> ModelProto {
    ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        producer_name: model.producer_name.clone(),
        producer_version: model.producer_version.clone(),
        domain: model.domain.clone(),
        model_version: model.model_version,
        functions: model.functions.clone(),
        ..Default::default()
    }
}

/// `[start, end)` node ranges of about `total / segments` weight bytes each (a node's weights
/// are those it reads first), none empty.
fn cuts(graph: &GraphProto, initializers: &HashMap<&str, &TensorProto>, segments: usize) -> Vec<(usize, usize)> {
    let mut counted = HashSet::new();
    let bytes: Vec<u64> = graph
        .node
        .iter()
        .map(|n| {
            n.input
                .iter()
                .filter_map(|i| initializers.get(i.as_str()).filter(|_| counted.insert(i.as_str())))
                .map(|t| tensor_bytes(t))
                .sum()
        })
        .collect();
    // A graph without weights is cut by node count.
    let bytes = if bytes.iter().all(|&b| b == 0) { vec![1; bytes.len()] } else { bytes };
    let total: u64 = bytes.iter().sum();
    let segments = segments.min(graph.node.len()).max(1);
    let mut bounds = Vec::with_capacity(segments);
    let (mut start, mut sum) = (0, 0u64);
    for (i, b) in bytes.iter().enumerate() {
        sum += b;
        let k = bounds.len() as u64 + 1;
        let nodes_left = graph.node.len() - i - 1;
        let cuts_left = segments - bounds.len() - 1;
        // Cut after node i once this segment's share is reached, leaving a node for each later one.
        if cuts_left > 0 && nodes_left >= cuts_left && sum * segments as u64 >= k * total {
            bounds.push((start, i + 1));
            start = i + 1;
        }
    }
    bounds.push((start, graph.node.len()));
    bounds
}

/// The element type (ONNX `DataType`) of every tensor whose type follows from the graph's inputs,
/// initializers, recorded value infos and the operators' typing rules.
fn elem_types(graph: &GraphProto) -> HashMap<&str, i32> {
    let mut types: HashMap<&str, i32> = HashMap::new();
    let declared = graph.input.iter().chain(&graph.value_info).chain(&graph.output);
    for v in declared {
        if let Some(TypeProto { value: Some(Value::TensorType(t)), .. }) = &v.r#type {
            types.insert(v.name.as_str(), t.elem_type);
        }
    }
    for t in &graph.initializer {
        types.insert(t.name.as_str(), t.data_type);
    }
    for n in &graph.node {
        let input = |k: usize| n.input.get(k).and_then(|i| types.get(i.as_str())).copied();
        let int_attr = |name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.i as i32);
        let tensor_attr = |name: &str| n.attribute.iter().find(|a| a.name == name).and_then(|a| a.t.as_ref());
        let (int64, boolean, float) = (DataType::Int64 as i32, DataType::Bool as i32, DataType::Float as i32);
        let uint8 = DataType::Uint8 as i32;
        let first: Option<i32> = match n.op_type.as_str() {
            "Constant" => n.attribute.first().map(|a| match a.name.as_str() {
                "value" => a.t.as_ref().map_or(float, |t| t.data_type),
                "value_int" | "value_ints" => int64,
                "value_string" | "value_strings" => DataType::String as i32,
                _ => float,
            }),
            "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" => Some(int64),
            "Cast" => int_attr("to"),
            "CastLike" => input(1),
            "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "Not" | "And" | "Or" | "Xor"
            | "IsNaN" | "IsInf" => Some(boolean),
            "ConstantOfShape" => Some(tensor_attr("value").map_or(float, |t| t.data_type)),
            "EyeLike" | "RandomNormalLike" | "RandomUniformLike" => int_attr("dtype").or_else(|| input(0)),
            "RandomNormal" | "RandomUniform" => Some(int_attr("dtype").unwrap_or(float)),
            "Where" => input(1),
            "DequantizeLinear" => input(1),
            "QuantizeLinear" => Some(input(2).unwrap_or(uint8)),
            "DynamicQuantizeLinear" => Some(uint8),
            "MatMulInteger" | "ConvInteger" => Some(DataType::Int32 as i32),
            _ => n.input.iter().filter(|i| !i.is_empty()).find_map(|i| types.get(i.as_str()).copied()),
        };
        let Some(first) = first else { continue };
        for (k, o) in n.output.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            // Other outputs past the first (LayerNormalization's mean and inverse deviation) have
            // the first's type in every exporter seen.
            let ty = match (n.op_type.as_str(), k) {
                ("TopK" | "MaxPool", 1) => int64,
                ("DynamicQuantizeLinear", 1) => float,
                ("Dropout", 1) => boolean,
                _ => first,
            };
            types.entry(o.as_str()).or_insert(ty);
        }
    }
    types
}
