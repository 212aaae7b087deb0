//! CPU backend benchmark: `cargo bench -p rlo-runtime --bench cpu` (release build).
//!
//! For grpo, dapo and gspo from `stdlib/` on B×T batches (ragged: lengths uniform in [T/2, T],
//! groups of 8), prints tokens/s (valid tokens) of:
//! - the Cranelift backend (f32) with 1 thread and with all cores, on batches already bound to
//!   its buffers (binding = f64 → f32 conversion, not timed);
//! - the reference interpreter (f64), timed on the first 128 sequences (`RLO_BENCH_INTERP_SEQS`) and extrapolated;
//! - for grpo, a hand-written straightforward Rust loop (f32) computing the same loss and
//!   gradient (default parameters) in one pass, measured in the same run: for `grpo_lean` the
//!   loss and gradient only, for stdlib `grpo` also its 6 metrics and the advantages output.
//!
//! Then the JIT compile time of grpo (emit + Cranelift + finalize, uncached).
//! `RLO_BENCH_QUICK=1` runs only the small size (for CI smoke runs); `RLO_BENCH_ONLY=<objective>`
//! runs one objective (for profiling, e.g. under `perf record`); `RLO_BENCH_INTERP_SEQS=<n>` sets
//! the number of sequences the interpreter is timed on (default 128).

use rlo_compiler::back::clif::ClifOptions;
use rlo_compiler::{Batch, Compiled, Layout};
use rlo_runtime::cpu::{Bound, CpuKernel};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn source(name: &str) -> String {
    let p = format!("{}/../stdlib/{name}.rlo", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Exactly the hand loop's formula: stdlib grpo at its defaults with loss_agg_mode 2 fixed and
/// without metrics or outputs (stdlib grpo selects among 4 aggregations at run time and
/// computes 6 metrics and the advantages as well).
const GRPO_LEAN: &str = "
use std::adv::grpo_adv
use std::ratio::{token_ratio, dual_clip}
use std::kl::k3_verl
use std::agg::seq_mean_token_mean
objective grpo_lean(eps: f32 = 0.2, beta: f32 = 0.04) {
    input logp: tok diff
    input old_logp: tok
    input ref_logp: tok
    input reward: seq
    let adv = grpo_adv(reward, 1e-6)
    let ratio = token_ratio(logp, old_logp, 20)
    loss seq_mean_token_mean(dual_clip(ratio, adv, eps, eps, 3) + beta * k3_verl(logp, ref_logp))
}
";

fn compile(name: &str) -> Compiled {
    let text = if name == "grpo_lean" {
        GRPO_LEAN.to_string()
    } else {
        source(name)
    };
    rlo_compiler::compile(&format!("stdlib/{name}.rlo"), &text, &Default::default())
        .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)))
}

fn make_batch(b: usize, t: usize, seed: u64) -> Batch {
    let mut r = Rng(seed | 1);
    let lengths: Vec<usize> = (0..b)
        .map(|_| t / 2 + (r.next() as usize) % (t / 2 + 1))
        .collect();
    let groups: Vec<u32> = (0..b).map(|i| (i / 8) as u32).collect();
    let layout = Layout::single_turn(&lengths, groups);
    let n = layout.n_tokens();
    let mut values = BTreeMap::new();
    let mut tok =
        |r: &mut Rng, lo: f64, w: f64| (0..n).map(|_| lo + w * r.unit()).collect::<Vec<_>>();
    let lp = tok(&mut r, -3.0, 2.9);
    let old: Vec<f64> = lp.iter().map(|&x| x + 0.3 * (r.unit() - 0.5)).collect();
    let rf: Vec<f64> = lp.iter().map(|&x| x + 0.3 * (r.unit() - 0.5)).collect();
    values.insert("logp".into(), lp);
    values.insert("old_logp".into(), old);
    values.insert("ref_logp".into(), rf);
    values.insert(
        "reward".into(),
        (0..b).map(|_| f64::from(r.unit() < 0.4)).collect(),
    );
    let _ = &mut tok;
    Batch { layout, values }
}

fn restrict(batch: &Batch, c: &Compiled) -> Batch {
    let mut b = batch.clone();
    b.values
        .retain(|k, _| c.module.inputs.iter().any(|i| &i.name == k));
    b
}

/// The first `n` sequences (whole groups of 8) of a batch.
fn prefix(batch: &Batch, n: usize) -> Batch {
    let l = &batch.layout;
    let n = n.min(l.n_seqs());
    let lengths: Vec<usize> = (0..n)
        .map(|s| l.seq_offsets[s + 1] - l.seq_offsets[s])
        .collect();
    let layout = Layout::single_turn(&lengths, l.seq_group[..n].to_vec());
    let nt = layout.n_tokens();
    let values = batch
        .values
        .iter()
        .map(|(k, v)| {
            let keep = if v.len() == l.n_tokens() { nt } else { n };
            (k.clone(), v[..keep].to_vec())
        })
        .collect();
    Batch { layout, values }
}

