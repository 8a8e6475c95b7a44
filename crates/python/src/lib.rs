//! `fusec._fusec`: the native half of the `fusec` Python package. Each
//! function runs the same library code as the command line (no
//! subprocess), with the GIL released, and returns the command's report as
//! JSON text plus the notes and warnings it made; a failure raises
//! `Failure` with the typed fields, which `fusec/__init__.py` turns into
//! `fusec.InputError`, `fusec.MismatchError`, ... and typed reports.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Mutex;

use fusec::models::Inputs;
use fusec::report::{self, Mode};
use fusec::speed::SpeedArgs;
use fusec::Failure;
use fusec_frontends::arch::ArchOptions;
use fusec_verify::runtime::{Device, RuntimeKind, SessionConfig};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(
    _fusec,
    NativeFailure,
    PyException,
    "A failed fusec call: args are (kind, message, file, node, tensor, report JSON or None, notes, warnings)."
);

/// The report mode and the kept notes are process-wide: one call at a time.
static CALL: Mutex<()> = Mutex::new(());

/// What a call returns to Python: (report JSON, notes, warnings).
type Returned = (String, Vec<String>, Vec<String>);

/// Tensors as Python hands them over: (name, shape, float32 little-endian bytes).
type RawTensors = Vec<(String, Vec<usize>, Vec<u8>)>;

/// Runs `f` as a library call (messages kept, progress bars if asked),
/// with the GIL released; its report as JSON, or the failure raised.
fn call<R: serde::Serialize>(
    py: Python<'_>,
    progress: bool,
    f: impl FnOnce() -> Result<R, Failure> + Send,
) -> PyResult<Returned> {
    let (result, notes, warnings) = py.detach(|| {
        let _one = CALL.lock().unwrap_or_else(|e| e.into_inner());
        report::set_mode(Mode::Library { progress });
        let _ = report::take_messages();
        let result = f().and_then(|r| fusec::report::to_json(&r));
        let (notes, warnings) = report::take_messages();
        (result, notes, warnings)
    });
    match result {
        Ok(v) => Ok((v.to_string(), notes, warnings)),
        Err(e) => Err(NativeFailure::new_err((
            e.kind.name(),
            e.message.clone(),
            e.file.as_ref().map(|f| f.display().to_string()),
            e.node.clone(),
            e.tensor.clone(),
            e.report.as_ref().map(|r| r.to_string()),
            notes,
            warnings,
        ))),
    }
}

fn arch(arch: Option<String>, image_size: Option<usize>, batch: Option<usize>, seq_len: Option<usize>) -> ArchOptions {
    ArchOptions { arch, image_size, batch, seq_len }
}

fn session_config(runtime: &str, device: &str, threads: Option<usize>, cuda_graph: bool) -> PyResult<SessionConfig> {
    let runtime = match runtime {
        "ort" => RuntimeKind::Ort,
        "tract" => RuntimeKind::Tract,
        r => return Err(PyValueError::new_err(format!("runtime must be 'ort' or 'tract', not {r:?}"))),
    };
    let device = match device {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda,
        "coreml" => Device::CoreMl,
        d => return Err(PyValueError::new_err(format!("device must be 'cpu', 'cuda' or 'coreml', not {d:?}"))),
    };
    let threads = threads.or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()));
    Ok(SessionConfig { runtime, device, threads, cuda_graph })
}

/// `precision="fp16"` of verify, bench and run: every model computes in f16.
fn compute_fp16(precision: &str) -> PyResult<bool> {
    match precision {
        "fp32" => Ok(false),
        "fp16" => Ok(true),
        p => Err(PyValueError::new_err(format!("precision must be 'fp32' or 'fp16', not {p:?}"))),
    }
}

/// Where verify's and bench's inputs come from: a file, tensors, or
/// `generated` deterministic input sets.
fn inputs(file: Option<PathBuf>, given: Option<RawTensors>, generated: usize) -> PyResult<Inputs> {
    Ok(match (file, given) {
        (Some(f), _) => Inputs::File(f),
        (None, Some(t)) => Inputs::Given(tensors(t)?),
        (None, None) => Inputs::Generated(generated),
    })
}

fn at_least_two(what: &str, members: &[PathBuf]) -> PyResult<()> {
    if members.len() < 2 {
        return Err(PyValueError::new_err(format!("{what} takes 2 or more members, not {}", members.len())));
    }
    Ok(())
}

