//! The stdlib functions no objective file uses, checked through one test objective (`SOURCE`)
//! whose loss sums the KL / f-divergence / importance-weight functions (distinct weights) and
//! whose outputs are the remaining advantage, weighting and multi-turn functions.

use super::batch::{Ctx, Shape};
use super::dual::{c, D};
use super::ops::*;
use super::{Out, Ref};

pub const SOURCE: &str = r#"
use std::kl::*
use std::adv::{lite_ppo_adv, normalize_then_sum2, reinforce_pp_adv}
use std::ratio::{tis_token, tis_seq, mis_token, mis_seq}
use std::agg::{trl_grpo_norm, top_entropy_mask, position_discount, per_length, gtpo_adv}
use std::risk::{cvar_upper_adv, rank_penalty_reward}
use std::turns::{igpo_code_adv, turn_position_baseline}

objective libfns() {
    input logp: tok diff
    input old_logp: tok
    input ref_logp: tok
    input rollout_logp: tok
    input entropy: tok
    input reward: seq
    input correct: seq bool
    input turn_reward: turn
    let kl = k1(logp, ref_logp) + 2 * kl_abs(logp, ref_logp) + 3 * k2(logp, ref_logp)
        + 5 * k1_plus(logp, ref_logp) + 7 * k3_plus(logp, ref_logp) + 11 * abs_plus(logp, ref_logp)
        + 0.01 * k3_is(logp, ref_logp, old_logp) + 17 * chi2(logp, ref_logp)
        + 19 * tv(logp, ref_logp) + 23 * hellinger(logp, ref_logp)
    let w = tis_token(logp, rollout_logp, 1.05) + 2 * mis_token(logp, rollout_logp, 0.9, 1.1)
        + 3 * tis_seq(logp, rollout_logp, 1.2) + 4 * mis_seq(logp, rollout_logp, 0.5, 2.0)
    loss trl_grpo_norm(kl + w * logp) + batch_mean(per_length(seq_sum(logp)))
    output lite = lite_ppo_adv(reward)
    output gdpo = normalize_then_sum2(reward, correct, 1.0, 0.5)
    output gtpo = gtpo_adv(reward, entropy, correct)
    output top = float(top_entropy_mask(entropy, 0.3))
    output disc = position_discount(0.9)
    output cvar_up = cvar_upper_adv(reward, 0.7)
    output rank_pen = rank_penalty_reward(reward, old_logp, 0.25)
    output igpo_code = igpo_code_adv(turn_reward)
    output rpp = reinforce_pp_adv(reward, 0.9)
    output turn_pos = turn_position_baseline(turn_reward)
}
"#;

fn cs(v: &[f64]) -> Vec<D> {
    v.iter().map(|&x| c(x)).collect()
}

fn st_k2(lp: D, rf: f64, f: D) -> D {
    let b = 0.5 * (lp - rf).sq();
    b - b.sg() + f.sg()
}

fn loss(x: &Ctx) -> D {
    let b = x.b;
    let (lp, old, rf, ro) = (
        x.tok("logp"),
        x.tokv("old_logp"),
        x.tokv("ref_logp"),
        x.tokv("rollout_logp"),
    );
    let seq_w: Vec<(f64, f64)> = (0..b.b())
        .map(|i| {
            let s: f64 = (0..b.len[i]).map(|t| lp[i][t].v - ro[i][t]).sum();
            let w = s.clamp(-20.0, 20.0).exp();
            (w.min(1.2), if (0.5..=2.0).contains(&w) { w } else { 0.0 })
        })
        .collect();
    let per = map_tok(b, |i, t| {
        let (l, r) = (lp[i][t], rf[i][t]);
        let d = l - r;
        let k3v = k3(l, r, true);
        let kl = d
            + 2.0 * d.abs()
            + 3.0 * (0.5 * d.sq())
            + 5.0 * st_k2(l, r, d)
            + 7.0 * st_k2(l, r, k3v)
            + 11.0 * st_k2(l, r, d.abs())
            + 0.01 * (k3(l, r, false) * (l - old[i][t]).exp())
            + 17.0 * d.exp_m1().sq()
            + 19.0 * (0.5 * d.exp_m1().abs())
            + 23.0 * (0.5 * (0.5 * d).exp_m1().sq());
        let wt = (l.v - ro[i][t]).clamp(-20.0, 20.0).exp();
        let w = wt.min(1.05)
            + 2.0 * if (0.9..=1.1).contains(&wt) { wt } else { 0.0 }
            + 3.0 * seq_w[i].0
            + 4.0 * seq_w[i].1;
        kl + w * l
    });
    let grpo_norm = mean(
        &(0..b.b())
            .map(|i| sum(&per[i]) / b.len[i].max(1) as f64)
            .collect::<Vec<_>>(),
    );
    grpo_norm
        + mean(
            &(0..b.b())
                .map(|i| sum(&lp[i]) / b.len[i] as f64)
                .collect::<Vec<_>>(),
        )
}

