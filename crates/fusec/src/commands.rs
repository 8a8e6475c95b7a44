//! One function per subcommand; they print results and return a [`Failure`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fuse_ir::Graph;
use fusec_exporters::coreml::Precision;
use fusec_frontends::arch::ArchOptions;
use fusec_frontends::{detect_kind, FileKind};
use fusec_verify::runtime::SessionConfig;

use crate::models::{check_inputs, inputs, load_graph, member_names, read_inputs, Inputs, OnnxModel};
use crate::report::{describe_cfg, emit, to_json};
use crate::Failure;

/// A value of a graph, or a tensor of a checkpoint: name, dtype, shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// How often one op occurs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpCount {
    pub op: String,
    pub count: usize,
}

/// What `fusec inspect` shows: an ONNX model's inputs, outputs, ops and
/// parameters, or a checkpoint's tensors and recognized architecture.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InspectReport {
    pub file: String,
    /// `onnx` or `safetensors`.
    pub format: String,
    /// A checkpoint's architecture, as recognized (or why not).
    pub architecture: Option<String>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub nodes: usize,
    /// The op histogram, most frequent first.
    pub ops: Vec<OpCount>,
    /// Float parameters.
    pub parameters: usize,
    /// A checkpoint's tensors, in file order.
    pub tensors: Vec<ValueInfo>,
    pub metadata: BTreeMap<String, String>,
}

fn value_info(g: &Graph, v: fuse_ir::ValueId) -> ValueInfo {
    let v = g.value(v);
    ValueInfo { name: v.name.clone(), dtype: v.ty.dtype.to_string(), shape: v.ty.shape.clone() }
}

pub fn inspect(path: &Path, ir: bool, arch: &ArchOptions) -> Result<InspectReport, Failure> {
    if detect_kind(path)? == FileKind::Safetensors && !ir {
        return inspect_safetensors(path, arch);
    }
    let g = load_graph(path, arch)?;
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for n in g.node_ids() {
        *hist.entry(g.node(n).op.name()).or_default() += 1;
    }
    let mut hist: Vec<(&str, usize)> = hist.into_iter().collect();
    hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let params: usize =
        g.weights().filter(|(_, _, t)| t.ty().dtype.is_float()).filter_map(|(_, _, t)| t.ty().numel()).sum();
    let report = InspectReport {
        file: path.display().to_string(),
        format: match detect_kind(path)? {
            FileKind::Onnx => "onnx".into(),
            FileKind::Safetensors => "safetensors".into(),
        },
        architecture: None,
        inputs: g.inputs().iter().map(|&i| value_info(&g, i)).collect(),
        outputs: g.outputs().iter().map(|&o| value_info(&g, o)).collect(),
        nodes: g.node_count(),
        ops: hist.iter().map(|(op, n)| OpCount { op: op.to_string(), count: *n }).collect(),
        parameters: params,
        tensors: vec![],
        metadata: g.metadata.iter().cloned().collect(),
    };
    if ir {
        let text = fuse_ir::text::to_text(&g).map_err(|e| Failure::internal(e.to_string()))?;
        emit(&text)?;
        return Ok(report);
    }
    let mut o = String::new();
    let _ = writeln!(o, "file: {}", path.display());
    let _ = writeln!(o, "format: onnx");
    let _ = writeln!(o, "inputs:");
    for &i in g.inputs() {
        let _ = writeln!(o, "  {} {}", g.value(i).name, g.value(i).ty);
    }
    let _ = writeln!(o, "outputs:");
    for &v in g.outputs() {
        let _ = writeln!(o, "  {} {}", g.value(v).name, g.value(v).ty);
    }
    let _ = writeln!(o, "ops ({} nodes):", g.node_count());
    for (op, n) in hist {
        let _ = writeln!(o, "  {op:<20} {n}");
    }
    let weights = g.weights().filter(|(id, _, _)| !g.users(*id).is_empty()).count();
    let _ = writeln!(o, "parameters: {params} in {weights} weight tensors");
    for (k, v) in &g.metadata {
        let _ = writeln!(o, "metadata: {k} = {v}");
    }
    emit(&o)?;
    Ok(report)
}

