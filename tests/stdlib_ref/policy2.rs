//! References of the advantage-family objectives (RLOO, REINFORCE++, OPO, pass@k, risk
//! measures), covariance-selected clipping (Clip-Cov, KL-Cov), DPH-RL, IGPO and ROVER.

use super::batch::{Ctx, Shape};
use super::dual::{c, D};
use super::ops::*;
use super::{Out, Ref};

const LP: &[&str] = &["logp"];

fn cs(v: &[f64]) -> Vec<D> {
    v.iter().map(|&x| c(x)).collect()
}

/// Vanilla verl policy loss with the given sequence advantages, aggregated by `loss_agg_mode`.
fn vanilla(x: &Ctx, adv: &[f64]) -> (D, f64, Tok) {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let (el, eh, cc) = (x.p("eps_low"), x.p("eps_high"), x.p("clip_ratio_c"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], 20.0));
    let per = map_tok(b, |i, t| dual_clip(rho[i][t], adv[i], el, eh, cc));
    let frac = tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i], el, eh));
    (agg(b, &per, x.p("loss_agg_mode")), frac, lp)
}

fn approx_kl(x: &Ctx, lp: &Tok) -> f64 {
    let old = x.tokv("old_logp");
    token_mean(&map_tok(x.b, |i, t| {
        (old[i][t] - lp[i][t]).clamp(-20.0, 20.0)
    }))
    .v
}

const VANILLA: [(&str, f64); 4] = [
    ("eps_low", 0.2),
    ("eps_high", 0.2),
    ("clip_ratio_c", 3.0),
    ("loss_agg_mode", 0.0),
];

fn rloo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old, rf) = (x.tok("logp"), x.tokv("old_logp"), x.tokv("ref_logp"));
    let kl: Vec<f64> = (0..b.b())
        .map(|i| (0..b.len[i]).map(|t| old[i][t] - rf[i][t]).sum())
        .collect();
    let r: Vec<f64> = (0..b.b())
        .map(|i| x.seq("reward")[i] - x.p("beta") * kl[i])
        .collect();
    let a: Vec<f64> = (0..b.b())
        .map(|i| {
            let m = b.members(b.group[i]);
            if m.len() > 1 {
                let others: f64 = m.iter().filter(|&&j| j != i).map(|&j| r[j]).sum();
                r[i] - others / (m.len() - 1) as f64
            } else {
                r[i]
            }
        })
        .collect();
    let adv: Vec<f64> = if x.flag("normalize_advantages") {
        let (m, s) = (mean(&cs(&a)).v, std(&cs(&a), true).v);
        a.iter().map(|z| (z - m) / (s + 1e-4)).collect()
    } else {
        a
    };
    let (el, eh) = (x.p("epsilon"), x.p("epsilon_high"));
    let rho: Vec<D> = (0..b.b())
        .map(|i| (sum(&lp[i]) - (0..b.len[i]).map(|t| old[i][t]).sum::<f64>()).exp())
        .collect();
    let per: Vec<D> = (0..b.b())
        .map(|i| ppo_clip(rho[i], adv[i], el, eh))
        .collect();
    Out {
        loss: mean(&per),
        metrics: vec![
            (
                "clip_frac",
                mean(
                    &(0..b.b())
                        .map(|i| c(f64::from(clipped(rho[i].v, adv[i], el, eh))))
                        .collect::<Vec<_>>(),
                )
                .v,
            ),
            ("kl", mean(&cs(&kl)).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

/// (x − mean)/sqrt(var_unbiased + 1e-8) over all tokens (verl masked_whiten).
fn whiten(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let fl: Vec<D> = a.iter().flatten().map(|&z| c(z)).collect();
    let (m, v) = (mean(&fl).v, var(&fl, true).v);
    a.iter()
        .map(|ai| ai.iter().map(|z| (z - m) / (v + 1e-8).sqrt()).collect())
        .collect()
}

fn reinforce_pp(x: &Ctx) -> Out {
    let b = x.b;
    let (old, rf, r) = (x.tokv("old_logp"), x.tokv("ref_logp"), x.seq("reward"));
    let a: Vec<Vec<f64>> = if x.flag("baseline") {
        let mu = group_bcast(b, &cs(&r), mean);
        whiten(
            &(0..b.b())
                .map(|i| vec![r[i] - mu[i].v; b.len[i]])
                .collect::<Vec<_>>(),
        )
    } else {
        let mut g = Vec::new();
        for i in 0..b.b() {
            let n = b.len[i];
            let mut gi = vec![0.0; n];
            let mut next = 0.0;
            for t in (0..n).rev() {
                let rt = if t == n - 1 { r[i] } else { 0.0 } - x.p("beta") * (old[i][t] - rf[i][t]);
                next = rt + x.p("gamma") * next;
                gi[t] = next;
            }
            g.push(gi);
        }
        whiten(&g)
    };
    let b = x.b;
    let lp = x.tok("logp");
    let (el, eh, cc) = (x.p("eps_low"), x.p("eps_high"), x.p("clip_ratio_c"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], 20.0));
    let per = map_tok(b, |i, t| dual_clip(rho[i][t], a[i][t], el, eh, cc));
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, a[i][t], el, eh)),
            ),
            ("approx_kl", approx_kl(x, &lp)),
        ],
        outputs: vec![("adv", a.concat())],
    }
}

