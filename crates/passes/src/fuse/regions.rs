//! Regions: which node groups are grouped. For `Regions`, those after
//! a cut (in dataflow order); node groups before it keep every member's
//! own layers. For a measured `Plan`, the runs it marks. The cut moves, by up to 5% of the groups, to where the least
//! data crosses it, since every value crossing it is stacked by a Concat.

use std::collections::HashMap;

use fuse_ir::Graph;

use super::align::NodeGroup;
use super::options::{FuseOptions, Lowering};
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