fn inspect_safetensors(path: &Path, arch: &ArchOptions) -> Result<InspectReport, Failure> {
    let ck = fusec_frontends::safetensors::open(&fusec_frontends::model_file(path))?;
    let mut o = String::new();
    let _ = writeln!(o, "file: {}", path.display());
    let _ = writeln!(o, "format: safetensors ({} tensors)", ck.tensors.len());
    let architecture = match fusec_frontends::arch::build(&ck, arch) {
        Ok(b) => b.description,
        Err(e) => format!("not recognized ({})", e.msg),
    };
    let _ = writeln!(o, "architecture: {architecture}");
    for (k, v) in &ck.metadata {
        let _ = writeln!(o, "metadata: {k} = {v}");
    }
    let mut by_dtype: BTreeMap<&str, usize> = BTreeMap::new();
    let _ = writeln!(o, "tensors:");
    for t in &ck.tensors {
        let n: usize = t.shape.iter().product();
        *by_dtype.entry(t.dtype.as_str()).or_default() += n;
        let _ = writeln!(o, "  {} {} {:?}", t.name, t.dtype, t.shape);
    }
    let params: usize =
        by_dtype.iter().filter(|(d, _)| matches!(**d, "F32" | "F16" | "BF16" | "F64")).map(|(_, n)| n).sum();
    let summary: Vec<String> = by_dtype.iter().map(|(d, n)| format!("{d}: {n}")).collect();
    let _ = writeln!(o, "parameters: {params} ({})", summary.join(", "));
    emit(&o)?;
    Ok(InspectReport {
        file: path.display().to_string(),
        format: "safetensors".into(),
        architecture: Some(architecture),
        inputs: vec![],
        outputs: vec![],
        nodes: 0,
        ops: vec![],
        parameters: params,
        tensors: ck
            .tensors
            .iter()
            .map(|t| ValueInfo { name: t.name.clone(), dtype: t.dtype.clone(), shape: t.shape.clone() })
            .collect(),
        metadata: ck.metadata.iter().cloned().collect(),
    })
}

pub fn convert(path: &Path, arch: &ArchOptions, output: &Path) -> Result<(), Failure> {
    if OutputFormat::of(output)? != OutputFormat::Onnx {
        return Err(Failure::input(format!(
            "{}: convert writes ONNX; name the output *.onnx (Core ML packages come from fusec fuse)",
            output.display()
        )));
    }
    let g = load_graph(path, arch)?;
    let w = fusec_exporters::onnx::write_file(&g, output)?;
    let beside = match &w.data {
        Some((data, n)) => format!(", its weights in {} ({n} bytes: past protobuf's 2 GiB)", data.display()),
        None => String::new(),
    };
    crate::report::note(format!("wrote {} ({} nodes, {} bytes{beside})", output.display(), g.node_count(), w.bytes));
    Ok(())
}

pub fn run(
    model: &Path,
    arch: &ArchOptions,
    input: &Path,
    cfg: &SessionConfig,
    fp16: bool,
    output: &Path,
) -> Result<(), Failure> {
    let g = load_graph(model, arch)?;
    let inputs = read_inputs(&g, input)?;
    let (outputs, ran) = run_graph(model, &g, &inputs, cfg, fp16)?;
    let encoded = fusec_verify::io::to_safetensors_bytes(&outputs)?;
    fusec_exporters::write_atomic(output, &encoded)?;
    crate::report::note(format!("{ran}; wrote {} outputs to {}", outputs.len(), output.display()));
    Ok(())
}

/// Runs a model (any file `load_graph` takes) on `inputs`, which must hold
/// every input of the model with its shape; the outputs in the model's order.
/// With `fp16`, the model computes in f16.
pub fn run_tensors(
    model: &Path,
    arch: &ArchOptions,
    inputs: &fusec_verify::Tensors,
    cfg: &SessionConfig,
    fp16: bool,
) -> Result<fusec_verify::Tensors, Failure> {
    let g = load_graph(model, arch)?;
    check_inputs(&g, inputs).map_err(|f| Failure { message: format!("{}: {}", model.display(), f.message), ..f })?;
    let (outputs, ran) = run_graph(model, &g, inputs, cfg, fp16)?;
    crate::report::note(ran);
    Ok(outputs)
}

