//! The element types of a graph's inputs, read from its file before any backend loads it (the
//! memory planner needs them first): the file is mapped and decoded with a partial ONNX schema,
//! so every other field, the weights included, is skipped where it lies rather than copied.

use std::path::Path;

use prost::Message;

use super::DType;
use crate::error::{Error, Result};

#[derive(Clone, PartialEq, Message)]
struct Model {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
}

#[derive(Clone, PartialEq, Message)]
struct Graph {
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfo>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorType>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorType {
    #[prost(int32, tag = "1")]
    elem_type: i32,
}

/// The element type of the input `name` of the graph at `path` (`None` for a type this runtime
/// does not feed, or no such input).
pub fn input_type(path: &Path, name: &str) -> Result<Option<DType>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is only read, and dropped before returning; a file truncated meanwhile
    // is the caller's to avoid, as for every backend that maps weights.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let model =
        Model::decode(&map[..]).map_err(|e| Error::Model(format!("{}: not an ONNX model: {e}", path.display())))?;
    let input = model.graph.unwrap_or_default().input.into_iter().find(|i| i.name == name);
    let elem = input.and_then(|i| i.r#type).and_then(|t| t.tensor_type).map(|t| t.elem_type);
    // TensorProto.DataType: FLOAT 1, INT32 6, INT64 7, FLOAT16 10.
    Ok(match elem {
        Some(1) => Some(DType::F32),
        Some(10) => Some(DType::F16),
        Some(6) => Some(DType::I32),
        Some(7) => Some(DType::I64),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_input_types_and_refuses_other_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let vp = root.join("tests/fixtures/vp/bad_inputs.onnx");
        assert_eq!(input_type(&vp, "obs").unwrap(), Some(DType::F32));
        assert_eq!(input_type(&vp, "labels").unwrap(), Some(DType::I64));
        assert_eq!(input_type(&vp, "absent").unwrap(), None);
        let half = root.join("tests/fixtures/sd-tiny/export-fp16/unet/model.onnx");
        assert_eq!(input_type(&half, "sample").unwrap(), Some(DType::F16));
        let junk = std::env::temp_dir().join(format!("drt-input-types-{}.onnx", std::process::id()));
        std::fs::write(&junk, [0xff; 16]).unwrap();
        assert!(matches!(input_type(&junk, "x"), Err(Error::Model(m)) if m.contains("not an ONNX model")));
        std::fs::remove_file(&junk).ok();
        assert!(matches!(input_type(&root.join("absent.onnx"), "x"), Err(Error::Io(_))));
    }
}
