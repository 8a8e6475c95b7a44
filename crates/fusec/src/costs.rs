//! `--tune`'s costs per node group, measured on the target runtime: ONNX
//! Runtime's profile of two fused models, every node group grouped and
//! every one per member, each fused node's kernel time attributed to the
//! node group it lowers (`FuseReport::origins`); the Splits and Concats
//! the grouped model has between stacked and per-member values give what a
//! layout change costs (fixed + per byte, least squares). Node groups a
//! runtime fuses into one kernel are one choice (`fusion_units`), and the
//! cheapest assignment of the rest to grouped or per member, layout
//! changes counted, is a minimum cut (`fusec_passes::fuse::assign`).
//!
//! Profiled times are kept per node signature (`costs.json`, beside the
//! plan cache, per runtime, library, device and threads): a fused model
//! whose every signature is known is not profiled again. Where the runtime
//! has no per-node profile (tract), a cost model (per op kind, FLOPs and
//! bytes, fitted on the kept signatures; defaults when there are none)
//! gives the times instead, and the report's `source` says which.
//! (The least-squares fits are a few lines of arithmetic: 2 and 3
//! unknowns, no linear-algebra crate for that.)

use std::collections::HashMap;

use fuse_ir::Graph;
use fusec_passes::fuse::assign::{cheapest_by_units, cost, fusion_units, GroupCost, Transition};
use fusec_passes::{FuseOptions, Fused, Lowered, Origin};
use fusec_verify::runtime::{profile, NodeTime, SessionConfig};
use fusec_verify::Tensors;

use crate::models::as_members;
use crate::Failure;

/// Layout changes cost at least this (µs) when too few were measured to fit.
const MOVE_FIXED_US: f64 = 5.0;
/// ... and this per byte moved (µs; 5 GB/s).
const MOVE_US_PER_BYTE: f64 = 2e-4;

/// What the costs chose, and what it rests on.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CostReport {
    /// Where the costs come from.
    pub source: String,
    /// Per aligned node group (dataflow order): 1 = grouped.
    pub assignment: String,
    /// Node groups that can be grouped, and how many the assignment groups.
    pub groupable: usize,
    pub grouped: usize,
    /// Modelled time of the fused model, µs: every node group per member,
    /// every groupable one grouped, and the assignment.
    pub separate_us: f64,
    pub all_grouped_us: f64,
    pub chosen_us: f64,
    /// A layout change: fixed µs and µs per MB, and how many measured
    /// Splits and Concats it was fitted on (0: the defaults).
    pub move_fixed_us: f64,
    pub move_us_per_mb: f64,
    pub move_fitted_on: usize,
    /// Profiled kernel time of nodes the runtime named itself (fusions),
    /// charged to the node group of the node run before each (µs): in the
    /// grouped model and in the per-member one.
    pub unattributed_us: (f64, f64),
    /// Per node group: grouped (if it can be) and per member, µs.
    #[serde(skip)]
    pub group_costs: Vec<(Option<f64>, f64)>,
}

impl CostReport {
    /// The assignment as fuse options' `assignment`.
    pub fn assigned(&self) -> Vec<bool> {
        self.assignment.chars().map(|c| c == '1').collect()
    }
}

/// Each profiled node's time by the fused node it comes from (its name as
/// the exporter writes it): the node's own name, else the longest fused
/// node or value name it starts with (ONNX Runtime names a node it fused
/// `NODE/...Fusion/` or `VALUE_nchwc`), else (a name the runtime made up,
/// `SkipLayerNormalization_token_7`) the node run before it. Returns the
/// time per node and how much of it was charged by that last rule.
fn attribute(infos: &[NodeInfo], times: &[NodeTime]) -> (Vec<(String, f64)>, f64) {
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    for i in infos {
        for v in &i.values {
            by_name.insert(v, &i.name);
        }
    }
    for i in infos {
        by_name.insert(&i.name, &i.name);
    }
    let mut out = vec![];
    let mut guessed = 0.0;
    let mut last: Option<&str> = None;
    for t in times {
        let found = by_name.get(t.name.as_str()).copied().or_else(|| {
            (1..t.name.len())
                .rev()
                .filter(|&i| t.name.is_char_boundary(i))
                .find_map(|i| by_name.get(&t.name[..i]).copied())
        });
        match (found, last) {
            (Some(n), _) => {
                out.push((n.to_string(), t.us));
                last = Some(n);
            }
            (None, Some(n)) => {
                out.push((n.to_string(), t.us));
                guessed += t.us;
            }
            (None, None) => guessed += t.us,
        }
    }
    (out, guessed)
}