/// The outputs, and a line saying where it ran and how long it took.
fn run_graph(
    model: &Path,
    g: &Graph,
    inputs: &fusec_verify::Tensors,
    cfg: &SessionConfig,
    fp16: bool,
) -> Result<(fusec_verify::Tensors, String), Failure> {
    let onnx = OnnxModel::of(g, fp16)?;
    let t0 = Instant::now();
    let mut session = fusec_verify::runtime::load(onnx.model(), cfg)?;
    let t1 = Instant::now();
    let outputs = session.run(inputs)?;
    let t2 = Instant::now();
    let ran = format!(
        "ran {} on {} ({}): load {:.0} ms, run {:.0} ms",
        model.display(),
        cfg.runtime,
        cfg.device,
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
    );
    Ok((outputs, ran))
}

fn sha256_file(path: &Path) -> Result<String, Failure> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
    Onnx,
    CoreMl,
}

impl OutputFormat {
    fn of(output: &Path) -> Result<OutputFormat, Failure> {
        match output.extension().and_then(|e| e.to_str()) {
            Some("onnx") => Ok(OutputFormat::Onnx),
            Some("mlpackage") => Ok(OutputFormat::CoreMl),
            _ => Err(Failure::input(format!(
                "{}: name the output *.onnx (ONNX) or *.mlpackage (Core ML ML program)",
                output.display()
            ))),
        }
    }
}

/// One member of a fused model, as its metadata records it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberFile {
    /// Its outputs are `NAME/OUTPUT` in the fused model.
    pub name: String,
    pub file: String,
    pub sha256: String,
}

/// What `fusec fuse` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FuseReport {
    pub output: String,
    /// `onnx` or `mlpackage`.
    pub format: String,
    /// `fp32` or `fp16`.
    pub precision: String,
    pub members: Vec<MemberFile>,
    /// The fused graph's nodes, and its convolutions among them.
    pub nodes: usize,
    pub convs: usize,
    /// Aligned node groups: shared (bit-identical weights, computed once),
    /// grouped (stacked into one op), divergent (heads that differ).
    pub groups: usize,
    pub shared: usize,
    pub grouped: usize,
    /// Of the grouped, those stacked on a member axis (transformer layers).
    pub member_axis: usize,
    pub divergent: usize,
    /// Members identical to an earlier one: `[member, earlier member]`.
    pub identical: Vec<(String, String)>,
    /// Bytes written (an ML package's weights).
    pub size_bytes: u64,
    pub load_ms: f64,
    pub fuse_ms: f64,
    pub export_ms: f64,
    /// `fusec fuse --explain`'s text, when asked for.
    pub explain: Option<String>,
    /// The lowering used (as the model's `fusec.lowering` metadata).
    pub lowering: serde_json::Value,
    /// What `--tune` measured and chose.
    pub tuning: Option<crate::tune::TuneReport>,
}

/// `fusec fuse --precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusePrecision {
    Fp32,
    /// fp16 weights; ONNX computes in fp32, Core ML in fp16.
    Fp16,
    /// ONNX computes in fp16 throughout (for GPUs); Core ML as `Fp16`.
    Fp16Compute,
}

/// `fusec fuse --tune`: where and how long to measure, and where to keep
/// the plan chosen.
pub struct TuneArgs {
    pub cfg: SessionConfig,
    pub warmup: usize,
    pub runs: usize,
    /// Also write the plan as a `--calibration` file.
    pub calibrate: Option<PathBuf>,
    /// Measure even when the cache keeps a plan for these members.
    pub retune: bool,
}

