//! The deterministic text form of a graph.
//!
//! Values are renumbered in reading order (inputs, then weights by first
//! use, then node outputs in topological order), weights print as type plus
//! a short content hash, and nodes print their op, attributes, output types
//! and original name. Equal graphs give equal text, whatever ids they used.

use std::collections::HashMap;
use std::fmt::Write;

use crate::{Graph, IrError, ValueDef, ValueId};

pub fn to_text(g: &Graph) -> Result<String, IrError> {
    let order = g.topo_order()?;
    let mut num: HashMap<ValueId, usize> = HashMap::new();
    let mut s = String::new();
    let _ = writeln!(s, "graph {:?}", g.name);
    for &i in g.inputs() {
        let n = num.len();
        num.insert(i, n);
        let v = g.value(i);
        let _ = writeln!(s, "  input  %{n} {:?}: {}", v.name, v.ty);
    }
    for &nid in &order {
        for v in g.node(nid).inputs.iter().flatten() {
            if num.contains_key(v) {
                continue;
            }
            let val = g.value(*v);
            if let ValueDef::Weight(t) = &val.def {
                let n = num.len();
                num.insert(*v, n);
                let _ = writeln!(s, "  weight %{n} {:?}: {} #{}", val.name, val.ty, t.digest());
            }
        }
    }
    for &nid in &order {
        let node = g.node(nid);
        let outs: Vec<String> = node
            .outputs
            .iter()
            .map(|o| {
                let n = num.len();
                num.insert(*o, n);
                format!("%{n}")
            })
            .collect();
        let ins: Vec<String> = node
            .inputs
            .iter()
            .map(|v| match v {
                Some(v) => num.get(v).map(|n| format!("%{n}")).unwrap_or_else(|| "%?".into()),
                None => "_".into(),
            })
            .collect();
        let tys: Vec<String> = node.outputs.iter().map(|o| g.value(*o).ty.to_string()).collect();
        let attrs = node.op.attrs_text();
        let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{attrs}}}") };
        let _ = writeln!(
            s,
            "  {} = {}({}){attrs} : {}  # {}",
            outs.join(", "),
            node.op.name(),
            ins.join(", "),
            tys.join(", "),
            node.name
        );
    }
    for &o in g.outputs() {
        let v = g.value(o);
        let n = num.get(&o).map(|n| format!("%{n}")).unwrap_or_else(|| "%?".into());
        let _ = writeln!(s, "  output {n} {:?}: {}", v.name, v.ty);
    }
    Ok(s)
}