fn opo(x: &Ctx) -> Out {
    let b = x.b;
    let r = x.seq("reward");
    let adv: Vec<f64> = (0..b.b())
        .map(|i| {
            let m = b.members(b.group[i]);
            let num: f64 = m.iter().map(|&j| b.len[j] as f64 * r[j]).sum();
            let den: f64 = m.iter().map(|&j| b.len[j] as f64).sum();
            r[i] - num / den
        })
        .collect();
    let (loss, frac, lp) = vanilla(x, &adv);
    Out {
        loss,
        metrics: vec![("clip_frac", frac), ("approx_kl", approx_kl(x, &lp))],
        outputs: vec![("adv", adv)],
    }
}

/// C(a, m)/C(b, m) = Π_{j<m} (a − j)/(b − j), with C(a, m) = 0 when a < m.
fn binom_ratio(a: f64, bb: f64, m: usize) -> f64 {
    if a < m as f64 {
        return 0.0;
    }
    (0..m).map(|j| (a - j as f64) / (bb - j as f64)).product()
}

fn passk(x: &Ctx) -> Out {
    let b = x.b;
    let r = x.seq("reward");
    let correct = x.seqb("correct");
    let mut adv = vec![0.0; b.b()];
    for g in 0..b.n_groups {
        let m = b.members(g);
        let n = m.len();
        if x.flag("analytic") {
            let k = x.p("k") as usize;
            let cnt = m.iter().filter(|&&i| correct[i]).count() as f64;
            let nf = n as f64;
            let rho = 1.0 - binom_ratio(nf - cnt, nf, k);
            let sigma = (rho * (1.0 - rho)).sqrt();
            for &i in &m {
                adv[i] = if correct[i] {
                    (1.0 - rho) / (sigma + 1e-6)
                } else {
                    (1.0 - rho - binom_ratio(nf - cnt - 1.0, nf - 1.0, k - 1)) / (sigma + 1e-6)
                };
            }
        } else if n >= 2 {
            // The best: highest reward, the later one among ties.
            let best = *m
                .iter()
                .max_by(|&&a, &&bb| r[a].total_cmp(&r[bb]))
                .expect("n >= 2");
            let second = m
                .iter()
                .filter(|&&i| i != best)
                .map(|&i| r[i])
                .fold(f64::NEG_INFINITY, f64::max);
            let s = if x.flag("scale") {
                std(&cs(&m.iter().map(|&i| r[i]).collect::<Vec<_>>()), true).v + 1e-6
            } else {
                1.0
            };
            adv[best] = (r[best] - second) / s;
        }
    }
    let (loss, frac, _) = vanilla(x, &adv);
    Out {
        loss,
        metrics: vec![("clip_frac", frac)],
        outputs: vec![("adv", adv)],
    }
}

