//! Finding the ONNX Runtime shared library, which the `ort` backend loads at run time rather than
//! linking, so a build without it still runs on tract.
//!
//! Order: the explicit path (`--ort-lib`), `DRT_ORT_LIB`, `ORT_DYLIB_PATH`, then where
//! `scripts/install-onnxruntime.sh` puts it (`.ort/lib/` under the current directory, then under this
//! crate's source directory, which is what tests and `cargo run` see). The first of the explicit
//! sources that is set decides: a path the user gave that does not exist is an error, not a reason to
//! quietly pick another library. A bare file name (`libonnxruntime.so`) is searched for by the
//! system loader, as `dlopen` would.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How to get the library, appended to every "not found" message.
pub const INSTALL_HINT: &str = "install it with `bash scripts/install-onnxruntime.sh` (from the diffusion-rt \
     repository), or point --ort-lib / DRT_ORT_LIB at an existing libonnxruntime";

const INSTALL_DIR: &str = ".ort/lib";

/// Returns the absolute, symlink-resolved path of the library to load, or
/// [`Error::BackendUnavailable`] saying where it looked and how to install it.
pub fn find(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return resolve(path, "--ort-lib");
    }
    for var in ["DRT_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return resolve(Path::new(&value), var);
        }
    }
    let mut looked = Vec::new();
    let cwd = std::env::current_dir().ok();
    let dirs = cwd.iter().map(|d| d.join(INSTALL_DIR)).chain([Path::new(env!("CARGO_MANIFEST_DIR")).join(INSTALL_DIR)]);
    for dir in dirs {
        if let Some(lib) = library_in(&dir) {
            return absolute(&lib);
        }
        looked.push(dir.display().to_string());
    }
    Err(Error::BackendUnavailable(format!(
        "ONNX Runtime library not found (no --ort-lib, DRT_ORT_LIB or ORT_DYLIB_PATH; nothing in {}); {INSTALL_HINT}",
        looked.join(", ")
    )))
}

/// The library file a user named, or the library inside the folder they named.
fn resolve(path: &Path, source: &str) -> Result<PathBuf> {
    if is_bare_name(path) && !path.exists() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() {
        return absolute(path);
    }
    if path.is_dir() {
        if let Some(lib) = library_in(path) {
            return absolute(&lib);
        }
    }
    Err(Error::BackendUnavailable(format!(
        "ONNX Runtime library `{}` (from {source}) not found; {INSTALL_HINT}",
        path.display()
    )))
}

/// A file name without a folder that is not a file here is left to the system loader's own search
/// (`LD_LIBRARY_PATH`; on Android, the app's native libraries, which may stay inside the APK where
/// no path reaches them), as `dlopen` does with such names.
fn is_bare_name(path: &Path) -> bool {
    path.components().count() == 1 && matches!(path.components().next(), Some(std::path::Component::Normal(_)))
}

/// `libonnxruntime.so` in `dir`, or failing that a versioned `libonnxruntime.so.X.Y.Z` (the PyPI wheel
/// ships only that name), the highest version first.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let candidate = dir.join(&plain);
    if candidate.is_file() {
        return Some(candidate);
    }
    let versioned_prefix = format!("{plain}.");
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&versioned_prefix))
        })
        .collect();
    versioned.sort_by_key(|p| version_key(p));
    versioned.pop()
}

fn version_key(path: &Path) -> Vec<u64> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.split('.').filter_map(|part| part.parse().ok()).collect()
}

/// ort resolves a relative path against the executable's folder, not the working directory, so it
/// always gets an absolute one. Symlinks are resolved too: ONNX Runtime looks for its provider
/// libraries next to the file it was loaded from.
fn absolute(path: &Path) -> Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(_) if path.is_absolute() => Ok(path.to_path_buf()),
        Err(e) => std::env::current_dir().map(|cwd| cwd.join(path)).map_err(|_| Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_sort_by_number() {
        let a = version_key(Path::new("libonnxruntime.so.1.9.0"));
        let b = version_key(Path::new("libonnxruntime.so.1.31.1"));
        assert!(a < b);
    }

    #[test]
    fn a_bare_name_is_left_to_the_system_loader() {
        assert_eq!(find(Some(Path::new("libonnxruntime.so"))).unwrap(), Path::new("libonnxruntime.so"));
        assert!(find(Some(Path::new("./libonnxruntime.so"))).is_err(), "a path, not a bare name");
    }

    #[test]
    fn explicit_missing_path_names_the_script() {
        let err = find(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::BackendUnavailable(_)), "{msg}");
        assert!(msg.contains("scripts/install-onnxruntime.sh") && msg.contains("/nonexistent"), "{msg}");
    }
}
