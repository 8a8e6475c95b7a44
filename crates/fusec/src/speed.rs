//! `fusec verify` and `fusec bench`: the fused model against its members,
//! for equivalence and for speed, on one runtime, measured side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fuse_ir::Graph;
use fusec_frontends::arch::ArchOptions;
use fusec_passes::{FuseOptions, Lowering};
use fusec_verify::compare::{allclose_violations, diff};
use fusec_verify::runtime::{Model, SessionConfig};
use fusec_verify::timing::{speedup_interval, Stats};
use fusec_verify::Tensors;

use crate::calibration::Calibration;
use crate::lineup::{blocks, Lineup};
pub use crate::models::Inputs;
use crate::models::{as_members, inputs, load_graph, member_names, OnnxModel};
use crate::report::progress;
use crate::report::{describe_cfg, emit, to_json};
use crate::Failure;

/// `fusec verify`'s default atol and rtol for a model with fp32 weights.
const FP32_TOLERANCE: f64 = 1e-4;
/// And for one with fp16 weights (`fusec fuse --precision fp16`).
const FP16_TOLERANCE: f64 = 1e-2;

/// Detections of one member from a set of outputs whose names carry
/// `prefix` (`coco/` in the fused model, none for the member alone).
fn detections(
    outs: &Tensors,
    prefix: &str,
    g: &Graph,
) -> Result<Option<Vec<fusec_verify::detect::Detection>>, Failure> {
    let names: Vec<&str> = g.outputs().iter().map(|o| g.value(*o).name.as_str()).collect();
    if !fusec_verify::detect::is_efficientdet(&names) {
        return Ok(None);
    }
    let sh = &g.value(g.inputs()[0]).ty.shape;
    let mine: Tensors =
        outs.iter().filter_map(|(n, t)| n.strip_prefix(prefix).map(|k| (k.to_string(), t.clone()))).collect();
    fusec_verify::detect::detect(&mine, sh[2], sh[3])
        .map(Some)
        .map_err(|e| Failure::internal(format!("decoding detections: {e}")))
}

/// The speed table: one row per config (the first is the baseline),
/// speedup against `baseline`'s p50 with its 95% interval; with a device
/// column when `device` is given.
fn speed_table(rows: &[(&str, &Stats)], baseline: &Stats, device: Option<&str>, items: Items) -> String {
    let (dh, dsep, dcell) = match device {
        Some(d) => (" device |", "---|", format!(" {d} |")),
        None => ("", "", String::new()),
    };
    let mut o = String::new();
    let per_second = match items {
        Items::Runs => "RPS".to_string(),
        Items::Pairs(_) => "pairs/s".to_string(),
    };
    let _ = writeln!(
        o,
        "| config |{dh} mean ms | p50 ms | p95 ms | p99 ms | {per_second} | speedup (p50) | 95% interval |"
    );
    let _ = writeln!(o, "|---|{dsep}---|---|---|---|---|---|---|");
    for (i, (name, s)) in rows.iter().enumerate() {
        // The first row is the baseline itself.
        let ci = match speedup_interval(baseline, s) {
            Some((lo, hi)) if i > 0 => format!("{lo:.2}–{hi:.2}x"),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "| {name} |{dcell} {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2}x | {ci} |",
            s.mean_ms,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.rps * items.per_run() as f64,
            baseline.p50_ms / s.p50_ms
        );
    }
    let _ =
        writeln!(o, "\n(95% interval: a bootstrap over the interleaved rounds, each round's latencies kept together)");
    o
}

/// What one run processes, for the throughput column: a run (images) or
/// a batch of query-document pairs (token inputs, batch B).
#[derive(Clone, Copy)]
enum Items {
    Runs,
    Pairs(usize),
}

impl Items {
    /// Token inputs (an integer input) make pairs, as many as the batch.
    fn of(g: &Graph) -> Items {
        match g.inputs().first().map(|&i| &g.value(i).ty) {
            Some(ty) if !ty.dtype.is_float() => Items::Pairs(ty.shape.first().copied().unwrap_or(1)),
            _ => Items::Runs,
        }
    }

    fn per_run(self) -> usize {
        match self {
            Items::Runs => 1,
            Items::Pairs(b) => b,
        }
    }
}

pub struct SpeedArgs {
    pub warmup: usize,
    pub runs: usize,
    /// `--precision fp16`: every model run (members and fused) computes
    /// in f16.
    pub fp16: bool,
    /// The timed rounds are split among this many sessions of each model,
    /// made afresh (see `Lineup`); at most one per round.
    pub sessions: usize,
}

impl SpeedArgs {
    /// The sessions of each model the runs are split among (at most one
    /// per round).
    pub fn blocks(&self) -> usize {
        blocks(self.sessions, self.runs)
    }

    /// How the timing was done, for the reports.
    pub fn describe(&self) -> String {
        let blocks = self.blocks();
        if blocks > 1 {
            format!(
                "{} timed rounds, interleaved, across {blocks} sessions of each model made afresh, each after {} warm-up rounds",
                self.runs, self.warmup
            )
        } else {
            format!("{} warm-up + {} timed rounds, interleaved", self.warmup, self.runs)
        }
    }
}