/// numpy-linear quantile of plain values.
fn q(xs: &[f64], p: f64) -> f64 {
    quantile(&cs(xs), p).v
}

fn group_rewards(x: &Ctx, g: usize) -> (Vec<usize>, Vec<f64>) {
    let r = x.seq("reward");
    let m = x.b.members(g);
    let v = m.iter().map(|&i| r[i]).collect();
    (m, v)
}

fn riskpo(x: &Ctx) -> Out {
    let b = x.b;
    let (al, be, wu, wm) = (x.p("alpha"), x.p("beta"), x.p("w_up"), x.p("w_mix"));
    let mut adv = vec![0.0; b.b()];
    for g in 0..b.n_groups {
        let (m, v) = group_rewards(x, g);
        let (qa, qb) = (q(&v, al), q(&v, be));
        let sd = std(&cs(&v), true).v;
        for (&i, &s) in m.iter().zip(&v) {
            let pos = |z: f64| z.max(0.0);
            // The catalog's ≡ form (clamp(S, q_α, q_β) − q_β); its sum-of-hinges form differs by
            // rounding where it should be 0, which flips clip indicators of zero advantages.
            let rvar = (s.clamp(qa, qb) - qb) / (be - al + 1e-6);
            let cvar = -pos(qa - s) / al;
            let mixed = (wm * cvar + rvar) / (wm + 1.0);
            let up = pos(s - qb) / (1.0 - be);
            let a = (wu * up + mixed) / (wu + 1.0);
            adv[i] = if x.flag("scale") { a / (sd + 1e-6) } else { a };
        }
    }
    let (loss, frac, _) = vanilla(x, &adv);
    Out {
        loss,
        metrics: vec![("clip_frac", frac)],
        outputs: vec![("adv", adv)],
    }
}

fn cvar_pg(x: &Ctx) -> Out {
    let b = x.b;
    let al = x.p("alpha");
    let mut adv = vec![0.0; b.b()];
    let mut cvars = Vec::new();
    for g in 0..b.n_groups {
        let (m, v) = group_rewards(x, g);
        let qa = q(&v, al);
        for (&i, &s) in m.iter().zip(&v) {
            adv[i] = -(qa - s).max(0.0) / al;
        }
        let tail: Vec<D> = v.iter().filter(|&&s| s <= qa).map(|&s| c(s)).collect();
        cvars.push(mean(&tail));
    }
    let (loss, frac, _) = vanilla(x, &adv);
    Out {
        loss,
        metrics: vec![("clip_frac", frac), ("cvar", mean(&cvars).v)],
        outputs: vec![("adv", adv)],
    }
}

fn rs_grpo(x: &Ctx) -> Out {
    let b = x.b;
    let be = x.p("beta");
    let mut adv = vec![0.0; b.b()];
    for g in 0..b.n_groups {
        let (m, v) = group_rewards(x, g);
        // RS-GRPO code form: b = (LSE(βr) − log G)/β, A = (exp(β(r − b)) − 1)/β. (The softmax
        // form (G·softmax(βr)_i − 1)/β rounds differently: an all-equal group's advantages are
        // then exact zeros instead of ±1e-16, which flips clip indicators.)
        let bv: Vec<D> = v.iter().map(|&s| c(be * s)).collect();
        let base = (logsumexp(&bv).v - (m.len() as f64).ln()) / be;
        for (&i, &s) in m.iter().zip(&v) {
            adv[i] = ((be * (s - base)).exp() - 1.0) / be;
        }
    }
    let (loss, frac, _) = vanilla(x, &adv);
    Out {
        loss,
        metrics: vec![("clip_frac", frac)],
        outputs: vec![("adv", adv)],
    }
}

