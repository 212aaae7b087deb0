//! Micro-batch exactness: for every splittable objective of `stdlib/`, evaluating a batch as k
//! micro-batches of unequal sizes (k ∈ {1, 2, 3, 7}) gives the whole-batch loss, gradients,
//! metrics and outputs to 1e-12 (interpreter, f64); objectives that are not splittable get the
//! compiler's explanation, pointing at their source.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rlo_compiler::ir::Module;
use rlo_compiler::types::{DType, Level};
use rlo_compiler::{Batch, Evaluation, Layout};
use rlo_runtime::microbatch::Plan;
use rlo_runtime::{Backend, Objective, RuntimeError};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// B sequences in `g` groups of unequal sizes (ids shuffled), lengths 0..=9, 1–3 turns each.
fn layout(rng: &mut Rng, b: usize, g: usize) -> Layout {
    let mut seq_group: Vec<u32> = (0..b).map(|i| (i % g) as u32).collect();
    for x in seq_group.iter_mut().skip(g) {
        *x = rng.below(g) as u32; // unequal group sizes, every group non-empty
    }
    for i in (1..b).rev() {
        let j = rng.below(i + 1);
        seq_group.swap(i, j);
    }
    let (mut seq_offsets, mut turn_offsets, mut tok_turn) = (vec![0], vec![0], vec![]);
    for s in 0..b {
        let len = if s == 1 { 0 } else { rng.below(10) };
        let turns = 1 + rng.below(3);
        let base = turn_offsets[s];
        let mut ids: Vec<usize> = (0..len).map(|_| rng.below(turns)).collect();
        ids.sort_unstable();
        tok_turn.extend(ids.iter().map(|&k| (base + k) as u32));
        seq_offsets.push(seq_offsets[s] + len);
        turn_offsets.push(base + turns);
    }
    Layout {
        seq_offsets,
        turn_offsets,
        tok_turn,
        seq_group,
        n_groups: g,
    }
}

/// Random values for every input of `m`: log-probabilities for token inputs, rewards in [0, 1]
/// for the others, 0/1 for bool inputs.
fn batch(m: &Module, seed: u64) -> Batch {
    let mut rng = Rng(seed);
    let layout = layout(&mut rng, 13, 4);
    let mut values = BTreeMap::new();
    for input in &m.inputs {
        let n = layout.count(input.ty.level);
        let v: Vec<f64> = (0..n)
            .map(|_| match (input.ty.dtype, input.ty.level) {
                (DType::Bool, _) => (rng.below(2)) as f64,
                (DType::F32, Level::Tok) => rng.range(-2.5, -0.05),
                (DType::F32, _) => rng.range(0.0, 1.0),
            })
            .collect();
        values.insert(input.name.clone(), v);
    }
    Batch { layout, values }
}

/// `k` unequal positive sizes summing to `b` (for k ≥ 2 not all equal).
fn sizes(rng: &mut Rng, b: usize, k: usize) -> Vec<usize> {
    loop {
        let mut cuts: Vec<usize> = (1..b).collect();
        for i in (1..cuts.len()).rev() {
            let j = rng.below(i + 1);
            cuts.swap(i, j);
        }
        let mut c: Vec<usize> = cuts[..k - 1].to_vec();
        c.sort_unstable();
        c.insert(0, 0);
        c.push(b);
        let s: Vec<usize> = c.windows(2).map(|w| w[1] - w[0]).collect();
        if k == 1 || s.iter().any(|&x| x != s[0]) {
            return s;
        }
    }
}

fn close(what: &str, a: f64, b: f64) {
    let tol = 1e-12 * a.abs().max(b.abs()).max(1.0);
    assert!(
        (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
        "{what}: whole {a} vs micro-batched {b}"
    );
}

fn same(name: &str, k: usize, whole: &Evaluation, split: &Evaluation) {
    close(&format!("{name} k={k} loss"), whole.loss, split.loss);
    for (i, (a, b)) in whole.grads.iter().zip(&split.grads).enumerate() {
        assert_eq!(a.len(), b.len(), "{name} grad {i} length");
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            close(&format!("{name} k={k} grad {i}[{j}]"), *x, *y);
        }
    }
    for (i, (a, b)) in whole.metrics.iter().zip(&split.metrics).enumerate() {
        close(&format!("{name} k={k} metric {i}"), *a, *b);
    }
    for (i, (a, b)) in whole.outputs.iter().zip(&split.outputs).enumerate() {
        assert_eq!(a.len(), b.len(), "{name} output {i} length");
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            close(&format!("{name} k={k} output {i}[{j}]"), *x, *y);
        }
    }
}

