//! fusec frontends: model files in, [`fuse_ir::Graph`] out.
//!
//! - [`onnx`]: ONNX models, opsets 11 to 21.
//! - [`safetensors`]: memory-mapped, validated checkpoints.
//! - [`arch`]: the architecture registry that builds graphs from
//!   checkpoints (EfficientDet).
//!
//! Every error is a [`LoadError`] naming the file and, inside it, the node
//! or tensor at fault.

pub mod arch;
pub mod onnx;
pub mod safetensors;

use std::path::{Path, PathBuf};

/// A file could not be turned into a graph. `Display` gives one line:
/// `FILE: what is wrong`; what it is about inside the file (a node, a
/// tensor) is also kept as typed fields, for `--json` and the Python API.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", file.display())]
pub struct LoadError {
    pub file: PathBuf,
    pub msg: String,
    /// The node at fault, when there is one.
    pub node: Option<String>,
    /// The tensor (weight, input, output) at fault, when there is one.
    pub tensor: Option<String>,
}

impl LoadError {
    pub fn new(file: &Path, msg: impl Into<String>) -> LoadError {
        LoadError { file: file.to_path_buf(), msg: msg.into(), node: None, tensor: None }
    }

    /// An error about tensor `name` (a weight, input or output).
    pub fn tensor(file: &Path, name: &str, msg: impl Into<String>) -> LoadError {
        LoadError { tensor: Some(name.to_string()), ..LoadError::new(file, msg) }
    }

    /// An error about node `name`.
    pub fn node(file: &Path, name: &str, msg: impl Into<String>) -> LoadError {
        LoadError { node: Some(name.to_string()), ..LoadError::new(file, msg) }
    }

    /// A graph error of the IR, with the node or tensor it names.
    pub fn ir(file: &Path, e: &fuse_ir::IrError) -> LoadError {
        LoadError {
            node: e.node().map(str::to_string),
            tensor: e.tensor().map(str::to_string),
            ..LoadError::new(file, e.to_string())
        }
    }
}

/// What kind of model file a path holds, judged from its extension; the
/// reader then checks the contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Onnx,
    Safetensors,
}

/// A file's bytes, or a [`LoadError`] naming it (the frontends' one
/// wording for a file that cannot be read).
pub fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::new(path, format!("cannot read: {e}")))
}

/// The file a path names: itself, or for a HuggingFace checkpoint folder
/// (a directory with a `config.json`) its `model.safetensors`.
pub fn model_file(path: &Path) -> PathBuf {
    match hf_folder(path) {
        Some(dir) => dir.join("model.safetensors"),
        None => path.to_path_buf(),
    }
}

/// The HuggingFace checkpoint folder a path names, if it names one: the
/// folder itself (a directory with a `config.json`), or the folder of its
/// `model.safetensors`.
pub fn hf_folder(path: &Path) -> Option<&Path> {
    let has_config = |d: &Path| d.join("config.json").is_file();
    if path.is_dir() {
        return has_config(path).then_some(path);
    }
    let parent = path.parent().filter(|d| has_config(d))?;
    (path.file_name()? == "model.safetensors").then_some(parent)
}

pub fn detect_kind(path: &Path) -> Result<FileKind, LoadError> {
    let path = &model_file(path);
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => Ok(FileKind::Onnx),
        Some("safetensors") => Ok(FileKind::Safetensors),
        Some("mlpackage" | "mlmodel") => Err(LoadError::new(
            path,
            "a Core ML model: fusec reads ONNX and safetensors, and runs models with ONNX Runtime or tract; run Core ML packages on macOS, and verify the .onnx export of the same fusion here",
        )),
        _ => Err(LoadError::new(path, "unknown model file extension: expected .onnx or .safetensors")),
    }
}
