//! `--tune`'s costs per node group, measured on the target runtime: ONNX
//! Runtime's profile of two fused models, every node group grouped and
//! every one per member, each fused node's kernel time attributed to the
//! node group it lowers (`FuseReport::origins`); the Splits and Concats
//! the grouped model has between stacked and per-member values give what a
//! layout change costs (fixed + per byte, least squares). The cheapest
//! assignment of node groups to grouped or per member, layout changes
//! counted, is a minimum cut (`fusec_passes::fuse::assign`).

use std::collections::HashMap;

use fuse_ir::Graph;
use fusec_passes::fuse::assign::{cheapest, cost, GroupCost, Transition};
use fusec_passes::{FuseOptions, Lowered, Origin};
use fusec_verify::runtime::{profile, NodeTime, SessionConfig};
use fusec_verify::Tensors;

use crate::speed::as_members;
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

/// Each profiled node's time by the origin of the fused node it comes
/// from: the node's own name, else the longest fused node or value name it
/// starts with (ONNX Runtime names a node it fused `NODE/...Fusion/` or
/// `VALUE_nchwc`), else (a
/// name the runtime made up, `SkipLayerNormalization_token_7`) the origin
/// of the node run before it. Returns the time per origin and how much of
/// it was charged by that last rule.
fn attribute(origins: &[(String, Origin)], times: &[NodeTime]) -> (Vec<(Origin, f64)>, f64) {
    // Value names as they are, node names as the ONNX exporter writes them.
    let mut by_name: HashMap<String, Origin> = origins.iter().map(|(n, o)| (n.clone(), *o)).collect();
    by_name.extend(origins.iter().map(|(n, o)| (n.replace('.', "/"), *o)));
    let mut out = vec![];
    let mut guessed = 0.0;
    let mut last = None;
    for t in times {
        let found = by_name.get(&t.name).or_else(|| {
            (1..t.name.len()).rev().filter(|&i| t.name.is_char_boundary(i)).find_map(|i| by_name.get(&t.name[..i]))
        });
        match (found, last) {
            (Some(o), _) => {
                out.push((*o, t.us));
                last = Some(*o);
            }
            (None, Some(o)) => {
                out.push((o, t.us));
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

/// Bytes of each fused node's outputs, by name.
fn output_bytes(g: &Graph) -> HashMap<String, usize> {
    g.node_ids()
        .into_iter()
        .map(|n| {
            let node = g.node(n);
            let b = node.outputs.iter().map(|o| g.value(*o).ty.byte_len().unwrap_or(0)).sum();
            (node.name.replace('.', "/"), b)
        })
        .collect()
}

/// Profiles the members (aligned into `groups_n` node groups) fused every
/// node group grouped and every one per member on `cfg`, and chooses per
/// node group from the costs.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    names: &[String],
    members: &[Graph],
    groups_n: usize,
    x: &Tensors,
    cfg: &SessionConfig,
    keep_bn: bool,
    fp16: bool,
    warmup: usize,
    runs: usize,
) -> Result<CostReport, Failure> {
    let fused = |all: bool| {
        let opts = FuseOptions { keep_bn, assignment: Some(vec![all; groups_n]), ..Default::default() };
        fusec_passes::fuse(as_members(names, members), &opts)
    };
    let (grouped, apart) = (fused(true)?, fused(false)?);
    let mut per_group = vec![(0.0f64, 0.0f64); groups_n];
    let mut moves = vec![];
    let mut lost = (0.0, 0.0);
    // Profile runs count as rounds: a model's runs at once.
    let pb = crate::report::progress(2 * (warmup + runs) as u64, "profiling node groups");
    for (which, f) in [(0, &grouped), (1, &apart)] {
        let onnx = crate::commands::onnx_bytes(&f.graph, fp16)?;
        let times = profile(&onnx, cfg, x, warmup, runs)?;
        pb.inc((warmup + runs) as u64);
        let (attributed, unattributed) = attribute(&f.report.origins, &times);
        let bytes = output_bytes(&f.graph);
        let by_name: HashMap<&str, f64> = times.iter().map(|t| (t.name.as_str(), t.us)).collect();
        for (o, us) in attributed {
            match o {
                Origin::Group(i) if which == 0 => per_group[i].0 += us,
                Origin::Group(i) => per_group[i].1 += us,
                Origin::Conversion | Origin::Output => {}
            }
        }
        if which == 0 {
            lost.0 = unattributed;
            // Measured layout changes: the Split and Concat nodes themselves.
            for (name, o) in &f.report.origins {
                let name = name.replace('.', "/");
                if let (Origin::Conversion, Some(us), Some(b)) = (o, by_name.get(name.as_str()), bytes.get(&name)) {
                    if *b > 0 {
                        moves.push((*b as f64, *us));
                    }
                }
            }
        } else {
            lost.1 = unattributed;
        }
    }
    pb.finish_and_clear();
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
        .map(|f| Transition { from: f.from, to: f.to, cost: fixed + per_byte * f.bytes as f64 * n })
        .collect();
    let (chosen, chosen_us) = cheapest(&costs, &transitions);
    let groupable: Vec<bool> = costs.iter().map(|c| c.grouped.is_some()).collect();
    let separate_us = cost(&costs, &transitions, &vec![false; costs.len()]);
    let all_grouped_us = cost(&costs, &transitions, &groupable);
    let grouped_n = chosen.iter().zip(&groupable).filter(|(c, g)| **c && **g).count();
    Ok(CostReport {
        source: format!("ONNX Runtime's profile, median of {runs} runs per node"),
        assignment: chosen.iter().zip(&groupable).map(|(c, g)| if *c && *g { '1' } else { '0' }).collect(),
        groupable: groupable.iter().filter(|g| **g).count(),
        grouped: grouped_n,
        separate_us,
        all_grouped_us,
        chosen_us,
        move_fixed_us: fixed,
        move_us_per_mb: per_byte * 1e6,
        move_fitted_on: if moves.len() < 3 { 0 } else { moves.len() },
        unattributed_us: lost,
        group_costs: costs.iter().map(|c| (c.grouped, c.apart)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_nodes_are_found_by_their_name_the_name_they_start_with_or_the_node_before() {
        let origins = vec![
            ("a/conv".to_string(), Origin::Group(0)),
            ("a/conv.1".to_string(), Origin::Group(1)),
            ("x::split".to_string(), Origin::Conversion),
        ];
        let t = |name: &str, us| NodeTime { name: name.into(), op: String::new(), us };
        let (found, guessed) = attribute(
            &origins,
            &[
                t("made_up", 0.5),
                t("a/conv", 1.0),
                t("a/conv/1/MatMulScaleFusion/", 2.0),
                t("SkipLayerNormalization_token_3", 4.0),
                t("x::split", 3.0),
            ],
        );
        assert_eq!(
            found,
            vec![(Origin::Group(0), 1.0), (Origin::Group(1), 2.0), (Origin::Group(1), 4.0), (Origin::Conversion, 3.0)]
        );
        assert_eq!(guessed, 4.5);
    }

    #[test]
    fn moves_fit_a_line_or_take_the_defaults() {
        let (a, b) = fit_moves(&[(0.0, 2.0), (1000.0, 3.0), (2000.0, 4.0)]);
        assert!((a - 2.0).abs() < 1e-9 && (b - 0.001).abs() < 1e-12, "{a} {b}");
        assert_eq!(fit_moves(&[(1.0, 1.0)]), (MOVE_FIXED_US, MOVE_US_PER_BYTE));
    }
}