/// Every objective of every stdlib file: (file, objective, compiled).
fn stdlib_objectives() -> Vec<(String, String, Objective)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stdlib");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "rlo"));
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read stdlib file");
        let mut sm = rlo_grammar::SourceMap::new();
        let id = sm.add("x", text.as_str());
        let Ok(ast) = rlo_grammar::parse(&text, id) else {
            continue;
        };
        for item in &ast.items {
            if let rlo_grammar::ast::Item::Objective(o) = item {
                let name = o.name.name.clone();
                let file = format!(
                    "stdlib/{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
                let opts = rlo_compiler::Options {
                    objective: Some(name.clone()),
                    ..Default::default()
                };
                match Objective::compile(&file, &text, &opts) {
                    Ok(obj) => out.push((file, name, obj)),
                    Err(f) => eprintln!("{file}: {name} does not compile:\n{}", f.render(false)),
                }
            }
        }
    }
    out
}

/// GRPO, DAPO, Dr. GRPO and GSPO written with builtins only (independent of `stdlib/`).
const INLINE: &str = "
objective grpo(eps: f32 = 0.2, beta: f32 = 0.04) {
    input logp: tok diff
    input old_logp: tok
    input ref_logp: tok
    input reward: seq
    let adv = (reward - group_mean(reward)) / (group_std(reward) + 1e-4)
    let ratio = exp(logp - old_logp)
    let kl = exp(ref_logp - logp) - (ref_logp - logp) - 1
    loss batch_mean(seq_mean(-min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv) + beta * kl))
    metric clip_frac = batch_mean(abs(ratio - 1) > eps)
    metric ratio_max = batch_max(ratio)
    output adv = adv
    output ratio = ratio
}
objective dapo(lo: f32 = 0.2, hi: f32 = 0.28) {
    input logp: tok diff
    input old_logp: tok
    input reward: seq
    let adv = (reward - group_mean(reward)) / (group_std(reward) + 1e-6)
    let ratio = exp(logp - old_logp)
    let keep = group_std(reward) > 0.1
    loss batch_mean(-min(ratio * adv, clamp(ratio, 1 - lo, 1 + hi) * adv), where: keep)
}
objective dr_grpo(eps: f32 = 0.2, max_len: f32 = 16) {
    input logp: tok diff
    input old_logp: tok
    input reward: seq
    let adv = reward - group_mean(reward)
    let ratio = exp(logp - old_logp)
    loss batch_sum(-min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv)) / (num_seqs * max_len)
}
objective gspo(lo: f32 = 3e-4, hi: f32 = 4e-4) {
    input logp: tok diff
    input old_logp: tok
    input reward: seq
    let adv = (reward - group_mean(reward)) / (group_std(reward) + 1e-6)
    let s = exp(seq_mean(logp - old_logp))
    loss batch_mean(-min(s * adv, clamp(s, 1 - lo, 1 + hi) * adv), where: seq_len > 0)
    metric s_mean = batch_mean(s)
}
";

/// Whole batch vs k ∈ {1, 2, 3, 7} unequal micro-batches, two random batches. `Ok(false)` when
/// the objective is refused (the explanation is checked to point at `file`).
fn check_exact(file: &str, name: &str, obj: &Objective) -> bool {
    let plan = match Plan::new(obj) {
        Ok(p) => p,
        Err(RuntimeError::NotSplittable { explanation, .. }) => {
            assert!(explanation.contains(file), "{explanation}");
            assert!(explanation.contains("cannot be split"), "{explanation}");
            return false;
        }
        Err(e) => panic!("{name}: {e}"),
    };
    let params = obj.param_values(&[]).expect("defaults");
    for seed in [1u64, 2] {
        let b = batch(&obj.compiled.module, seed * 7919);
        let whole = obj
            .evaluate(&b, &params, Backend::Interp)
            .expect("whole batch");
        let mut rng = Rng(seed + 100);
        for k in [1, 2, 3, 7] {
            let s = sizes(&mut rng, b.layout.n_seqs(), k);
            let split = plan
                .evaluate(&b, &params, Backend::Interp, &s)
                .unwrap_or_else(|e| panic!("{name} k={k}: {e}"));
            same(name, k, &whole, &split);
        }
    }
    true
}

fn compile_inline(name: &str) -> Objective {
    let opts = rlo_compiler::Options {
        objective: Some(name.into()),
        ..Default::default()
    };
    Objective::compile("inline.rlo", INLINE, &opts)
        .unwrap_or_else(|f| panic!("{}", f.render(false)))
}

