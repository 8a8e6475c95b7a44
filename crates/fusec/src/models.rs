//! The models and inputs the commands read: any supported file imported
//! into the IR, the members' names, a graph as ONNX for a session, and
//! the inputs to run them on (read from a file, given, or generated).

use std::path::{Path, PathBuf};

use fuse_ir::Graph;
use fusec_frontends::arch::ArchOptions;
use fusec_frontends::{detect_kind, FileKind};
use fusec_passes::Member;
use fusec_verify::Tensors;

use crate::Failure;

/// Imports any supported model file into the IR. Safetensors checkpoints
/// go through the architecture registry; what it recognized goes to stderr.
pub(crate) fn load_graph(path: &Path, arch: &ArchOptions) -> Result<Graph, Failure> {
    match detect_kind(path)? {
        FileKind::Onnx => Ok(fusec_frontends::onnx::load(path)?),
        FileKind::Safetensors => {
            let ck = fusec_frontends::safetensors::open(&fusec_frontends::model_file(path))?;
            let built = fusec_frontends::arch::build(&ck, arch)?;
            crate::report::note(format!("{}: {}", path.display(), built.description));
            for w in &built.warnings {
                crate::report::warn(format!("{}: {w}", path.display()));
            }
            if let Some(a) = &built.assumed {
                crate::report::warn_once(a);
            }
            Ok(built.graph)
        }
    }
}

/// Member names: file stems (a HuggingFace folder's, `t1` for `t1.hf/`
/// or `t1.hf/model.safetensors`), made unique with `_2`, `_3`, ... when two
/// files share a stem.
pub(crate) fn member_names(paths: &[PathBuf]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    paths
        .iter()
        .map(|p| {
            let named = fusec_frontends::hf_folder(p).unwrap_or(p);
            let stem = named.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "member".into());
            fuse_ir::claim_name(&mut used, &stem, 2)
        })
        .collect()
}

/// The members as `fusec_passes::fuse` takes them (copies of the graphs).
pub(crate) fn as_members(names: &[String], graphs: &[Graph]) -> Vec<Member> {
    names.iter().zip(graphs).map(|(n, g)| Member { name: n.clone(), graph: g.clone() }).collect()
}

/// A graph as ONNX for sessions: its bytes, or, past protobuf's 2 GiB, a
/// file in a temporary folder with its weights beside it.
pub(crate) enum OnnxModel {
    Bytes(Vec<u8>),
    /// Its folder goes when this drops, or when the command is interrupted.
    File {
        _pending: fusec_exporters::Pending,
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
}

impl OnnxModel {
    /// `g` as ONNX; with `fp16`, made to compute in f16 (`--precision
    /// fp16`: members and fused models alike).
    pub(crate) fn of(g: &Graph, fp16: bool) -> Result<OnnxModel, Failure> {
        let h;
        let g = if fp16 {
            let mut c = g.clone();
            fusec_passes::fp16_compute(&mut c).map_err(fusec_passes::PassError::from)?;
            fusec_passes::validate::validated("fp16_compute", &c)?;
            h = c;
            &h
        } else {
            g
        };
        if let Some(bytes) = fusec_exporters::onnx::export_inline(g)? {
            return Ok(OnnxModel::Bytes(bytes));
        }
        let dir = tempfile::Builder::new()
            .prefix("fusec-model-")
            .tempdir()
            .map_err(|e| Failure::internal(format!("a temporary folder for a model past 2 GiB: {e}")))?;
        let pending = fusec_exporters::Pending::new(dir.path());
        let path = dir.path().join("model.onnx");
        fusec_exporters::onnx::write_file_at(g, &path, fusec_exporters::onnx::WeightsAt::Beside)?;
        Ok(OnnxModel::File { _pending: pending, _dir: dir, path })
    }

    pub(crate) fn model(&self) -> fusec_verify::runtime::Model<'_> {
        match self {
            OnnxModel::Bytes(b) => fusec_verify::runtime::Model::Bytes(b),
            OnnxModel::File { path, .. } => fusec_verify::runtime::Model::File(path),
        }
    }

    /// A digest of the model (its bytes, or both of its files).
    pub(crate) fn digest(&self) -> Result<Vec<u8>, Failure> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        match self {
            OnnxModel::Bytes(b) => h.update(b),
            OnnxModel::File { path, .. } => {
                for p in [path.clone(), fusec_exporters::onnx::data_file_of(path)] {
                    let mut f =
                        std::fs::File::open(&p).map_err(|e| Failure::internal(format!("{}: {e}", p.display())))?;
                    std::io::copy(&mut f, &mut h).map_err(|e| Failure::internal(format!("{}: {e}", p.display())))?;
                }
            }
        }
        Ok(h.finalize().to_vec())
    }
}

