//! Core ML: a fuse-ir graph as an ML program package (`.mlpackage`).
//!
//! ```text
//! super.mlpackage/
//!   Manifest.json
//!   Data/com.apple.CoreML/model.mlmodel          Model { mlProgram }, spec 6
//!   Data/com.apple.CoreML/weights/weight.bin     weights (blob storage v2)
//! ```
//!
//! - [`mil`]: the op-by-op lowering to MIL (opset CoreML5, iOS 15+).
//! - [`blob`]: the `weight.bin` writer.
//! - [`wire`]: deterministic mirrors of the map-holding messages.
//!
//! The package is built in a temporary directory beside the target and
//! moved into place only when complete; an existing package at the target
//! is replaced only then, and anything else at the target is refused.

pub mod blob;
pub mod mil;
pub mod wire;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use coreml_proto::proto::array_feature_type::ArrayDataType;
use coreml_proto::proto::{feature_type, ArrayFeatureType, FeatureDescription, FeatureType};
use fuse_ir::Graph;
use prost::Message;

use crate::ExportError;

/// Core ML specification version of the written model (iOS 15, macOS 12).
pub const SPEC_VERSION: i32 = 6;

const MODEL_ID: &str = "9e6c3a52-6a0f-4c3e-9a43-6675736563ff";
const WEIGHTS_ID: &str = "1d0e2b7f-5c4a-4d19-8b6e-6675736563fe";

/// Precision of the weights and of every float tensor inside the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::F16 => "fp16",
        }
    }
}

/// What [`write_package`] wrote.
#[derive(Debug)]
pub struct PackageInfo {
    /// MIL operations, `const`s included.
    pub operations: usize,
    pub weight_bytes: u64,
    /// Interface names changed to be MIL identifiers: (ONNX name, Core ML name).
    pub renamed: Vec<(String, String)>,
}

/// Writes `g` as the ML program package `path` (a directory).
pub fn write_package(g: &Graph, path: &Path, precision: Precision) -> Result<PackageInfo, ExportError> {
    let io = |what: &Path, e: std::io::Error| ExportError::Io { path: what.to_path_buf(), msg: e.to_string() };
    if path.exists() && !path.join("Manifest.json").is_file() {
        return Err(ExportError::Io {
            path: path.to_path_buf(),
            msg: "exists and is not a Core ML package (no Manifest.json); not replaced".into(),
        });
    }
    let parent = crate::parent_dir(path);
    let tmp = crate::temp_builder(0o777).tempdir_in(parent).map_err(|e| io(parent, e))?;
    let _pending = crate::Pending::new(tmp.path());
    let data = tmp.path().join("Data/com.apple.CoreML");
    fs::create_dir_all(data.join("weights")).map_err(|e| io(&data, e))?;

    let weights_path = data.join("weights/weight.bin");
    let file = fs::File::create(&weights_path).map_err(|e| io(&weights_path, e))?;
    let mut blobs = blob::BlobWriter::new(BufWriter::with_capacity(1 << 20, file)).map_err(|e| io(&weights_path, e))?;
    let lowered = mil::lower(g, precision, &mut blobs)?;
    let file = blobs
        .finish()
        .map_err(|e| io(&weights_path, e))?
        .into_inner()
        .map_err(|e| io(&weights_path, e.into_error()))?;
    file.sync_all().map_err(|e| io(&weights_path, e))?;
    let weight_bytes = file.metadata().map_err(|e| io(&weights_path, e))?.len();

    let renamed = lowered.renamed();
    let operations = lowered.function.block_specializations.values().map(|b| b.operations.len()).sum();
    let model = model(g, lowered, precision, &renamed);
    let model_path = data.join("model.mlmodel");
    write_synced(&model_path, &model.encode_to_vec())?;
    write_synced(&tmp.path().join("Manifest.json"), manifest().as_bytes())?;

    // Move into place. An existing package is swapped out atomically
    // (renameat2 RENAME_EXCHANGE: at no moment is there no package at
    // `path`), then removed; where the filesystem cannot exchange, it is
    // moved aside, the new one moved in, and the old one removed.
    let tmp = tmp.keep();
    let result = (|| {
        if !path.exists() {
            return fs::rename(&tmp, path).map_err(|e| io(path, e));
        }
        if exchange(&tmp, path).is_ok() {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(());
        }
        let old = tempfile::Builder::new().prefix(".fusec-old-").tempdir_in(parent).map_err(|e| io(parent, e))?;
        let old_path = old.keep();
        fs::remove_dir(&old_path).map_err(|e| io(&old_path, e))?;
        fs::rename(path, &old_path).map_err(|e| io(path, e))?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::rename(&old_path, path);
            return Err(io(path, e));
        }
        let _ = fs::remove_dir_all(&old_path);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|_| PackageInfo { operations, weight_bytes, renamed })
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths; no memory is shared.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |e: std::io::Error| ExportError::Io { path: path.to_path_buf(), msg: e.to_string() };
    let mut f = fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn model(g: &Graph, lowered: mil::Lowered, precision: Precision, renamed: &[(String, String)]) -> wire::Model {
    let feature = |(name, _, ty): &(String, String, fuse_ir::TensorType)| FeatureDescription {
        name: name.clone(),
        short_description: String::new(),
        r#type: Some(FeatureType {
            is_optional: false,
            r#type: Some(feature_type::Type::MultiArrayType(ArrayFeatureType {
                shape: ty.shape.iter().map(|&d| d as i64).collect(),
                data_type: if ty.dtype.is_float() { ArrayDataType::Float32 } else { ArrayDataType::Int32 } as i32,
                shape_flexibility: None,
                default_optional_value: None,
            })),
        }),
    };
    let mut user_defined: BTreeMap<String, String> = g.metadata.iter().cloned().collect();
    user_defined.insert("fusec.precision".into(), precision.name().into());
    for (onnx, coreml) in renamed {
        user_defined.insert(format!("fusec.name.{coreml}"), onnx.clone());
    }
    let description = wire::ModelDescription {
        input: lowered.inputs.iter().map(feature).collect(),
        output: lowered.outputs.iter().map(feature).collect(),
        metadata: Some(wire::Metadata {
            short_description: format!("{} (fused by fusec)", g.name),
            version_string: env!("CARGO_PKG_VERSION").into(),
            author: "fusec".into(),
            user_defined,
        }),
    };
    wire::Model {
        specification_version: SPEC_VERSION,
        description: Some(description),
        ml_program: Some(wire::Program {
            version: 1,
            functions: BTreeMap::from([("main".to_string(), lowered.function)]),
        }),
    }
}

