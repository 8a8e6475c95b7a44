//! fusec exporters: [`fuse_ir::Graph`] in, deployable model files out.
//!
//! - [`onnx`]: ONNX, opset 17, IR version 8.
//! - [`onnx_builder`]: small ONNX models in any opset, for fixtures and tests.
//!
//! Files are written atomically ([`write_atomic`]): a temporary file in the
//! target's directory, renamed over the target only once complete, so a
//! failed export never leaves a partial file or breaks an existing one.

pub mod onnx;
pub mod onnx_builder;

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The graph holds something the format cannot express.
    #[error("{0}")]
    Unsupported(String),
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |e: std::io::Error| ExportError::Io { path: path.to_path_buf(), msg: e.to_string() };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".fusec-").suffix(".tmp").tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