fn libfns(x: &Ctx) -> Out {
    let b = x.b;
    let r = x.seq("reward");
    let corr = x.seqb("correct");
    let h = x.tokv("entropy");
    let rd = cs(&r);
    let mu = group_bcast(b, &rd, mean);
    let sd_b = std(&rd, true).v;
    let lite: Vec<f64> = (0..b.b())
        .map(|i| (r[i] - mu[i].v) / (sd_b + 1e-4))
        .collect();
    let z = |v: &[f64]| -> Vec<f64> {
        let vd = cs(v);
        let (m, s) = (
            group_bcast(b, &vd, mean),
            group_bcast(b, &vd, |xs| std(xs, true)),
        );
        (0..b.b())
            .map(|i| (v[i] - m[i].v) / (s[i].v + 1e-4))
            .collect()
    };
    let cf: Vec<f64> = corr.iter().map(|&k| f64::from(k)).collect();
    let (z1, z2) = (z(&r), z(&cf));
    let s: Vec<f64> = (0..b.b()).map(|i| z1[i] + 0.5 * z2[i]).collect();
    let (sm, ss) = (mean(&cs(&s)).v, std(&cs(&s), true).v);
    let gdpo: Vec<f64> = s.iter().map(|v| (v - sm) / (ss + 1e-4)).collect();

    // GTPO: per-position sums over the group's alive correct / incorrect sequences.
    let mut rt: Vec<Vec<f64>> = (0..b.b()).map(|i| vec![0.0; b.len[i]]).collect();
    for i in 0..b.b() {
        let m = b.members(b.group[i]);
        for t in 0..b.len[i] {
            let alive: Vec<usize> = m.iter().copied().filter(|&j| b.len[j] > t).collect();
            let d = alive.iter().filter(|&&j| corr[j]).count() as f64;
            let hh = alive.iter().filter(|&&j| !corr[j]).count() as f64;
            let sp: f64 = alive.iter().filter(|&&j| corr[j]).map(|&j| h[j][t]).sum();
            let sn: f64 = alive
                .iter()
                .filter(|&&j| !corr[j])
                .map(|&j| 1.0 / h[j][t])
                .sum();
            rt[i][t] = if corr[i] {
                r[i] + 0.1 * (h[i][t] / sp * d)
            } else {
                -1.0 - 0.1 * ((1.0 / h[i][t]) / sn * hh)
            };
        }
    }
    let mut gtpo = rt.clone();
    for g in 0..b.n_groups {
        for want in [true, false] {
            let set: Vec<(usize, usize)> = b
                .members(g)
                .into_iter()
                .filter(|&i| corr[i] == want)
                .flat_map(|i| (0..b.len[i]).map(move |t| (i, t)))
                .collect();
            let vals: Vec<D> = set.iter().map(|&(i, t)| c(rt[i][t])).collect();
            let (m, sd) = (mean(&vals).v, std(&vals, true).v);
            for &(i, t) in &set {
                gtpo[i][t] = (rt[i][t] - m) / (sd + 1e-6);
            }
        }
    }
    let hq = quantile(&cs(&h.concat()), 1.0 - 0.3).v;
    let top: Vec<f64> = h.concat().iter().map(|&v| f64::from(v >= hq)).collect();
    let disc: Vec<f64> = (0..b.b())
        .flat_map(|i| (0..b.len[i]).map(|t| 0.9f64.powi(t as i32)))
        .collect();
    let mut cvar_up = vec![0.0; b.b()];
    let mut rank_pen = vec![0.0; b.b()];
    let old = x.tokv("old_logp");
    for g in 0..b.n_groups {
        let m = b.members(g);
        let v: Vec<f64> = m.iter().map(|&i| r[i]).collect();
        let q = quantile(&cs(&v), 0.7).v;
        let ml: Vec<f64> = m
            .iter()
            .map(|&i| old[i].iter().sum::<f64>() / b.len[i] as f64)
            .collect();
        for (k, &i) in m.iter().enumerate() {
            cvar_up[i] = (r[i] - q).max(0.0) / (1.0 - 0.7);
            let rank = (0..m.len())
                .filter(|&j| ml[j] < ml[k] || (ml[j] == ml[k] && j < k))
                .count() as f64;
            rank_pen[i] = r[i] * (1.0 - 0.25 * rank / m.len() as f64);
        }
    }
    // IGPO code form: turn rewards on each turn's last token, reverse cumsum, minus the mean over
    // the group's sequences alive at the position.
    let tr = x.turn("turn_reward");
    let ret: Vec<Vec<f64>> = (0..b.b())
        .map(|i| {
            let tt = &b.tok_turn[i];
            let n = b.len[i];
            let mut out = vec![0.0; n];
            let mut acc = 0.0;
            for t in (0..n).rev() {
                if t + 1 == n || tt[t + 1] != tt[t] {
                    acc += tr[i][tt[t]];
                }
                out[t] = acc;
            }
            out
        })
        .collect();
    let igpo: Vec<f64> = (0..b.b())
        .flat_map(|i| {
            let m = b.members(b.group[i]);
            let ret = &ret;
            (0..b.len[i]).map(move |t| {
                let alive: Vec<f64> = m
                    .iter()
                    .filter(|&&j| b.len[j] > t)
                    .map(|&j| ret[j][t])
                    .collect();
                ret[i][t] - alive.iter().sum::<f64>() / alive.len() as f64
            })
        })
        .collect();
    // REINFORCE++: returns (γ = 0.9) of the reward on the last token, whitened over all tokens.
    let g: Vec<f64> = (0..b.b())
        .flat_map(|i| {
            let (n, r) = (b.len[i], &r);
            (0..n).map(move |t| r[i] * 0.9f64.powi((n - 1 - t) as i32))
        })
        .collect();
    let (gm, gv) = (mean(&cs(&g)).v, var(&cs(&g), true).v);
    let rpp: Vec<f64> = g.iter().map(|v| (v - gm) / (gv + 1e-8).sqrt()).collect();
    // Per-turn-position baseline: minus the mean of the group's turns with the same index.
    let turn_pos: Vec<f64> = (0..b.b())
        .flat_map(|i| {
            let (m, tr) = (b.members(b.group[i]), &tr);
            (0..b.n_turns[i]).map(move |k| {
                let same: Vec<f64> = m
                    .iter()
                    .filter(|&&j| b.n_turns[j] > k)
                    .map(|&j| tr[j][k])
                    .collect();
                tr[i][k] - same.iter().sum::<f64>() / same.len() as f64
            })
        })
        .collect();
    Out {
        loss: loss(x),
        metrics: vec![],
        outputs: vec![
            ("lite", lite),
            ("gdpo", gdpo),
            ("gtpo", gtpo.concat()),
            ("top", top),
            ("disc", disc),
            ("cvar_up", cvar_up),
            ("rank_pen", rank_pen),
            ("igpo_code", igpo),
            ("rpp", rpp),
            ("turn_pos", turn_pos),
        ],
    }
}

pub fn refs() -> Vec<Ref> {
    vec![Ref {
        name: "libfns",
        shape: Shape::Turns,
        params: &[],
        diff: &["logp"],
        f: libfns,
        cases: &[],
    }]
}
