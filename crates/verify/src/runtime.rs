//! Runtimes behind one interface.
//!
//! Architecture Invariant: a session runs on the device it was asked for or
//! is not created. ONNX Runtime falls back to CPU silently when an execution
//! provider fails to register; we check the library offers the provider and
//! register it with `error_on_failure`, so that never happens.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::ArrayD;

use crate::{Tensors, VerifyError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    Tract,
    Ort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    CoreMl,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::CoreMl => "coreml",
        })
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Tract => "tract",
            RuntimeKind::Ort => "ort",
        })
    }
}

/// The element type a model input is fed in; [`crate::Tensors`] carry
/// every input as f32, integers exactly (see [`crate::io`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Feed {
    F32,
    I64,
    I32,
    Bool,
}

/// How to build a session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub runtime: RuntimeKind,
    pub device: Device,
    /// Intra-op threads for ONNX Runtime; `None` lets it decide.
    pub threads: Option<usize>,
    /// ONNX Runtime on CUDA: capture the run as a CUDA graph and replay it
    /// (static shapes; inputs and outputs bound at fixed device addresses).
    pub cuda_graph: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { runtime: RuntimeKind::Tract, device: Device::Cpu, threads: None, cuda_graph: false }
    }
}

/// A loaded model, ready to run.
pub trait Session {
    /// Runs the model; outputs come back in the model's output order.
    fn run(&mut self, inputs: &Tensors) -> Result<Tensors, VerifyError>;
    /// Runs the model for timing: outputs may stay where they were computed
    /// (on the device, with CUDA) and inputs already there are not copied
    /// again. An input is recognized by its buffer (address and length):
    /// callers time one input set, unchanged, and use [`Session::run`]
    /// (which always copies) to read outputs.
    fn run_only(&mut self, inputs: &Tensors) -> Result<(), VerifyError> {
        self.run(inputs).map(|_| ())
    }
    fn input_names(&self) -> Vec<String>;
    fn output_names(&self) -> Vec<String>;
}

/// An ONNX model to load: its bytes, or its file, read with any weights it
/// keeps beside it (external data, as a model past protobuf's 2 GiB must).
#[derive(Clone, Copy, Debug)]
pub enum Model<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// Loads an ONNX model on the configured runtime and device.
pub fn load(onnx: Model<'_>, cfg: &SessionConfig) -> Result<Box<dyn Session>, VerifyError> {
    if cfg.cuda_graph && (cfg.device != Device::Cuda || cfg.runtime != RuntimeKind::Ort) {
        return Err(VerifyError::Input(format!(
            "--cuda-graph needs --runtime ort --device cuda (ONNX Runtime's CUDA graphs), not --runtime {} --device {}",
            cfg.runtime, cfg.device
        )));
    }
    match cfg.runtime {
        RuntimeKind::Tract => {
            if cfg.device != Device::Cpu {
                return Err(VerifyError::Unavailable(format!(
                    "tract runs on the CPU only; use --runtime ort for --device {}",
                    cfg.device
                )));
            }
            // tract panics on some malformed models; that must be an error.
            let s = std::panic::catch_unwind(|| TractSession::new(onnx))
                .map_err(|_| VerifyError::Runtime("tract panicked while loading the model".into()))??;
            Ok(Box::new(s))
        }
        RuntimeKind::Ort => Ok(Box::new(OrtSession::new(onnx, cfg, None)?)),
    }
}

/// One node's kernel time in a profile.
#[derive(Clone, Debug)]
pub struct NodeTime {
    /// The node's name as the runtime reports it: the model's node name,
    /// or the name of a node the runtime fused it into.
    pub name: String,
    /// Its op as the runtime ran it (`FusedConv`, `MatMul`, ...).
    pub op: String,
    /// Median kernel time over the profiled runs, microseconds.
    pub us: f64,
}