/// Least squares `t = a + b * bytes` over measured layout changes (a and b
/// at least 0); the defaults when fewer than 3 were measured.
fn fit_moves(points: &[(f64, f64)]) -> (f64, f64) {
    if points.len() < 3 {
        return (MOVE_FIXED_US, MOVE_US_PER_BYTE);
    }
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let b = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
    ((my - b * mx).max(0.0), b)
}

/// What a node's time is modelled on: its op kind (a Conv with groups
/// apart from one without), FLOPs (multiply-adds count 2) and bytes read
/// and written.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Features {
    pub kind: String,
    pub flops: f64,
    pub bytes: f64,
}

/// One fused node: its name as the ONNX exporter writes it, its signature
/// (op, attributes, input and output types: what its time depends on) and
/// features.
struct NodeInfo {
    name: String,
    signature: String,
    features: Features,
    /// Bytes of its outputs (a layout change moves these).
    out_bytes: usize,
    /// Its outputs' names.
    values: Vec<String>,
}

/// What a node's time depends on: its op, attributes, and input (`w`:
/// a weight) and output types, not values. The tune cache hashes the
/// members' signatures too.
pub(crate) fn node_signature(g: &Graph, node: &fuse_ir::Node) -> String {
    let mut signature = format!("{} {{{}}}", node.op.name(), node.op.attrs_text());
    for v in node.inputs.iter().flatten() {
        let weight = matches!(g.value(*v).def, fuse_ir::ValueDef::Weight(_));
        signature.push_str(&format!(" {}{}", if weight { "w" } else { "" }, g.value(*v).ty));
    }
    for o in &node.outputs {
        signature.push_str(&format!(" -> {}", g.value(*o).ty));
    }
    signature
}

fn node_infos(g: &Graph) -> Vec<NodeInfo> {
    let numel = |v: fuse_ir::ValueId| g.value(v).ty.numel().unwrap_or(0) as f64;
    let bytes = |v: fuse_ir::ValueId| g.value(v).ty.byte_len().unwrap_or(0);
    g.node_ids()
        .into_iter()
        .map(|n| {
            let node = g.node(n);
            let ins: Vec<fuse_ir::ValueId> = node.inputs.iter().flatten().copied().collect();
            let out: f64 = node.outputs.iter().map(|o| numel(*o)).sum();
            let shape = |i: usize| ins.get(i).map(|v| g.value(*v).ty.shape.clone()).unwrap_or_default();
            let (kind, flops) = match &node.op {
                fuse_ir::Op::Conv(c) => {
                    let cin = shape(0).get(1).copied().unwrap_or(1) as f64 / c.group.max(1) as f64;
                    let k: f64 = c.kernel_shape.iter().product::<usize>() as f64;
                    let kind = if c.group == 1 { "Conv" } else { "Conv/grouped" };
                    (kind.to_string(), 2.0 * out * cin * k)
                }
                fuse_ir::Op::MatMul => ("MatMul".into(), 2.0 * out * shape(0).last().copied().unwrap_or(1) as f64),
                fuse_ir::Op::Einsum { equation } => {
                    let shapes: Vec<Vec<usize>> = (0..ins.len()).map(shape).collect();
                    let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
                    let macs = fuse_ir::einsum::Equation::parse(equation).and_then(|e| e.macs(&shapes));
                    ("Einsum".into(), 2.0 * macs.unwrap_or(out))
                }
                fuse_ir::Op::Gemm(_) => {
                    let rows = g.value(node.outputs[0]).ty.shape.first().copied().unwrap_or(1).max(1) as f64;
                    ("Gemm".into(), 2.0 * out * ins.first().map(|v| numel(*v)).unwrap_or(0.0) / rows)
                }
                op => (op.name().to_string(), ins.iter().map(|v| numel(*v)).sum::<f64>().max(out)),
            };
            let io = ins.iter().chain(&node.outputs).map(|v| bytes(*v)).sum::<usize>() as f64;
            NodeInfo {
                name: node.name.replace('.', "/"),
                signature: node_signature(g, node),
                features: Features { kind, flops, bytes: io },
                out_bytes: node.outputs.iter().map(|o| bytes(*o)).sum(),
                values: node.outputs.iter().map(|o| g.value(*o).name.clone()).collect(),
            }
        })
        .collect()
}