/// Covariance (A − mean_tok A)(sg logp − mean sg logp) per token, and n = max(⌊ratio·N⌋, 1).
fn cov(x: &Ctx, adv: &[f64], ratio_key: &str) -> (Vec<Vec<f64>>, usize) {
    let b = x.b;
    let lp = x.tokv("logp");
    let ntok = b.n_tokens() as f64;
    let ma: f64 = (0..b.b()).map(|i| adv[i] * b.len[i] as f64).sum::<f64>() / ntok;
    let ml: f64 = lp.iter().flatten().sum::<f64>() / ntok;
    let cv = (0..b.b())
        .map(|i| lp[i].iter().map(|&l| (adv[i] - ma) * (l - ml)).collect())
        .collect();
    let n = ((x.p(ratio_key) * ntok).floor() as usize).max(1);
    (cv, n)
}

/// The `n` largest of the candidate tokens by key (ties: the later token), as a mask.
fn top_n(
    b: &super::batch::Pad,
    key: &[Vec<f64>],
    cand: impl Fn(usize, usize) -> bool,
    n: usize,
) -> Vec<Vec<bool>> {
    let mut list: Vec<(f64, usize, usize, usize)> = Vec::new();
    let mut k = 0;
    for (i, row) in key.iter().enumerate() {
        for (t, &v) in row.iter().enumerate() {
            if cand(i, t) {
                list.push((v, k, i, t));
            }
            k += 1;
        }
    }
    list.sort_by(|a, bb| bb.0.total_cmp(&a.0).then(bb.1.cmp(&a.1)));
    let mut mask: Vec<Vec<bool>> = (0..b.b()).map(|i| vec![false; b.len[i]]).collect();
    for &(_, _, i, t) in list.iter().take(n) {
        mask[i][t] = true;
    }
    mask
}

fn clip_cov(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (el, eh, lb, ub) = (
        x.p("eps_low"),
        x.p("eps_high"),
        x.p("clip_cov_lb"),
        x.p("clip_cov_ub"),
    );
    let rho = map_tok(b, |i, t| (lp[i][t] - old[i][t]).exp());
    let l1 = map_tok(b, |i, t| -adv[i] * rho[i][t]);
    let l2 = map_tok(b, |i, t| -adv[i] * rho[i][t].clamp(1.0 - el, 1.0 + eh));
    let (cv, n) = cov(x, &adv, "clip_cov_ratio");
    let cut = top_n(
        b,
        &cv,
        |i, t| l2[i][t].v <= l1[i][t].v && cv[i][t] > lb && cv[i][t] < ub,
        n,
    );
    let per = map_tok(b, |i, t| {
        if cut[i][t] {
            c(0.0)
        } else {
            l1[i][t].max(l2[i][t])
        }
    });
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![
            ("clip_frac", tok_frac(b, |i, t| cut[i][t])),
            ("ppo_clip_frac", tok_frac(b, |i, t| l2[i][t].v > l1[i][t].v)),
            (
                "approx_kl",
                token_mean(&map_tok(b, |i, t| old[i][t] - lp[i][t])).v,
            ),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn kl_cov(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (cv, k) = cov(x, &adv, "kl_cov_ratio");
    let top = top_n(b, &cv, |_, _| true, k);
    let per = map_tok(b, |i, t| {
        let l = -adv[i] * (lp[i][t] - old[i][t]).exp();
        if top[i][t] {
            l + x.p("ppo_kl_coef") * (lp[i][t] - old[i][t]).abs()
        } else {
            l
        }
    });
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![
            ("kl_frac", tok_frac(b, |i, t| top[i][t])),
            (
                "approx_kl",
                token_mean(&map_tok(b, |i, t| old[i][t] - lp[i][t])).v,
            ),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn dph_rl(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let pef = x.seqb("pef");
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (el, eh, cc, al) = (
        x.p("eps_low"),
        x.p("eps_high"),
        x.p("clip_ratio_c"),
        x.p("alpha"),
    );
    let div = x.p("div");
    let (mut pg, mut f) = (Vec::new(), Vec::new());
    for i in 0..b.b() {
        for t in 0..b.len[i] {
            let lr = lp[i][t] - old[i][t];
            let u = lr.exp();
            if pef[i] {
                f.push(if div == 1.0 {
                    u * u.ln() - (u + 1.0) * ((u + 1.0) / 2.0).ln()
                } else if div == 2.0 {
                    (u.powd(c(1.0 - al)) - (1.0 - al) * u - al) / (al * (al - 1.0))
                } else {
                    u - u.ln() - 1.0
                });
            } else {
                pg.push(dual_clip(
                    ratio(lp[i][t], old[i][t], 20.0),
                    adv[i],
                    el,
                    eh,
                    cc,
                ));
            }
        }
    }
    let fm = mean(&f);
    Out {
        loss: mean(&pg) + x.p("coef") * fm,
        metrics: vec![("divergence", fm.v)],
        outputs: vec![("adv", adv)],
    }
}

fn igpo(x: &Ctx) -> Out {
    let b = x.b;
    let tr = x.turn("turn_reward");
    // Per group: z-score of all its turns' rewards jointly (unbiased std, +1e-6).
    let mut z: Vec<Vec<f64>> = tr.clone();
    for g in 0..b.n_groups {
        let m = b.members(g);
        let all: Vec<D> = m
            .iter()
            .flat_map(|&i| tr[i].iter().map(|&v| c(v)))
            .collect();
        let (mu, sd) = (mean(&all).v, std(&all, true).v);
        for &i in &m {
            for k in 0..b.n_turns[i] {
                z[i][k] = (tr[i][k] - mu) / (sd + 1e-6);
            }
        }
    }
    let ret: Vec<Vec<f64>> = z
        .iter()
        .map(|zi| {
            let mut out = vec![0.0; zi.len()];
            let mut next = 0.0;
            for k in (0..zi.len()).rev() {
                next = zi[k] + x.p("gamma") * next;
                out[k] = next;
            }
            out
        })
        .collect();
    let lp = x.tok("logp");
    let old = x.tokv("old_logp");
    let (el, eh, cc) = (x.p("eps_low"), x.p("eps_high"), x.p("clip_ratio_c"));
    let a = |i: usize, t: usize| ret[i][b.tok_turn[i][t]];
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], 20.0));
    let per = map_tok(b, |i, t| dual_clip(rho[i][t], a(i, t), el, eh, cc));
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![(
            "clip_frac",
            tok_frac(b, |i, t| clipped(rho[i][t].v, a(i, t), el, eh)),
        )],
        outputs: vec![("adv", ret.concat())],
    }
}

