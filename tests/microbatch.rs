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

// ---------------------------------------------------------------------------------------------
// Data-parallel shards (`rlo_runtime::dataparallel`): ranks hold whole groups; the sum of the
// ranks' losses is the whole-batch loss and each rank's gradients are the whole-batch gradients
// of its elements, to 1e-12 (interpreter, f64).

/// The sequences of each of `k` ranks: groups dealt out at random (a rank may get none).
fn shard_seqs(rng: &mut Rng, layout: &Layout, k: usize) -> Vec<Vec<usize>> {
    let rank_of: Vec<usize> = (0..layout.n_groups).map(|_| rng.below(k)).collect();
    (0..k)
        .map(|r| {
            (0..layout.n_seqs())
                .filter(|&s| rank_of[layout.seq_group[s] as usize] == r)
                .collect()
        })
        .collect()
}

/// Index ranges in the whole batch of element `i` of a shard, per level.
fn element_ranges(whole: &Layout, sub: &rlo_compiler::split::SubBatch, level: Level) -> Vec<usize> {
    let mut out = Vec::new();
    match level {
        Level::Tok | Level::Turn => {
            let offs = if level == Level::Tok {
                &whole.seq_offsets
            } else {
                &whole.turn_offsets
            };
            for &s in &sub.seqs {
                out.extend(offs[s]..offs[s + 1]);
            }
        }
        Level::Seq => out.extend(sub.seqs.iter().copied()),
        Level::Group => out.extend(sub.groups.iter().copied()),
        Level::Batch => out.push(0),
    }
    out
}