/// Kernel times measured per node signature, kept in `costs.json` beside
/// the tune cache, per [`RuntimeKey`]: a signature profiled once is not
/// profiled again (a fused model whose every node is known here is not
/// profiled at all), and the cost model is fitted on them.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Store {
    entries: Vec<StoreEntry>,
    /// The file was there but could not be read: it is not overwritten.
    #[serde(skip)]
    unreadable: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoreEntry {
    key: RuntimeKey,
    costs: std::collections::BTreeMap<String, Measured>,
}

/// What a profile's times belong to.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RuntimeKey {
    fusec: String,
    runtime: String,
    /// For ONNX Runtime, the library loaded.
    library: String,
    device: String,
    threads: Option<usize>,
    fp16: bool,
}

impl RuntimeKey {
    fn of(cfg: &SessionConfig, fp16: bool) -> RuntimeKey {
        RuntimeKey {
            fusec: env!("CARGO_PKG_VERSION").into(),
            runtime: cfg.runtime.to_string(),
            library: crate::cache::runtime_library(cfg),
            device: cfg.device.to_string(),
            threads: cfg.threads,
            fp16,
        }
    }
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Measured {
    features: Features,
    us: f64,
}

impl Store {
    fn file() -> Option<std::path::PathBuf> {
        crate::cache::cache_file().map(|f| f.with_file_name("costs.json"))
    }

    /// The store, empty when there is none; one that cannot be read is
    /// said so and kept as it is (not overwritten).
    fn load() -> Store {
        let Some(file) = Store::file() else { return Store::default() };
        let Ok(bytes) = std::fs::read(&file) else { return Store::default() };
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            crate::report::warn(format!(
                "tune: {} cannot be read ({e}): profiled costs are not kept there this time",
                file.display()
            ));
            Store { unreadable: true, ..Store::default() }
        })
    }

    fn save(&self) -> Result<(), String> {
        let Some(file) = Store::file().filter(|_| !self.unreadable) else { return Ok(()) };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let j = serde_json::to_vec(self).map_err(|e| e.to_string())?;
        fusec_exporters::write_atomic(&file, &j).map_err(|e| e.to_string())
    }

    fn get(&self, key: &RuntimeKey) -> Option<&std::collections::BTreeMap<String, Measured>> {
        self.entries.iter().find(|e| e.key == *key).map(|e| &e.costs)
    }

    fn get_mut(&mut self, key: &RuntimeKey) -> &mut std::collections::BTreeMap<String, Measured> {
        if let Some(i) = self.entries.iter().position(|e| e.key == *key) {
            return &mut self.entries[i].costs;
        }
        self.entries.push(StoreEntry { key: key.clone(), costs: Default::default() });
        &mut self.entries.last_mut().expect("just pushed").costs
    }

    /// The measurements made on `key`'s device at its precision, by any
    /// runtime: what a cost model for it is fitted on.
    fn like(&self, key: &RuntimeKey) -> Vec<&Measured> {
        self.entries
            .iter()
            .filter(|e| e.key.device == key.device && e.key.fp16 == key.fp16)
            .flat_map(|e| e.costs.values())
            .collect()
    }
}

/// A node's time from its features, where nothing profiles: per op kind
/// `a + b * flops + c * bytes` fitted (least squares, coefficients at
/// least 0) on what was profiled before (every kind with 8 or more
/// measurements; the rest share one fit of all), else fixed defaults.
pub struct CostModel {
    kinds: HashMap<String, [f64; 3]>,
    all: [f64; 3],
    /// How many measurements it was fitted on (0: the defaults).
    pub fitted_on: usize,
}

/// 2 µs a node, 20 GFLOP/s, 5 GB/s.
const DEFAULT_MODEL: [f64; 3] = [2.0, 5e-5, 2e-4];