fn tensors(raw: RawTensors) -> PyResult<fusec_verify::Tensors> {
    raw.into_iter()
        .map(|(name, shape, bytes)| {
            let n: usize = shape.iter().product();
            if bytes.len() != n * 4 {
                return Err(PyValueError::new_err(format!(
                    "input `{name}`: {} bytes for shape {shape:?} (float32 needs {})",
                    bytes.len(),
                    n * 4
                )));
            }
            let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let a = ndarray::ArrayD::from_shape_vec(shape, data).map_err(|e| PyValueError::new_err(e.to_string()))?;
            Ok((name, a))
        })
        .collect()
}

/// The `fusec` command line; returns its exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<OsString>) -> u8 {
    py.detach(|| fusec::cli::main(argv))
}

/// Where the `onnxruntime` package of this Python environment is.
#[pyfunction]
fn set_onnxruntime_package(dir: PathBuf) {
    fusec_verify::runtime::set_python_package(dir);
}

#[pyfunction]
#[pyo3(signature = (members, output, lowering, group_from, keep_bn, member_subgraphs, channel_block, default_lowering, calibration, precision, explain, tune_runs, tune_calibrate, retune, runtime, device, threads, arch_name, image_size, batch, seq_len, progress))]
#[allow(clippy::too_many_arguments)]
fn fuse(
    py: Python<'_>,
    members: Vec<PathBuf>,
    output: PathBuf,
    lowering: &str,
    group_from: f32,
    keep_bn: bool,
    member_subgraphs: bool,
    channel_block: Option<usize>,
    default_lowering: bool,
    calibration: Option<PathBuf>,
    precision: &str,
    explain: bool,
    tune_runs: Option<usize>,
    tune_calibrate: Option<PathBuf>,
    retune: bool,
    runtime: &str,
    device: &str,
    threads: Option<usize>,
    arch_name: Option<String>,
    image_size: Option<usize>,
    batch: Option<usize>,
    seq_len: Option<usize>,
    progress: bool,
) -> PyResult<Returned> {
    let lowering = match lowering {
        "grouped" => fusec_passes::Lowering::Grouped,
        "separate" => fusec_passes::Lowering::Separate,
        "regions" => fusec_passes::Lowering::Regions { from: group_from },
        l => {
            return Err(PyValueError::new_err(format!(
                "lowering must be 'regions', 'grouped' or 'separate', not {l:?}"
            )))
        }
    };
    let precision = match precision {
        "fp32" => fusec::commands::FusePrecision::Fp32,
        "fp16" => fusec::commands::FusePrecision::Fp16,
        "fp16-compute" => fusec::commands::FusePrecision::Fp16Compute,
        p => {
            return Err(PyValueError::new_err(format!("precision must be 'fp32', 'fp16' or 'fp16-compute', not {p:?}")))
        }
    };
    if let Some(n) = channel_block.filter(|&n| n > fusec_passes::MAX_CHANNEL_BLOCK) {
        return Err(PyValueError::new_err(format!(
            "channel_block must be 0 (no padding) to {}, not {n}",
            fusec_passes::MAX_CHANNEL_BLOCK
        )));
    }
    at_least_two("fuse", &members)?;
    let a = arch(arch_name, image_size, batch, seq_len);
    let cfg = session_config(runtime, device, threads, false)?;
    let tune =
        tune_runs.map(|runs| fusec::commands::TuneArgs { cfg, warmup: 2, runs, calibrate: tune_calibrate, retune });
    call(py, progress, move || {
        let mut opts = match &calibration {
            Some(p) => fusec::calibration::Calibration::load(p)?,
            None => fusec_passes::FuseOptions { keep_bn, lowering, member_subgraphs, ..Default::default() },
        };
        if let Some(n) = channel_block {
            opts.channel_block = (n > 0).then_some(n);
        }
        let choice = fusec::commands::LoweringChoice::new(tune.as_ref(), default_lowering);
        fusec::commands::fuse(&members, &a, &output, explain, &opts, precision, choice)
    })
}

#[pyfunction]
#[pyo3(signature = (model, members, input_file, input_tensors, images, runtime, device, threads, cuda_graph, precision, atol, rtol, warmup, runs, sessions, arch_name, image_size, batch, seq_len, progress))]
#[allow(clippy::too_many_arguments)]
fn verify(
    py: Python<'_>,
    model: PathBuf,
    members: Vec<PathBuf>,
    input_file: Option<PathBuf>,
    input_tensors: Option<RawTensors>,
    images: usize,
    runtime: &str,
    device: &str,
    threads: Option<usize>,
    cuda_graph: bool,
    precision: &str,
    atol: Option<f64>,
    rtol: Option<f64>,
    warmup: usize,
    runs: usize,
    sessions: usize,
    arch_name: Option<String>,
    image_size: Option<usize>,
    batch: Option<usize>,
    seq_len: Option<usize>,
    progress: bool,
) -> PyResult<Returned> {
    let cfg = session_config(runtime, device, threads, cuda_graph)?;
    let fp16 = compute_fp16(precision)?;
    let inputs = inputs(input_file, input_tensors, images)?;
    let a = arch(arch_name, image_size, batch, seq_len);
    call(py, progress, move || {
        fusec::speed::verify(
            &model,
            &members,
            &a,
            &inputs,
            &cfg,
            atol,
            rtol,
            &SpeedArgs { warmup, runs, fp16, sessions },
        )
    })
}

