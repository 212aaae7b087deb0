//! Front-end unit tests on small programs (the ui goldens live in `tests/ui`).

use super::*;
use crate::ir::{display_module, Expr};
use crate::types::{DType, Level, Ty};

fn analyze_src(src: &str) -> (Result<Checked, Vec<Diagnostic>>, SourceMap) {
    let mut sources = SourceMap::new();
    let id = sources.add("test.rlo", src);
    let ast = match rlo_grammar::parse(src, id) {
        Ok(a) => a,
        Err(d) => return (Err(d), sources),
    };
    let r = analyze(&ast, &mut sources, &Options::default());
    (r, sources)
}

fn ok(src: &str) -> Module {
    match analyze_src(src) {
        (Ok(c), _) => c.module,
        (Err(d), s) => panic!("{}", rlo_grammar::diagnostic::render_all(&d, &s, false)),
    }
}

fn errors(src: &str) -> Vec<&'static str> {
    match analyze_src(src) {
        (Ok(_), _) => vec![],
        (Err(d), _) => d.iter().filter(|d| d.is_error()).map(|d| d.code).collect(),
    }
}

/// Every operand precedes its user, and unary/binary/select operands sit at the result's level.
#[allow(clippy::wildcard_enum_match_arm)]
fn assert_invariants(m: &Module) {
    for (h, e) in m.exprs.iter() {
        for op in e.operands() {
            assert!(op < h, "{h}: operand {op} not before its user");
        }
        let l = m.level(h);
        match e {
            Expr::Unary { arg, .. } => assert_eq!(m.level(*arg), l),
            Expr::Binary { lhs, rhs, .. } => {
                assert_eq!(m.level(*lhs), l);
                assert_eq!(m.level(*rhs), l);
            }
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => {
                assert_eq!(m.ty(*cond), Ty::new(l, DType::Bool));
                assert_eq!(m.level(*on_true), l);
                assert_eq!(m.level(*on_false), l);
            }
            Expr::Broadcast { arg, to } => {
                assert!(*to < m.level(*arg));
                assert_eq!(*to, l);
            }
            Expr::Reduce {
                arg, to, filter, ..
            } => {
                assert!(m.level(*arg) < *to);
                assert_eq!(m.ty(*arg).dtype, DType::F32);
                if let Some(f) = filter {
                    assert_eq!(m.ty(*f), Ty::new(m.level(*arg), DType::Bool));
                }
            }
            _ => {}
        }
    }
}

const GRPO: &str = include_str!("../../../tests/ui/pass/grpo.rlo");

#[test]
fn grpo_lowers_with_batch_loss_and_metrics() {
    let m = ok(GRPO);
    assert_invariants(&m);
    assert_eq!(m.ty(m.loss), Ty::new(Level::Batch, DType::F32));
    assert_eq!(m.params.len(), 2);
    assert_eq!(m.inputs.len(), 4);
    assert!(m.inputs.first().is_some_and(|i| i.diff));
    assert_eq!(m.metrics.len(), 2);
    for n in &m.metrics {
        assert_eq!(m.ty(n.value), Ty::new(Level::Batch, DType::F32));
    }
    let adv = m.outputs.first().map(|o| o.value);
    assert_eq!(adv.map(|h| m.ty(h)), Some(Ty::new(Level::Seq, DType::F32)));
    // k3 is called twice with the same arguments: CSE shares one instance.
    let exps = m
        .exprs
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Expr::Unary {
                    op: crate::ir::UnaryOp::Exp,
                    ..
                }
            )
        })
        .count();
    assert_eq!(exps, 2, "{}", display_module(&m));
}

#[test]
fn collects_several_errors() {
    let src =
        "objective o() {\n input x: tok diff\n let a = y\n loss seq_mean(x)\n metric m = x\n}";
    assert_eq!(errors(src), vec!["E0101", "E0217", "E0218"]);
}