impl CostModel {
    fn fit(points: &[&Measured]) -> CostModel {
        let fit = |ps: &[&Measured]| -> Option<[f64; 3]> {
            if ps.len() < 8 {
                return None;
            }
            // Normal equations of [1, flops, bytes], scaled for conditioning.
            let (sf, sb) = (
                ps.iter().map(|p| p.features.flops).fold(1.0, f64::max),
                ps.iter().map(|p| p.features.bytes).fold(1.0, f64::max),
            );
            let mut a = [[0.0f64; 4]; 3];
            for p in ps {
                let x = [1.0, p.features.flops / sf, p.features.bytes / sb];
                for (row, xi) in a.iter_mut().zip(x) {
                    for (cell, xj) in row.iter_mut().zip(x) {
                        *cell += xi * xj;
                    }
                    row[3] += xi * p.us;
                }
            }
            let c = solve3(a)?;
            Some([c[0].max(0.0), (c[1] / sf).max(0.0), (c[2] / sb).max(0.0)])
        };
        let all = fit(points).unwrap_or(DEFAULT_MODEL);
        let mut by_kind: HashMap<&str, Vec<&Measured>> = HashMap::new();
        for p in points {
            by_kind.entry(p.features.kind.as_str()).or_default().push(p);
        }
        let kinds = by_kind.into_iter().filter_map(|(k, ps)| fit(&ps).map(|c| (k.to_string(), c))).collect();
        CostModel { kinds, all, fitted_on: if points.len() >= 8 { points.len() } else { 0 } }
    }

    /// Modelled µs of a node.
    pub fn us(&self, f: &Features) -> f64 {
        let c = self.kinds.get(&f.kind).unwrap_or(&self.all);
        c[0] + c[1] * f.flops + c[2] * f.bytes
    }
}

