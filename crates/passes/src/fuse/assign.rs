//! The cheapest assignment of node groups to grouped or per member, given
//! what each costs both ways and what moving data between the two forms
//! costs: a minimum s-t cut (grouped on the source side), exact for this
//! two-label problem with nonnegative costs. A value read by several node
//! groups is converted once whatever reads it (the fused graph caches its
//! Split or Concat), so its move is one cost, paid once: an extra node per
//! value and direction in the cut makes that exact. The costs come from
//! elsewhere (`fusec fuse --tune` measures them on the target runtime);
//! [`FuseReport::flows`] gives the edges.
//!
//! [`FuseReport::flows`]: super::FuseReport::flows

use std::collections::HashMap;

use fuse_ir::{Graph, ValueDef};
use petgraph::algo::dinics;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// What one node group costs, in any unit (the tuner's: microseconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupCost {
    /// Run grouped; `None` when it cannot be (shared, differs between
    /// members, or no stacking takes it).
    pub grouped: Option<f64>,
    /// Run per member, every member's copy.
    pub apart: f64,
}

/// Data moving from node group `from` to `to` (`None`: a member's output),
/// and what moving it between stacked and per-member form costs. `value`
/// names the value moved: transitions of one `from` and `value` (its
/// readers) share one conversion, paid once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub from: usize,
    pub to: Option<usize>,
    pub cost: f64,
    pub value: usize,
}

/// A value node group `from` makes and group `to` reads (`None`: a
/// member's output), one member's copy of it; `value` is its index in
/// member 0's graph (the same for each of its readers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub from: usize,
    pub to: Option<usize>,
    pub bytes: usize,
    pub value: usize,
}

/// The transitions of each value: per (`from`, `value`), first seen first,
/// its cost (the most any of them says) and its readers.
fn by_value(transitions: &[Transition]) -> Vec<(usize, f64, Vec<Option<usize>>)> {
    let mut at: HashMap<(usize, usize), usize> = HashMap::new();
    let mut out: Vec<(usize, f64, Vec<Option<usize>>)> = vec![];
    for tr in transitions {
        if tr.to == Some(tr.from) {
            continue;
        }
        let k = *at.entry((tr.from, tr.value)).or_insert_with(|| {
            out.push((tr.from, 0.0, vec![]));
            out.len() - 1
        });
        out[k].1 = out[k].1.max(tr.cost);
        out[k].2.push(tr.to);
    }
    out
}

/// The values flowing between node groups (member 0's graph, whose nodes
/// are the groups' first): one per value and reader, one per output.
pub(crate) fn flows(g0: &Graph, groups: &[super::align::NodeGroup]) -> Vec<Flow> {
    let of: HashMap<_, usize> = groups.iter().enumerate().map(|(i, p)| (p.nodes[0], i)).collect();
    let made_by = |v: fuse_ir::ValueId| match g0.value(v).def {
        ValueDef::Node { node, .. } => of.get(&node).copied(),
        _ => None,
    };
    let bytes = |v: fuse_ir::ValueId| g0.value(v).ty.byte_len().unwrap_or(0);
    let mut out = vec![];
    for (j, p) in groups.iter().enumerate() {
        let mut seen = vec![];
        for &v in g0.node(p.nodes[0]).inputs.iter().flatten() {
            if let (Some(i), false) = (made_by(v), seen.contains(&v)) {
                seen.push(v);
                out.push(Flow { from: i, to: Some(j), bytes: bytes(v), value: v.index() });
            }
        }
    }
    for &v in g0.outputs() {
        if let Some(i) = made_by(v) {
            out.push(Flow { from: i, to: None, bytes: bytes(v), value: v.index() });
        }
    }
    out
}

