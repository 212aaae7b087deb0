//! Stable textual dump of a [`Module`] (snapshots, `rloc emit ir`, `RLO_DEBUG=ir`).

use super::Module;
use std::fmt::Write;

/// One line per node: `e12: tok f32 = Binary(Mul, e3, e11)`.
pub fn display_module(m: &Module) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "objective {}", m.name);
    for (i, p) in m.params.iter().enumerate() {
        let _ = writeln!(out, "  param p{i} {} = {}", p.name, p.default);
    }
    for (i, inp) in m.inputs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  input i{i} {}: {}{}",
            inp.name,
            inp.ty,
            if inp.diff { " diff" } else { "" }
        );
    }
    for (h, e) in m.exprs.iter() {
        let _ = writeln!(out, "  {h}: {} = {e:?}", m.ty(h));
    }
    let _ = writeln!(out, "  loss {}", m.loss);
    for n in &m.metrics {
        let _ = writeln!(out, "  metric {} {}", n.name, n.value);
    }
    for n in &m.outputs {
        let _ = writeln!(out, "  output {} {}", n.name, n.value);
    }
    for g in &m.grads {
        let name = m
            .inputs
            .get(g.input as usize)
            .map(|i| i.name.as_str())
            .unwrap_or("?");
        let _ = writeln!(out, "  grad {} {}", name, g.value);
    }
    out
}
