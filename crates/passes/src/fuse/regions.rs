//! Regions: which node groups are grouped. For `Regions`, those after
//! a cut (in dataflow order); node groups before it keep every member's
//! own layers. For a measured `Plan`, the runs it marks. The cut moves, by up to 5% of the groups, to where the least
//! data crosses it, since every value crossing it is stacked by a Concat.
//! Where channels stack a run of elementwise layers between per-member
//! ones (a transformer's bias Adds and softmaxes around per-member
//! MatMuls), the run is kept per member ([`islands`]).

use std::collections::{BTreeSet, HashMap};

use fuse_ir::Graph;

use super::align::NodeGroup;
use super::assign::Flow;
use super::options::{FuseOptions, Lowering};
use super::report::Lowered;
use crate::PassError;

/// Per node group (in dataflow order), whether it may be grouped: all for
/// `Grouped`, none for `Separate`, those past the narrowest cut near that
/// fraction of the groups for `Regions { from }`, and for a `Plan` those in
/// its grouped runs; an `assignment` (one per node group) overrides them all.
pub(crate) fn plan(opts: &FuseOptions, g0: &Graph, groups: &[NodeGroup]) -> Result<Vec<bool>, PassError> {
    let n = groups.len();
    if let Some(a) = &opts.assignment {
        if a.len() != n {
            return Err(PassError::Incompatible(format!(
                "the assignment decides {} node groups, these members align into {n} (it was made for other members)",
                a.len()
            )));
        }
        return Ok(a.clone());
    }
    Ok(match opts.lowering {
        Lowering::Grouped => vec![true; n],
        Lowering::Separate => vec![false; n],
        Lowering::Regions { from } => {
            let at = ((from.clamp(0.0, 1.0) * n as f32).round() as usize).min(n);
            let cut = narrowest_cut(g0, groups, at);
            (0..n).map(|i| i >= cut).collect()
        }
        Lowering::Plan { stacked, chunks } => {
            (0..n).map(|i| stacked >> Lowering::run_of(i, n, chunks) & 1 == 1).collect()
        }
    })
}

/// The cut near `at` (within 5% of the node groups) where the least data crosses
/// from the per-member region into the grouped one: the elements of node
/// outputs made before the cut and read after it, which the grouped region
/// must stack (a Concat each). Ties go to the cut nearest `at`; a cut at
/// either end stays there.
fn narrowest_cut(g: &Graph, groups: &[NodeGroup], at: usize) -> usize {
    let n = groups.len();
    if at == 0 || at >= n {
        return at; // all grouped, or none: nothing crosses
    }
    let mut made = HashMap::new();
    let mut last_read = HashMap::new();
    for (i, p) in groups.iter().enumerate() {
        let node = g.node(p.nodes[0]);
        for &o in &node.outputs {
            made.insert(o, i);
        }
        for &v in node.inputs.iter().flatten() {
            last_read.insert(v, i);
        }
    }
    let crossing = |c: usize| -> usize {
        made.iter()
            .filter(|(v, &i)| i < c && last_read.get(*v).is_some_and(|&j| j >= c))
            .map(|(v, _)| g.value(*v).ty.shape.iter().product::<usize>())
            .sum()
    };
    let w = (n / 20).max(1);
    (at.saturating_sub(w)..=(at + w).min(n)).min_by_key(|&c| (crossing(c), c.abs_diff(at))).unwrap_or(at)
}

/// Ops whose stacked form can run faster than the members' one by one (a
/// grouped conv, a batched product): the rest do the same work stacked.
const COMPUTE: [&str; 4] = ["Conv", "Gemm", "MatMul", "Einsum"];

/// The node groups of stacked runs that would only copy: a run (node
/// groups stacked on channels or a member axis, connected by the data
/// between them, as large as it goes) with no Conv, Gemm or MatMul that
/// reads from or feeds a per-member node group. Stacked, it costs a Concat
/// of each input and a Split of each output; per member, its elementwise
/// ops, norms and softmaxes do the same work with no copy.
pub(crate) fn islands(lowered: &[(&str, Lowered)], flows: &[Flow]) -> Vec<usize> {
    let n = lowered.len();
    let run = runs(lowered, flows);
    let computes = computing(lowered, &run);
    let mut meets_members = vec![false; n];
    for f in flows {
        let Some(t) = f.to else { continue };
        for (s, other) in [(f.from, t), (t, f.from)] {
            if stacked(lowered, s) && lowered[other].1 == Lowered::PerMember {
                meets_members[run[s]] = true;
            }
        }
    }
    (0..n).filter(|&i| stacked(lowered, i) && !computes[run[i]] && meets_members[run[i]]).collect()
}

fn stacked(lowered: &[(&str, Lowered)], i: usize) -> bool {
    matches!(lowered[i].1, Lowered::Channels | Lowered::MemberAxis)
}