/// The cheapest assignment (true = grouped) and its cost: each group's own
/// cost in its form, plus every value's move where its producer's form
/// differs from a reader's (an output differs from a grouped producer: it
/// is each member's own), once per value.
pub fn cheapest(groups: &[GroupCost], transitions: &[Transition]) -> (Vec<bool>, f64) {
    // Integer capacities (thousandths of the unit): exact and terminating.
    let cap = |c: f64| (c.max(0.0) * 1000.0).round() as u64;
    const FIXED: u64 = u64::MAX / 4;
    let mut g = DiGraph::<(), u64>::new();
    let s = g.add_node(());
    let t = g.add_node(());
    let v: Vec<NodeIndex> = groups.iter().map(|_| g.add_node(())).collect();
    // Source side = grouped: i -> t is cut when i is grouped (its grouped
    // cost), s -> i when it is per member (its per-member cost).
    for (i, c) in groups.iter().enumerate() {
        g.add_edge(s, v[i], cap(c.apart));
        g.add_edge(v[i], t, c.grouped.map(cap).unwrap_or(FIXED));
    }
    // Per value made by `p`: `split` must be on the sink side when a
    // reader is (or the value is an output), so p -> split is cut, once,
    // when p is grouped and some reader is not; `concat` must be on the
    // source side when a reader is, so concat -> p is cut, once, when some
    // reader is grouped and p is not.
    for (p, c, readers) in by_value(transitions) {
        let split = g.add_node(());
        g.add_edge(v[p], split, cap(c));
        let concat = g.add_node(());
        g.add_edge(concat, v[p], cap(c));
        for r in readers {
            match r {
                Some(j) => {
                    g.add_edge(split, v[j], FIXED);
                    g.add_edge(v[j], concat, FIXED);
                }
                None => {
                    g.add_edge(split, t, FIXED);
                }
            }
        }
    }
    let (_, flows) = dinics(&g, s, t);
    // The source side: reachable from s in the residual graph.
    let mut seen = vec![false; g.node_count()];
    let mut stack = vec![s];
    seen[s.index()] = true;
    while let Some(a) = stack.pop() {
        for e in g.edges_directed(a, petgraph::Direction::Outgoing) {
            if flows[e.id().index()] < *e.weight() && !seen[e.target().index()] {
                seen[e.target().index()] = true;
                stack.push(e.target());
            }
        }
        for e in g.edges_directed(a, petgraph::Direction::Incoming) {
            if flows[e.id().index()] > 0 && !seen[e.source().index()] {
                seen[e.source().index()] = true;
                stack.push(e.source());
            }
        }
    }
    let chosen: Vec<bool> = v.iter().map(|n| seen[n.index()]).collect();
    let total = cost(groups, transitions, &chosen);
    (chosen, total)
}

/// Ops a runtime fuses into the kernel before them (ONNX Runtime's
/// Conv + activation, Conv + Add, MatMul + Add, Add + LayerNorm, ...).
const FOLLOWERS: &[&str] = &[
    "Relu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "LeakyRelu",
    "Clip",
    "Gelu",
    "Erf",
    "Add",
    "Mul",
    "Div",
    "LayerNormalization",
];

/// Ops whose kernel a runtime fuses followers into.
const PRODUCERS: &[&str] = &["Conv", "MatMul", "Gemm", "BatchNormalization"];

/// Node groups a runtime may run as one kernel, so that their profiled
/// times cannot be told apart (a fused kernel's time lands on one of
/// them, not always the same one in a grouped and a per-member model):
/// per node group, the first node group of its unit. A unit is a Conv,
/// MatMul, Gemm or BatchNormalization with the chain of activations and
/// elementwise ops that each read the one value the unit makes (its only
/// reader); only `groupable` node groups join one (a unit is grouped or
/// per member as a whole).
pub fn fusion_units(ops: &[&str], groupable: &[bool], flows: &[Flow]) -> Vec<usize> {
    let mut unit: Vec<usize> = (0..ops.len()).collect();
    let mut readers = vec![0usize; ops.len()];
    for f in flows {
        readers[f.from] += 1;
    }
    let mut flows: Vec<&Flow> = flows.iter().collect();
    flows.sort_by_key(|f| (f.to.unwrap_or(usize::MAX), f.from));
    for f in flows {
        let Some(j) = f.to else { continue };
        if readers[f.from] == 1
            && groupable[f.from]
            && groupable[j]
            && FOLLOWERS.contains(&ops[j])
            && PRODUCERS.contains(&ops[unit[f.from]])
            && unit[j] == j
        {
            unit[j] = unit[f.from];
        }
    }
    unit
}

