//! `--tune`: the lowering chosen from measurements on the target runtime,
//! device and threads, not from a fraction tuned on one model.
//!
//! The aligned node groups, in dataflow order, are cut into [`CHUNKS`]
//! runs; a plan says per run whether its layers are grouped or stay per
//! member (`Lowering::Plan`). One more candidate, `costs`, decides per node
//! group from costs ([`crate::costs`]: profiled on ONNX Runtime, modelled
//! elsewhere; `FuseOptions::assignment`), and one more is `fusec fuse`'s
//! default lowering (`default`), so a tuned model is measured against what
//! not tuning gives. Round 1 measures every member kept apart (`separate`:
//! each member's layers as it runs alone), everything grouped, "grouped
//! from run s" for each s, `costs`, `costs-subgraphs` (the same with each
//! member's runs of per-member layers as subgraphs of their own:
//! `FuseOptions::member_subgraphs`), `default`, `separate-subgraphs` (every
//! member apart, each member's layers a subgraph of its own) and, for
//! members with layers on a
//! member axis, `linear-split` (grouped with linear layers per member);
//! round 2 each one-run change of round 1's fastest plan; round
//! 3, with three times the timed rounds, confirms: `separate`, `costs`,
//! those extras and the three fastest plans so far (by speedup over the
//! members in their round). Every candidate is fused, loaded and timed against the
//! members one after another in interleaved rounds (the same input, side
//! by side), sessions made afresh for each round; round 3 splits its rounds
//! among [`ROUND3_SESSIONS`] sessions of every model, each made afresh
//! (two sessions of one graph can differ by 5-30% for their whole life,
//! `crate::lineup::Lineup`), so no choice rests on one session's luck. A round 3 candidate's speedup over
//! `separate` is the median of their per-round ratios (a drift of a shared
//! machine that slows a whole round cancels), pooled over rounds 1 and 3
//! where it ran in both. Of round 3's candidates that group, those faster
//! than `separate` so with the 95% interval of that speedup at or above
//! [`NOT_SLOWER`], the fastest wins; if there is none, `separate` does: a
//! plan that may well be slower than keeping the members apart is never
//! chosen.
//!
//! Timings depend on the members' structure, not their weights' values:
//! the plan chosen is kept in a cache file (`tune.json` in
//! `FUSEC_CACHE_DIR`, else in the user's cache folder) under a key of
//! everything it depends on (each member's ops, attributes and types, what
//! is shared, the runtime and its library, device, threads, rounds,
//! options, fusec's version), and a later `--tune` of members with the
//! same key (other fine-tunes of the same architecture) reuses it without
//! measuring, unless asked to measure again (`--retune`).

use std::fmt::Write as _;
use std::path::Path;

use fuse_ir::Graph;
use fusec_passes::fuse::DEFAULT_GROUP_FROM;
use fusec_passes::{FuseOptions, Lowered, Lowering};
use fusec_verify::runtime::SessionConfig;
use fusec_verify::timing::{ratio_median_interval, round_ratios, speedup_interval, Stats};
use fusec_verify::Tensors;

use crate::cache::{cache_file, runtime_library};
use crate::costs::CostReport;
use crate::lineup::Lineup;
use crate::models::as_members;
use crate::report::progress;
use crate::Failure;

/// Runs of node groups a plan decides on.
pub const CHUNKS: u8 = 8;

/// Round 3 times each candidate (and the members) across this many
/// sessions made afresh, its rounds split evenly among them.
pub const ROUND3_SESSIONS: usize = 3;

/// The lowest end of the 95% interval of a plan's speedup over `separate`
/// (the median of per-round ratios) for the plan to be chosen over it (the
/// lowering issue's floor).
pub const NOT_SLOWER: f64 = 0.97;