/// Reads the tensors in `file` and checks they hold every input of `g`
/// with its shape.
pub(crate) fn read_inputs(g: &Graph, file: &Path) -> Result<fusec_verify::Tensors, Failure> {
    let inputs = fusec_verify::io::read_tensors(file)?;
    check_inputs(g, &inputs)
        .map_err(|f| Failure { message: format!("{}: {}", file.display(), f.message), ..f }.in_file(file))?;
    Ok(inputs)
}

/// Checks that `inputs` hold every input of `g` with its shape.
pub(crate) fn check_inputs(g: &Graph, inputs: &fusec_verify::Tensors) -> Result<(), Failure> {
    for &i in g.inputs() {
        let v = g.value(i);
        let at = Some(v.name.clone());
        match inputs.iter().find(|(n, _)| *n == v.name) {
            None => {
                let have: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
                return Err(Failure::input(format!(
                    "the model needs input `{}` ({}) but the inputs are {have:?}",
                    v.name, v.ty
                ))
                .at_tensor(at));
            }
            Some((_, a)) if a.shape() != v.ty.shape.as_slice() => {
                return Err(Failure::input(format!(
                    "input `{}` is {:?} but the model needs {}",
                    v.name,
                    a.shape(),
                    v.ty
                ))
                .at_tensor(at));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Where the inputs of `verify` and `bench` come from.
pub enum Inputs {
    /// This many deterministic pseudo-random input sets.
    Generated(usize),
    /// A safetensors file, its tensors named as the model's inputs.
    File(PathBuf),
    /// Tensors named as the model's inputs (from the Python API).
    Given(Tensors),
}

/// Inputs for the models: the given ones, or `images` deterministic
/// pseudo-random input sets shaped like the graph's inputs: floats uniform
/// in [-1, 1]; integer and bool inputs as a tokenizer makes them (see
/// [`token_input`]).
pub(crate) fn inputs(g: &Graph, source: &Inputs) -> Result<Vec<Tensors>, Failure> {
    let images = match source {
        Inputs::File(f) => return Ok(vec![read_inputs(g, f)?]),
        Inputs::Given(t) => {
            check_inputs(g, t)?;
            return Ok(vec![t.clone()]);
        }
        Inputs::Generated(n) => *n,
    };
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    Ok((0..images.max(1))
        .map(|_| {
            g.inputs()
                .iter()
                .map(|&i| {
                    let v = g.value(i);
                    let data = if v.ty.dtype.is_float() {
                        let n: usize = v.ty.shape.iter().product();
                        (0..n).map(|_| next() * 2.0 - 1.0).collect()
                    } else {
                        token_input(g, i, &mut next)
                    };
                    (v.name.clone(), ndarray::ArrayD::from_shape_vec(v.ty.shape.clone(), data).expect("shape fits"))
                })
                .collect()
        })
        .collect())
}

/// An integer or bool input as a tokenizer would make it, judged from how
/// the graph reads it: indices into embedding tables (a `Gather` reads it
/// as indices) are ids below the smallest table's size on the gathered axis, or, for a table of
/// two rows (token types), a pair: the first half 0, the second 1; any other
/// (an attention mask) is 1 with the last quarter of each row 0 (padding).
fn token_input(g: &Graph, input: fuse_ir::ValueId, next: &mut dyn FnMut() -> f32) -> Vec<f32> {
    let shape = &g.value(input).ty.shape;
    let n: usize = shape.iter().product();
    let row = shape.last().copied().unwrap_or(1).max(1);
    let table = g
        .users(input)
        .iter()
        .filter(|&&(u, slot)| slot == 1 && matches!(g.node(u).op, fuse_ir::Op::Gather { .. }))
        .filter_map(|&(u, _)| {
            let fuse_ir::Op::Gather { axis } = g.node(u).op else { return None };
            let table = &g.value(g.node(u).inputs[0]?).ty.shape;
            // The rows gathered from: axis 0 of a member's table, axis 1
            // of tables stacked on a member axis ([N, V, H]).
            fuse_ir::shape::norm_axis(axis, table.len()).ok().map(|a| table[a])
        })
        .min();
    match table {
        Some(2) => (0..n).map(|i| if i % row < row / 2 { 0.0 } else { 1.0 }).collect(),
        Some(rows) => (0..n).map(|_| (1 + (next() * (rows.max(2) - 1) as f32) as usize).min(rows - 1) as f32).collect(),
        None => (0..n).map(|i| if i % row < row - row / 4 { 1.0 } else { 0.0 }).collect(),
    }
}