/// [`cheapest`] with each unit of [`fusion_units`] one choice: grouped as a
/// whole (where every node group of it can be) or per member. Never
/// costlier than every groupable node group grouped or none (the cut's
/// capacities are rounded to thousandths: where that rounding would lose,
/// the cheaper of those is returned).
pub fn cheapest_by_units(groups: &[GroupCost], transitions: &[Transition], unit: &[usize]) -> (Vec<bool>, f64) {
    let roots: Vec<usize> = (0..groups.len()).filter(|&i| unit[i] == i).collect();
    let index: HashMap<usize, usize> = roots.iter().enumerate().map(|(k, r)| (*r, k)).collect();
    let mut merged: Vec<GroupCost> = vec![GroupCost { grouped: Some(0.0), apart: 0.0 }; roots.len()];
    for (i, c) in groups.iter().enumerate() {
        let m = &mut merged[index[&unit[i]]];
        m.apart += c.apart;
        m.grouped = m.grouped.zip(c.grouped).map(|(a, b)| a + b);
    }
    let moved: Vec<Transition> = transitions
        .iter()
        .filter(|t| t.to.is_none_or(|j| unit[j] != unit[t.from]))
        .map(|t| Transition {
            from: index[&unit[t.from]],
            to: t.to.map(|j| index[&unit[j]]),
            cost: t.cost,
            value: t.value,
        })
        .collect();
    let (chosen, _) = cheapest(&merged, &moved);
    let assignment: Vec<bool> =
        (0..groups.len()).map(|i| chosen[index[&unit[i]]] && merged[index[&unit[i]]].grouped.is_some()).collect();
    let all: Vec<bool> = (0..groups.len()).map(|i| merged[index[&unit[i]]].grouped.is_some()).collect();
    [assignment, all, vec![false; groups.len()]]
        .into_iter()
        .map(|a| {
            let c = cost(groups, transitions, &a);
            (a, c)
        })
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("three candidates")
}

