//! ONNX Runtime's weight-only quantized matrix product, `com.microsoft.MatMulNBits`, for tract,
//! which has no such operator: each one becomes a plain `MatMul` by its weights widened to float32
//! at load (plus its bias). The graph then runs on tract with the numbers ONNX Runtime's float
//! kernel computes from the same 4- or 8-bit weights, in float32 weight memory; the small files
//! are what the weight-only path buys there.
//!
//! The packed layout (ONNX Runtime's contrib operator documentation): `B` is `[N, blocks, bytes]`,
//! the weights of output column n in blocks of `block_size` along K, each weight `bits` wide,
//! lowest bits first; `scales` is `[N × blocks]`; `zero_points`, when given, packed the same way
//! along the blocks, else 2^(bits−1). Weight (n, k) is (q − zero) × scale of its block.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

use crate::error::{Error, Result};

fn attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// The `bits`-wide values of `bytes`, lowest bits first.
fn unpack(bytes: &[u8], bits: usize) -> impl Iterator<Item = u8> + '_ {
    let per_byte = 8 / bits;
    let mask = ((1u16 << bits) - 1) as u8;
    bytes.iter().flat_map(move |&b| (0..per_byte).map(move |i| (b >> (i * bits)) & mask))
}

fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    if !t.float_data.is_empty() {
        return Some(t.float_data.clone());
    }
    (t.data_type == DataType::Float as i32 && t.raw_data.len().is_multiple_of(4))
        .then(|| t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The float32 `[K, N]` weights of one `MatMulNBits` node.
fn widen(node: &NodeProto, b: &TensorProto, scales: &TensorProto, zeros: Option<&TensorProto>) -> Result<Vec<f32>> {
    let bad = |what: &str| Error::Model(format!("MatMulNBits `{}`: {what}", node.name));
    let (k, n) = (attr(node, "K").unwrap_or(0) as usize, attr(node, "N").unwrap_or(0) as usize);
    let bits = attr(node, "bits").unwrap_or(4) as usize;
    let block = attr(node, "block_size").unwrap_or(0) as usize;
    if !matches!(bits, 2 | 4 | 8) || block == 0 || k == 0 || n == 0 {
        return Err(bad(&format!("K {k}, N {n}, {bits} bits, blocks of {block}: not a layout this reads")));
    }
    let blocks = k.div_ceil(block);
    let blob = block * bits / 8;
    let scales = floats(scales).ok_or_else(|| bad("scales are not float32"))?;
    if b.raw_data.len() != n * blocks * blob || scales.len() != n * blocks {
        return Err(bad("packed weights or scales of the wrong size"));
    }
    let zero_points: Option<Vec<u8>> = zeros.map(|z| {
        let per_row = (blocks * bits).div_ceil(8);
        z.raw_data.chunks(per_row).flat_map(|row| unpack(row, bits).take(blocks)).collect()
    });
    if zero_points.as_ref().is_some_and(|z| z.len() != n * blocks) {
        return Err(bad("zero points of the wrong size (only packed uint8 zero points are read)"));
    }
    let default_zero = 1u8 << (bits - 1);
    let mut w = vec![0f32; k * n];
    for col in 0..n {
        for blk in 0..blocks {
            let at = col * blocks + blk;
            let zero = zero_points.as_ref().map_or(default_zero, |z| z[at]) as f32;
            let packed = &b.raw_data[at * blob..(at + 1) * blob];
            for (i, q) in unpack(packed, bits).enumerate() {
                let row = blk * block + i;
                if row < k {
                    w[row * n + col] = (q as f32 - zero) * scales[at];
                }
            }
        }
    }
    Ok(w)
}

/// Replaces every `MatMulNBits` whose weights are initializers by `MatMul` with float32 weights
/// (and `Add` of its bias), in place; returns how many.
pub(crate) fn widen_matmul_nbits(model: &mut ModelProto) -> Result<usize> {
    let Some(graph) = model.graph.as_mut() else { return Ok(0) };
    if !graph.node.iter().any(|n| n.op_type == "MatMulNBits") {
        return Ok(0);
    }
    let mut widened = 0;
    let mut added = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut n in std::mem::take(&mut graph.node) {
        if n.op_type != "MatMulNBits" || n.domain != "com.microsoft" {
            nodes.push(n);
            continue;
        }
        let find = |i: usize| {
            n.input.get(i).filter(|s| !s.is_empty()).and_then(|s| graph.initializer.iter().find(|t| &t.name == s))
        };
        let (Some(b), Some(scales)) = (find(1), find(2)) else {
            return Err(Error::Model(format!("MatMulNBits `{}`: its weights are not constants", n.name)));
        };
        if n.input.get(4).is_some_and(|g| !g.is_empty()) {
            return Err(Error::Model(format!("MatMulNBits `{}`: g_idx (act-order) is not read", n.name)));
        }
        let w = widen(&n, b, scales, find(3))?;
        let (k, cols) = (attr(&n, "K").unwrap_or(0), attr(&n, "N").unwrap_or(0));
        let name = format!("{}/drt_widened", n.name);
        added.push(TensorProto {
            name: name.clone(),
            dims: vec![k, cols],
            data_type: DataType::Float as i32,
            raw_data: w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        let bias = n.input.get(5).filter(|s| !s.is_empty()).cloned();
        let output = std::mem::take(&mut n.output);
        let product = if bias.is_some() { vec![format!("{}/drt_product", n.name)] } else { output.clone() };
        let a = n.input[0].clone();
        nodes.push(NodeProto {
            op_type: "MatMul".into(),
            name: format!("{}/drt_matmul", n.name),
            input: vec![a, name],
            output: product.clone(),
            ..Default::default()
        });
        if let Some(bias) = bias {
            nodes.push(NodeProto {
                op_type: "Add".into(),
                name: format!("{}/drt_bias", n.name),
                input: vec![product[0].clone(), bias],
                output,
                ..Default::default()
            });
        }
        widened += 1;
    }
    graph.node = nodes;
    // The packed weights nothing reads any more.
    let used: std::collections::HashSet<&str> =
        graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let initializers = std::mem::take(&mut graph.initializer);
    graph.initializer = initializers.into_iter().filter(|t| used.contains(t.name.as_str())).collect();
    graph.initializer.extend(added);
    Ok(widened)
}