/// Per node of the model, its kernel time on ONNX Runtime's profiler
/// (median of `runs` runs after `warmup` unprofiled-in-effect ones): what
/// `fusec fuse --tune` attributes to node groups. ONNX Runtime only: other
/// runtimes have no per-node profile here.
pub fn profile(
    onnx: Model<'_>,
    cfg: &SessionConfig,
    inputs: &Tensors,
    warmup: usize,
    runs: usize,
) -> Result<Vec<NodeTime>, VerifyError> {
    if cfg.runtime != RuntimeKind::Ort {
        return Err(VerifyError::Unavailable(format!(
            "per-node profiles come from ONNX Runtime's profiler; {} has none here",
            cfg.runtime
        )));
    }
    let dir =
        tempfile::tempdir().map_err(|e| VerifyError::Runtime(format!("a temporary folder for the profile: {e}")))?;
    let mut s = OrtSession::new(onnx, cfg, Some(&dir.path().join("profile")))?;
    for _ in 0..warmup + runs {
        s.run_only(inputs)?;
    }
    let file = s.session.end_profiling().map_err(|e| VerifyError::Runtime(format!("onnxruntime: {e}")))?;
    let text = std::fs::read(&file).map_err(|e| VerifyError::Runtime(format!("the profile {file}: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(default)]
        cat: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        dur: f64,
        #[serde(default)]
        args: std::collections::HashMap<String, serde_json::Value>,
    }
    let events: Vec<Event> =
        serde_json::from_slice(&text).map_err(|e| VerifyError::Runtime(format!("the profile {file}: {e}")))?;
    // Per node, in the order first run: its durations, run after run.
    let mut order: Vec<(String, String)> = vec![];
    let mut times: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for e in events {
        let Some(node) = e.name.strip_suffix("_kernel_time").filter(|_| e.cat == "Node") else { continue };
        let t = times.entry(node.to_string()).or_default();
        if t.is_empty() {
            let op = e.args.get("op_name").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            order.push((node.to_string(), op));
        }
        t.push(e.dur);
    }
    Ok(order
        .into_iter()
        .map(|(name, op)| {
            let t = &times[&name];
            let mut kept: Vec<f64> = t[warmup.min(t.len().saturating_sub(1))..].to_vec();
            kept.sort_by(f64::total_cmp);
            NodeTime { name, op, us: kept[kept.len() / 2] }
        })
        .collect())
}

type TractPlan = std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>;

struct TractSession {
    plan: TractPlan,
    inputs: Vec<String>,
    feeds: Vec<Feed>,
    outputs: Vec<String>,
}

impl TractSession {
    fn new(source: Model<'_>) -> Result<Self, VerifyError> {
        use tract_onnx::prelude::*;
        let rt = |e: TractError| VerifyError::Runtime(format!("tract: {e:#}"));
        let model = match source {
            Model::Bytes(bytes) => tract_onnx::onnx().model_for_read(&mut std::io::Cursor::new(bytes)),
            Model::File(path) => tract_onnx::onnx().model_for_path(path),
        }
        .map_err(rt)?;
        let typed = model.into_optimized().map_err(rt)?;
        let label = |m: &TypedModel, o: OutletId| -> String {
            m.outlet_label(o).map(str::to_string).unwrap_or_else(|| m.node(o.node).name.clone())
        };
        // An input by its source node's name: tract's optimizer may move a
        // later value's label onto the input's outlet (a Reshape of the
        // input and one back, folded away).
        let inputs = typed.input_outlets().map_err(rt)?.iter().map(|o| typed.node(o.node).name.clone()).collect();
        let mut feeds = vec![];
        for o in typed.input_outlets().map_err(rt)? {
            feeds.push(match typed.outlet_fact(*o).map_err(rt)?.datum_type {
                DatumType::I64 => Feed::I64,
                DatumType::I32 => Feed::I32,
                DatumType::Bool => Feed::Bool,
                _ => Feed::F32,
            });
        }
        let outputs = typed.output_outlets().map_err(rt)?.iter().map(|o| label(&typed, *o)).collect();
        let plan = typed.into_runnable().map_err(rt)?;
        Ok(TractSession { plan, inputs, feeds, outputs })
    }
}

/// Orders `given` to match the model's input names.
fn ordered_inputs<'a>(names: &[String], given: &'a Tensors) -> Result<Vec<&'a ArrayD<f32>>, VerifyError> {
    names
        .iter()
        .map(|n| {
            given.iter().find(|(g, _)| g == n).map(|(_, a)| a).ok_or_else(|| {
                let have: Vec<&str> = given.iter().map(|(g, _)| g.as_str()).collect();
                VerifyError::Input(format!("the model needs input `{n}` but the inputs hold {have:?}"))
            })
        })
        .collect()
}