/// Whole batch vs k ∈ {1, 2, 3, 5} ranks. `Ok(false)` when refused.
fn check_data_parallel(name: &str, obj: &Objective) -> Result<bool, String> {
    use rlo_runtime::dataparallel::{RankMerge, ShardPlan};
    let plan = match ShardPlan::new(obj) {
        Ok(p) => p,
        Err(RuntimeError::NotShardable { .. }) => return Ok(false),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    let m = &obj.compiled.module;
    let params = obj.param_values(&[]).expect("defaults");
    for seed in [3u64, 4] {
        let b = batch(m, seed * 104_729);
        let whole = obj.evaluate(&b, &params, Backend::Interp).expect("whole");
        let mut rng = Rng(seed + 500);
        for k in [1, 2, 3, 5] {
            let subs: Vec<_> = shard_seqs(&mut rng, &b.layout, k)
                .iter()
                .map(|seqs| rlo_compiler::split::sub_batch(m, &b, seqs))
                .collect();
            let shards: Vec<Batch> = subs.iter().map(|s| s.batch.clone()).collect();
            let evs = plan
                .evaluate_shards(&shards, &params, Backend::Interp)
                .map_err(|e| format!("{name} k={k}: {e}"))?;
            let near = |a: f64, b: f64| {
                a == b
                    || (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
                    || (a.is_nan() && b.is_nan())
            };
            let loss: f64 = evs.iter().map(|e| e.loss).sum();
            if !near(loss, whole.loss) {
                return Err(format!("{name} k={k}: loss {loss} vs whole {}", whole.loss));
            }
            let per_rank: Vec<Vec<f64>> = evs.iter().map(|e| e.metrics.clone()).collect();
            let metrics = plan.combine_metrics(&per_rank);
            for (i, how) in plan.metric_merge().iter().enumerate() {
                let ok = match how {
                    RankMerge::Unavailable => metrics[i].is_nan(),
                    _ => near(metrics[i], whole.metrics[i]),
                };
                if !ok {
                    return Err(format!(
                        "{name} k={k}: metric {} ({how:?}) {} vs whole {}",
                        m.metrics[i].name, metrics[i], whole.metrics[i]
                    ));
                }
            }
            let per_element =
                |what: &str, level: Level, want: &[f64], got: &dyn Fn(&Evaluation) -> &[f64]| {
                    for (sub, ev) in subs.iter().zip(&evs) {
                        let idx = element_ranges(&b.layout, sub, level);
                        let v = got(ev);
                        if v.len() != idx.len() {
                            return Err(format!(
                                "{name} k={k}: {what} has {} values, shard {}",
                                v.len(),
                                idx.len()
                            ));
                        }
                        if let Some((j, x)) = idx.iter().zip(v).find(|(&j, &x)| !near(x, want[j])) {
                            return Err(format!(
                                "{name} k={k}: {what}[{j}] {x} vs whole {}",
                                want[*j]
                            ));
                        }
                    }
                    Ok(())
                };
            for (i, g) in m.grads.iter().enumerate() {
                let level = m.inputs[g.input as usize].ty.level;
                if level <= Level::Group {
                    per_element(&format!("grad {i}"), level, &whole.grads[i], &|e| {
                        &e.grads[i]
                    })?;
                }
            }
            for (i, (o, how)) in m.outputs.iter().zip(plan.output_merge()).enumerate() {
                let level = m.level(o.value);
                if *how == RankMerge::Place {
                    per_element(
                        &format!("output {}", o.name),
                        level,
                        &whole.outputs[i],
                        &|e| &e.outputs[i],
                    )?;
                }
            }
        }
    }
    Ok(true)
}

#[test]
fn data_parallel_ranks_give_the_whole_batch_result() {
    let mut exact = Vec::new();
    let mut refused = Vec::new();
    let mut failures = Vec::new();
    for (_, name, obj) in &stdlib_objectives() {
        match check_data_parallel(name, obj) {
            Ok(true) => exact.push(name.clone()),
            Ok(false) => refused.push(name.clone()),
            Err(e) => failures.push(e),
        }
    }
    for name in ["grpo", "dapo", "dr_grpo", "gspo"] {
        let obj = compile_inline(name);
        match check_data_parallel(name, &obj) {
            Ok(true) => {}
            Ok(false) => failures.push(format!("inline {name} refused")),
            Err(e) => failures.push(e),
        }
    }
    eprintln!("data-parallel exact: {exact:?}\nrefused: {refused:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for must in ["grpo", "dapo", "gspo", "dr_grpo", "reinforce_pp"] {
        assert!(
            exact.iter().any(|n| n == must),
            "{must} must be data-parallel exact"
        );
    }
}

/// Each rank normalizing by its own counts (what a per-rank loss does) is wrong: the test
/// above could fail.
#[test]
fn per_rank_normalization_is_not_exact() {
    let obj = compile_inline("grpo");
    let m = &obj.compiled.module;
    let params = obj.param_values(&[]).expect("defaults");
    let b = batch(m, 21);
    let whole = obj.evaluate(&b, &params, Backend::Interp).expect("whole");
    let mut rng = Rng(9);
    let naive: f64 = shard_seqs(&mut rng, &b.layout, 2)
        .iter()
        .map(|seqs| {
            let sub = rlo_compiler::split::sub_batch(m, &b, seqs);
            obj.evaluate(&sub.batch, &params, Backend::Interp)
                .expect("rank")
                .loss
        })
        .sum();
    assert!(
        (naive - whole.loss).abs() > 1e-6,
        "{naive} vs {}",
        whole.loss
    );
}

/// Metrics that are not sums or extrema of the ranks' values — a std, a ratio of policy
/// sums, a function of a max — are computed by every rank from all-reduced batch reductions
/// (copies of the metric's nodes: the summed `ratio_mean` shares `batch_sum(ratio)` with the
/// std); a batch quantile of the policy still needs the whole batch (NaN).
#[test]
fn data_parallel_metrics_beyond_sums_are_exact() {
    use rlo_runtime::dataparallel::{RankMerge, ShardPlan};
    let src = "objective dpm() {
    input logp: tok diff
    input old_logp: tok
    input reward: seq
    let ratio = exp(logp - old_logp)
    let adv = reward - group_mean(reward)
    loss batch_mean(-ratio * adv)
    metric ratio_mean = batch_mean(ratio)
    metric ratio_std = batch_std(ratio)
    metric kl_over_ratio = batch_sum(old_logp - logp) / batch_sum(ratio)
    metric spread = log(batch_max(ratio) / batch_min(ratio))
    metric whitened_max = batch_max((ratio - batch_mean(ratio)) / (batch_std(ratio) + 1e-6))
    metric median = batch_quantile(ratio, 0.5)
}
";
    let obj = Objective::compile("dpm.rlo", src, &Default::default()).expect("compiles");
    let plan = ShardPlan::new(&obj).expect("shardable");
    assert_eq!(
        plan.metric_merge(),
        [
            RankMerge::Sum,
            RankMerge::Same,
            RankMerge::Same,
            RankMerge::Same,
            RankMerge::Same,
            RankMerge::Unavailable
        ]
    );
    assert!(check_data_parallel("dpm", &obj).expect("exact"));
}

/// Batch whitening needs the batch mean before the batch std: two all-reduce rounds.
#[test]
fn nested_batch_statistics_take_two_rounds() {
    let src = "objective w() {\n    input logp: tok diff\n    input reward: seq\n    let a = (reward - batch_mean(reward)) / (batch_std(reward) + 1e-6)\n    loss batch_mean(-a * logp)\n    metric longest = batch_max(seq_len)\n}\n";
    let obj = Objective::compile("w.rlo", src, &Default::default()).expect("compiles");
    let plan = rlo_runtime::dataparallel::ShardPlan::new(&obj).expect("shardable");
    assert_eq!(plan.rounds(), 2);
    assert!(check_data_parallel("w", &obj).expect("exact"));
}

#[test]
fn a_batch_quantile_is_refused_for_data_parallel_with_its_location() {
    let src = "objective q() {\n    input logp: tok diff\n    input reward: seq\n    let top = reward > batch_quantile(reward, 0.5)\n    loss batch_mean(-logp * top)\n}\n";
    let obj = Objective::compile("q.rlo", src, &Default::default()).expect("compiles");
    Plan::new(&obj).expect("micro-batches are fine: the quantile is computed on the whole step");
    let err = rlo_runtime::dataparallel::ShardPlan::new(&obj)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("q.rlo:4:"), "{err}");
    assert!(err.contains("data-parallel"), "{err}");
}

