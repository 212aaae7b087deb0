//! Scheduler, splittability and explain on objectives compiled from source: pass counts of the
//! catalog objectives (snapshots of `display_schedule`), interpreter runs of them (every run also
//! checks that the schedule reads only available values), micro-batch exactness of the split
//! analysis, and the explain text.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlo_compiler::back::interp::{evaluate, evaluate_with};
use rlo_compiler::schedule::display_schedule;
use rlo_compiler::{compile, explain, split, Compiled, Options};
use rlo_tests::*;

const HEADER: &str = "
    input logp: tok diff
    input old_logp: tok
    input reward: seq
    let adv = (reward - group_mean(reward)) / (group_std(reward) + 1e-4)
    let ratio = exp(logp - old_logp)
";

fn objective(name: &str, params: &str, body: &str) -> Compiled {
    let text = format!("objective {name}({params}) {{\n{HEADER}\n{body}\n}}\n");
    compile(name, &text, &Options::default()).unwrap_or_else(|f| panic!("{}", f.render(false)))
}

fn grpo() -> Compiled {
    let text = std::fs::read_to_string("ui/pass/grpo.rlo").unwrap();
    compile("grpo.rlo", &text, &Options::default())
        .unwrap_or_else(|f| panic!("{}", f.render(false)))
}

fn dapo() -> Compiled {
    objective(
        "dapo",
        "eps_low: f32 = 0.2, eps_high: f32 = 0.28",
        "loss batch_sum(-min(ratio * adv, clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)) / max(num_tokens, 1)",
    )
}

fn dr_grpo() -> Compiled {
    objective(
        "dr_grpo",
        "eps: f32 = 0.2",
        "let a = reward - group_mean(reward)
         loss batch_sum(-min(ratio * a, clamp(ratio, 1 - eps, 1 + eps) * a)) / max(batch_max(seq_len), 1)",
    )
}

fn cispo() -> Compiled {
    objective(
        "cispo",
        "eps_max: f32 = 4",
        "loss batch_mean(-detach(min(ratio, 1 + eps_max)) * adv * logp)",
    )
}

fn gspo() -> Compiled {
    objective(
        "gspo",
        "eps: f32 = 0.0004",
        "let s = exp(seq_mean(logp - old_logp))
         loss batch_mean(-min(s * adv, clamp(s, 1 - eps, 1 + eps) * adv), where: seq_len > 0)",
    )
}

fn entropy_80_20() -> Compiled {
    let text = "objective forking(rho: f32 = 0.2) {
        input logp: tok diff
        input old_logp: tok
        input entropy: tok
        input reward: seq
        let adv = reward - group_mean(reward)
        let keep = entropy >= batch_quantile(entropy, 1 - rho)
        loss batch_mean(if keep then -exp(logp - old_logp) * adv else 0)
    }";
    compile("forking", text, &Options::default()).unwrap_or_else(|f| panic!("{}", f.render(false)))
}

fn params(c: &Compiled) -> Vec<f64> {
    c.module.params.iter().map(|p| p.default).collect()
}

#[test]
fn pass_counts() {
    let cases: Vec<(&str, Compiled, usize)> = vec![
        ("grpo", grpo(), 1),
        ("dapo", dapo(), 1),
        ("dr_grpo", dr_grpo(), 1),
        ("cispo", cispo(), 1),
        ("gspo", gspo(), 2),
        ("entropy_80_20", entropy_80_20(), 2),
    ];
    for (name, c, passes) in cases {
        let text = display_schedule(&c.module, &c.schedule);
        assert_eq!(c.schedule.token_passes(), passes, "{name}:\n{text}");
        assert_eq!(
            rlo_compiler::schedule::schedule(&c.module),
            c.schedule,
            "deterministic"
        );
        for seed in 0..5 {
            let mut rng = StdRng::seed_from_u64(seed);
            let layout = random_layout(&mut rng, LayoutSpec::default());
            let batch = random_batch(&c.module, &layout, &mut rng);
            let ev = evaluate(&c.module, &c.schedule, &batch, &params(&c))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            assert!(ev.loss.is_finite(), "{name}: loss {}", ev.loss);
            assert!(ev.grads.iter().flatten().all(|g| g.is_finite()), "{name}");
        }
    }
}