fn manifest() -> String {
    let json = serde_json::json!({
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {
            MODEL_ID: {
                "author": "com.apple.CoreML",
                "description": "CoreML Model Specification",
                "name": "model.mlmodel",
                "path": "com.apple.CoreML/model.mlmodel",
            },
            WEIGHTS_ID: {
                "author": "com.apple.CoreML",
                "description": "CoreML Model Weights",
                "name": "weights",
                "path": "com.apple.CoreML/weights",
            },
        },
        "rootModelIdentifier": MODEL_ID,
    });
    // Four-space indents and a final newline, as Xcode and coremltools
    // write it (coremltools rewrites a manifest formatted otherwise).
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    serde::Serialize::serialize(&json, &mut serde_json::Serializer::with_formatter(&mut out, fmt))
        .expect("a JSON value serializes");
    out.push(b'\n');
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuse_ir::{Conv, DType, Op, Tensor, TensorType, UnaryOp};

    fn tiny() -> Graph {
        let mut g = Graph::new("tiny");
        let x = g.add_input("image", TensorType::new(DType::F32, [1, 3, 8, 8]));
        let w = g.add_weight("conv.weight", Tensor::from_f32([4, 3, 3, 3], &[0.5; 108]).unwrap());
        let b = g.add_weight("conv.bias", Tensor::from_f32([4], &[0.1, 0.2, 0.3, 0.4]).unwrap());
        let conv = Op::Conv(Conv {
            kernel_shape: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            group: 1,
        });
        let c = g.add_node("conv", conv, vec![Some(x), Some(w), Some(b)], vec!["c".into()]).unwrap();
        let c = g.node(c).outputs[0];
        let s = g.add_node("act", Op::Unary(UnaryOp::Sigmoid), vec![Some(c)], vec!["m/out".into()]).unwrap();
        let s = g.node(s).outputs[0];
        g.set_outputs(vec![s]);
        g
    }

    /// The mirrors decode as coreml-proto's own `Model`, and the bytes are
    /// the same however often the model is encoded.
    #[test]
    fn wire_mirrors_decode_as_coreml_proto() {
        let g = tiny();
        let mut blobs = blob::BlobWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
        let lowered = mil::lower(&g, Precision::F32, &mut blobs).unwrap();
        let renamed = lowered.renamed();
        assert_eq!(renamed, vec![("m/out".to_string(), "m_out".to_string())]);
        let bytes = model(&g, lowered, Precision::F32, &renamed).encode_to_vec();
        let m = coreml_proto::proto::Model::decode(&bytes[..]).unwrap();
        assert_eq!(m.specification_version, SPEC_VERSION);
        let Some(coreml_proto::proto::model::Type::MlProgram(p)) = m.r#type else { panic!("not an ML program") };
        let block = &p.functions["main"].block_specializations[mil::OPSET];
        let types: Vec<&str> = block.operations.iter().map(|o| o.r#type.as_str()).collect();
        assert_eq!(types.iter().filter(|t| **t != "const").collect::<Vec<_>>(), [&"conv", &"sigmoid"]);
        assert_eq!(block.outputs, ["m_out"]);
        let conv = block.operations.iter().find(|o| o.r#type == "conv").unwrap();
        let mut keys: Vec<&String> = conv.inputs.keys().collect();
        keys.sort();
        assert_eq!(keys, ["bias", "dilations", "groups", "pad", "pad_type", "strides", "weight", "x"]);
        let desc = m.description.unwrap();
        assert_eq!(desc.metadata.unwrap().user_defined["fusec.name.m_out"], "m/out");

        let again = {
            let mut blobs = blob::BlobWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
            let lowered = mil::lower(&g, Precision::F32, &mut blobs).unwrap();
            model(&g, lowered, Precision::F32, &renamed).encode_to_vec()
        };
        assert_eq!(bytes, again);
    }
}
