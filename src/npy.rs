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

/// Reads a float64 `.npy` (C order) at full precision, with its shape.
pub fn read_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: String| Error::InvalidArgument(format!("{}: {e}", path.display()));
    let (file, shape) = open(&bytes).map_err(bad)?;
    let data = file.into_vec::<f64>().map_err(|e| bad(format!("expected float64 values ({e})")))?;
    Ok((shape, data))
}

/// The file behind a checked header: C order, and no more values claimed than the bytes hold.
fn open(bytes: &[u8]) -> std::result::Result<(npyz::NpyFile<&[u8]>, Vec<usize>), String> {
    check_header(bytes)?;
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
    Ok((file, shape))
}

fn parse(bytes: &[u8]) -> std::result::Result<Array, String> {
    let (file, shape) = open(bytes)?;
    let n: usize = shape.iter().product();
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

/// Accepts only the header numpy writes, `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`,
/// before npyz parses it: npyz reads the header as a general Python literal, and a crafted one
/// (found by fuzzing) keeps that parser busy for minutes.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("malformed header: {why}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return bad("no .npy magic");
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if len > 1 << 16 || bytes.len() < start + len {
        return bad("header length out of range");
    }
    let header =
        std::str::from_utf8(&bytes[start..start + len]).map_err(|_| "malformed header: not text".to_string())?;
    let body =
        header.trim_end().strip_prefix('{').and_then(|h| h.strip_suffix('}')).ok_or("malformed header: not a dict")?;
    let mut seen = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or("malformed header: key")?;
        let end = rest[1..].find(quote).ok_or("malformed header: key")? + 1;
        let key = &rest[1..end];
        rest = rest[end + 1..].trim_start().strip_prefix(':').ok_or("malformed header: missing ':'")?.trim_start();
        let value_len = match key {
            "descr" => {
                let q = rest.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or("malformed header: descr")?;
                let close = rest[1..].find(q).ok_or("malformed header: descr")? + 2;
                if !rest[1..close - 1].chars().all(|c| c.is_ascii_alphanumeric() || "<>|=".contains(c)) {
                    return bad("descr");
                }
                close
            }
            "fortran_order" => {
                ["True", "False"].iter().find(|w| rest.starts_with(**w)).ok_or("malformed header: fortran_order")?.len()
            }
            "shape" => {
                let close = rest.find(')').ok_or("malformed header: shape")? + 1;
                let inside = rest[..close].strip_prefix('(').ok_or("malformed header: shape")?;
                if !inside[..inside.len() - 1].chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') {
                    return bad("shape");
                }
                close
            }
            _ => return Err(format!("malformed header: unexpected key `{key}`")),
        };
        if seen.contains(&key) {
            return Err(format!("malformed header: `{key}` twice"));
        }
        seen.push(key);
        rest = rest[value_len..].trim_start();
        rest = rest.strip_prefix(',').map_or(rest, str::trim_start);
        if !rest.is_empty() && !rest.starts_with(['\'', '"']) {
            return bad("expected `,` between entries");
        }
    }
    if seen.len() != 3 {
        return bad("needs descr, fortran_order and shape");
    }
    Ok(())
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
        // Headers numpy would not write are refused before npyz's general literal parser sees them.
        let with = |header: &str| {
            let mut h = header.to_string();
            while !(10 + h.len() + 1).is_multiple_of(64) {
                h.push(' ');
            }
            h.push('\n');
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend((h.len() as u16).to_le_bytes());
            b.extend(h.as_bytes());
            b.extend(1.5f32.to_le_bytes());
            b
        };
        assert_eq!(
            parse(&with("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }")).map(|a| a.data),
            Ok(vec![1.5])
        );
        assert_eq!(
            parse(&with("{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(1,)}")).map(|a| a.data),
            Ok(vec![1.5])
        );
        for header in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': ((1),), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1+1j,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'descr': '<f4', 'shape': (1,)}",
            "['descr', '<f4']",
        ] {
            assert!(parse(&with(header)).is_err(), "{header}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