/// Golden `rloc emit schedule` text (insta) for GRPO and GSPO.
#[test]
fn schedule_snapshots() {
    let c = grpo();
    insta::assert_snapshot!("grpo_schedule", display_schedule(&c.module, &c.schedule));
    let c = gspo();
    insta::assert_snapshot!("gspo_schedule", display_schedule(&c.module, &c.schedule));
}

#[test]
fn grpo_schedule_snapshot() {
    let c = grpo();
    let text = display_schedule(&c.module, &c.schedule);
    let first = text.lines().next().unwrap_or_default().to_string();
    assert_eq!(first, "schedule grpo: 1 token pass(es), 3 stage(s)");
    let g = gspo();
    let text = display_schedule(&g.module, &g.schedule);
    let first = text.lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("schedule gspo: 2 token pass(es)"),
        "{text}"
    );
}

/// Splitting a step into micro-batches (with the pre-pass) gives the whole-step loss and
/// gradient exactly (up to summation order).
#[test]
fn micro_batches_add_up() {
    for (name, c) in [
        ("grpo", grpo()),
        ("dapo", dapo()),
        ("dr_grpo", dr_grpo()),
        ("cispo", cispo()),
        ("gspo", gspo()),
        ("entropy_80_20", entropy_80_20()),
    ] {
        let m = &c.module;
        let sp = split::analyze(m);
        assert!(sp.splittable, "{name}: {:?}", sp.reason);
        for seed in 0..5 {
            let mut rng = StdRng::seed_from_u64(seed);
            let layout = random_layout(&mut rng, LayoutSpec::default());
            let batch = random_batch(m, &layout, &mut rng);
            let p = params(&c);
            let whole = evaluate(m, &c.schedule, &batch, &p).unwrap();
            let mut nodiff = batch.clone();
            nodiff.values.remove("logp");
            let pre = split::prepass(m, &sp, &nodiff, &p).unwrap();
            // A random partition of the sequences into up to 3 micro-batches.
            let mut parts: Vec<Vec<usize>> = vec![Vec::new(); 3];
            for s in 0..layout.n_seqs() {
                parts[rng.random_range(0..3)].push(s);
            }
            let mut loss = 0.0;
            let mut grad = vec![0.0; layout.n_tokens()];
            for seqs in parts.iter().filter(|p| !p.is_empty()) {
                let sub = split::sub_batch(m, &batch, seqs);
                let ov = split::restrict(m, &pre, &layout, &sub);
                let ev = evaluate_with(m, &c.schedule, &sub.batch, &p, &ov).unwrap();
                loss += ev.loss;
                let mut k = 0;
                for &s in &sub.seqs {
                    let r = layout.seq_offsets[s]..layout.seq_offsets[s + 1];
                    for g in &mut grad[r] {
                        *g += ev.grads[0][k];
                        k += 1;
                    }
                }
            }
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()));
            assert!(close(loss, whole.loss), "{name}: {loss} vs {}", whole.loss);
            for (a, b) in grad.iter().zip(&whole.grads[0]) {
                assert!(close(*a, *b), "{name}: grad {a} vs {b}");
            }
        }
    }
}

#[test]
fn not_splittable_objectives_say_why() {
    let c = objective("bad_std", "", "loss batch_std(seq_sum(logp))");
    let sp = split::analyze(&c.module);
    assert!(!sp.splittable);
    let (span, why) = sp.reason.clone().unwrap();
    assert!(
        why.contains("nonlinear") || why.contains("broadcast back"),
        "{why}"
    );
    assert!(span.end > span.start, "the reason points at source");
    let c = objective(
        "bad_group",
        "",
        "let s = seq_sum(logp)
         loss batch_mean(square(s - group_mean(s)))",
    );
    let sp = split::analyze(&c.module);
    assert!(!sp.splittable);
    assert!(sp.reason.unwrap().1.contains("broadcast back"));
}

#[test]
fn explain_names_the_normalizers() {
    let text = explain::explain_compiled(&grpo());
    eprintln!("{text}");
    assert!(text.contains("d loss / d logp"), "{text}");
    assert!(text.contains("seq_len"), "{text}");
    assert!(text.contains("num_seqs"), "{text}");
    let text = explain::explain_compiled(&dapo());
    assert!(text.contains("num_tokens"), "{text}");
}