#[pyfunction(name = "bench")]
#[pyo3(signature = (members, input_file, input_tensors, runtime, device, threads, cuda_graph, precision, warmup, runs, sessions, json_out, markdown_out, calibrate, tune_runs, arch_name, image_size, batch, seq_len, progress))]
#[allow(clippy::too_many_arguments)]
fn bench_members(
    py: Python<'_>,
    members: Vec<PathBuf>,
    input_file: Option<PathBuf>,
    input_tensors: Option<RawTensors>,
    runtime: &str,
    device: &str,
    threads: Option<usize>,
    cuda_graph: bool,
    precision: &str,
    warmup: usize,
    runs: usize,
    sessions: usize,
    json_out: Option<PathBuf>,
    markdown_out: Option<PathBuf>,
    calibrate: Option<PathBuf>,
    tune_runs: Option<usize>,
    arch_name: Option<String>,
    image_size: Option<usize>,
    batch: Option<usize>,
    seq_len: Option<usize>,
    progress: bool,
) -> PyResult<Returned> {
    let cfg = session_config(runtime, device, threads, cuda_graph)?;
    let fp16 = compute_fp16(precision)?;
    at_least_two("bench", &members)?;
    let inputs = inputs(input_file, input_tensors, 1)?;
    let a = arch(arch_name, image_size, batch, seq_len);
    call(py, progress, move || {
        fusec::speed::bench(
            &members,
            &a,
            &inputs,
            &cfg,
            &SpeedArgs { warmup, runs, fp16, sessions },
            json_out.as_deref(),
            markdown_out.as_deref(),
            calibrate.as_deref(),
            tune_runs,
        )
    })
}

#[pyfunction]
#[pyo3(signature = (path, arch_name, image_size, batch, seq_len))]
fn inspect(
    py: Python<'_>,
    path: PathBuf,
    arch_name: Option<String>,
    image_size: Option<usize>,
    batch: Option<usize>,
    seq_len: Option<usize>,
) -> PyResult<Returned> {
    let a = arch(arch_name, image_size, batch, seq_len);
    call(py, false, move || fusec::commands::inspect(&path, false, &a))
}

/// Runs a model on tensors; its outputs as (name, shape, float32 bytes),
/// with the notes and warnings.
#[pyfunction]
#[pyo3(signature = (model, input_tensors, runtime, device, threads, cuda_graph, precision, arch_name, image_size, batch, seq_len))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn run<'py>(
    py: Python<'py>,
    model: PathBuf,
    input_tensors: RawTensors,
    runtime: &str,
    device: &str,
    threads: Option<usize>,
    cuda_graph: bool,
    precision: &str,
    arch_name: Option<String>,
    image_size: Option<usize>,
    batch: Option<usize>,
    seq_len: Option<usize>,
) -> PyResult<(Vec<(String, Vec<usize>, Bound<'py, PyBytes>)>, Vec<String>, Vec<String>)> {
    let cfg = session_config(runtime, device, threads, cuda_graph)?;
    let inputs = tensors(input_tensors)?;
    let fp16 = compute_fp16(precision)?;
    let a = arch(arch_name, image_size, batch, seq_len);
    let out = std::sync::Mutex::new(None);
    let (_, notes, warnings) = call(py, false, || {
        let o = fusec::commands::run_tensors(&model, &a, &inputs, &cfg, fp16)?;
        *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(o);
        Ok(())
    })?;
    let outputs = out.into_inner().unwrap_or_else(|e| e.into_inner()).unwrap_or_default();
    let outputs = outputs
        .into_iter()
        .map(|(name, a)| {
            let shape = a.shape().to_vec();
            let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
            (name, shape, PyBytes::new(py, &bytes))
        })
        .collect();
    Ok((outputs, notes, warnings))
}

#[pymodule]
fn _fusec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Failure", m.py().get_type::<NativeFailure>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(set_onnxruntime_package, m)?)?;
    m.add_function(wrap_pyfunction!(fuse, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(bench_members, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    Ok(())
}