/// ROVER: token-mean of (κ(ℓ − ℓ_old) − sg(Â + κ(V_{t+1} − V^old_{t+1})))², the bootstrap 0
/// at a sequence's last token.
fn rover(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let (v, vo) = (x.tokv("value"), x.tokv("old_value"));
    let k = x.p("kappa");
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let boot = |i: usize, t: usize| {
        if t + 1 < b.len[i] {
            k * (v[i][t + 1] - vo[i][t + 1])
        } else {
            0.0
        }
    };
    let q = map_tok(b, |i, t| (lp[i][t] - c(old[i][t])) * c(k));
    let per = map_tok(b, |i, t| {
        let d = q[i][t] - c(adv[i] + boot(i, t));
        d * d
    });
    Out {
        loss: token_mean(&per),
        metrics: vec![
            ("q_mean", token_mean(&q).v),
            (
                "bootstrap_mean",
                token_mean(&map_tok(b, |i, t| c(boot(i, t)))).v,
            ),
        ],
        outputs: vec![("adv", adv)],
    }
}

macro_rules! params {
    ($($extra:expr),* $(,)?) => {{
        const P: &[(&str, f64)] = &[$($extra,)* VANILLA[0], VANILLA[1], VANILLA[2], VANILLA[3]];
        P
    }};
}

