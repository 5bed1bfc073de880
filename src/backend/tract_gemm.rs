//! A rewrite of float16 `Gemm` nodes for tract 0.23.9, whose Gemm translation produces float32
//! from float16 operands, so whole float16 graphs (a `--dtype fp16` UNet's time embedding, a
//! float16 digits model) fail to load. `Gemm(A, B, C)` with alpha = beta = 1 and no transposed A
//! is the same computation as `MatMul(A, Bᵀ?) + C`, which tract runs in float16.

use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto};

/// ONNX's TensorProto.DataType for float16.
const FLOAT16: i32 = 10;

/// Whether the graph holds float16 weights or inputs (the only case the rewrite is for).
fn is_float16(model: &ModelProto) -> bool {
    let Some(g) = &model.graph else { return false };
    let input_f16 = g.input.iter().any(|v| {
        matches!(&v.r#type, Some(t) if matches!(&t.value, Some(tract_onnx::pb::type_proto::Value::TensorType(tt)) if tt.elem_type == FLOAT16))
    });
    input_f16 || g.initializer.iter().any(|t| t.data_type == FLOAT16)
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn node(op: &str, name: String, input: Vec<String>, output: Vec<String>) -> NodeProto {
    NodeProto { op_type: op.into(), name, input, output, ..Default::default() }
}

/// Replaces, in float16 graphs, every `Gemm` that is a plain product plus bias by `MatMul`
/// (after a `Transpose` of B when `transB` is set) and `Add`, in place, so node order stays
/// topological. Returns how many were replaced.
pub(crate) fn rewrite_float16_gemms(model: &mut ModelProto) -> usize {
    if !is_float16(model) {
        return 0;
    }
    let Some(graph) = model.graph.as_mut() else { return 0 };
    let mut replaced = 0;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for n in std::mem::take(&mut graph.node) {
        let float = |name: &str, default: f32| attr(&n, name).map_or(default, |a| a.f);
        let int = |name: &str| attr(&n, name).map_or(0, |a| a.i);
        let plain = n.op_type == "Gemm"
            && n.domain.is_empty()
            && float("alpha", 1.0) == 1.0
            && float("beta", 1.0) == 1.0
            && int("transA") == 0
            && (2..=3).contains(&n.input.len())
            && n.output.len() == 1;
        if !plain {
            nodes.push(n);
            continue;
        }
        let base = if n.name.is_empty() { format!("gemm{replaced}") } else { n.name.clone() };
        let mut b = n.input[1].clone();
        if int("transB") != 0 {
            let t = format!("{base}/drt_transposed_b");
            let mut transpose = node("Transpose", format!("{base}/drt_transpose"), vec![b], vec![t.clone()]);
            transpose.attribute.push(AttributeProto {
                name: "perm".into(),
                r#type: AttributeType::Ints as i32,
                ints: vec![1, 0],
                ..Default::default()
            });
            nodes.push(transpose);
            b = t;
        }
        let bias = n.input.get(2).filter(|c| !c.is_empty()).cloned();
        let product = if bias.is_some() { format!("{base}/drt_product") } else { n.output[0].clone() };
        nodes.push(node("MatMul", format!("{base}/drt_matmul"), vec![n.input[0].clone(), b], vec![product.clone()]));
        if let Some(c) = bias {
            nodes.push(node("Add", format!("{base}/drt_bias"), vec![product, c], n.output.clone()));
        }
        replaced += 1;
    }
    graph.node = nodes;
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{GraphProto, TensorProto};

    fn gemm(attrs: &[(&str, f32, i64)], inputs: &[&str]) -> NodeProto {
        let mut n = node("Gemm", "fc".into(), inputs.iter().map(|s| s.to_string()).collect(), vec!["y".into()]);
        for &(name, f, i) in attrs {
            n.attribute.push(AttributeProto { name: name.into(), f, i, ..Default::default() });
        }
        n
    }

    fn model(n: NodeProto, dtype: i32) -> ModelProto {
        let w = TensorProto { name: "w".into(), data_type: dtype, dims: vec![4, 3], ..Default::default() };
        ModelProto {
            graph: Some(GraphProto { node: vec![n], initializer: vec![w], ..Default::default() }),
            ..Default::default()
        }
    }

    fn ops(m: &ModelProto) -> Vec<(String, Vec<String>, Vec<String>)> {
        m.graph.as_ref().unwrap().node.iter().map(|n| (n.op_type.clone(), n.input.clone(), n.output.clone())).collect()
    }

    #[test]
    fn plain_float16_gemm_becomes_matmul_and_add() {
        let mut m = model(gemm(&[("transB", 0.0, 1)], &["x", "w", "b"]), FLOAT16);
        assert_eq!(rewrite_float16_gemms(&mut m), 1);
        let got = ops(&m);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(got[0], ("Transpose".into(), s(&["w"]), s(&["fc/drt_transposed_b"])));
        assert_eq!(got[1], ("MatMul".into(), s(&["x", "fc/drt_transposed_b"]), s(&["fc/drt_product"])));
        assert_eq!(got[2], ("Add".into(), s(&["fc/drt_product", "b"]), s(&["y"])));
        let perm = &m.graph.as_ref().unwrap().node[0].attribute[0];
        assert_eq!((perm.name.as_str(), perm.ints.as_slice()), ("perm", &[1i64, 0][..]));

        let mut m = model(gemm(&[], &["x", "w"]), FLOAT16);
        assert_eq!(rewrite_float16_gemms(&mut m), 1);
        assert_eq!(ops(&m), vec![("MatMul".into(), s(&["x", "w"]), s(&["y"]))]);
    }

    #[test]
    fn other_gemms_and_float32_graphs_are_left_alone() {
        for (attrs, dtype) in [
            (vec![("alpha", 2.0, 0)], FLOAT16),
            (vec![("beta", 0.5, 0)], FLOAT16),
            (vec![("transA", 0.0, 1)], FLOAT16),
            (vec![], 1),
        ] {
            let mut m = model(gemm(&attrs, &["x", "w", "b"]), dtype);
            assert_eq!(rewrite_float16_gemms(&mut m), 0, "{attrs:?} {dtype}");
            assert_eq!(ops(&m)[0].0, "Gemm");
        }
    }
}