/// Each node group's run: the stacked node groups connected to it by the
/// data between them, as large as it goes, named by one of them (a node
/// group that is not stacked is a run of its own).
fn runs(lowered: &[(&str, Lowered)], flows: &[Flow]) -> Vec<usize> {
    let mut run: Vec<usize> = (0..lowered.len()).collect();
    fn root(run: &mut [usize], mut i: usize) -> usize {
        while run[i] != i {
            run[i] = run[run[i]];
            i = run[i];
        }
        i
    }
    for f in flows {
        if let Some(t) = f.to.filter(|&t| stacked(lowered, f.from) && stacked(lowered, t)) {
            let (a, b) = (root(&mut run, f.from), root(&mut run, t));
            run[a] = b;
        }
    }
    (0..run.len()).map(|i| root(&mut run, i)).collect()
}

/// Per run (as [`runs`] names them), whether a stacked node group of it
/// computes ([`COMPUTE`]).
fn computing(lowered: &[(&str, Lowered)], run: &[usize]) -> Vec<bool> {
    let mut computes = vec![false; lowered.len()];
    for i in (0..lowered.len()).filter(|&i| stacked(lowered, i) && COMPUTE.contains(&lowered[i].0)) {
        computes[run[i]] = true;
    }
    computes
}

/// The stacked runs (see [`islands`]) without a Conv, Gemm or MatMul that
/// lie between exactly two per-member node groups: every input from one,
/// every output to another, nothing else read or fed (a feed-forward
/// block's activation between its two per-member linear layers under
/// `split_linear`, GELU alone or as its Div, Erf, Add, Mul, Mul). Stacked,
/// such a run costs a Concat and a Split for elementwise work. Unlike
/// [`islands`], a run that meets more per-member layers (the residual Adds
/// and LayerNorms threading a transformer's blocks) stays stacked.
pub(crate) fn sandwiched(lowered: &[(&str, Lowered)], flows: &[Flow]) -> Vec<usize> {
    let n = lowered.len();
    let run = runs(lowered, flows);
    let mut ruled_out = computing(lowered, &run);
    let mut from: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut to: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for f in flows {
        let Some(t) = f.to else {
            // A graph output read from a stacked run: it leaves to no member.
            ruled_out[run[f.from]] = true;
            continue;
        };
        for (s, other, into) in [(t, f.from, true), (f.from, t, false)] {
            if !stacked(lowered, s) || stacked(lowered, other) {
                continue;
            }
            let r = run[s];
            if lowered[other].1 != Lowered::PerMember {
                ruled_out[r] = true;
            } else if into {
                from[r].insert(other);
            } else {
                to[r].insert(other);
            }
        }
    }
    (0..n)
        .filter(|&i| {
            let r = run[i];
            stacked(lowered, i) && !ruled_out[r] && from[r].len() == 1 && to[r].len() == 1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(from: usize, to: usize) -> Flow {
        Flow { from, to: Some(to), bytes: 4, value: from }
    }

    /// Per-member MatMuls around a stacked bias Add and softmax: the Add
    /// and the softmax are an island; a stacked run with a Conv is not,
    /// nor a stacked run that meets no per-member node group.
    #[test]
    fn a_stacked_run_without_compute_between_per_member_layers_is_an_island() {
        use Lowered::*;
        let lowered = [
            ("MatMul", PerMember), // 0
            ("Add", Channels),     // 1
            ("Softmax", Channels), // 2
            ("MatMul", PerMember), // 3
            ("Add", Channels),     // 4
            ("Conv", Channels),    // 5
            ("Relu", Channels),    // 6
            ("MatMul", PerMember), // 7
            ("Relu", Shared),      // 8
            ("Sigmoid", Channels), // 9
        ];
        let flows = [flow(0, 1), flow(1, 2), flow(2, 3), flow(3, 4), flow(4, 5), flow(5, 6), flow(6, 7), flow(8, 9)];
        assert_eq!(islands(&lowered, &flows), vec![1, 2]);
    }

    /// A feed-forward block under `split_linear`: its GELU (as torch
    /// exports it: Div, Erf, Add, Mul, Mul) between the two per-member
    /// products is sandwiched; the residual Adds and LayerNorms, which meet
    /// the products of two blocks, are not.
    #[test]
    fn a_run_between_two_per_member_layers_is_sandwiched() {
        use Lowered::*;
        let lowered = [
            ("LayerNormalization", MemberAxis), // 0
            ("MatMul", PerMember),              // 1: intermediate
            ("Div", MemberAxis),                // 2
            ("Erf", MemberAxis),                // 3
            ("Add", MemberAxis),                // 4
            ("Mul", MemberAxis),                // 5: reads 1 and 4
            ("Mul", MemberAxis),                // 6
            ("MatMul", PerMember),              // 7: output
            ("Add", MemberAxis),                // 8: residual, reads 0 and 7
            ("LayerNormalization", MemberAxis), // 9
            ("MatMul", PerMember),              // 10: the next block
        ];
        let flows = [
            flow(0, 1),
            flow(1, 2),
            flow(2, 3),
            flow(3, 4),
            flow(1, 5),
            flow(4, 5),
            flow(5, 6),
            flow(6, 7),
            flow(7, 8),
            flow(0, 8),
            flow(8, 9),
            flow(9, 10),
        ];
        assert_eq!(sandwiched(&lowered, &flows), vec![2, 3, 4, 5, 6]);
        // The island rule takes the residual run too (it meets per-member
        // layers and computes nothing).
        assert_eq!(islands(&lowered, &flows), vec![0, 2, 3, 4, 5, 6, 8, 9]);
    }
}