/// Solves a 3x3 system given as its augmented matrix (Gaussian elimination
/// with partial pivoting); none when singular.
fn solve3(mut a: [[f64; 4]; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (x, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    Some([a[0][3] / a[0][0], a[1][3] / a[1][1], a[2][3] / a[2][2]])
}

/// Per node of `g` (by name), its time: profiled on `cfg` (ONNX Runtime),
/// or taken from `store` where every node's signature was profiled there
/// before (and `reuse`), or (other runtimes) from `model`. Profiled times
/// go into `store`. Returns the times, the time of nodes the runtime named
/// itself, and where the times come from.
#[allow(clippy::too_many_arguments)]
fn node_times(
    infos: &[NodeInfo],
    store: &mut Store,
    model: Option<&CostModel>,
    key: &RuntimeKey,
    reuse: bool,
    onnx: impl FnOnce() -> Result<Vec<NodeTime>, Failure>,
) -> Result<(HashMap<String, f64>, f64, Source), Failure> {
    if let Some(m) = model {
        return Ok((infos.iter().map(|i| (i.name.clone(), m.us(&i.features))).collect(), 0.0, Source::Model));
    }
    if let (true, Some(known)) = (reuse, store.get(key)) {
        if infos.iter().all(|i| known.contains_key(&i.signature)) {
            let t = infos.iter().map(|i| (i.name.clone(), known[&i.signature].us)).collect();
            return Ok((t, 0.0, Source::Stored));
        }
    }
    let times = onnx()?;
    let (attributed, guessed) = attribute(infos, &times);
    let mut per_node: HashMap<String, f64> = infos.iter().map(|i| (i.name.clone(), 0.0)).collect();
    for (name, us) in attributed {
        *per_node.entry(name).or_default() += us;
    }
    // Per signature, the mean of its nodes.
    let mut sums: HashMap<&str, (f64, usize, &Features)> = HashMap::new();
    for i in infos {
        let e = sums.entry(i.signature.as_str()).or_insert((0.0, 0, &i.features));
        e.0 += per_node[&i.name];
        e.1 += 1;
    }
    let entry = store.get_mut(key);
    for (sig, (sum, n, f)) in sums {
        entry.insert(sig.to_string(), Measured { features: f.clone(), us: sum / n as f64 });
    }
    Ok((per_node, guessed, Source::Profiled))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Profiled,
    Stored,
    Model,
}

/// Profiles `grouped` (the members fused with every node group grouped)
/// and the members fused with every one per member on `cfg` (ONNX Runtime;
/// a fused model whose every node signature was profiled here before is
/// not profiled again, unless not `reuse`), or models them where the
/// runtime has no profile, and chooses per node group from the costs.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    names: &[String],
    members: &[Graph],
    grouped: &Fused,
    x: &Tensors,
    cfg: &SessionConfig,
    keep_bn: bool,
    channel_block: Option<usize>,
    fp16: bool,
    warmup: usize,
    runs: usize,
    reuse: bool,
) -> Result<CostReport, Failure> {
    let groups_n = grouped.report.lowered.len();
    let opts = FuseOptions { keep_bn, channel_block, assignment: Some(vec![false; groups_n]), ..Default::default() };
    let apart = fusec_passes::fuse(as_members(names, members), &opts)?;
    // Profiled without CUDA graphs (a replayed graph has no per-node events).
    let cfg = &SessionConfig { cuda_graph: false, ..cfg.clone() };
    let key = RuntimeKey::of(cfg, fp16);
    let mut store = Store::load();
    let profiles = cfg.runtime == fusec_verify::runtime::RuntimeKind::Ort;
    let model = (!profiles).then(|| CostModel::fit(&store.like(&key)));
    let mut per_group = vec![(0.0f64, 0.0f64); groups_n];
    let mut moves = vec![];
    let mut lost = [0.0; 2];
    let mut sources = vec![];
    // Profile runs count as rounds: a model's runs at once.
    let pb = crate::report::progress(2 * (warmup + runs) as u64, "profiling node groups");
    for (which, f) in [(0, grouped), (1, &apart)] {
        let infos = node_infos(&f.graph);
        let profile_it = || -> Result<Vec<NodeTime>, Failure> {
            let onnx = crate::models::OnnxModel::of(&f.graph, fp16)?;
            Ok(profile(onnx.model(), cfg, x, warmup, runs)?)
        };
        let (times, guessed, source) = node_times(&infos, &mut store, model.as_ref(), &key, reuse, profile_it)?;
        pb.inc((warmup + runs) as u64);
        sources.push(source);
        // Origins by node names as the exporter writes them.
        let origin: HashMap<String, Origin> = f.report.origins.iter().map(|(n, o)| (n.replace('.', "/"), *o)).collect();
        for i in &infos {
            let us = times.get(&i.name).copied().unwrap_or(0.0);
            match origin.get(&i.name).copied() {
                Some(Origin::Group(g)) if which == 0 => per_group[g].0 += us,
                Some(Origin::Group(g)) => per_group[g].1 += us,
                // The Splits and Concats themselves (not the free Reshape views beside them).
                Some(Origin::Conversion)
                    if which == 0 && i.out_bytes > 0 && matches!(i.features.kind.as_str(), "Split" | "Concat") =>
                {
                    moves.push((i.out_bytes as f64, us))
                }
                _ => {}
            }
        }
        lost[which] = guessed;
    }
    pb.finish_and_clear();
    if profiles && sources.contains(&Source::Profiled) {
        if let Err(e) = store.save() {
            crate::report::warn(format!("tune: could not keep the profiled costs: {e}"));
        }
    }
    let (fixed, per_byte) = fit_moves(&moves);
    let lowered = &grouped.report.lowered;
    let costs: Vec<GroupCost> = lowered
        .iter()
        .zip(&per_group)
        .map(|((_, how), (g, a))| GroupCost {
            grouped: matches!(how, Lowered::Channels | Lowered::MemberAxis).then_some(*g),
            apart: *a,
        })
        .collect();
    let n = members.len() as f64;
    let shared = |i: usize| lowered[i].1 == Lowered::Shared;
    let transitions: Vec<Transition> = grouped
        .report
        .flows
        .iter()
        .filter(|f| !shared(f.from) && !f.to.is_some_and(shared))
        .map(|f| Transition { from: f.from, to: f.to, cost: fixed + per_byte * f.bytes as f64 * n, value: f.value })
        .collect();
    let ops: Vec<&str> = lowered.iter().map(|(op, _)| *op).collect();
    let groupable: Vec<bool> = costs.iter().map(|c| c.grouped.is_some()).collect();
    let units = fusion_units(&ops, &groupable, &grouped.report.flows);
    let (chosen, chosen_us) = cheapest_by_units(&costs, &transitions, &units);
    let separate_us = cost(&costs, &transitions, &vec![false; costs.len()]);
    let all_grouped_us = cost(&costs, &transitions, &groupable);
    // (`cheapest_by_units` groups only groupable node groups.)
    let grouped_n = chosen.iter().filter(|c| **c).count();
    let source = match (&model, sources.iter().all(|s| *s == Source::Stored)) {
        (Some(m), _) if m.fitted_on > 0 => format!(
            "a cost model (FLOPs and bytes per op kind) fitted on {} node signatures profiled before: {} has no per-node profile here",
            m.fitted_on, cfg.runtime
        ),
        (Some(_), _) => format!(
            "a cost model with default coefficients (2 µs a node, 20 GFLOP/s, 5 GB/s; nothing profiled yet to fit it on): {} has no per-node profile here",
            cfg.runtime
        ),
        (None, true) => "ONNX Runtime's profile, every node signature as profiled here before (costs.json)".to_string(),
        (None, false) => format!("ONNX Runtime's profile, median of {runs} runs per node"),
    };
    Ok(CostReport {
        source,
        assignment: chosen.iter().map(|c| if *c { '1' } else { '0' }).collect(),
        groupable: groupable.iter().filter(|g| **g).count(),
        grouped: grouped_n,
        separate_us,
        all_grouped_us,
        chosen_us,
        move_fixed_us: fixed,
        move_us_per_mb: per_byte * 1e6,
        move_fitted_on: if moves.len() < 3 { 0 } else { moves.len() },
        unattributed_us: (lost[0], lost[1]),
        group_costs: costs.iter().map(|c| (c.grouped, c.apart)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, value: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            signature: String::new(),
            features: Features { kind: String::new(), flops: 0.0, bytes: 0.0 },
            out_bytes: 0,
            values: vec![value.into()],
        }
    }

    #[test]
    fn profiled_nodes_are_found_by_their_name_a_name_they_start_with_or_the_node_before() {
        let infos = [info("a/conv", "x"), info("a/conv/1", "a.conv.1:0"), info("x::split", "y")];
        let t = |name: &str, us| NodeTime { name: name.into(), op: String::new(), us };
        let (found, guessed) = attribute(
            &infos,
            &[
                t("made_up", 0.5),
                t("a/conv", 1.0),
                t("a/conv/1/MatMulScaleFusion/", 2.0),
                t("SkipLayerNormalization_token_3", 4.0),
                t("a.conv.1:0_nchwc", 8.0),
                t("x::split", 3.0),
            ],
        );
        let n = |s: &str, us| (s.to_string(), us);
        assert_eq!(
            found,
            vec![n("a/conv", 1.0), n("a/conv/1", 2.0), n("a/conv/1", 4.0), n("a/conv/1", 8.0), n("x::split", 3.0)]
        );
        assert_eq!(guessed, 4.5);
    }

    #[test]
    fn moves_fit_a_line_or_take_the_defaults() {
        let (a, b) = fit_moves(&[(0.0, 2.0), (1000.0, 3.0), (2000.0, 4.0)]);
        assert!((a - 2.0).abs() < 1e-9 && (b - 0.001).abs() < 1e-12, "{a} {b}");
        assert_eq!(fit_moves(&[(1.0, 1.0)]), (MOVE_FIXED_US, MOVE_US_PER_BYTE));
    }

    #[test]
    fn the_cost_model_fits_each_kind_and_falls_back_to_all_then_defaults() {
        let m = |kind: &str, flops: f64, bytes: f64, us: f64| Measured {
            features: Features { kind: kind.into(), flops, bytes },
            us,
        };
        // Convs: 3 µs + 1 µs per MFLOP; adds: 1 µs + 1 µs per MB.
        let mut ps: Vec<Measured> =
            (0..10).map(|i| m("Conv", 1e6 * i as f64, 1e3 * ((i * 7) % 5) as f64, 3.0 + i as f64)).collect();
        ps.extend((0..10).map(|i| m("Add", 1e3 * ((i * 3) % 4) as f64, 1e6 * i as f64, 1.0 + i as f64)));
        let model = CostModel::fit(&ps.iter().collect::<Vec<_>>());
        let f = |kind: &str, flops, bytes| Features { kind: kind.into(), flops, bytes };
        assert!((model.us(&f("Conv", 4e6, 0.0)) - 7.0).abs() < 1e-6);
        assert!((model.us(&f("Add", 0.0, 2e6)) - 3.0).abs() < 1e-6);
        assert_eq!(model.fitted_on, 20);
        // An unseen kind: the fit of all; nothing measured: the defaults.
        assert_eq!(model.kinds.len(), 2, "both kinds fitted on their own");
        let none = CostModel::fit(&[]);
        assert_eq!((none.fitted_on, none.us(&f("Conv", 0.0, 0.0))), (0, DEFAULT_MODEL[0]));
    }
}
