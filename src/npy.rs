//! `.npy` files of float samples (`--noise`, `--init`, `--save-raw`), through the `npyz` crate.

use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result};

/// A float32 array read from `.npy`: data in C order and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads a float32 or float64 `.npy` (C order) as f32. Malformed files are an error naming the file.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

/// Parses `.npy` bytes as [`read`] does a file.
pub fn from_bytes(bytes: &[u8]) -> Result<Array> {
    parse(bytes).map_err(|e| Error::InvalidArgument(format!("not a valid .npy: {e}")))
}

fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
    let file = npyz::NpyFile::new(bytes).map_err(|e| format!("not a valid .npy file ({e})"))?;
    if file.order() != npyz::Order::C {
        return Err("Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into());
    }
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    // The header's claimed size must match the bytes really present before anything is allocated.
    if n.saturating_mul(4) > bytes.len() {
        return Err(format!("header claims shape {shape:?}, more than the file holds"));
    }
    let descr = file.dtype().descr();
    let dtype = descr.trim_matches(|c| c == '\'' || c == '"');
    let data: Vec<f32> = match dtype {
        "<f4" | "|f4" => file.into_vec::<f32>().map_err(|e| e.to_string())?,
        "<f8" => file.into_vec::<f64>().map_err(|e| e.to_string())?.into_iter().map(|v| v as f32).collect(),
        other => return Err(format!("dtype {other} is not supported (use float32 or float64)")),
    };
    if data.len() != n {
        return Err(format!("holds {} values for shape {shape:?}", data.len()));
    }
    Ok(Array { shape, data })
}

/// Writes `data` with `shape` as a float32 `.npy`.
pub fn write(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    if shape.iter().product::<usize>() != data.len() {
        return Err(Error::Internal(format!("npy::write: {} values for shape {shape:?}", data.len())));
    }
    let io = |e: std::io::Error| Error::io(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape64)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(io)?;
    w.extend(data.iter().copied()).map_err(io)?;
    w.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_bytes() {
        let dir = std::env::temp_dir().join(format!("drt-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        write(&p, &[2, 3], &[1.0, -2.5, 3.0, 0.0, 1e-7, 7.0]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1.0, -2.5, 3.0, 0.0, 1e-7, 7.0]);
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 5, 20, bytes.len() - 3] {
            assert!(parse(&bytes[..cut]).is_err(), "truncated to {cut} bytes must fail");
        }
        assert!(parse(b"not an npy file at all").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