impl Session for TractSession {
    fn run(&mut self, inputs: &Tensors) -> Result<Tensors, VerifyError> {
        use tract_onnx::prelude::*;
        let ins = ordered_inputs(&self.inputs, inputs)?;
        let tv: TVec<TValue> = ins
            .into_iter()
            .zip(&self.feeds)
            .map(|(a, f)| {
                match f {
                    Feed::F32 => Tensor::from(a.clone()),
                    Feed::I64 => Tensor::from(a.mapv(|v| v as i64)),
                    Feed::I32 => Tensor::from(a.mapv(|v| v as i32)),
                    Feed::Bool => Tensor::from(a.mapv(|v| v != 0.0)),
                }
                .into_tvalue()
            })
            .collect();
        let plan = self.plan.clone();
        let outs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || plan.run(tv)))
            .map_err(|_| VerifyError::Runtime("tract panicked while running the model".into()))?
            .map_err(|e| VerifyError::Runtime(format!("tract: {e:#}")))?;
        let mut res = vec![];
        for (name, v) in self.outputs.iter().zip(outs.iter()) {
            let arr = v
                .to_plain_array_view::<f32>()
                .map_err(|e| VerifyError::Runtime(format!("tract: output `{name}`: {e}")))?
                .to_owned();
            res.push((name.clone(), arr));
        }
        Ok(res)
    }
    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }
    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }
}

/// The `onnxruntime` package directory of the Python environment fusec
/// runs in, when the Python package says so (see [`ort_library`]).
static PYTHON_PACKAGE: OnceLock<PathBuf> = OnceLock::new();

/// Tells [`ort_library`] where the `onnxruntime` package of the calling
/// Python environment is (the `fusec` Python module does, on import).
pub fn set_python_package(dir: PathBuf) {
    let _ = PYTHON_PACKAGE.set(dir);
}

/// The path of the ONNX Runtime shared library: `ORT_DYLIB_PATH` when set;
/// else the library of an `onnxruntime` Python package: the one of the
/// Python environment running fusec (the `fusec` Python package), the one
/// installed in the environment the fusec binary is installed in (a
/// virtual environment or prefix: `BIN/../lib/python3.*/site-packages`),
/// then the one the `python3` on `PATH` imports.
pub fn ort_library() -> Result<PathBuf, VerifyError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_ort_library).clone().map_err(VerifyError::Unavailable)
}

fn find_ort_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH points to {}, which is not a file; run scripts/install-ort.sh", p.display()))
        };
    }
    if let Some(p) = PYTHON_PACKAGE.get().and_then(|d| ort_in_package(d)) {
        return Ok(p);
    }
    let beside_exe = std::env::current_exe().ok().and_then(|exe| {
        let prefix = exe.canonicalize().ok()?.parent()?.parent()?.to_path_buf();
        let lib = std::fs::read_dir(prefix.join("lib")).ok()?;
        lib.flatten()
            .filter(|d| d.file_name().to_string_lossy().starts_with("python3"))
            .find_map(|d| ort_in_package(&d.path().join("site-packages/onnxruntime")))
    });
    if let Some(p) = beside_exe {
        return Ok(p);
    }
    let from_python = std::process::Command::new("python3")
        .args(["-c", "import os, onnxruntime; print(os.path.dirname(onnxruntime.__file__))"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| ort_in_package(std::path::Path::new(String::from_utf8_lossy(&o.stdout).trim())));
    from_python.ok_or_else(|| {
        "ONNX Runtime not found: set ORT_DYLIB_PATH to libonnxruntime.so (`export ORT_DYLIB_PATH=$(bash scripts/install-ort.sh)` installs it), or `pip install onnxruntime` where fusec or `python3` can find it".to_string()
    })
}

/// `capi/libonnxruntime.so.*` (or `.dylib`) of an `onnxruntime` package
/// directory.
fn ort_in_package(pkg: &std::path::Path) -> Option<PathBuf> {
    let mut libs: Vec<PathBuf> = std::fs::read_dir(pkg.join("capi"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            (name.starts_with("libonnxruntime.so") || name.starts_with("libonnxruntime.") && name.ends_with(".dylib"))
                && !name.contains("providers")
        })
        .collect();
    libs.sort();
    libs.pop()
}

static ORT_ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

fn ort_env() -> Result<&'static ort::environment::Environment, VerifyError> {
    let lib = ort_library()?;
    let env = ORT_ENV.get_or_init(|| {
        ort::init_from(&lib)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?
            .with_name("fusec")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))
    });
    env.as_ref().map_err(|e| VerifyError::Unavailable(e.clone()))
}

struct OrtSession {
    session: ort::session::Session,
    inputs: Vec<String>,
    feeds: Vec<Feed>,
    outputs: Vec<String>,
    /// On CUDA: inputs and outputs bound on the device.
    bound: Option<DeviceBinding>,
}

