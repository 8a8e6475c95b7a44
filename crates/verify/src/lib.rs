//! fusec verify: run models on a real runtime and compare their outputs.
//!
//! - [`runtime`]: one [`runtime::Session`] interface, two backends: tract
//!   (pure Rust, the default) and ONNX Runtime through `ort` with a library
//!   loaded at run time (`ORT_DYLIB_PATH`).
//! - [`compare`]: max abs error, relative L2 error, cosine similarity.
//! - [`detect`]: EfficientDet anchors, box decoding and NMS as effdet does them, detection metrics.
//! - [`io`]: named f32 tensors in safetensors files.
//! - [`timing`]: latency statistics (mean, p50, p99) of interleaved runs.

pub mod compare;
pub mod detect;
pub mod io;
pub mod runtime;
pub mod timing;

/// Named f32 tensors, in a meaningful order (model inputs or outputs).
pub type Tensors = Vec<(String, ndarray::ArrayD<f32>)>;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The caller asked for something this machine or library cannot do
    /// (missing ONNX Runtime library, missing execution provider).
    #[error("{0}")]
    Unavailable(String),
    /// Bad input data (a tensor file, a name, a shape).
    #[error("{0}")]
    Input(String),
    /// The runtime failed on a model fusec produced.
    #[error("{0}")]
    Runtime(String),
}