/// The interpreter on a 64 × 512 batch (GRPO and GSPO, loss + gradient): prints the time; the
/// bound is loose for unoptimized CI builds (release: a few ms).
#[test]
fn interpreter_speed_64x512() {
    for c in [grpo(), gspo()] {
        let lengths = vec![512usize; 64];
        let groups: Vec<u32> = (0..64u32).map(|i| i / 8).collect();
        let layout = rlo_compiler::Layout::single_turn(&lengths, groups);
        let mut rng = StdRng::seed_from_u64(7);
        let batch = random_batch(&c.module, &layout, &mut rng);
        let p = params(&c);
        let t = std::time::Instant::now();
        let ev = evaluate(&c.module, &c.schedule, &batch, &p).unwrap();
        let dt = t.elapsed();
        eprintln!("interp {}: 64x512 in {dt:?}", c.module.name);
        assert!(ev.loss.is_finite());
        assert!(dt.as_secs_f64() < 5.0, "{dt:?}");
    }
}

/// Pass counts of hand-built modules: one rule each.
#[test]
fn pass_depth_rules() {
    use rlo_compiler::ir::{ReduceOp, ScanOp};
    use rlo_compiler::types::{DType, Level};
    let inputs = [
        ("x", Level::Tok, DType::F32, true),
        ("r", Level::Turn, DType::F32, false),
        ("w", Level::Seq, DType::F32, false),
    ];
    type Build = fn(
        &mut rlo_compiler::passes::builder::Builder,
    ) -> rlo_compiler::Handle<rlo_compiler::ir::Expr>;
    let cases: Vec<(&str, usize, Build)> = vec![
        ("sum", 1, |b| {
            let x = b.input(0);
            b.reduce(ReduceOp::Sum, x, Level::Batch, None)
        }),
        ("token value needs a reduction of tokens", 2, |b| {
            let x = b.input(0);
            let s = b.reduce(ReduceOp::Sum, x, Level::Seq, None);
            let y = b.mul(x, s);
            b.reduce(ReduceOp::Sum, y, Level::Batch, None)
        }),
        ("structural counts are free", 1, |b| {
            let x = b.input(0);
            let n = b.count(Level::Tok, Level::Seq, None);
            let m = b.reduce(ReduceOp::Max, n, Level::Batch, None);
            let y = b.div(x, n);
            let y = b.div(y, m);
            b.reduce(ReduceOp::Sum, y, Level::Batch, None)
        }),
        ("turn scans run between passes", 1, |b| {
            let x = b.input(0);
            let r = b.input(1);
            let g = b.constant(0.9);
            let ret = b.scan(ScanOp::DiscountedRevCumSum, r, Some(g));
            let y = b.mul(x, ret);
            b.reduce(ReduceOp::Sum, y, Level::Batch, None)
        }),
        ("per-position group reduction", 2, |b| {
            let x = b.input(0);
            let p = b.pos_reduce(ReduceOp::Sum, x);
            b.reduce(ReduceOp::Sum, p, Level::Batch, None)
        }),
        ("rank of tokens", 2, |b| {
            let x = b.input(0);
            let r = b.rank(x, Level::Seq);
            let y = b.mul(r, x);
            b.reduce(ReduceOp::Sum, y, Level::Batch, None)
        }),
        ("no token data", 0, |b| {
            let w = b.input(2);
            b.reduce(ReduceOp::Sum, w, Level::Batch, None)
        }),
    ];
    for (name, passes, f) in cases {
        let mut b = module_with_inputs(name, &inputs, &[]);
        let loss = f(&mut b);
        let (m, s) = compile_module(finish(b, loss, &[], &[])).unwrap();
        assert_eq!(
            s.token_passes(),
            passes,
            "{name}:\n{}",
            display_schedule(&m, &s)
        );
        let mut rng = StdRng::seed_from_u64(2);
        let layout = random_layout(&mut rng, LayoutSpec::default());
        let batch = random_batch(&m, &layout, &mut rng);
        evaluate(&m, &s, &batch, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