#[test]
fn grpo_dapo_dr_grpo_gspo_split_exactly() {
    for name in ["grpo", "dapo", "dr_grpo", "gspo"] {
        let obj = compile_inline(name);
        assert!(
            check_exact("inline.rlo", name, &obj),
            "{name} must be splittable"
        );
    }
}

/// Without the pre-pass, summing the parts' results is wrong (the test above could fail).
#[test]
fn naive_micro_batching_is_not_exact() {
    let obj = compile_inline("grpo");
    let params = obj.param_values(&[]).expect("defaults");
    let b = batch(&obj.compiled.module, 11);
    let whole = obj.evaluate(&b, &params, Backend::Interp).expect("whole");
    assert!(whole.grads[0].iter().any(|&g| g != 0.0));
    let parts = rlo_runtime::microbatch::split(&obj.compiled.module, &b, &[4, 9]).expect("split");
    let naive: f64 = parts
        .iter()
        .map(|p| {
            obj.evaluate(&p.batch, &params, Backend::Interp)
                .expect("part")
                .loss
        })
        .sum();
    assert!(
        (naive - whole.loss).abs() > 1e-6,
        "{naive} vs {}",
        whole.loss
    );
}

#[test]
fn every_splittable_stdlib_objective_gives_the_whole_batch_result() {
    let objectives = stdlib_objectives();
    let mut split_names = Vec::new();
    let mut refused = Vec::new();
    for (file, name, obj) in &objectives {
        if check_exact(file, name, obj) {
            split_names.push(name.clone());
        } else {
            refused.push(name.clone());
        }
    }
    eprintln!("splittable: {split_names:?}\nnot splittable: {refused:?}");
    for must in ["grpo", "dapo", "dr_grpo", "gspo"] {
        if objectives.iter().any(|(_, n, _)| n == must) {
            assert!(
                split_names.iter().any(|n| n == must),
                "{must} must be splittable"
            );
        }
    }
}

#[test]
fn a_batch_max_of_the_policy_is_refused_with_the_source_location() {
    let src = "objective worst() {\n    input logp: tok diff\n    loss -batch_max(logp)\n}\n";
    let obj = Objective::compile("worst.rlo", src, &Default::default()).expect("compiles");
    let err = Plan::new(&obj).err().expect("not splittable").to_string();
    assert!(err.contains("worst.rlo:3:"), "{err}");
    assert!(err.contains("max"), "{err}");
}

#[test]
fn group_normalization_of_the_policy_is_refused() {
    // A group mean of a policy-dependent value, broadcast back to each sequence.
    let src = "objective g() {\n    input logp: tok diff\n    input reward: seq\n    let s = seq_sum(logp)\n    loss batch_mean(reward * (s - group_mean(s)))\n}\n";
    let obj = Objective::compile("g.rlo", src, &Default::default()).expect("compiles");
    let err = Plan::new(&obj).err().expect("not splittable").to_string();
    assert!(err.contains("g.rlo:5:"), "{err}");
}

#[test]
fn bad_sizes_are_errors() {
    let src = "objective o() {\n    input logp: tok diff\n    loss batch_mean(logp)\n}\n";
    let obj = Objective::compile("o.rlo", src, &Default::default()).expect("compiles");
    let b = batch(&obj.compiled.module, 3);
    let plan = Plan::new(&obj).expect("splittable");
    for s in [vec![13, 1], vec![0, 13], vec![5]] {
        let e = plan
            .evaluate(&b, &[], Backend::Interp, &s)
            .expect_err("bad sizes");
        assert!(e.to_string().contains("sum to B = 13"), "{e}");
    }
}

/// The part modules run on the Cranelift backend too (f32 math: 1e-5 relative to the
/// interpreter's whole-batch result).
#[test]
fn micro_batching_on_the_cpu_backend() {
    for name in ["grpo", "gspo"] {
        let obj = compile_inline(name);
        let params = obj.param_values(&[]).expect("defaults");
        let b = batch(&obj.compiled.module, 5);
        let whole = obj.evaluate(&b, &params, Backend::Interp).expect("whole");
        let plan = Plan::new(&obj).expect("splittable");
        let split = plan
            .evaluate(&b, &params, Backend::Cpu, &[2, 6, 5])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1e-3);
        assert!(
            near(whole.loss, split.loss),
            "{name}: {} vs {}",
            whole.loss,
            split.loss
        );
        for (x, y) in whole.grads[0].iter().zip(&split.grads[0]) {
            assert!(near(*x, *y), "{name}: grad {x} vs {y}");
        }
    }
}