/// One plan measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    /// Its runs, first run first (1 = grouped): `00111111`.
    pub plan: String,
    /// 1, 2 or 3.
    pub round: usize,
    #[serde(flatten)]
    pub stats: Stats,
    /// Over the members one after another of the same round.
    pub speedup_p50: f64,
    pub speedup_p50_interval: Option<(f64, f64)>,
    /// Round 3: its speedup over `separate` (00000000), the median of
    /// their per-round ratios, rounds 1 and 3 pooled where it ran in both,
    /// with its 95% interval (what the choice is made on).
    #[serde(default)]
    pub over_separate: Option<f64>,
    #[serde(default)]
    pub over_separate_interval: Option<(f64, f64)>,
}

/// What `--tune` measured and chose.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TuneReport {
    /// Runtime, device and threads.
    pub device: String,
    pub warmup: usize,
    pub runs: usize,
    pub candidates: Vec<Candidate>,
    /// The plan chosen: of round 3's plans faster than `separate` with
    /// the interval of their speedup over it at or above [`NOT_SLOWER`],
    /// the fastest; else `separate`.
    pub chosen: String,
    /// Its speedup over the members (none when nothing was measured:
    /// grouping stacks no layer of these members).
    pub speedup_p50: Option<f64>,
    pub speedup_p50_interval: Option<(f64, f64)>,
    /// How many of the plan's runs are grouped.
    pub grouped_runs: usize,
    /// Per run: what grouping it stacks, whether the chosen plan groups
    /// it, and its measured gain.
    pub plan_runs: Vec<PlanRun>,
    /// The cache file the plan was taken from, when it was not measured
    /// now (its candidates are those measured then).
    #[serde(default)]
    pub cached: Option<String>,
    /// The choice per node group from costs (candidate `costs`): profiled
    /// on ONNX Runtime, modelled on other runtimes; none when they could
    /// not be had (a warning says why).
    #[serde(default)]
    pub costs: Option<CostReport>,
}

impl TuneReport {
    /// What was chosen, for a bench row or calibration: `plan 00111111`,
    /// `costs: 96 of 121 node groups grouped` or `default: regions from 0.25`.
    pub fn label(&self) -> String {
        match (&self.costs, self.chosen.as_str()) {
            (Some(c), BY_COSTS) => format!("{BY_COSTS}: {} of {} node groups grouped", c.grouped, c.groupable),
            (Some(c), COSTS_SUBGRAPHS) => {
                format!("{BY_COSTS}: {} of {} node groups grouped, member subgraphs", c.grouped, c.groupable)
            }
            (_, DEFAULT) => format!("default: regions from {DEFAULT_GROUP_FROM}"),
            (_, LINEAR_SPLIT) => "grouped, linear split".into(),
            (_, SUBGRAPHS) => "separate, member subgraphs".into(),
            _ => format!("plan {}", self.chosen),
        }
    }
}

/// One run of node groups of a plan.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PlanRun {
    pub run: usize,
    /// Its node groups, first and last (dataflow order); none when there
    /// are fewer node groups than runs.
    pub groups: Option<(usize, usize)>,
    /// How many of them grouping stacks (the rest are shared, differ
    /// between members or do not stack), on channels and on a member axis.
    pub channels: usize,
    pub member_axis: usize,
    /// The ops it stacks most, `Conv 12, Mul 8, Sigmoid 4`.
    pub ops: String,
    /// Whether the chosen plan groups it.
    pub grouped: bool,
    /// The speedup of round 1's fastest plan with this run grouped over the
    /// same plan with it per member (their speedups over the members, round
    /// 1's plan and its one-run change in round 2); above 1: grouping it
    /// paid.
    pub gain: Option<f64>,
    /// Of its node groups, how many the choice from costs groups, and the
    /// modelled gain of grouping those (their per-member over their grouped
    /// profiled time).
    #[serde(default)]
    pub by_costs: usize,
    #[serde(default)]
    pub modelled_gain: Option<f64>,
}