/// Where `fuse`'s lowering comes from.
pub enum LoweringChoice<'a> {
    /// As the options say, chosen by the caller (flags or a calibration file).
    Given,
    /// The options are the default, unmeasured for these members: `fuse`
    /// says so and what measures it.
    Default,
    /// Measured here (`--tune`), replacing the options' lowering.
    Tune(&'a TuneArgs),
}

impl LoweringChoice<'_> {
    /// `tune` when given, else the default when the caller chose nothing.
    pub fn new(tune: Option<&TuneArgs>, nothing_chosen: bool) -> LoweringChoice<'_> {
        match tune {
            Some(t) => LoweringChoice::Tune(t),
            None if nothing_chosen => LoweringChoice::Default,
            None => LoweringChoice::Given,
        }
    }
}

pub fn fuse(
    paths: &[PathBuf],
    arch: &ArchOptions,
    output: &Path,
    explain: bool,
    opts: &fusec_passes::FuseOptions,
    precision: FusePrecision,
    choice: LoweringChoice,
) -> Result<FuseReport, Failure> {
    let fp16_compute = precision == FusePrecision::Fp16Compute;
    let precision = match precision {
        FusePrecision::Fp32 => Precision::F32,
        FusePrecision::Fp16 | FusePrecision::Fp16Compute => Precision::F16,
    };
    let format = OutputFormat::of(output)?;
    let t0 = Instant::now();
    let names = member_names(paths);
    let mut graphs = vec![];
    let mut files = vec![];
    for (p, name) in paths.iter().zip(&names) {
        graphs.push(load_graph(p, arch)?);
        files.push(MemberFile {
            name: name.clone(),
            file: p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            sha256: sha256_file(&fusec_frontends::model_file(p))?,
        });
    }
    let t_load = t0.elapsed();
    let mut opts = opts.clone();
    if format == OutputFormat::CoreMl {
        // The channel block is ONNX Runtime's (its CPU provider's blocked
        // layout); Core ML lays out its tensors itself. Cleared before
        // tuning, so that the plan is measured as it will be fused.
        opts.channel_block = None;
    }
    let mut tuning = None;
    if let LoweringChoice::Tune(t) = choice {
        let x = inputs(&graphs[0], &Inputs::Generated(1))?;
        let device = describe_cfg(&t.cfg);
        let (tuned, report) = crate::tune::tune(
            &names,
            &graphs,
            &x[0],
            &t.cfg,
            &device,
            t.warmup,
            t.runs,
            opts.keep_bn,
            opts.channel_block,
            fp16_compute,
            !t.retune,
        )?;
        emit(&crate::tune::table(&report))?;
        if let Some(p) = &t.calibrate {
            let cal = crate::calibration::Calibration::new(
                &format!("fused, tuned {}", report.label()),
                &tuned,
                report.speedup_p50.unwrap_or(1.0),
                &device,
                &names,
            );
            cal.write(p)?;
            crate::report::note(format!(
                "wrote {}: plan {}; use it with --calibration {}",
                p.display(),
                report.chosen,
                p.display()
            ));
        }
        opts = tuned;
        tuning = Some(report);
    }
    if format == OutputFormat::CoreMl {
        opts.max_rank = Some(fusec_exporters::coreml::mil::MAX_RANK);
    }
    let members = names.iter().zip(graphs).map(|(n, graph)| fusec_passes::Member { name: n.clone(), graph }).collect();
    let fused = fusec_passes::fuse(members, &opts)?;
    let r = &fused.report;
    // The block actually padded to: none under a lowering that groups
    // nothing (the metadata and the report say what the model is).
    opts.channel_block = r.channel_block;
    for (k, j) in &r.identical {
        crate::report::warn(format!(
            "{} is identical to {} (same graph, every weight bit-identical): the fused model computes it once",
            paths[*k].display(),
            paths[*j].display()
        ));
    }
    let mut g = fused.graph;
    if format == OutputFormat::Onnx && fp16_compute {
        // ONNX for GPUs: f16 throughout, f32 at the interface.
        fusec_passes::fp16_compute(&mut g).map_err(fusec_passes::PassError::from)?;
        fusec_passes::validate::validated("fp16_compute", &g)?;
    } else if format == OutputFormat::Onnx && precision == Precision::F16 {
        // ONNX: fp16 weights, f32 compute (a Cast after each weight).
        fusec_passes::fp16_weights(&mut g).map_err(fusec_passes::PassError::from)?;
        fusec_passes::validate::validated("fp16_weights", &g)?;
    }
    for (i, m) in files.iter().enumerate() {
        g.metadata.push((format!("fusec.member.{i}.name"), m.name.clone()));
        g.metadata.push((format!("fusec.member.{i}.file"), m.file.clone()));
        g.metadata.push((format!("fusec.member.{i}.sha256"), m.sha256.clone()));
    }
    g.metadata.push(("fusec.lowering".into(), crate::calibration::Calibration::lowering_json(&opts).to_string()));
    g.metadata.push(("fusec.version".into(), env!("CARGO_PKG_VERSION").into()));
    let t_fuse = t0.elapsed();
    let mut beside = String::new();
    let size = match format {
        OutputFormat::Onnx => {
            let w = fusec_exporters::onnx::write_file(&g, output)?;
            if let Some((data, n)) = &w.data {
                beside = format!(
                    "; its weights in {} ({:.1} MB: past protobuf's 2 GiB, ONNX external data; keep the two files together)",
                    data.display(),
                    *n as f64 / 1e6
                );
            }
            w.bytes + w.data.as_ref().map_or(0, |d| d.1)
        }
        OutputFormat::CoreMl => {
            if opts.member_subgraphs {
                crate::report::warn(
                    "member subgraphs are an ONNX form (a Scan per member's block): the Core ML package is written as one flat program",
                );
            }
            let info = fusec_exporters::coreml::write_package(&g, output, precision)?;
            if let Some((onnx, coreml)) = info.renamed.first() {
                crate::report::note(format!(
                    "note: Core ML names are identifiers: {} inputs/outputs renamed (`{onnx}` is `{coreml}`); the package's metadata maps fusec.name.NEW to the ONNX name",
                    info.renamed.len()
                ));
            }
            info.weight_bytes
        }
    };
    let explained = explain.then(|| fusec_passes::explain(r));
    if let Some(text) = &explained {
        emit(text)?;
    }
    let t_end = t0.elapsed();
    if matches!(choice, LoweringChoice::Default) {
        // A default chosen on one model and machine can be slower than the
        // members elsewhere: say so (once written; a failure stays one
        // line), and what measures it.
        // Members channels cannot stack (transformers) keep every layer
        // that is not shared per member under it, which the name "regions"
        // would not tell.
        let nothing = if r.grouped == 0 {
            "; for these members it stacks nothing: every layer not shared stays per member, as with --lowering separate"
        } else {
            ""
        };
        crate::report::note(format!(
            "lowering: the default, regions from {} (the fastest on EfficientDet-D0 with ONNX Runtime on a 2-core CPU), not measured for these members: --tune measures plans for them where they will run{nothing}",
            fusec_passes::fuse::DEFAULT_GROUP_FROM
        ));
    }
    crate::report::note(format!(
        "wrote {} ({} members, {} nodes, {} Conv, {:.1} MB) in {:.0} ms (load {:.0} ms, fuse {:.0} ms, export {:.0} ms){beside}",
        output.display(),
        paths.len(),
        r.fused_nodes,
        r.fused_convs,
        size as f64 / 1e6,
        t_end.as_secs_f64() * 1e3,
        t_load.as_secs_f64() * 1e3,
        (t_fuse - t_load).as_secs_f64() * 1e3,
        (t_end - t_fuse).as_secs_f64() * 1e3,
    ));
    Ok(FuseReport {
        output: output.display().to_string(),
        format: match format {
            OutputFormat::Onnx => "onnx".into(),
            OutputFormat::CoreMl => "mlpackage".into(),
        },
        precision: match (precision, fp16_compute) {
            (_, true) => "fp16-compute".into(),
            (Precision::F32, _) => "fp32".into(),
            (Precision::F16, _) => "fp16".into(),
        },
        members: files,
        nodes: r.fused_nodes,
        convs: r.fused_convs,
        groups: r.groups,
        shared: r.shared,
        grouped: r.grouped,
        member_axis: r.member_axis,
        divergent: r.divergent,
        identical: r.identical.iter().map(|&(k, j)| (names[k].clone(), names[j].clone())).collect(),
        size_bytes: size as u64,
        load_ms: t_load.as_secs_f64() * 1e3,
        fuse_ms: (t_fuse - t_load).as_secs_f64() * 1e3,
        export_ms: (t_end - t_fuse).as_secs_f64() * 1e3,
        explain: explained,
        lowering: crate::calibration::Calibration::lowering_json(&opts),
        tuning,
    })
}