/// One output of one member on one input, fused against the member alone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutputDiff {
    /// Numbered from 1.
    pub input: usize,
    pub member: String,
    pub output: String,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub cosine: f64,
    /// Elements outside `atol + rtol * |member|`.
    pub outside: usize,
}

/// For a one-logit cross-encoder: on how many inputs the fused model
/// orders the batch's pairs as the member does.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ranking {
    pub member: String,
    pub batch: usize,
    pub kept: usize,
    pub ranked: usize,
}

/// A detector's decoded detections, fused against the member alone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DetectionRow {
    pub input: usize,
    pub member: String,
    pub fused_detections: usize,
    pub member_detections: usize,
    #[serde(flatten)]
    pub diff: fusec_verify::detect::DetectionDiff,
}

/// One timed configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpeedRow {
    pub config: String,
    #[serde(flatten)]
    pub stats: Stats,
    /// Query-document pairs per second (token inputs; `rps` times the batch).
    pub pairs_per_s: Option<f64>,
    pub speedup_p50: f64,
    /// 95% bootstrap interval of `speedup_p50` (none for the baseline).
    pub speedup_p50_interval: Option<(f64, f64)>,
}

/// `fusec verify`'s timing: the members one after another, then fused.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpeedReport {
    pub warmup: usize,
    pub runs: usize,
    /// Sessions of each model the runs were split among, each made afresh.
    pub sessions: usize,
    pub rows: Vec<SpeedRow>,
}

/// What `fusec verify` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VerifyReport {
    pub model: String,
    pub members: Vec<String>,
    /// Runtime, device and threads, e.g. `ort (cpu, 2 threads)`.
    pub device: String,
    pub inputs: usize,
    /// Whether the inputs were made by fusec (deterministic random).
    pub generated_inputs: bool,
    pub atol: f64,
    pub rtol: f64,
    /// `fp32` or `fp16`: the fused model's weights, which set the default
    /// tolerances.
    pub weights: String,
    pub outputs: Vec<OutputDiff>,
    pub rankings: Vec<Ranking>,
    pub detections: Vec<DetectionRow>,
    /// Every output within the tolerances.
    pub equivalent: bool,
    /// The outputs that are not (with the input and element count).
    pub failed: Vec<String>,
    /// None with `runs` 0.
    pub speed: Option<SpeedReport>,
}