/// The shard modules run on the Cranelift backend too (f32: 1e-5 relative); the refusal of a
/// batch covariance of the policy names the file.
#[test]
fn data_parallel_on_the_cpu_backend_and_refusals() {
    let obj = compile_inline("grpo");
    let m = &obj.compiled.module;
    let params = obj.param_values(&[]).expect("defaults");
    let b = batch(m, 77);
    let whole = obj.evaluate(&b, &params, Backend::Interp).expect("whole");
    let plan = rlo_runtime::dataparallel::ShardPlan::new(&obj).expect("shardable");
    let shards: Vec<Batch> = shard_seqs(&mut Rng(5), &b.layout, 3)
        .iter()
        .map(|seqs| rlo_compiler::split::sub_batch(m, &b, seqs).batch)
        .collect();
    let evs = plan
        .evaluate_shards(&shards, &params, Backend::Cpu)
        .expect("cpu shards");
    let loss: f64 = evs.iter().map(|e| e.loss).sum();
    assert!(
        (loss - whole.loss).abs() <= 1e-5 * whole.loss.abs().max(1e-3),
        "{loss} vs {}",
        whole.loss
    );
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stdlib/clip_cov.rlo");
    let text = std::fs::read_to_string(dir).expect("clip_cov.rlo");
    let obj =
        Objective::compile("stdlib/clip_cov.rlo", &text, &Default::default()).expect("compiles");
    let err = rlo_runtime::dataparallel::ShardPlan::new(&obj)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("stdlib/clip_cov.rlo:"), "{err}");
    assert!(err.contains("data-parallel"), "{err}");
    eprintln!("{err}");
}