fn time<F: FnMut()>(reps: usize, mut f: F) -> Duration {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Hand-written GRPO (stdlib grpo.rlo, default parameters: group-normalized advantages with
/// unbiased std + 1e-6, log-ratio clamp ±20, PPO clip 0.2/0.2, dual clip c = 3, verl's clamped
/// k3 with β = 0.04, seq-mean-token-mean): loss and d loss / d logp, f32, one pass over tokens.
///
/// With `full`, also what stdlib `grpo` returns besides the loss: its 6 metrics (clip_frac,
/// clip_frac_lower, approx_kl, kl, ratio_mean, ratio_max, in `metrics`) and the advantages (in
/// `adv`), so that the `grpo` row compares equal work.
#[allow(clippy::too_many_arguments)]
fn hand_grpo(
    lp: &[f32],
    old: &[f32],
    rf: &[f32],
    reward: &[f32],
    off: &[u32],
    group: &[u32],
    n_groups: usize,
    grad: &mut [f32],
    full: Option<(&mut [f32; 6], &mut [f32])>,
) -> f32 {
    let b = reward.len();
    let mut gs = vec![0f32; n_groups];
    let mut gn = vec![0f32; n_groups];
    for s in 0..b {
        let g = group[s] as usize;
        gs[g] += reward[s];
        gn[g] += 1.0;
    }
    let mean: Vec<f32> = gs.iter().zip(&gn).map(|(s, n)| s / n).collect();
    let mut gv = vec![0f32; n_groups];
    for s in 0..b {
        let g = group[s] as usize;
        gv[g] += (reward[s] - mean[g]).powi(2);
    }
    let std: Vec<f32> = gv
        .iter()
        .zip(&gn)
        .map(|(v, &n)| if n > 1.0 { (v / (n - 1.0)).sqrt() } else { 0.0 })
        .collect();
    let nonempty = (0..b).filter(|&s| off[s + 1] > off[s]).count().max(1) as f32;
    let mut loss = 0f32;
    let want_metrics = full.is_some();
    let mut ms = [0f32; 5];
    let mut rmax = f32::NEG_INFINITY;
    let mut advs = vec![0f32; if want_metrics { b } else { 0 }];
    for s in 0..b {
        let g = group[s] as usize;
        let a = (reward[s] - mean[g]) / (std[g] + 1e-6);
        if want_metrics {
            advs[s] = a;
        }
        let (t0, t1) = (off[s] as usize, off[s + 1] as usize);
        let inv = 1.0 / ((t1 - t0) as f32 + 1e-8);
        let w = inv / nonempty;
        let mut acc = 0f32;
        for t in t0..t1 {
            let d = lp[t] - old[t];
            let ratio = d.clamp(-20.0, 20.0).exp();
            let dr = if (-20.0..=20.0).contains(&d) {
                ratio
            } else {
                0.0
            };
            let u = -a * ratio;
            let in_clip = (0.8..=1.2).contains(&ratio);
            let c = -a * ratio.clamp(0.8, 1.2);
            let du = -a;
            let dc = if in_clip { -a } else { 0.0 };
            let (ppo, dppo) = if u > c {
                (u, du)
            } else if c > u {
                (c, dc)
            } else {
                (u, 0.5 * (du + dc))
            };
            let (l, dl) = if a < 0.0 {
                let cap = -a * 3.0;
                if cap < ppo {
                    (cap, 0.0)
                } else if cap > ppo {
                    (ppo, dppo)
                } else {
                    (ppo, 0.5 * dppo)
                }
            } else {
                (ppo, dppo)
            };
            let x = rf[t] - lp[t];
            let xc = x.clamp(-20.0, 20.0);
            let ex = xc.exp();
            let k0 = ex - xc - 1.0;
            let k = k0.clamp(-10.0, 10.0);
            let dk = if (-10.0..=10.0).contains(&k0) && (-20.0..=20.0).contains(&x) {
                -(ex - 1.0)
            } else {
                0.0
            };
            acc += l + 0.04 * k;
            grad[t] = w * (dl * dr + 0.04 * dk);
            if want_metrics {
                ms[0] += f32::from(u8::from(c > u));
                ms[1] += f32::from(u8::from(a < 0.0 && ppo > -a * 3.0));
                ms[2] += (old[t] - lp[t]).clamp(-20.0, 20.0);
                ms[3] += k;
                ms[4] += ratio;
                rmax = rmax.max(ratio);
            }
        }
        loss += acc * inv;
    }
    if let Some((metrics, adv)) = full {
        let nt = (lp.len() as f32).max(1.0);
        for (m, x) in metrics.iter_mut().zip(ms) {
            *m = x / nt;
        }
        metrics[5] = if lp.is_empty() { 0.0 } else { rmax };
        adv.copy_from_slice(&advs);
    }
    loss / nonempty
}

fn mtok(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    let quick = std::env::var("RLO_BENCH_QUICK").is_ok();
    let only = std::env::var("RLO_BENCH_ONLY").ok();
    // The interpreter is timed on a prefix of the batch (it is ~20-40x slower). 32 sequences
    // proved too small: its rate then varied 2-4x between runs and sizes (allocator effects on
    // its per-node arrays dominate), so 128 sequences by default.
    let interp_seqs: usize = std::env::var("RLO_BENCH_INTERP_SEQS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sizes: &[(usize, usize)] = if quick {
        &[(64, 512)]
    } else {
        &[(256, 2048), (1024, 4096)]
    };
    println!(
        "threads available: {threads}; figures in million valid tokens per second (best of N)"
    );
    println!("| objective | B×T | tokens | cpu 1 thr | cpu {threads} thr | interp (extrap.) | hand loop | cpu1/hand | cpu1/interp |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &(b, t) in sizes {
        let full = make_batch(b, t, 7);
        let n = full.layout.n_tokens();
        let reps = if n > 1_000_000 { 3 } else { 5 };
        for name in ["grpo", "grpo_lean", "dapo", "gspo"] {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let c = compile(name);
            let batch = restrict(&full, &c);
            let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
            let k = CpuKernel::compile(&c.module, &c.schedule, ClifOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut bound = Bound::<f32>::new(&k, &c.module, &batch).expect("bind");
            let t1 = time(reps, || k.run(&mut bound, &params, 1).expect("run"));
            let tn = time(reps, || k.run(&mut bound, &params, threads).expect("run"));
            let cpu_eval = bound.read(&k);
            let sub = prefix(&batch, interp_seqs);
            let ns = sub.layout.n_tokens();
            let ti = time(2, || {
                interp(&c, &sub, &params);
            });
            let interp_rate = mtok(ns, ti);
            let (hand, ratio_hand) = if name.starts_with("grpo") {
                let f = |k: &str| {
                    batch.values[k]
                        .iter()
                        .map(|&x| x as f32)
                        .collect::<Vec<f32>>()
                };
                let (lp, old, rf, rw) = (f("logp"), f("old_logp"), f("ref_logp"), f("reward"));
                let off: Vec<u32> = batch.layout.seq_offsets.iter().map(|&x| x as u32).collect();
                let grp = batch.layout.seq_group.clone();
                let mut grad = vec![0f32; n];
                let mut loss = 0.0;
                let mut metrics = [0f32; 6];
                let mut adv = vec![0f32; b];
                let full = name == "grpo";
                let th = time(reps, || {
                    loss = hand_grpo(
                        &lp,
                        &old,
                        &rf,
                        &rw,
                        &off,
                        &grp,
                        batch.layout.n_groups,
                        &mut grad,
                        full.then_some((&mut metrics, &mut adv[..])),
                    );
                });
                if full {
                    let mdiff = cpu_eval
                        .metrics
                        .iter()
                        .zip(&metrics)
                        .map(|(a, &b)| (a - f64::from(b)).abs() / a.abs().max(1e-3))
                        .fold(0.0, f64::max);
                    let adiff = cpu_eval.outputs.first().map_or(f64::NAN, |o| {
                        o.iter()
                            .zip(&adv)
                            .map(|(a, &b)| (a - f64::from(b)).abs())
                            .fold(0.0, f64::max)
                    });
                    eprintln!("{name} {b}x{t}: hand vs cpu: metrics max rel diff {mdiff:e}, adv max diff {adiff:e}");
                }
                let gdiff = cpu_eval
                    .grads
                    .first()
                    .map(|g| {
                        g.iter()
                            .zip(&grad)
                            .map(|(a, &b)| (a - f64::from(b)).abs())
                            .fold(0.0, f64::max)
                    })
                    .unwrap_or(f64::NAN);
                eprintln!(
                    "{name} {b}x{t}: hand loss {loss}, cpu loss {}, max |grad diff| {gdiff:e}",
                    cpu_eval.loss
                );
                (
                    format!("{:.1}", mtok(n, th)),
                    format!("{:.2}", th.as_secs_f64() / t1.as_secs_f64()),
                )
            } else {
                ("—".into(), "—".into())
            };
            println!(
                "| {name} | {b}×{t} | {n} | {:.1} | {:.1} | {:.2} | {hand} | {ratio_hand} | {:.0}× |",
                mtok(n, t1),
                mtok(n, tn),
                interp_rate,
                mtok(n, t1) / interp_rate
            );
        }
    }
    let c = compile("grpo");
    let best = (0..5)
        .map(|_| {
            CpuKernel::compile(&c.module, &c.schedule, ClifOptions::default())
                .expect("compiles")
                .compile_time
        })
        .min()
        .unwrap_or_default();
    println!(
        "\nJIT compile time of grpo (emit + Cranelift + finalize, uncached, best of 5): {:.1} ms",
        best.as_secs_f64() * 1e3
    );
}

fn interp(c: &Compiled, b: &Batch, params: &[f64]) {
    rlo_compiler::back::interp::evaluate(&c.module, &c.schedule, b, params).expect("interpreter");
}