pub fn refs() -> Vec<Ref> {
    vec![
        Ref {
            name: "rover",
            shape: Shape::Policy,
            params: &[("kappa", 1.0), ("std_eps", 1e-6)],
            diff: LP,
            f: rover,
            cases: &[&[("kappa", 0.5)]],
        },
        Ref {
            name: "rloo",
            shape: Shape::Policy,
            params: &[
                ("beta", 0.05),
                ("epsilon", 0.2),
                ("epsilon_high", 0.2),
                ("normalize_advantages", 0.0),
            ],
            diff: LP,
            f: rloo,
            cases: &[&[("normalize_advantages", 1.0), ("beta", 0.0)]],
        },
        Ref {
            name: "reinforce_pp",
            shape: Shape::Policy,
            params: params![("beta", 0.001), ("gamma", 1.0), ("baseline", 0.0)],
            diff: LP,
            f: reinforce_pp,
            cases: &[
                &[("baseline", 1.0)],
                &[("gamma", 0.9), ("beta", 0.1), ("loss_agg_mode", 1.0)],
            ],
        },
        Ref {
            name: "opo",
            shape: Shape::Policy,
            params: params![],
            diff: LP,
            f: opo,
            cases: &[&[("loss_agg_mode", 3.0)]],
        },
        Ref {
            name: "passk",
            shape: Shape::Groups4,
            params: params![("k", 4.0), ("analytic", 0.0), ("scale", 1.0)],
            diff: LP,
            f: passk,
            cases: &[
                &[("scale", 0.0)],
                &[("analytic", 1.0), ("k", 2.0)],
                &[("analytic", 1.0), ("k", 3.0)],
            ],
        },
        Ref {
            name: "riskpo",
            shape: Shape::Policy,
            params: params![
                ("alpha", 0.2),
                ("beta", 0.8),
                ("w_up", 1.5),
                ("w_mix", 0.0),
                ("scale", 1.0)
            ],
            diff: LP,
            f: riskpo,
            cases: &[
                &[("w_mix", 1.5), ("w_up", 0.0), ("scale", 0.0)],
                &[("alpha", 0.3), ("beta", 0.6)],
            ],
        },
        Ref {
            name: "cvar_pg",
            shape: Shape::Policy,
            params: params![("alpha", 0.2)],
            diff: LP,
            f: cvar_pg,
            cases: &[&[("alpha", 0.5), ("loss_agg_mode", 2.0)]],
        },
        Ref {
            name: "rs_grpo",
            shape: Shape::Policy,
            params: params![("beta", 2.0)],
            diff: LP,
            f: rs_grpo,
            cases: &[&[("beta", 0.5)]],
        },
        Ref {
            name: "clip_cov",
            shape: Shape::Policy,
            params: &[
                ("eps_low", 0.2),
                ("eps_high", 0.2),
                ("clip_cov_ratio", 2e-4),
                ("clip_cov_lb", 1.0),
                ("clip_cov_ub", 5.0),
                ("std_eps", 1e-6),
                ("loss_agg_mode", 0.0),
            ],
            diff: LP,
            f: clip_cov,
            cases: &[
                &[("clip_cov_ratio", 0.1), ("clip_cov_lb", 0.0)],
                &[("clip_cov_lb", -5.0), ("clip_cov_ub", 0.5)],
            ],
        },
        Ref {
            name: "kl_cov",
            shape: Shape::Policy,
            params: &[
                ("kl_cov_ratio", 2e-4),
                ("ppo_kl_coef", 0.1),
                ("std_eps", 1e-6),
                ("loss_agg_mode", 0.0),
            ],
            diff: LP,
            f: kl_cov,
            cases: &[&[("kl_cov_ratio", 0.2), ("ppo_kl_coef", 1.0)]],
        },
        Ref {
            name: "dph_rl",
            shape: Shape::Policy,
            params: &[
                ("div", 0.0),
                ("alpha", 0.2),
                ("coef", 0.01),
                ("eps_low", 0.2),
                ("eps_high", 0.28),
                ("clip_ratio_c", 3.0),
                ("std_eps", 1e-6),
            ],
            diff: LP,
            f: dph_rl,
            cases: &[
                &[("div", 1.0), ("coef", 0.5)],
                &[("div", 2.0), ("alpha", 0.5), ("coef", 0.5)],
            ],
        },
        Ref {
            name: "igpo",
            shape: Shape::Turns,
            params: params![("gamma", 1.0)],
            diff: LP,
            f: igpo,
            cases: &[&[("gamma", 0.5), ("loss_agg_mode", 2.0)]],
        },
    ]
}