fn speed_rows(rows: &[(&str, &Stats)], baseline: &Stats, items: Items) -> Vec<SpeedRow> {
    rows.iter()
        .enumerate()
        .map(|(i, (name, s))| SpeedRow {
            config: name.to_string(),
            stats: (*s).clone(),
            pairs_per_s: match items {
                Items::Pairs(b) => Some(s.rps * b as f64),
                Items::Runs => None,
            },
            speedup_p50: baseline.p50_ms / s.p50_ms,
            speedup_p50_interval: if i == 0 { None } else { speedup_interval(baseline, s) },
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn verify(
    model: &Path,
    member_paths: &[PathBuf],
    arch: &ArchOptions,
    input: &Inputs,
    cfg: &SessionConfig,
    atol: Option<f64>,
    rtol: Option<f64>,
    speed: &SpeedArgs,
) -> Result<VerifyReport, Failure> {
    if !matches!(fusec_frontends::detect_kind(model)?, fusec_frontends::FileKind::Onnx) {
        return Err(Failure::input(format!(
            "{}: verify takes the fused ONNX model (fusec fuse ... -o super.onnx)",
            model.display()
        )));
    }
    // Read once: the graph gives names and shapes, the bytes are what is
    // checked and timed (the file as it is served).
    let file_bytes = fusec_frontends::read_file(model)?;
    let fused_graph = fusec_frontends::onnx::load_bytes(&file_bytes, model)?;
    // Default tolerances by precision: fp16 weights move outputs by ~1e-3.
    let fp16 = fused_graph.weights().any(|(_, _, t)| t.ty().dtype == fuse_ir::DType::F16);
    let (default_tol, why) = match (speed.fp16, fp16) {
        (true, _) => (FP16_TOLERANCE, "fp16 compute"),
        (false, true) => (FP16_TOLERANCE, "fp16 weights"),
        (false, false) => (FP32_TOLERANCE, "fp32 weights"),
    };
    let (atol, rtol) = (atol.unwrap_or(default_tol), rtol.unwrap_or(default_tol));
    let names = member_names(member_paths);
    let members: Vec<Graph> = member_paths.iter().map(|p| load_graph(p, arch)).collect::<Result<_, _>>()?;
    for (m, g) in names.iter().zip(&members) {
        for &o in g.outputs() {
            let want = format!("{m}/{}", g.value(o).name);
            if !fused_graph.outputs().iter().any(|f| fused_graph.value(*f).name == want) {
                return Err(Failure::input(format!(
                    "{}: no output `{want}`: was it fused from these members (names are file stems)?",
                    model.display()
                )));
            }
        }
    }
    let ins = inputs(&fused_graph, input)?;
    let generated = matches!(input, Inputs::Generated(_));
    let tokens = fused_graph.inputs().iter().any(|&i| !fused_graph.value(i).ty.dtype.is_float());
    // The models as ONNX files, each written once: the sessions checked
    // here and the ones timed below are made from them.
    let mut lineup = Lineup::new()?;
    let members_group = lineup.push_graphs(&members, speed.fp16)?;
    // The fused file itself, as it is served (member subgraphs and all; its
    // weights beside it where it keeps them there); fp16 compute converts
    // the graph, and a file that does not load is checked as fusec writes
    // its graph.
    let alone = (!speed.fp16).then(|| fusec_verify::runtime::load(Model::File(model), cfg));
    // The fused model is the lineup's second group (its timing row).
    let mut fused = match alone {
        Some(Ok(session)) => {
            lineup.push_file(model);
            session
        }
        other => {
            if let Some(Err(e)) = other {
                crate::report::warn(format!(
                    "{}: the file does not load as it is ({e}); checking and timing the graph as fusec writes it",
                    model.display()
                ));
            }
            let group = lineup.push_graphs(std::slice::from_ref(&fused_graph), speed.fp16)?;
            lineup.sessions(group, cfg)?.remove(0)
        }
    };
    let mut sessions = lineup.sessions(members_group, cfg)?;

    let mut o = String::new();
    let _ = writeln!(
        o,
        "verify {} against {} members on {}, {} input(s){}",
        model.display(),
        members.len(),
        describe_cfg(cfg),
        ins.len(),
        match generated {
            false => "",
            true if tokens => " (deterministic random; token ids, types and masks as a tokenizer makes them)",
            true => " (deterministic random, uniform in [-1, 1])",
        }
    );
    let _ = writeln!(
        o,
        "{:<6} {:<12} {:<16} {:>11} {:>11} {:>13} {:>9}",
        "input", "member", "output", "max abs", "rel L2", "cosine", "outside"
    );
    let mut failed = vec![];
    let mut compared = 0;
    let mut det_rows = String::new();
    let mut output_diffs = vec![];
    let mut detection_rows = vec![];
    // Per member: (inputs whose ranking the fused model keeps, inputs ranked).
    let mut rankings: Vec<(usize, usize)> = vec![(0, 0); members.len()];
    for (k, x) in ins.iter().enumerate() {
        // Inputs are numbered from 1 in the tables.
        let k = k + 1;
        let got = fused.run(x)?;
        for (j, ((m, s), g)) in names.iter().zip(sessions.iter_mut()).zip(&members).enumerate() {
            let want = s.run(x)?;
            if let (Some(dw), Some(dg)) = (detections(&want, "", g)?, detections(&got, &format!("{m}/"), g)?) {
                let d = fusec_verify::detect::compare(&dg, &dw);
                detection_rows.push(DetectionRow {
                    input: k,
                    member: m.clone(),
                    fused_detections: dg.len(),
                    member_detections: dw.len(),
                    diff: d,
                });
                let _ = writeln!(
                    det_rows,
                    "| {k} | {m} | {} / {} | {} | {:.3e} | {:.3e} | {:.4} | {:.4} |",
                    dg.len(),
                    dw.len(),
                    d.count,
                    d.boxes_mse,
                    d.scores_mse,
                    d.label_accuracy,
                    d.mean_iou
                );
            }
            for (oname, w) in &want {
                let key = format!("{m}/{oname}");
                let (_, f) = got.iter().find(|(n, _)| *n == key).expect("checked above");
                let d = diff(f, w).map_err(|e| Failure::internal(format!("{key}: {e}")))?;
                let outside =
                    allclose_violations(f, w, atol, rtol).map_err(|e| Failure::internal(format!("{key}: {e}")))?;
                let _ = writeln!(
                    o,
                    "{k:<6} {m:<12} {oname:<16} {:>11.3e} {:>11.3e} {:>13.9} {outside:>9}",
                    d.max_abs, d.rel_l2, d.cosine
                );
                output_diffs.push(OutputDiff {
                    input: k,
                    member: m.clone(),
                    output: oname.clone(),
                    max_abs: d.max_abs,
                    rel_l2: d.rel_l2,
                    cosine: d.cosine,
                    outside,
                });
                compared += 1;
                if let Some(kept) = ranking_kept(f, w) {
                    rankings[j].0 += usize::from(kept);
                    rankings[j].1 += 1;
                }
                if outside > 0 {
                    failed.push(if ins.len() > 1 {
                        format!("{key} on input {k} ({outside} elements)")
                    } else {
                        format!("{key} ({outside} elements)")
                    });
                }
            }
        }
    }
    let mut ranking_rows = vec![];
    for ((m, (kept, ranked)), g) in names.iter().zip(&rankings).zip(&members) {
        if *ranked > 0 {
            let b = g.value(g.outputs()[0]).ty.shape[0];
            ranking_rows.push(Ranking { member: m.clone(), batch: b, kept: *kept, ranked: *ranked });
            let _ = writeln!(
                o,
                "{m}: the fused model ranks the batch's {b} pairs as the member does on {kept} of {ranked} inputs"
            );
        }
    }
    if !det_rows.is_empty() {
        let _ = writeln!(o, "detections (effdet decoding and NMS, fused vs member, per input):");
        let _ = writeln!(
            o,
            "| input | member | detections fused / member | paired (IoU >= {}) | boxes MSE | scores MSE | label accuracy | mean IoU |",
            fusec_verify::detect::PAIR_IOU
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
        o.push_str(&det_rows);
    }
    let _ = writeln!(
        o,
        "equivalence: {} ({compared} outputs compared, |fused - member| <= {atol:e} + {rtol:e} * |member|; the model has {why}, default tolerance {default_tol:e})",
        if failed.is_empty() { "ok" } else { "FAILED" }
    );
    emit(&o)?;

    let mut speed_report = None;
    if speed.runs > 0 {
        let x = &ins[0];
        drop((fused, sessions));
        let pb = progress(speed.runs as u64, "timing");
        let stats = lineup.time(cfg, x, speed.warmup, speed.runs, speed.sessions, &mut || pb.inc(1))?;
        pb.finish_and_clear();
        let rows = [("members one after another", &stats[0]), ("fused", &stats[1])];
        let mut t = String::new();
        let _ = writeln!(t, "speed on {}: {}", describe_cfg(cfg), speed.describe());
        t.push_str(&speed_table(&rows, &stats[0], None, Items::of(&fused_graph)));
        emit(&t)?;
        speed_report = Some(SpeedReport {
            warmup: speed.warmup,
            runs: speed.runs,
            sessions: speed.blocks(),
            rows: speed_rows(&rows, &stats[0], Items::of(&fused_graph)),
        });
    }
    let report = VerifyReport {
        model: model.display().to_string(),
        members: names.clone(),
        device: describe_cfg(cfg),
        inputs: ins.len(),
        generated_inputs: generated,
        atol,
        rtol,
        weights: if fp16 || speed.fp16 { "fp16".into() } else { "fp32".into() },
        outputs: output_diffs,
        rankings: ranking_rows,
        detections: detection_rows,
        equivalent: failed.is_empty(),
        failed: failed.clone(),
        speed: speed_report,
    };
    if !failed.is_empty() {
        return Err(Failure::mismatch(format!(
            "{}: {} of {compared} outputs differ beyond atol {atol:e} / rtol {rtol:e}: {}",
            model.display(),
            failed.len(),
            failed.join(", ")
        ))
        .in_file(model)
        .with_report(to_json(&report)?));
    }
    Ok(report)
}

/// For a one-score-per-pair output (`[B, 1]`, a cross-encoder's logit, B
/// of 2 or more): whether the fused scores order the batch's pairs as the
/// member's do. `None` for any other output.
fn ranking_kept(fused: &ndarray::ArrayD<f32>, member: &ndarray::ArrayD<f32>) -> Option<bool> {
    if member.ndim() != 2 || member.shape()[1] != 1 || member.shape()[0] < 2 || fused.shape() != member.shape() {
        return None;
    }
    let order = |a: &ndarray::ArrayD<f32>| {
        let mut idx: Vec<usize> = (0..a.len()).collect();
        let v: Vec<f32> = a.iter().copied().collect();
        idx.sort_by(|&i, &j| v[j].total_cmp(&v[i]).then(i.cmp(&j)));
        idx
    };
    Some(order(fused) == order(member))
}

/// One benchmarked configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRow {
    pub config: String,
    pub device: String,
    #[serde(flatten)]
    pub stats: Stats,
    pub speedup_p50: f64,
    /// 95% bootstrap interval of `speedup_p50` (none for the baseline).
    pub speedup_p50_interval: Option<(f64, f64)>,
    /// Worst output difference against the members run alone.
    pub max_abs: f64,
    pub rel_l2: f64,
    /// Worst detection metrics over the members (EfficientDet heads only).
    pub detections: Option<fusec_verify::detect::DetectionDiff>,
    /// The earlier config whose model this one is, byte for byte (a
    /// lowering that changes nothing for these members): timed once, its
    /// figures repeated here.
    pub same_as: Option<String>,
}

impl BenchRow {
    /// The row's name in the tables: its config, and the config whose
    /// model it is, when it is another's.
    fn label(&self) -> String {
        match &self.same_as {
            Some(j) => format!("{} (the model of `{j}`)", self.config),
            None => self.config.clone(),
        }
    }
}

/// What `fusec bench` measured (also its `--json-out` file).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    pub members: Vec<String>,
    pub device: String,
    pub warmup: usize,
    pub runs: usize,
    /// Sessions of each model the runs were split among, each made afresh.
    pub sessions: usize,
    /// The members one after another first (the baseline), then the members
    /// canonicalized but unfused, then each fused configuration.
    pub rows: Vec<BenchRow>,
    /// The fastest fused configuration.
    pub fastest: String,
    /// Its speedup over the canonicalized members: the gain of fusion itself.
    pub fusion_gain: f64,
    /// What `--calibrate` wrote.
    pub calibration: Option<Calibration>,
    /// With `--tune`: what the tuner measured; its plan is the last row.
    pub tuning: Option<crate::tune::TuneReport>,
}

/// A fused configuration `fusec bench` measures.
pub struct BenchConfig {
    pub name: String,
    pub opts: FuseOptions,
    /// fp16 weights, f32 compute (`fusec fuse --precision fp16`).
    pub fp16_weights: bool,
}

/// `fusec bench`'s second row: the members after fuse's single-model
/// passes (canonicalize, BatchNorm folding), run one after another, unfused.
const PREPARED: &str = "members one after another, canonicalized (not fused)";

/// The configurations `fusec bench` compares against the members one after
/// another: the lowerings, and the default with fp16 weights.
pub fn bench_configs() -> Vec<BenchConfig> {
    let mut v: Vec<BenchConfig> =
        lowerings().into_iter().map(|(name, opts)| BenchConfig { name, opts, fp16_weights: false }).collect();
    v.push(BenchConfig {
        name: "fused, default lowering, fp16 weights".into(),
        opts: FuseOptions {
            lowering: Lowering::Regions { from: fusec_passes::fuse::DEFAULT_GROUP_FROM },
            ..Default::default()
        },
        fp16_weights: true,
    });
    v
}

fn lowerings() -> Vec<(String, FuseOptions)> {
    let o = |lowering, keep_bn, split_depthwise, split_pointwise| FuseOptions {
        keep_bn,
        lowering,
        split_depthwise,
        split_pointwise,
        ..FuseOptions::default()
    };
    let mut v = vec![
        ("fused, grouped".to_string(), o(Lowering::Grouped, false, false, false)),
        (
            "fused, grouped, channels unpadded".to_string(),
            FuseOptions { channel_block: None, ..o(Lowering::Grouped, false, false, false) },
        ),
        ("fused, grouped, BatchNorm kept".to_string(), o(Lowering::Grouped, true, false, false)),
        ("fused, grouped, depthwise split".to_string(), o(Lowering::Grouped, false, true, false)),
        ("fused, grouped, pointwise split".to_string(), o(Lowering::Grouped, false, false, true)),
        (
            "fused, grouped, linear split".to_string(),
            FuseOptions { split_linear: true, ..o(Lowering::Grouped, false, false, false) },
        ),
        ("fused, separate".to_string(), o(Lowering::Separate, false, false, false)),
        (
            "fused, separate, member subgraphs".to_string(),
            FuseOptions { member_subgraphs: true, ..o(Lowering::Separate, false, false, false) },
        ),
    ];
    for from in [0.2f32, 0.25, 0.3, 0.4, 0.5, 0.7] {
        v.push((format!("fused, regions from {from}"), o(Lowering::Regions { from }, false, false, false)));
    }
    v
}

#[allow(clippy::too_many_arguments)]
pub fn bench(
    member_paths: &[PathBuf],
    arch: &ArchOptions,
    input: &Inputs,
    cfg: &SessionConfig,
    speed: &SpeedArgs,
    json: Option<&Path>,
    markdown: Option<&Path>,
    calibrate: Option<&Path>,
    tune_runs: Option<usize>,
) -> Result<BenchReport, Failure> {
    let names = member_names(member_paths);
    let members: Vec<Graph> = member_paths.iter().map(|p| load_graph(p, arch)).collect::<Result<_, _>>()?;
    let ins = match input {
        Inputs::Generated(_) => inputs(&members[0], &Inputs::Generated(1))?,
        given => inputs(&members[0], given)?,
    };
    let x = &ins[0];
    // With fp16 compute, fp16 weights are no separate choice.
    let mut configs: Vec<BenchConfig> =
        bench_configs().into_iter().filter(|c| !(speed.fp16 && c.fp16_weights)).collect();
    // --tune: the plan measured best here, as one more row of the same run.
    // Tuned before any session is made: sessions made after it (after it
    // made and dropped dozens) measured up to 10% slower than ones made
    // before (ConvNeXt-Tiny's members against the same graphs rewritten,
    // 0.90x after tuning, 1.00x without); every timed session is made
    // after it, block by block (`Lineup`).
    let mut tuning = None;
    if let Some(runs) = tune_runs {
        let device = describe_cfg(cfg);
        // A benchmark measures: the cache is updated, not read.
        let block = FuseOptions::default().channel_block;
        let (opts, r) = crate::tune::tune(&names, &members, x, cfg, &device, 2, runs, false, block, speed.fp16, false)?;
        emit(&crate::tune::table(&r))?;
        configs.push(BenchConfig { name: format!("fused, tuned ({})", r.label()), opts, fp16_weights: false });
        tuning = Some(r);
    }
    // What is timed, as ONNX files each written once (the sessions checked
    // here are made from them too): the members, the prepared members,
    // each distinct fused model (sessions made afresh per block).
    let mut lineup = Lineup::new()?;
    let members_group = lineup.push_graphs(&members, speed.fp16)?;
    let mut sessions = lineup.sessions(members_group, cfg)?;
    let mut want: Vec<(String, ndarray::ArrayD<f32>)> = vec![];
    for (m, s) in names.iter().zip(sessions.iter_mut()) {
        for (o, t) in s.run(x)? {
            want.push((format!("{m}/{o}"), t));
        }
    }
    let want_dets: Vec<Option<Vec<fusec_verify::detect::Detection>>> =
        names.iter().zip(&members).map(|(m, g)| detections(&want, &format!("{m}/"), g)).collect::<Result<_, _>>()?;
    // The worst output difference of a set of outputs named `MEMBER/OUTPUT`
    // against the members run alone.
    let differences =
        |name: &str, got: &Tensors| -> Result<(f64, f64, Option<fusec_verify::detect::DetectionDiff>), Failure> {
            let (mut max_abs, mut rel) = (0f64, 0f64);
            for (k, w) in &want {
                let (_, g) = got
                    .iter()
                    .find(|(n, _)| n == k)
                    .ok_or_else(|| Failure::internal(format!("{name}: output {k} missing")))?;
                let d = diff(g, w).map_err(|e| Failure::internal(format!("{name} {k}: {e}")))?;
                max_abs = max_abs.max(d.max_abs);
                rel = rel.max(d.rel_l2);
            }
            let mut worst: Option<fusec_verify::detect::DetectionDiff> = None;
            for ((m, g), wd) in names.iter().zip(&members).zip(&want_dets) {
                if let (Some(wd), Some(gd)) = (wd, detections(got, &format!("{m}/"), g)?) {
                    let d = fusec_verify::detect::compare(&gd, wd);
                    worst = Some(worst.map_or(d, |w| w.worst(&d)));
                }
            }
            Ok((max_abs, rel, worst))
        };
    let pb = progress(configs.len() as u64 + 1, "building");
    // The members after fuse's single-model passes and the scale folding
    // it finishes with, unfused: what those rewrites give without fusion.
    let mut prepared = vec![];
    for (m, g) in names.iter().zip(&members) {
        let mut g = g.clone();
        fusec_passes::prepare_member(&mut g, false).map_err(|e| e.in_member(m))?;
        fusec_passes::fold_scale(&mut g).map_err(|e| fusec_passes::PassError::from(e).in_member(m))?;
        fusec_passes::validate::validated("fold_scale", &g).map_err(|e| e.in_member(m))?;
        prepared.push(g);
    }
    let prepared_group = lineup.push_graphs(&prepared, speed.fp16)?;
    drop(prepared);
    let mut prepared_out: Tensors = vec![];
    for (m, mut s) in names.iter().zip(lineup.sessions(prepared_group, cfg)?) {
        for (o, t) in s.run(x)? {
            prepared_out.push((format!("{m}/{o}"), t));
        }
    }
    let prepared_diff = differences(PREPARED, &prepared_out)?;
    drop(sessions);
    pb.inc(1);
    // Configs whose model is byte for byte an earlier one's (for
    // transformers, every channel-stacking variant of a lowering) are
    // timed once: `timed[i]` is config i's group in the lineup, `same_as[i]`
    // the earlier config it repeats.
    let mut timed = vec![];
    let mut same_as: Vec<Option<usize>> = vec![];
    let mut digests: Vec<Vec<u8>> = vec![];
    let mut diffs = vec![];
    for (i, BenchConfig { name, opts, fp16_weights }) in configs.iter().enumerate() {
        let mut f = fusec_passes::fuse(as_members(&names, &members), opts)?;
        if *fp16_weights {
            fusec_passes::fp16_weights(&mut f.graph).map_err(fusec_passes::PassError::from)?;
            fusec_passes::validate::validated("fp16_weights", &f.graph)?;
        }
        let onnx = OnnxModel::of(&f.graph, speed.fp16)?;
        let digest = onnx.digest()?;
        if let Some(j) = digests.iter().position(|d| *d == digest) {
            same_as.push(Some(j));
            timed.push(timed[j]);
            diffs.push(diffs[j]);
        } else {
            let got = fusec_verify::runtime::load(onnx.model(), cfg)?.run(x)?;
            diffs.push(differences(name, &got)?);
            same_as.push(None);
            timed.push(lineup.push_models(vec![onnx])?);
        }
        digests.push(digest);
        debug_assert_eq!((timed.len(), same_as.len(), diffs.len()), (i + 1, i + 1, i + 1));
        pb.inc(1);
    }
    pb.finish_and_clear();

    let pb = progress(speed.runs as u64, "timing");
    let group_stats = lineup.time(cfg, x, speed.warmup, speed.runs, speed.sessions, &mut || pb.inc(1))?;
    pb.finish_and_clear();
    // Per row: the baseline, the prepared members, then each config.
    let stats: Vec<Stats> =
        group_stats[..2].iter().cloned().chain(timed.iter().map(|&t| group_stats[t].clone())).collect();

    let device = describe_cfg(cfg);
    let mut rows = vec![BenchRow {
        config: "members one after another".into(),
        device: device.clone(),
        stats: stats[0].clone(),
        speedup_p50: 1.0,
        speedup_p50_interval: None,
        max_abs: 0.0,
        rel_l2: 0.0,
        detections: None,
        same_as: None,
    }];
    rows.push(BenchRow {
        config: PREPARED.into(),
        device: device.clone(),
        stats: stats[1].clone(),
        speedup_p50: stats[0].p50_ms / stats[1].p50_ms,
        speedup_p50_interval: speedup_interval(&stats[0], &stats[1]),
        max_abs: prepared_diff.0,
        rel_l2: prepared_diff.1,
        detections: prepared_diff.2,
        same_as: None,
    });
    for (i, c) in configs.iter().enumerate() {
        rows.push(BenchRow {
            config: c.name.clone(),
            device: device.clone(),
            stats: stats[i + 2].clone(),
            speedup_p50: stats[0].p50_ms / stats[i + 2].p50_ms,
            speedup_p50_interval: speedup_interval(&stats[0], &stats[i + 2]),
            max_abs: diffs[i].0,
            rel_l2: diffs[i].1,
            detections: diffs[i].2,
            same_as: same_as[i].map(|j| configs[j].name.clone()),
        });
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{} members ({}) on {}: {}, every config once per round\n",
        names.len(),
        names.join(", "),
        device,
        speed.describe()
    );
    let labels: Vec<String> = rows.iter().map(BenchRow::label).collect();
    let table: Vec<(&str, &Stats)> = labels.iter().zip(&rows).map(|(l, r)| (l.as_str(), &r.stats)).collect();
    md.push_str(&speed_table(&table, &stats[0], Some(&device), Items::of(&members[0])));
    let _ = writeln!(
        md,
        "\n| config | worst max abs | worst rel L2 | paired detections | boxes MSE | scores MSE | label accuracy | mean IoU |\n|---|---|---|---|---|---|---|---|"
    );
    for (r, label) in rows.iter().zip(&labels).skip(1) {
        let det = match &r.detections {
            Some(d) => format!(
                "{} | {:.2e} | {:.2e} | {:.4} | {:.4}",
                d.count, d.boxes_mse, d.scores_mse, d.label_accuracy, d.mean_iou
            ),
            None => "- | - | - | - | -".into(),
        };
        let _ = writeln!(md, "| {label} | {:.2e} | {:.2e} | {det} |", r.max_abs, r.rel_l2);
    }
    let _ = writeln!(
        md,
        "\n(output differences against the members run alone; detection metrics: the worst member, effdet decoding and NMS; detections pair when they overlap by IoU >= {}, MSEs are over the pairs)",
        fusec_verify::detect::PAIR_IOU
    );
    let best = rows
        .iter()
        .skip(2)
        .filter(|r| r.same_as.is_none())
        .max_by(|a, b| a.speedup_p50.total_cmp(&b.speedup_p50))
        .expect("configs");
    let _ = writeln!(
        md,
        "\nfastest: {} ({:.2}x the members one after another; {:.2}x the members with the same single-model rewrites, unfused: the gain of fusion itself)",
        best.config,
        best.speedup_p50,
        rows[1].stats.p50_ms / best.stats.p50_ms
    );
    emit(&md)?;
    if let (Some(t), Some(row)) = (&tuning, rows.last()) {
        if let Some(w) = tuning_disagrees(row, t) {
            crate::report::warn(w);
        }
    }
    if let Some(p) = markdown {
        fusec_exporters::write_atomic(p, md.as_bytes())?;
    }
    let mut calibration = None;
    if let Some(p) = calibrate {
        // The fastest lowering; fp16 weights are a precision choice, not one.
        let mut ranked: Vec<(usize, &BenchConfig)> =
            configs.iter().enumerate().filter(|(i, c)| !c.fp16_weights && rows[i + 2].same_as.is_none()).collect();
        ranked.sort_by(|(a, _), (b, _)| rows[b + 2].speedup_p50.total_cmp(&rows[a + 2].speedup_p50));
        let (i, c) = ranked[0];
        let runner_up = ranked.get(1).map(|(j, _)| &rows[j + 2]);
        for w in calibration_doubts(&rows[i + 2], runner_up) {
            crate::report::warn(format!("{}: {w}", p.display()));
        }
        let cal = Calibration::new(&c.name, &c.opts, rows[i + 2].speedup_p50, &device, &names);
        cal.write(p)?;
        crate::report::note(format!(
            "wrote {}: `{}` ({:.2}x); use it with fusec fuse ... --calibration {}",
            p.display(),
            cal.config,
            cal.speedup_p50,
            p.display()
        ));
        calibration = Some(cal);
    }
    let report = BenchReport {
        members: names,
        device,
        warmup: speed.warmup,
        runs: speed.runs,
        sessions: speed.blocks(),
        fastest: best.config.clone(),
        fusion_gain: rows[1].stats.p50_ms / best.stats.p50_ms,
        rows: rows.clone(),
        calibration,
        tuning,
    };
    if let Some(p) = json {
        let j = serde_json::to_vec_pretty(&report).map_err(|e| Failure::internal(e.to_string()))?;
        fusec_exporters::write_atomic(p, &j)?;
    }
    Ok(report)
}

/// Why the fastest row of a bench may not be the fastest lowering: its
/// speedup's 95% interval reaches down to the baseline (1.00x), or overlaps
/// the runner-up's interval, so the noise of this run could have picked it.
fn calibration_doubts(best: &BenchRow, runner_up: Option<&BenchRow>) -> Vec<String> {
    let Some((lo, hi)) = best.speedup_p50_interval else {
        return vec![format!(
            "`{}` was chosen without an interval (too few --runs to tell it from noise); use --runs 30 or more",
            best.config
        )];
    };
    let mut doubts = vec![];
    if lo <= 1.0 {
        doubts.push(format!(
            "`{}` ({:.2}x, 95% interval {lo:.2}–{hi:.2}x) is not measurably faster than the members one after another; more --runs (or a quieter machine) may tell",
            best.config, best.speedup_p50
        ));
    }
    if let Some(r) = runner_up {
        if let Some((rlo, rhi)) = r.speedup_p50_interval {
            if rhi >= lo {
                doubts.push(format!(
                    "`{}` ({:.2}x, {lo:.2}–{hi:.2}x) and the runner-up `{}` ({:.2}x, {rlo:.2}–{rhi:.2}x) overlap: this run cannot tell them apart",
                    best.config, best.speedup_p50, r.config, r.speedup_p50
                ));
            }
        }
    }
    doubts
}

/// When this run's tuned row and the tuner's own measurement of the same
/// plan (its round 3, moments before) disagree beyond both intervals by
/// 0.05x or more: the machine's speed, or the sessions' luck, moved between
/// them, and neither figure should be read alone.
fn tuning_disagrees(tuned: &BenchRow, t: &crate::tune::TuneReport) -> Option<String> {
    let (lo, hi) = tuned.speedup_p50_interval?;
    let (tlo, thi) = t.speedup_p50_interval?;
    let tp = t.speedup_p50?;
    if t.cached.is_some() || (lo <= thi && tlo <= hi) || (tuned.speedup_p50 - tp).abs() < 0.05 {
        return None;
    }
    Some(format!(
        "the tuned model measured {:.2}x ({lo:.2}–{hi:.2}x) in this run and {tp:.2}x ({tlo:.2}–{thi:.2}x) in the tuner's round 3 just before: the machine's speed (or the sessions' luck) moved between them; compare rows of one run, and re-run on a quieter machine or with more --runs before trusting either",
        tuned.speedup_p50
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, speedup: f64, interval: Option<(f64, f64)>) -> BenchRow {
        BenchRow {
            config: config.into(),
            device: "ort (cpu, 2 threads)".into(),
            stats: Stats::from_ms(&[10.0, 10.0]),
            speedup_p50: speedup,
            speedup_p50_interval: interval,
            max_abs: 0.0,
            rel_l2: 0.0,
            detections: None,
            same_as: None,
        }
    }

    #[test]
    fn a_ranking_is_kept_when_the_scores_order_the_pairs_alike() {
        let a = |v: &[f32]| ndarray::ArrayD::from_shape_vec(vec![v.len(), 1], v.to_vec()).unwrap();
        assert_eq!(ranking_kept(&a(&[0.1, 0.9, 0.5]), &a(&[0.2, 0.8, 0.3])), Some(true));
        assert_eq!(ranking_kept(&a(&[0.1, 0.4, 0.5]), &a(&[0.2, 0.8, 0.3])), Some(false));
        // One pair, or more than one score per pair: no ranking.
        assert_eq!(ranking_kept(&a(&[0.1]), &a(&[0.2])), None);
        let two = ndarray::ArrayD::from_shape_vec(vec![2, 2], vec![0.0f32; 4]).unwrap();
        assert_eq!(ranking_kept(&two, &two), None);
    }

    #[test]
    fn a_tuned_row_far_from_the_tuners_own_measurement_is_flagged() {
        let report = |p50: f64, interval: (f64, f64), cached: bool| crate::tune::TuneReport {
            device: "ort (cpu, 2 threads)".into(),
            warmup: 2,
            runs: 10,
            candidates: vec![],
            chosen: "costs".into(),
            speedup_p50: Some(p50),
            speedup_p50_interval: Some(interval),
            grouped_runs: 8,
            plan_runs: vec![],
            cached: cached.then(|| "tune.json".into()),
            costs: None,
        };
        // EfficientDet-D0's state_dicts on a noisy day: 1.08x here, 1.22x in the tuner.
        let w = tuning_disagrees(&row("t", 1.08, Some((1.04, 1.21))), &report(1.22, (1.22, 1.23), false));
        assert!(w.as_deref().is_some_and(|w| w.contains("1.08x (1.04–1.21x)") && w.contains("1.22x (1.22–1.23x)")));
        // Overlapping intervals, a small gap, or a plan from the cache: nothing to say.
        assert!(tuning_disagrees(&row("t", 1.20, Some((1.15, 1.22))), &report(1.22, (1.21, 1.23), false)).is_none());
        assert!(tuning_disagrees(&row("t", 1.19, Some((1.18, 1.19))), &report(1.22, (1.21, 1.23), false)).is_none());
        assert!(tuning_disagrees(&row("t", 1.08, Some((1.04, 1.10))), &report(1.22, (1.22, 1.23), true)).is_none());
    }

    #[test]
    fn calibration_doubts_when_intervals_reach_the_baseline_or_the_runner_up() {
        // Clearly faster than both: no doubt.
        assert!(
            calibration_doubts(&row("a", 1.3, Some((1.25, 1.35))), Some(&row("b", 1.1, Some((1.05, 1.15))))).is_empty()
        );
        // The interval reaches 1.0x: the baseline may be as fast.
        let d = calibration_doubts(&row("a", 1.1, Some((0.75, 1.55))), Some(&row("b", 0.72, Some((0.7, 0.74)))));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("0.75–1.55x") && d[0].contains("not measurably faster"), "{d:?}");
        // Overlaps the runner-up's interval.
        let d = calibration_doubts(&row("a", 1.2, Some((1.1, 1.3))), Some(&row("b", 1.18, Some((1.05, 1.25)))));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("runner-up `b`"), "{d:?}");
        // Both, and no interval at all.
        assert_eq!(
            calibration_doubts(&row("a", 1.0, Some((0.9, 1.1))), Some(&row("b", 0.99, Some((0.9, 1.05))))).len(),
            2
        );
        assert_eq!(calibration_doubts(&row("a", 1.2, None), None).len(), 1);
    }
}