/// What `assignment` costs: each group in its form (grouped where it cannot
/// be counts as per member) and each value's moves: a Split where its
/// producer is grouped and a reader is not (or it is an output), a Concat
/// where its producer is not and a reader is, each once.
pub fn cost(groups: &[GroupCost], transitions: &[Transition], assignment: &[bool]) -> f64 {
    let grouped = |i: usize| assignment[i] && groups[i].grouped.is_some();
    let own: f64 =
        groups.iter().enumerate().map(|(i, c)| if grouped(i) { c.grouped.unwrap_or(c.apart) } else { c.apart }).sum();
    let moved: f64 = by_value(transitions)
        .iter()
        .map(|(p, c, readers)| {
            let split = grouped(*p) && readers.iter().any(|r| r.is_none_or(|j| !grouped(j)));
            let concat = !grouped(*p) && readers.iter().any(|r| r.is_some_and(grouped));
            c * f64::from(u8::from(split) + u8::from(concat))
        })
        .sum();
    own + moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(grouped: f64, apart: f64) -> GroupCost {
        GroupCost { grouped: Some(grouped), apart }
    }

    /// Every assignment's cost, the least: what the cut must find.
    fn brute(groups: &[GroupCost], tr: &[Transition]) -> f64 {
        (0..1u32 << groups.len())
            .map(|m| cost(groups, tr, &(0..groups.len()).map(|i| m >> i & 1 == 1).collect::<Vec<_>>()))
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn a_chain_groups_where_it_pays_net_of_the_moves() {
        // 0 -> 1 -> 2 -> 3 -> output; 0 cannot be grouped. Grouping 1 gains
        // 0.5 but moves 3 into the stacked form where moving after it costs
        // 1: it stays apart; 2 and 3 gain 5 each.
        let groups = [GroupCost { grouped: None, apart: 5.0 }, c(4.5, 5.0), c(10.0, 15.0), c(10.0, 15.0)];
        let tr = |from, to, cost| Transition { from, to, cost, value: from };
        let transitions = [tr(0, Some(1), 3.0), tr(1, Some(2), 1.0), tr(2, Some(3), 3.0), tr(3, None, 1.0)];
        let (a, total) = cheapest(&groups, &transitions);
        assert_eq!(a, [false, false, true, true]);
        assert!((total - (5.0 + 5.0 + 10.0 + 10.0 + 1.0 + 1.0)).abs() < 1e-6, "{total}");
        assert!((total - brute(&groups, &transitions)).abs() < 1e-6);
    }

    #[test]
    fn a_conv_and_the_activation_that_alone_reads_it_are_one_choice() {
        // conv0 -> relu1 -> conv2 -> {add3, add4}: conv0+relu1 a unit;
        // conv2's value has two readers, so the adds stay apart.
        let f = |from: usize, to: Option<usize>| Flow { from, to, bytes: 4, value: to.map_or(10 + from, |_| from) };
        let flows = [f(0, Some(1)), f(1, Some(2)), f(2, Some(3)), f(2, Some(4)), f(3, None), f(4, None)];
        let ops = ["Conv", "Relu", "Conv", "Add", "Add"];
        let unit = fusion_units(&ops, &[true; 5], &flows);
        assert_eq!(unit, [0, 0, 2, 3, 4]);
        // A node group that cannot be grouped joins no unit.
        assert_eq!(fusion_units(&ops, &[true, false, true, true, true], &flows), [0, 1, 2, 3, 4]);
        // The profile put the fused kernel's time on the Relu when grouped
        // and on the Conv per member: apart, relu1 looks free to group and
        // conv0 ruinous; together they are what they are.
        let groups = [c(10.0, 1.0), c(0.0, 9.0), c(5.0, 6.0), c(1.0, 1.0), c(1.0, 1.0)];
        let tr: Vec<Transition> =
            flows.iter().map(|f| Transition { from: f.from, to: f.to, cost: 0.5, value: f.value }).collect();
        let (a, total) = cheapest_by_units(&groups, &tr, &unit);
        assert_eq!(a[0], a[1], "one choice for the unit");
        assert!((total - cost(&groups, &tr, &a)).abs() < 1e-9);
        // The least of every assignment that keeps the unit together.
        let best = (0..1u32 << groups.len())
            .map(|m| (0..groups.len()).map(|i| m >> i & 1 == 1).collect::<Vec<_>>())
            .filter(|x| x[0] == x[1])
            .map(|x| cost(&groups, &tr, &x))
            .fold(f64::INFINITY, f64::min);
        assert!((total - best).abs() < 1e-2, "{total} vs {best}");
    }

    #[test]
    fn a_value_read_by_several_node_groups_moves_once() {
        // 0 -> {1, 2, 3}, one value; 0 gains 4 grouped, the readers lose 2
        // each. One Split (3) serves all three readers: grouping 0 alone
        // pays (24 against 25 apart, 27 all grouped); counted per reader
        // (9) it would not.
        let groups = [c(6.0, 10.0), c(7.0, 5.0), c(7.0, 5.0), c(7.0, 5.0)];
        let transitions: Vec<Transition> =
            (1..4).map(|j| Transition { from: 0, to: Some(j), cost: 3.0, value: 7 }).collect();
        assert!((cost(&groups, &transitions, &[true, false, false, false]) - 24.0).abs() < 1e-9);
        assert!((cost(&groups, &transitions, &[false, true, true, false]) - 32.0).abs() < 1e-9, "one Concat");
        let (a, total) = cheapest(&groups, &transitions);
        assert!((total - 24.0).abs() < 1e-6, "{a:?} {total}");
        assert!(a[0] && (total - brute(&groups, &transitions)).abs() < 1e-6);
        // Two values of node group 0 are two moves.
        let two: Vec<Transition> =
            (1..4).map(|j| Transition { from: 0, to: Some(j), cost: 3.0, value: j.min(2) }).collect();
        assert!((cost(&groups, &two, &[true, false, false, false]) - 27.0).abs() < 1e-9);
    }

    #[test]
    fn groups_that_cannot_be_grouped_stay_apart_and_random_problems_match_brute_force() {
        let groups = [GroupCost { grouped: None, apart: 4.0 }, c(0.0, 9.0)];
        let (a, total) = cheapest(&groups, &[Transition { from: 0, to: Some(1), cost: 2.0, value: 0 }]);
        assert_eq!(a, [false, true]);
        assert!((total - 6.0).abs() < 1e-6);
        // Small random DAGs with skips and outputs.
        let mut seed = 12345u64;
        let mut rnd = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..200 {
            let n = 2 + (rnd() * 8.0) as usize;
            let groups: Vec<GroupCost> = (0..n)
                .map(|_| GroupCost { grouped: (rnd() > 0.2).then(|| rnd() * 10.0), apart: rnd() * 10.0 })
                .collect();
            // Each group makes two values (2i, 2i + 1); a skip reads one
            // of them, so a value may have two readers (and an output).
            let mut tr = vec![];
            for j in 1..n {
                tr.push(Transition { from: j - 1, to: Some(j), cost: rnd() * 4.0, value: 2 * (j - 1) });
                if j >= 2 && rnd() > 0.6 {
                    let value = 2 * (j - 2) + usize::from(rnd() > 0.5);
                    tr.push(Transition { from: j - 2, to: Some(j), cost: rnd() * 4.0, value });
                }
            }
            tr.push(Transition { from: n - 1, to: None, cost: rnd() * 2.0, value: 2 * (n - 1) + 1 });
            if rnd() > 0.5 {
                tr.push(Transition { from: n - 2, to: None, cost: rnd() * 2.0, value: 2 * (n - 2) });
            }
            let (a, total) = cheapest(&groups, &tr);
            assert!((total - cost(&groups, &tr, &a)).abs() < 1e-9);
            assert!((total - brute(&groups, &tr)).abs() < 1e-2, "{total} vs {}", brute(&groups, &tr));
        }
    }
}
