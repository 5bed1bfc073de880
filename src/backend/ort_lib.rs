//! Finding the ONNX Runtime shared library, which the `ort` backend loads at run time rather than
//! linking, so a build without it still runs on tract.
//!
//! Order: the caller's explicit path (`--ort-lib`, `ort_library_path`), then `DRT_ORT_LIB`, then
//! `ORT_DYLIB_PATH`, then the system loader by bare name (`libonnxruntime.so` through
//! `LD_LIBRARY_PATH`, the system's library folders, or an Android app's own libraries). The first
//! explicit source that is set decides: a path the user gave that does not exist is an error, not a
//! reason to quietly pick another library. Nothing is looked for relative to the working directory or
//! at a folder fixed when the library was built: either would let whoever controls that folder put
//! their code into the host app.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How to get the library, appended to every "not found" message.
pub const INSTALL_HINT: &str = "install it with `bash scripts/install-onnxruntime.sh` (from the diffusion-rt \
     repository) and point --ort-lib or DRT_ORT_LIB at the path it prints, or put libonnxruntime where the \
     system loader finds it";

/// Where the library is to be loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An absolute, symlink-resolved file.
    Path(PathBuf),
    /// A bare file name left to the system loader's own search.
    SystemLoader(PathBuf),
}

impl Location {
    /// What `ort` is handed to load.
    pub fn path(&self) -> &Path {
        match self {
            Location::Path(p) | Location::SystemLoader(p) => p,
        }
    }
}

/// The library's file name on this platform (`libonnxruntime.so`, `libonnxruntime.dylib`, ...).
pub fn default_name() -> String {
    format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// Where to load the library from, or [`Error::BackendUnavailable`] for a path the caller or the
/// environment named that is not there.
pub fn find(explicit: Option<&Path>) -> Result<Location> {
    if let Some(path) = explicit {
        return resolve(path, "--ort-lib");
    }
    for var in ["DRT_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return resolve(Path::new(&value), var);
        }
    }
    Ok(Location::SystemLoader(PathBuf::from(default_name())))
}

/// Whether the library [`find`] gives can be loaded: a named file exists, or the system loader
/// finds the bare name (it is then loaded, and stays loaded for the backend to use). What the
/// automatic backend choice asks before it picks ONNX Runtime.
pub fn available() -> bool {
    match find(None) {
        Ok(Location::Path(_)) => true,
        Ok(Location::SystemLoader(name)) => system_loader_finds(&name),
        Err(_) => false,
    }
}

#[cfg(unix)]
fn system_loader_finds(name: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(name.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated name; a library that loads is kept loaded (never closed), as ort
    // would keep it.
    !unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) }.is_null()
}

#[cfg(not(unix))]
fn system_loader_finds(_: &Path) -> bool {
    false
}

/// The library file a user named, the library inside the folder they named, or a bare name.
fn resolve(path: &Path, source: &str) -> Result<Location> {
    if is_bare_name(path) {
        return Ok(Location::SystemLoader(path.to_path_buf()));
    }
    if path.is_file() {
        return absolute(path).map(Location::Path);
    }
    if path.is_dir() {
        if let Some(lib) = library_in(path) {
            return absolute(&lib).map(Location::Path);
        }
    }
    Err(Error::BackendUnavailable(format!(
        "ONNX Runtime library `{}` (from {source}) not found; {INSTALL_HINT}",
        path.display()
    )))
}

/// A file name without a folder is the system loader's to search for, as `dlopen` does with such
/// names (on Android, the app's native libraries may stay inside the APK where no path reaches
/// them). It is never looked up in the working directory.
fn is_bare_name(path: &Path) -> bool {
    path.components().count() == 1 && matches!(path.components().next(), Some(std::path::Component::Normal(_)))
}

/// `libonnxruntime.so` in `dir`, or failing that a versioned `libonnxruntime.so.X.Y.Z` (the PyPI wheel
/// ships only that name), the highest version first.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let plain = default_name();
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
        let bare = find(Some(Path::new("libonnxruntime.so"))).unwrap();
        assert_eq!(bare, Location::SystemLoader("libonnxruntime.so".into()));
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