/// The runs of `chunks` over the aligned node groups `lowered` (of the
/// all-grouped plan), with what grouping stacks in each.
fn plan_runs(lowered: &[(&'static str, Lowered)], chunks: u8) -> Vec<PlanRun> {
    let k = usize::from(chunks);
    (0..k)
        .map(|r| {
            let groups: Vec<usize> =
                (0..lowered.len()).filter(|&g| Lowering::run_of(g, lowered.len(), chunks) == r).collect();
            let mut ops: std::collections::BTreeMap<&str, usize> = Default::default();
            let (mut channels, mut member_axis) = (0, 0);
            for &g in &groups {
                match lowered[g].1 {
                    Lowered::Channels => channels += 1,
                    Lowered::MemberAxis => member_axis += 1,
                    _ => continue,
                }
                *ops.entry(lowered[g].0).or_default() += 1;
            }
            let mut ops: Vec<(&str, usize)> = ops.into_iter().collect();
            ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let ops = ops.iter().take(3).map(|(op, c)| format!("{op} {c}")).collect::<Vec<_>>().join(", ");
            PlanRun {
                run: r,
                groups: groups.first().zip(groups.last()).map(|(a, b)| (*a, *b)),
                channels,
                member_axis,
                ops,
                grouped: false,
                gain: None,
                by_costs: 0,
                modelled_gain: None,
            }
        })
        .collect()
}

/// What a tuning's timings depend on, hashed: every member's nodes (op,
/// attributes, input and output types, which inputs are weights: not
/// their values), how the all-grouped plan lowers each node group (what is
/// shared), the runtime (for ONNX Runtime its library), device and threads,
/// the rounds and options, and fusec's version.
fn cache_key(members: &[Graph], lowered: &[(&'static str, Lowered)], cfg: &SessionConfig, how: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("fusec {}\n{}\n{how}\n", env!("CARGO_PKG_VERSION"), runtime_library(cfg)));
    for g in members {
        for n in g.topo_order().unwrap_or_default() {
            h.update(crate::costs::node_signature(g, g.node(n)).as_bytes());
            h.update(b"\n");
        }
        h.update(b"--\n");
    }
    h.update(format!("{lowered:?}"));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The plan kept under `key` in `file`, if any.
fn cache_get(file: &Path, key: &str) -> Option<TuneReport> {
    let bytes = std::fs::read(file).ok()?;
    let mut all: std::collections::BTreeMap<String, TuneReport> = serde_json::from_slice(&bytes).ok()?;
    all.remove(key)
}

/// Keeps `report` under `key` in `file` (written whole, atomically).
fn cache_put(file: &Path, key: &str, report: &TuneReport) -> Result<(), String> {
    let mut all: std::collections::BTreeMap<String, TuneReport> =
        std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    all.insert(key.to_string(), report.clone());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let j = serde_json::to_vec_pretty(&all).map_err(|e| e.to_string())?;
    fusec_exporters::write_atomic(file, &j).map_err(|e| e.to_string())
}

/// Measures plans for these members on `cfg` and returns the fastest as
/// fuse options, with what was measured. With `reuse`, a plan kept in the
/// cache for the same key is returned without measuring; a plan measured
/// is kept there.
#[allow(clippy::too_many_arguments)]
pub fn tune(
    names: &[String],
    members: &[Graph],
    x: &Tensors,
    cfg: &SessionConfig,
    device: &str,
    warmup: usize,
    runs: usize,
    keep_bn: bool,
    channel_block: Option<usize>,
    fp16: bool,
    reuse: bool,
) -> Result<(FuseOptions, TuneReport), Failure> {
    if runs < 2 {
        return Err(Failure::input(format!(
            "--tune-runs must be 2 or more (a speedup interval needs 2 rounds), not {runs}"
        )));
    }
    let all = (1u64 << CHUNKS) - 1;
    // Every node group grouped: what the plans cut into runs, and the
    // grouped model the costs profile.
    let grouped_model =
        fusec_passes::fuse(as_members(names, members), &Choice::Plan(all).options(keep_bn, channel_block, None))?;
    let all_grouped = &grouped_model.report;
    let mut runs_of_plan = plan_runs(&all_grouped.lowered, CHUNKS);
    // Nothing to choose when grouping stacks nothing.
    if all_grouped.grouped == 0 {
        crate::report::note(
            "tune: grouping stacks no layer of these members: every plan is `separate`, nothing to measure",
        );
        let report = TuneReport {
            device: device.to_string(),
            warmup,
            runs,
            candidates: vec![],
            chosen: Lowering::plan_digits(0, CHUNKS),
            speedup_p50: None,
            speedup_p50_interval: None,
            grouped_runs: 0,
            plan_runs: runs_of_plan,
            cached: None,
            costs: None,
        };
        return Ok((Choice::Plan(0).options(keep_bn, channel_block, None), report));
    }
    let how = format!(
        "{device}; warmup {warmup}, runs {runs}, keep_bn {keep_bn}, fp16 {fp16}, chunks {CHUNKS}, round 3 sessions {ROUND3_SESSIONS}, channel block {channel_block:?}"
    );
    let key = cache_key(members, &all_grouped.lowered, cfg, &how);
    let cache = cache_file();
    if let (true, Some(file)) = (reuse, &cache) {
        if let Some(mut r) = cache_get(file, &key) {
            let assigned = r.costs.as_ref().map(|c| c.assigned());
            // `costs` is reused only with the assignment it was measured with.
            let by_costs = |c: &Choice| matches!(c, Choice::Costs | Choice::CostsSubgraphs);
            let choice = Choice::parse(&r.chosen).filter(|c| !by_costs(c) || assigned.is_some());
            if let Some(chosen) = choice.map(|c| c.options(keep_bn, channel_block, assigned.as_deref())) {
                crate::report::note(format!(
                    "tune: {} kept in {} for these members' structure on {device} ({}); --retune measures again",
                    r.label(),
                    file.display(),
                    r.speedup_p50.map(|s| format!("{s:.2}x measured")).unwrap_or_else(|| "nothing measured".into())
                ));
                r.cached = Some(file.display().to_string());
                warn_if_slower(&r);
                return Ok((chosen, r));
            }
        }
    }
    // The choice per node group from costs (profiled where the runtime
    // profiles, else modelled): one more candidate (`costs`) in rounds 1 and 3.
    let costs = match crate::costs::measure(
        names,
        members,
        &grouped_model,
        x,
        cfg,
        keep_bn,
        channel_block,
        fp16,
        warmup,
        runs,
        reuse,
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            crate::report::warn(format!("tune: no per-node costs ({}); choosing among plans only", e.message));
            None
        }
    };
    let assigned = costs.as_ref().map(|c| c.assigned());
    let opts_of = |c: Choice| c.options(keep_bn, channel_block, assigned.as_deref());
    // Members with layers on a member axis (transformers): the grouped form
    // whose linear layers stay per member (pre-packed 2-D Gemms) too.
    // And every member apart with its blocks as subgraphs (ONNX Runtime
    // plans each one's memory apart, as for the member alone).
    let extras: Vec<Choice> = [Choice::Default, Choice::Subgraphs]
        .into_iter()
        .chain((all_grouped.member_axis > 0).then_some(Choice::LinearSplit))
        .collect();
    let pb = progress((5 * runs) as u64, "tuning");
    // Each round times its candidates beside the members, sessions made
    // afresh for it; round 3 across ROUND3_SESSIONS of them.
    let measure = |masks: &[Choice], round: usize, runs: usize| -> Result<Vec<Candidate>, Failure> {
        let mut lineup = Lineup::new()?;
        lineup.push_graphs(members, fp16)?;
        for &m in masks {
            let f = fusec_passes::fuse(as_members(names, members), &opts_of(m))?;
            lineup.push_graphs(std::slice::from_ref(&f.graph), fp16)?;
        }
        let sessions = if round == 3 { ROUND3_SESSIONS } else { 1 };
        let stats = lineup.time(cfg, x, warmup, runs, sessions, &mut || pb.inc(1))?;
        Ok(masks
            .iter()
            .zip(&stats[1..])
            .map(|(&m, s)| Candidate {
                plan: m.name(),
                round,
                stats: s.clone(),
                speedup_p50: stats[0].p50_ms / s.p50_ms,
                speedup_p50_interval: speedup_interval(&stats[0], s),
                over_separate: None,
                over_separate_interval: None,
            })
            .collect())
    };
    // Round 1: apart, all grouped, grouped from run s, the choice from
    // costs and the default lowering.
    let mut first: Vec<Choice> = vec![Choice::Plan(0), Choice::Plan(all)];
    first.extend((1..CHUNKS).map(|s| Choice::Plan(all >> s << s)));
    if assigned.is_some() {
        first.extend([Choice::Costs, Choice::CostsSubgraphs]);
    }
    first.extend(&extras);
    let mut candidates = measure(&first, 1, runs)?;
    // The fastest plan (of runs).
    let best_first = fastest(&candidates[..usize::from(CHUNKS) + 1]);
    let Choice::Plan(best_mask) = first[best_first] else { unreachable!("the first 9 are plans") };
    // Round 2: each one-run change of the fastest plan.
    let second: Vec<Choice> = (0..CHUNKS).map(|i| Choice::Plan(best_mask ^ (1 << i))).collect();
    let round2 = measure(&second, 2, runs)?;
    // What grouping each run gained, from round 1's fastest and its change
    // of that run (each speedup over the members of its own round).
    let base = candidates[best_first].speedup_p50;
    for (r, c) in runs_of_plan.iter_mut().zip(&round2) {
        let grouped_in_base = best_mask >> r.run & 1 == 1;
        r.gain = Some(if grouped_in_base { base / c.speedup_p50 } else { c.speedup_p50 / base });
    }
    candidates.extend(round2);
    // Round 3: `separate`, the choice from costs, the default and the
    // three fastest plans so far, timed three times as long.
    let mut ranked: Vec<(Choice, f64)> =
        first.iter().chain(&second).copied().zip(candidates.iter().map(|c| c.speedup_p50)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut third: Vec<Choice> = vec![Choice::Plan(0)];
    if assigned.is_some() {
        third.extend([Choice::Costs, Choice::CostsSubgraphs]);
    }
    third.extend(&extras);
    let cap = third.len() + 3;
    for (m, _) in ranked {
        if third.len() < cap && !third.contains(&m) {
            third.push(m);
        }
    }
    let mut round3 = measure(&third, 3, 3 * runs)?;
    pb.finish_and_clear();
    // Each candidate's speedup over `separate` round by round, in round 3
    // and, where it ran there too, round 1 (`separate` is first in both).
    for i in 1..round3.len() {
        let mut ratios = round_ratios(&round3[0].stats, &round3[i].stats);
        if let Some(k) = first.iter().position(|&c| c == third[i]) {
            ratios.extend(round_ratios(&candidates[0].stats, &candidates[k].stats));
        }
        if let Some((m, ci)) = ratio_median_interval(&ratios) {
            (round3[i].over_separate, round3[i].over_separate_interval) = (Some(m), Some(ci));
        }
    }
    // A plan that groups wins only where it is faster than `separate` and
    // the 95% interval of that speedup stays at or above NOT_SLOWER: one
    // that may well be slower is not taken.
    let over = |i: usize| round3[i].over_separate.unwrap_or(0.0);
    let best = (1..round3.len())
        .filter(|&i| over(i) > 1.0)
        .filter(|&i| round3[i].over_separate_interval.is_some_and(|(lo, _)| lo >= NOT_SLOWER))
        .max_by(|&a, &b| over(a).total_cmp(&over(b)))
        .unwrap_or(0);
    let chosen_choice = third[best];
    let chosen = round3[best].clone();
    let n_groups = all_grouped.lowered.len();
    let in_run = |g: usize| Lowering::run_of(g, n_groups, CHUNKS);
    // What the choice groups: a plan's digits, else what it lowered grouped
    // (fused once more for that: only a choice other than a plan).
    let lowered = match chosen_choice {
        Choice::Plan(_) => vec![],
        c => fusec_passes::fuse(as_members(names, members), &opts_of(c))?.report.lowered,
    };
    let grouped_of = |r: usize| match chosen_choice {
        Choice::Plan(m) => m >> r & 1 == 1,
        _ => lowered
            .iter()
            .enumerate()
            .any(|(g, (_, how))| in_run(g) == r && matches!(how, Lowered::Channels | Lowered::MemberAxis)),
    };
    for r in &mut runs_of_plan {
        r.grouped = grouped_of(r.run);
        if let (Some(a), Some(c)) = (&assigned, &costs) {
            let groups: Vec<usize> = (0..n_groups).filter(|&g| in_run(g) == r.run && a[g]).collect();
            r.by_costs = groups.len();
            let (apart, grouped): (f64, f64) = groups
                .iter()
                .map(|&g| c.group_costs[g])
                .fold((0.0, 0.0), |s, (gr, ap)| (s.0 + ap, s.1 + gr.unwrap_or(ap)));
            r.modelled_gain = (grouped > 0.0).then(|| apart / grouped);
        }
    }
    candidates.extend(round3);
    let report = TuneReport {
        device: device.to_string(),
        warmup,
        runs,
        candidates,
        chosen: chosen.plan.clone(),
        speedup_p50: Some(chosen.speedup_p50),
        speedup_p50_interval: chosen.speedup_p50_interval,
        grouped_runs: runs_of_plan.iter().filter(|r| r.grouped).count(),
        plan_runs: runs_of_plan,
        cached: None,
        costs,
    };
    if let Some(file) = &cache {
        match cache_put(file, &key, &report) {
            Ok(()) => crate::report::note(format!(
                "tune: measured {} fastest; saved in {} (a later `fusec fuse --tune` of these members reuses it)",
                report.label(),
                file.display()
            )),
            Err(e) => crate::report::warn(format!("tune: could not keep the plan in the cache: {e}")),
        }
    }
    warn_if_slower(&report);
    Ok((opts_of(chosen_choice), report))
}

/// The warning for a choice measured slower than the members one after
/// another (the whole 95% interval of its speedup below 1): even the
/// fastest lowering found loses here, which the user must hear from
/// `fuse`, not only from a bench table.
pub fn slower_warning(r: &TuneReport) -> Option<String> {
    let (p50, (lo, hi)) = (r.speedup_p50?, r.speedup_p50_interval?);
    (hi < 1.0).then(|| {
        let measured = if r.cached.is_some() { "measured when it was kept" } else { "measured" };
        format!(
            "tune: the fastest lowering found, {}, runs at {p50:.2}x the members one after another (95% interval {lo:.2}–{hi:.2}x, {measured} on {}): on this runtime the fused model is slower than running the members one by one",
            r.label() + if r.chosen.bytes().all(|d| d == b'0') { " (every member apart)" } else { "" },
            r.device
        )
    })
}

fn warn_if_slower(r: &TuneReport) {
    if let Some(w) = slower_warning(r) {
        crate::report::warn(w);
    }
}

/// The candidate chosen per node group from measured costs.
pub const BY_COSTS: &str = "costs";

/// The candidate of `fusec fuse`'s default lowering.
pub const DEFAULT: &str = "default";

/// The candidate of the grouped lowering with linear layers per member
/// (members with layers on a member axis only).
pub const LINEAR_SPLIT: &str = "linear-split";

/// The candidate of every member apart, each member's blocks written as
/// subgraphs of their own (`--member-subgraphs`).
pub const SUBGRAPHS: &str = "separate-subgraphs";

/// The choice from costs with each member's runs of per-member layers
/// written as subgraphs of their own (`--member-subgraphs`): ONNX Runtime
/// plans their memory as for the member alone.
pub const COSTS_SUBGRAPHS: &str = "costs-subgraphs";

/// A candidate: a plan of runs, the choice from costs, the default, or
/// the grouped lowering with linear layers per member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Plan(u64),
    Costs,
    CostsSubgraphs,
    Default,
    LinearSplit,
    Subgraphs,
}

impl Choice {
    /// Its name in the report (`TuneReport::chosen`, `Candidate::plan`).
    fn name(self) -> String {
        match self {
            Choice::Plan(m) => Lowering::plan_digits(m, CHUNKS),
            Choice::Costs => BY_COSTS.into(),
            Choice::CostsSubgraphs => COSTS_SUBGRAPHS.into(),
            Choice::Default => DEFAULT.into(),
            Choice::LinearSplit => LINEAR_SPLIT.into(),
            Choice::Subgraphs => SUBGRAPHS.into(),
        }
    }

    /// The choice a report names, if any.
    fn parse(name: &str) -> Option<Choice> {
        match name {
            BY_COSTS => Some(Choice::Costs),
            COSTS_SUBGRAPHS => Some(Choice::CostsSubgraphs),
            DEFAULT => Some(Choice::Default),
            LINEAR_SPLIT => Some(Choice::LinearSplit),
            SUBGRAPHS => Some(Choice::Subgraphs),
            digits => match Lowering::parse_plan(digits) {
                Ok(Lowering::Plan { stacked, chunks: CHUNKS }) => Some(Choice::Plan(stacked)),
                _ => None,
            },
        }
    }

    /// Its fuse options (`assignment`: the costs' choice, for `Costs`).
    fn options(self, keep_bn: bool, channel_block: Option<usize>, assignment: Option<&[bool]>) -> FuseOptions {
        let plan = |stacked| FuseOptions {
            keep_bn,
            channel_block,
            lowering: Lowering::Plan { stacked, chunks: CHUNKS },
            ..Default::default()
        };
        match self {
            Choice::Plan(m) => plan(m),
            Choice::Costs => FuseOptions { assignment: assignment.map(<[bool]>::to_vec), ..plan(0) },
            Choice::CostsSubgraphs => {
                FuseOptions { member_subgraphs: true, ..Choice::Costs.options(keep_bn, channel_block, assignment) }
            }
            Choice::Default => FuseOptions { lowering: Lowering::Regions { from: DEFAULT_GROUP_FROM }, ..plan(0) },
            Choice::LinearSplit => FuseOptions { lowering: Lowering::Grouped, split_linear: true, ..plan(0) },
            Choice::Subgraphs => FuseOptions { member_subgraphs: true, ..plan(0) },
        }
    }
}

fn fastest(c: &[Candidate]) -> usize {
    (0..c.len()).min_by(|&a, &b| c[a].stats.p50_ms.total_cmp(&c[b].stats.p50_ms)).expect("candidates")
}

/// The table of what `--tune` measured.
pub fn table(r: &TuneReport) -> String {
    let mut o = String::new();
    if r.candidates.is_empty() {
        let _ =
            writeln!(o, "tuning: grouping stacks no layer of these members; plan {} (every member apart)", r.chosen);
        return o;
    }
    let _ = writeln!(
        o,
        "tuning on {}: {} runs of node groups in dataflow order (1 = grouped, 0 = per member), {} warm-up + {} timed rounds in rounds 1 and 2, {} in round 3 split among {ROUND3_SESSIONS} sessions of each model made afresh (each after the warm-up), interleaved with the members one after another",
        r.device, CHUNKS, r.warmup, r.runs, 3 * r.runs
    );
    if let Some(f) = &r.cached {
        let _ = writeln!(o, "(kept in {f}: measured when these members' structure was first tuned here)");
    }
    let _ =
        writeln!(o, "| round | plan | p50 ms | speedup (p50) | 95% interval | over 00000000, per round (interval) |");
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for c in &r.candidates {
        let ci = c.speedup_p50_interval.map(|(lo, hi)| format!("{lo:.2}–{hi:.2}x")).unwrap_or_else(|| "-".into());
        let over = match (c.over_separate, c.over_separate_interval) {
            (Some(m), Some((lo, hi))) => format!("{m:.2}x ({lo:.2}–{hi:.2}x)"),
            _ => "-".into(),
        };
        let mark = if c.round == 3 && c.plan == r.chosen { " (chosen)" } else { "" };
        let _ = writeln!(
            o,
            "| {} | {}{mark} | {:.1} | {:.2}x | {ci} | {over} |",
            c.round, c.plan, c.stats.p50_ms, c.speedup_p50
        );
    }
    let ci = r.speedup_p50_interval.map(|(lo, hi)| format!(", 95% interval {lo:.2}–{hi:.2}x")).unwrap_or_default();
    let speed = r.speedup_p50.map(|s| format!("{s:.2}x the members one after another{ci}; ")).unwrap_or_default();
    let _ = writeln!(
        o,
        "chosen: {} ({speed}a candidate that groups is chosen over 00000000, every member apart, only if faster than it with the 95% interval of its speedup over it at or above {NOT_SLOWER}: the median of their per-round ratios in round 3 and, where it ran there too, round 1)",
        r.label()
    );
    if let Some(c) = &r.costs {
        let _ = writeln!(
            o,
            "costs ({}): the choice `{BY_COSTS}` groups {} of {} groupable node groups; modelled time {:.1} ms every node group per member, {:.1} ms every groupable one grouped, {:.1} ms chosen ({:.2}x); a layout change {:.0} µs + {:.0} µs per MB ({}); {:.1} + {:.1} ms of nodes the runtime named itself charged to the node group run before them",
            c.source,
            c.grouped,
            c.groupable,
            c.separate_us / 1e3,
            c.all_grouped_us / 1e3,
            c.chosen_us / 1e3,
            c.separate_us / c.chosen_us.max(1e-9),
            c.move_fixed_us,
            c.move_us_per_mb,
            if c.move_fitted_on > 0 {
                format!("fitted on {} measured Splits and Concats", c.move_fitted_on)
            } else {
                "defaults: too few measured".into()
            },
            c.unattributed_us.0 / 1e3,
            c.unattributed_us.1 / 1e3,
        );
    }
    let _ = writeln!(
        o,
        "\n| run | node groups | stacked when grouped (channels + member axis): ops | chosen | gain of grouping it | grouped by costs | modelled gain |\n|---|---|---|---|---|---|---|"
    );
    for p in &r.plan_runs {
        let gain = p.gain.map(|g| format!("{g:.2}x")).unwrap_or_else(|| "-".into());
        let ops = if p.ops.is_empty() { String::new() } else { format!(": {}", p.ops) };
        let groups = p.groups.map(|(a, b)| format!("{a}–{b}")).unwrap_or_else(|| "none".into());
        let modelled = p.modelled_gain.map(|g| format!("{g:.2}x")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "| {} | {groups} | {} + {}{ops} | {} | {gain} | {} | {modelled} |",
            p.run,
            p.channels,
            p.member_axis,
            if p.grouped { "grouped" } else { "per member" },
            p.by_costs,
        );
    }
    let _ = writeln!(
        o,
        "(gain: round 1's fastest plan with the run grouped against it with the run per member, their speedups over the members from rounds 1 and 2; modelled gain: the profiled per-member time of the node groups the costs group over their grouped time)"
    );
    o
}