/// One tensor compared.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorDiff {
    pub tensor: String,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub cosine: f64,
    pub within: bool,
}

/// What `fusec compare` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareReport {
    pub max_abs: f64,
    pub max_rel_l2: f64,
    pub tensors: Vec<TensorDiff>,
    pub ok: bool,
}

/// Compares the tensors of `got` with those of `want` of the same name;
/// `prefix` is put before each reference name to find its partner in `got`
/// (`coco/` checks a fused model's outputs against one member's file).
pub fn compare(got: &Path, want: &Path, prefix: &str, max_abs: f64, max_rel_l2: f64) -> Result<CompareReport, Failure> {
    let g = fusec_verify::io::read_tensors(got)?;
    let w = fusec_verify::io::read_tensors(want)?;
    let mut o = String::new();
    let _ = writeln!(o, "{:<16} {:>12} {:>12} {:>12}", "tensor", "max abs", "rel L2", "cosine");
    let mut tensors = vec![];
    for (name, wt) in &w {
        let key = format!("{prefix}{name}");
        let Some((_, gt)) = g.iter().find(|(n, _)| *n == key) else { continue };
        let d = fusec_verify::compare::diff(gt, wt)
            .map_err(|e| Failure::input(format!("tensor `{key}`: {e}")).in_file(got).at_tensor(Some(key.clone())))?;
        let _ = writeln!(o, "{key:<16} {:>12.3e} {:>12.3e} {:>12.9}", d.max_abs, d.rel_l2, d.cosine);
        tensors.push(TensorDiff {
            tensor: key,
            max_abs: d.max_abs,
            rel_l2: d.rel_l2,
            cosine: d.cosine,
            within: d.within(max_abs, max_rel_l2),
        });
    }
    let compared = tensors.len();
    if compared == 0 {
        emit(&o)?;
        let hint =
            if prefix.is_empty() { " (a fused model's outputs are MEMBER/OUTPUT: try --prefix MEMBER/)" } else { "" };
        return Err(Failure::input(format!(
            "{} and {} share no tensor names{}{hint}",
            got.display(),
            want.display(),
            if prefix.is_empty() { String::new() } else { format!(" with prefix `{prefix}`") }
        )));
    }
    let failed: Vec<&str> = tensors.iter().filter(|t| !t.within).map(|t| t.tensor.as_str()).collect();
    if failed.is_empty() {
        let _ = writeln!(o, "ok: {compared} tensors within max abs {max_abs:e} and rel L2 {max_rel_l2:e}");
    } else {
        let _ = writeln!(
            o,
            "FAILED: {} of {compared} tensors exceed max abs {max_abs:e} or rel L2 {max_rel_l2:e}",
            failed.len()
        );
    }
    emit(&o)?;
    let message = (!failed.is_empty()).then(|| {
        format!(
            "{}: {} of {compared} tensors exceed max abs {max_abs:e} or rel L2 {max_rel_l2:e}: {}",
            got.display(),
            failed.len(),
            failed.join(", ")
        )
    });
    let report = CompareReport { max_abs, max_rel_l2, ok: message.is_none(), tensors };
    match message {
        None => Ok(report),
        Some(m) => Err(Failure::mismatch(m).in_file(got).with_report(to_json(&report)?)),
    }
}
