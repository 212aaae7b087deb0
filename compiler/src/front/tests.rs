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

#[test]
fn deepest_accepted_expressions_check_fine() {
    // The parser bounds nesting (MAX_NESTING); the checker's recursion stays within it.
    let chain = vec!["x"; 200].join(" + ");
    let neg = "-".repeat(200);
    let src = format!(
        "objective o() {{\n input x: tok diff\n let a = {chain}\n let b = {neg}x\n loss batch_mean(a + b)\n}}"
    );
    let m = ok(&src);
    assert_eq!(m.ty(m.loss), Ty::new(Level::Batch, DType::F32));
}

const TWO: &str = "objective a() {\n input x: tok diff\n loss batch_mean(x)\n}\n\
objective b(k: f32 = 2) {\n input x: tok diff\n loss batch_sum(x * k)\n}\n";

fn analyze_with(src: &str, objective: Option<&str>) -> Result<Checked, Vec<Diagnostic>> {
    let mut sources = SourceMap::new();
    let id = sources.add("t.rlo", src);
    let ast = rlo_grammar::parse(src, id).map_err(|d| d.to_vec())?;
    let opts = Options {
        objective: objective.map(str::to_string),
        ..Options::default()
    };
    analyze(&ast, &mut sources, &opts)
}

#[test]
fn objective_selection() {
    let codes = |r: Result<Checked, Vec<Diagnostic>>| match r {
        Ok(c) => vec![c.module.name],
        Err(d) => d.iter().map(|d| d.code.to_string()).collect(),
    };
    assert_eq!(codes(analyze_with(TWO, None)), vec!["E0304"]);
    assert_eq!(codes(analyze_with(TWO, Some("b"))), vec!["b"]);
    assert_eq!(codes(analyze_with(TWO, Some("a"))), vec!["a"]);
    assert_eq!(codes(analyze_with(TWO, Some("c"))), vec!["E0305"]);
    let m = analyze_with(TWO, Some("b")).map(|c| c.module);
    assert_eq!(m.map(|m| m.params.len()).ok(), Some(1));
}

#[test]
fn errors_of_unselected_objectives_are_reported() {
    let src = format!("{TWO}objective c() {{\n input x: tok diff\n loss seq_sum(x)\n}}\n");
    let r = analyze_with(&src, Some("a"));
    let codes: Vec<_> = r.err().unwrap_or_default().iter().map(|d| d.code).collect();
    assert_eq!(codes, vec!["E0217"]);
}

#[test]
fn identical_subexpressions_are_shared_and_spans_point_at_source() {
    let src =
        "objective o() {\n input x: tok diff\n let a = exp(x) + exp(x)\n loss batch_mean(a)\n}";
    let m = ok(src);
    let exps: Vec<_> = m
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
        .map(|(h, _)| h)
        .collect();
    assert_eq!(exps.len(), 1);
    let span = exps.first().map(|&h| m.span(h)).unwrap_or_default();
    assert_eq!(src.get(span.range()), Some("exp(x)"));
    assert_invariants(&m);
}

#[test]
fn call_chains_deeper_than_the_limit_are_an_error_not_a_crash() {
    let mut src = String::new();
    for i in 0..70 {
        src.push_str(&format!("fn f{i}(x) {{ f{}(x) + 1 }}\n", i + 1));
    }
    src.push_str("fn f70(x) { x }\n");
    src.push_str("objective o() {\n input x: tok diff\n loss batch_mean(f0(x))\n}\n");
    assert_eq!(errors(&src), vec!["E0308"]);
    // A chain within the limit inlines fine.
    let short = src.replace("f0(x))", "f40(x))");
    let m = ok(&short);
    assert_invariants(&m);
}