/// Inputs and outputs on the device (ONNX Runtime's I/O binding), at
/// fixed addresses (as a CUDA graph needs): a run copies the inputs in
/// only when they changed, and the outputs out only when asked.
struct DeviceBinding {
    binding: ort::session::IoBinding,
    /// The device tensors bound as inputs, in the model's input order.
    inputs: Vec<ort::value::DynTensor>,
    /// Which host inputs were last copied in (data pointers and lengths).
    loaded: Option<Vec<(usize, usize)>>,
}

impl DeviceBinding {
    fn new(session: &ort::session::Session) -> Result<DeviceBinding, ort::Error> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        let mem = || MemoryInfo::new(AllocationDevice::CUDA, 0, AllocatorType::Device, MemoryType::Default);
        let alloc = Allocator::new(session, mem()?)?;
        let mut binding = session.create_binding()?;
        let tensor = |t: &ort::value::ValueType| -> Result<ort::value::DynTensor, ort::Error> {
            let ty = t.tensor_type().unwrap_or(ort::value::TensorElementType::Float32);
            let shape: Vec<i64> = t.tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
            ort::value::DynTensor::new(&alloc, ty, shape)
        };
        let mut inputs = vec![];
        for i in session.inputs() {
            let t = tensor(i.dtype())?;
            binding.bind_input(i.name(), &t)?;
            inputs.push(t);
        }
        for o in session.outputs() {
            binding.bind_output(o.name(), tensor(o.dtype())?)?;
        }
        Ok(DeviceBinding { binding, inputs, loaded: None })
    }
}

/// A host tensor of the type the model input takes.
fn host_tensor(a: &ArrayD<f32>, feed: Feed) -> Result<ort::value::DynTensor, ort::Error> {
    Ok(match feed {
        Feed::F32 => ort::value::Tensor::from_array(a.clone())?.upcast(),
        Feed::I64 => ort::value::Tensor::from_array(a.mapv(|v| v as i64))?.upcast(),
        Feed::I32 => ort::value::Tensor::from_array(a.mapv(|v| v as i32))?.upcast(),
        Feed::Bool => ort::value::Tensor::from_array(a.mapv(|v| v != 0.0))?.upcast(),
    })
}

impl OrtSession {
    /// With `profile`: the profile's file name prefix ([`profile`]).
    fn new(onnx: Model<'_>, cfg: &SessionConfig, profile: Option<&Path>) -> Result<Self, VerifyError> {
        use ort::ep::{self, ExecutionProvider};
        let env = ort_env()?;
        let rt = |e: ort::Error| VerifyError::Runtime(format!("onnxruntime: {e}"));
        let mut b = ort::session::Session::builder(env).map_err(rt)?;
        if let Some(n) = cfg.threads {
            b = b.with_intra_threads(n).map_err(|e| rt(e.into()))?;
        }
        // A fair baseline: spinning threads of several sessions fight over cores.
        b = b.with_intra_op_spinning(false).map_err(|e| rt(e.into()))?;
        if let Some(p) = profile {
            b = b.with_profiling(p).map_err(|e| rt(e.into()))?;
        }
        let missing = |name: &str| {
            VerifyError::Unavailable(format!(
                "the loaded ONNX Runtime library ({}) has no {name} execution provider; install a build with {name} support and point ORT_DYLIB_PATH at it",
                ort_library().map(|p| p.display().to_string()).unwrap_or_default()
            ))
        };
        let dispatch = match cfg.device {
            Device::Cpu => None,
            Device::Cuda => {
                if !ep::CUDA::is_available().map_err(rt)? {
                    return Err(missing("CUDA"));
                }
                Some(ep::CUDA::default().with_cuda_graph(cfg.cuda_graph).build().error_on_failure())
            }
            Device::CoreMl => {
                if !ep::CoreML::is_available().map_err(rt)? {
                    let mut e = missing("CoreML");
                    if !cfg!(target_os = "macos") {
                        if let VerifyError::Unavailable(m) = &mut e {
                            m.push_str(" (ONNX Runtime ships the CoreML provider only in its macOS and iOS builds: on Linux, --device coreml is not available)");
                        }
                    }
                    return Err(e);
                }
                Some(ep::CoreML::default().build().error_on_failure())
            }
        };
        if let Some(d) = dispatch {
            b = b.with_execution_providers([d]).map_err(|e| {
                VerifyError::Unavailable(format!("cannot use --device {}: onnxruntime: {e}", cfg.device))
            })?;
        }
        let session = match onnx {
            Model::Bytes(bytes) => b.commit_from_memory(bytes),
            Model::File(path) => b.commit_from_file(path),
        }
        .map_err(rt)?;
        let inputs = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let feeds = session
            .inputs()
            .iter()
            .map(|o| {
                use ort::value::TensorElementType as T;
                match o.dtype().tensor_type() {
                    Some(T::Int64) => Feed::I64,
                    Some(T::Int32) => Feed::I32,
                    Some(T::Bool) => Feed::Bool,
                    _ => Feed::F32,
                }
            })
            .collect();
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let bound = match cfg.device {
            Device::Cuda => Some(DeviceBinding::new(&session).map_err(rt)?),
            _ => None,
        };
        Ok(OrtSession { session, inputs, feeds, outputs, bound })
    }

    /// A run with the inputs and outputs bound on the device: copies the
    /// inputs in when they are not the ones last copied (always when
    /// `fetch`), and the outputs back to the host when `fetch`.
    fn run_bound(&mut self, inputs: &Tensors, fetch: bool) -> Result<Option<Tensors>, VerifyError> {
        let rt = |e: ort::Error| VerifyError::Runtime(format!("onnxruntime: {e}"));
        let ins = ordered_inputs(&self.inputs, inputs)?;
        let bound = self.bound.as_mut().expect("a bound session");
        let key: Vec<(usize, usize)> = ins.iter().map(|a| (a.as_ptr() as usize, a.len())).collect();
        if fetch || bound.loaded.as_ref() != Some(&key) {
            for ((a, f), dev) in ins.iter().zip(&self.feeds).zip(bound.inputs.iter_mut()) {
                host_tensor(a, *f).and_then(|h| h.copy_into(dev)).map_err(rt)?;
            }
            bound.loaded = Some(key);
        }
        let out = self.session.run_binding(&bound.binding).map_err(rt)?;
        if !fetch {
            return Ok(None);
        }
        let mut res = vec![];
        for name in &self.outputs {
            let v = out.get(name).ok_or_else(|| VerifyError::Runtime(format!("onnxruntime: no output `{name}`")))?;
            let host = v
                .view()
                .downcast::<ort::value::DynTensorValueType>()
                .and_then(|t| t.to(ort::memory::AllocationDevice::CPU, 0))
                .map_err(rt)?;
            res.push((name.clone(), host.try_extract_array::<f32>().map_err(rt)?.to_owned()));
        }
        Ok(Some(res))
    }
}

impl Session for OrtSession {
    fn run_only(&mut self, inputs: &Tensors) -> Result<(), VerifyError> {
        if self.bound.is_some() {
            return self.run_bound(inputs, false).map(|_| ());
        }
        self.run(inputs).map(|_| ())
    }

    fn run(&mut self, inputs: &Tensors) -> Result<Tensors, VerifyError> {
        if self.bound.is_some() {
            return self.run_bound(inputs, true).map(|o| o.unwrap_or_default());
        }
        let rt = |e: ort::Error| VerifyError::Runtime(format!("onnxruntime: {e}"));
        let ins = ordered_inputs(&self.inputs, inputs)?;
        let mut feed: Vec<(std::borrow::Cow<str>, ort::session::SessionInputValue)> = vec![];
        for ((name, a), f) in self.inputs.iter().zip(ins).zip(&self.feeds) {
            let v: ort::session::SessionInputValue = match f {
                Feed::F32 => ort::value::Tensor::from_array(a.clone()).map_err(rt)?.into(),
                Feed::I64 => ort::value::Tensor::from_array(a.mapv(|v| v as i64)).map_err(rt)?.into(),
                Feed::I32 => ort::value::Tensor::from_array(a.mapv(|v| v as i32)).map_err(rt)?.into(),
                Feed::Bool => ort::value::Tensor::from_array(a.mapv(|v| v != 0.0)).map_err(rt)?.into(),
            };
            feed.push((name.clone().into(), v));
        }
        let outputs = self.outputs.clone();
        let out = self.session.run(feed).map_err(rt)?;
        let mut res = vec![];
        for name in outputs {
            let v = out.get(&name).ok_or_else(|| VerifyError::Runtime(format!("onnxruntime: no output `{name}`")))?;
            let arr = v.try_extract_array::<f32>().map_err(rt)?.to_owned();
            res.push((name, arr));
        }
        Ok(res)
    }
    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }
    fn output_names(&self) -> Vec<String> {
        self.outputs.clone()
    }
}
