//! References of the clipped-surrogate family: GRPO, DAPO, GSPO(-token), PPO, Dr.GRPO, BNPO,
//! GMPO, CISPO, SAPO, GPG, LUSPO, VESPO, grpo_entropy.

use super::batch::{Ctx, Shape};
use super::dual::{c, D};
use super::ops::*;
use super::{Out, Ref};

const INF: f64 = f64::INFINITY;
const LP: &[&str] = &["logp"];

fn approx_kl(x: &Ctx, lp: &Tok) -> f64 {
    let old = x.tokv("old_logp");
    token_mean(&map_tok(x.b, |i, t| {
        (old[i][t] - lp[i][t]).clamp(-20.0, 20.0)
    }))
    .v
}

fn grpo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old, rf) = (x.tok("logp"), x.tokv("old_logp"), x.tokv("ref_logp"));
    let adv = grpo_adv(
        b,
        &x.seq("reward"),
        x.p("std_eps"),
        x.flag("unbiased"),
        x.flag("scale_adv"),
    );
    let (el, eh, cc) = (x.p("eps"), x.p("eps_high"), x.p("clip_ratio_c"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], x.p("lr_clamp")));
    let kl = map_tok(b, |i, t| k3(lp[i][t], rf[i][t], x.flag("k3_clamp")));
    let per = map_tok(b, |i, t| {
        dual_clip(rho[i][t], adv[i], el, eh, cc) + x.p("beta") * kl[i][t]
    });
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i], el, eh)),
            ),
            (
                "clip_frac_lower",
                tok_frac(b, |i, t| {
                    adv[i] < 0.0 && ppo_clip(rho[i][t], adv[i], el, eh).v > -adv[i] * cc
                }),
            ),
            ("approx_kl", approx_kl(x, &lp)),
            ("kl", token_mean(&kl).v),
            ("ratio_mean", token_mean(&rho).v),
            ("ratio_max", maxd(&flat(&rho)).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn dapo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let (lmax, buf, pen) = (
        x.p("max_resp_len"),
        x.p("overlong_buffer"),
        x.p("overlong_penalty"),
    );
    let r: Vec<f64> = (0..b.b())
        .map(|i| {
            let exceed = b.len[i] as f64 - (lmax - buf);
            x.seq("reward")[i] + (-exceed / buf * pen).min(0.0)
        })
        .collect();
    let adv = grpo_adv(b, &r, x.p("std_eps"), true, true);
    let (el, eh, cc) = (x.p("eps_low"), x.p("eps_high"), x.p("clip_ratio_c"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], x.p("lr_clamp")));
    let rd = consts_of(&r);
    let sd = per_group(b, &rd, |xs| std(xs, true));
    let keep = |g: usize| !x.flag("filter_groups") || sd[g].v > 0.0;
    let kept: Vec<D> = (0..b.b())
        .filter(|&i| keep(b.group[i]))
        .flat_map(|i| (0..b.len[i]).map(move |t| (i, t)))
        .map(|(i, t)| dual_clip(rho[i][t], adv[i], el, eh, cc))
        .collect();
    let kept_groups = (0..b.n_groups).filter(|&g| keep(g)).count() as f64 / b.n_groups as f64;
    Out {
        loss: mean(&kept),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i], el, eh)),
            ),
            ("approx_kl", approx_kl(x, &lp)),
            ("ratio_mean", token_mean(&rho).v),
            ("kept_groups", kept_groups),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn consts_of(v: &[f64]) -> Vec<D> {
    v.iter().map(|&x| c(x)).collect()
}

/// Sequence mean Σ_t x / max(|y|, 1).
fn seq_mean(x: &[D]) -> D {
    sum(x) / (x.len().max(1) as f64)
}

fn gspo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old, rf) = (x.tok("logp"), x.tokv("old_logp"), x.tokv("ref_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (el, eh) = (x.p("eps_low"), x.p("eps_high"));
    let s: Vec<D> = (0..b.b())
        .map(|i| {
            seq_mean(
                &(0..b.len[i])
                    .map(|t| lp[i][t] - old[i][t])
                    .collect::<Vec<_>>(),
            )
            .exp()
        })
        .collect();
    let nonempty: Vec<usize> = (0..b.b()).filter(|&i| b.len[i] > 0).collect();
    let per: Vec<D> = nonempty
        .iter()
        .map(|&i| {
            let kl: Vec<D> = (0..b.len[i])
                .map(|t| k3(lp[i][t], rf[i][t], x.flag("k3_clamp")))
                .collect();
            ppo_clip(s[i], adv[i], el, eh) + x.p("beta") * seq_mean(&kl)
        })
        .collect();
    let frac =
        |f: &dyn Fn(usize) -> f64| mean(&nonempty.iter().map(|&i| c(f(i))).collect::<Vec<_>>()).v;
    Out {
        loss: mean(&per),
        metrics: vec![
            (
                "clip_frac",
                frac(&|i| f64::from(clipped(s[i].v, adv[i], el, eh))),
            ),
            ("approx_kl", approx_kl(x, &lp)),
            ("seq_ratio_mean", frac(&|i| s[i].v)),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn gspo_token(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old, a) = (x.tok("logp"), x.tokv("old_logp"), x.tokv("adv"));
    let (el, eh) = (x.p("eps_low"), x.p("eps_high"));
    let s = map_tok(b, |i, t| {
        let m = seq_mean(
            &(0..b.len[i])
                .map(|u| lp[i][u] - old[i][u])
                .collect::<Vec<_>>(),
        );
        (lp[i][t] - lp[i][t].sg() + m.sg()).min(c(x.p("cap"))).exp()
    });
    let per = map_tok(b, |i, t| ppo_clip(s[i][t], a[i][t], el, eh));
    Out {
        loss: agg(b, &per, 2.0),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(s[i][t].v, a[i][t], el, eh)),
            ),
            ("approx_kl", approx_kl(x, &lp)),
            ("seq_ratio_mean", token_mean(&s).v),
        ],
        outputs: vec![],
    }
}

fn ppo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let (v, r) = (x.tokv("value"), x.seq("reward"));
    let (g, lam) = (x.p("gamma"), x.p("lam"));
    // GAE by a reverse loop, then whitening over all tokens (unbiased var, +1e-8).
    let mut a: Vec<Vec<f64>> = Vec::new();
    for i in 0..b.b() {
        let n = b.len[i];
        let mut ai = vec![0.0; n];
        let mut next = 0.0;
        for t in (0..n).rev() {
            let rt = if t == n - 1 { r[i] } else { 0.0 };
            // V_{t+1}: 0 after the last token
            let nv = if t + 1 < n { v[i][t + 1] } else { 0.0 };
            next = rt + g * nv - v[i][t] + g * lam * next;
            ai[t] = next;
        }
        a.push(ai);
    }
    let fl: Vec<D> = a.iter().flatten().map(|&z| c(z)).collect();
    let (m, var) = (mean(&fl).v, var(&fl, true).v);
    let adv: Vec<Vec<f64>> = a
        .iter()
        .map(|ai| ai.iter().map(|z| (z - m) / (var + 1e-8).sqrt()).collect())
        .collect();
    let (el, eh, cc) = (x.p("eps_low"), x.p("eps_high"), x.p("clip_ratio_c"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], x.p("lr_clamp")));
    let per = map_tok(b, |i, t| dual_clip(rho[i][t], adv[i][t], el, eh, cc));
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i][t], el, eh)),
            ),
            (
                "clip_frac_lower",
                tok_frac(b, |i, t| {
                    adv[i][t] < 0.0 && ppo_clip(rho[i][t], adv[i][t], el, eh).v > -adv[i][t] * cc
                }),
            ),
            ("approx_kl", approx_kl(x, &lp)),
            ("ratio_mean", token_mean(&rho).v),
        ],
        outputs: vec![("adv", adv.concat())],
    }
}

fn dr_grpo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), 0.0, true, false);
    let (el, eh, cc) = (x.p("eps_low"), x.p("eps_high"), x.p("clip_ratio_c"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], x.p("lr_clamp")));
    let total = sum(&flat(&map_tok(b, |i, t| {
        dual_clip(rho[i][t], adv[i], el, eh, cc)
    })));
    let ml = x.p("max_len");
    let loss = if ml > 0.0 {
        total / (b.b() as f64 * ml)
    } else {
        total / b.max_len() as f64
    };
    Out {
        loss,
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i], el, eh)),
            ),
            ("approx_kl", approx_kl(x, &lp)),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn bnpo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old, rf) = (x.tok("logp"), x.tokv("old_logp"), x.tokv("ref_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), 1e-4, true, true);
    let (el, eh, delta) = (x.p("epsilon"), x.p("epsilon_high"), x.p("delta"));
    let rho = map_tok(b, |i, t| (lp[i][t] - old[i][t]).exp());
    let kl = map_tok(b, |i, t| k3(lp[i][t], rf[i][t], false));
    let per = map_tok(b, |i, t| {
        // TRL: coef_2 = clamp(ρ); coef_1 = clamp(ρ, max=δ); L = −min(coef_1·A, coef_2·A) + β·k3.
        let c1 = rho[i][t].clamp(-INF, delta);
        let c2 = rho[i][t].clamp(1.0 - el, 1.0 + eh);
        -((c1 * adv[i]).min(c2 * adv[i])) + x.p("beta") * kl[i][t]
    });
    Out {
        loss: sum(&flat(&per)) / (b.n_tokens().max(1) as f64),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i], el, eh)),
            ),
            ("kl", token_mean(&kl).v),
            ("ratio_mean", token_mean(&rho).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn gmpo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (el, eh) = (x.p("eps_low"), x.p("eps_high"));
    let mut losses = Vec::new();
    let mut rs = Vec::new();
    for i in 0..b.b() {
        let sa = c(if adv[i] > 0.0 {
            1.0
        } else if adv[i] < 0.0 {
            -1.0
        } else {
            0.0
        });
        let n = b.len[i] as f64 + 1e-8;
        let dstar: Vec<D> = (0..b.len[i])
            .map(|t| {
                let d = lp[i][t] - old[i][t];
                sa * (sa * d).min(sa * d.clamp(-el, eh))
            })
            .collect();
        let r = (sum(&dstar) / n).exp();
        let abar = sum(&consts_of(&vec![adv[i]; b.len[i]])) / n;
        losses.push(-abar * r);
        rs.push(r);
    }
    Out {
        loss: mean(&losses),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| {
                    let d = lp[i][t].v - old[i][t];
                    d < -el || d > eh
                }),
            ),
            (
                "approx_kl",
                token_mean(&map_tok(b, |i, t| old[i][t] - lp[i][t])).v,
            ),
            ("seq_ratio_mean", mean(&rs).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn cispo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (el, eh, cap, one) = (
        x.p("eps_low"),
        x.p("eps_high"),
        x.p("eps_max"),
        x.flag("one_sided"),
    );
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], 20.0));
    let per = map_tok(b, |i, t| {
        let w = if one {
            rho[i][t].min(c(cap))
        } else {
            rho[i][t].clamp(1.0 - el, 1.0 + eh)
        };
        -w.sg() * adv[i] * lp[i][t]
    });
    Out {
        loss: token_mean(&per),
        metrics: vec![
            (
                "clip_frac",
                tok_frac(b, |i, t| {
                    let r = rho[i][t].v;
                    if one {
                        r > cap
                    } else {
                        r < 1.0 - el || r > 1.0 + eh
                    }
                }),
            ),
            ("approx_kl", approx_kl(x, &lp)),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn sapo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], 20.0));
    let per = map_tok(b, |i, t| {
        let tau = if adv[i] > 0.0 {
            x.p("tau_pos")
        } else {
            x.p("tau_neg")
        };
        -((tau * (rho[i][t] - 1.0)).sigmoid() * 4.0 / tau) * adv[i]
    });
    Out {
        loss: agg(b, &per, 2.0),
        metrics: vec![
            ("approx_kl", approx_kl(x, &lp)),
            ("ratio_mean", token_mean(&rho).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn gpg(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, r) = (x.tok("logp"), x.seq("reward"));
    let nonzero = r.iter().filter(|&&z| z != 0.0).count().max(1) as f64;
    let alpha = b.b() as f64 / nonzero;
    let mu = group_bcast(b, &consts_of(&r), mean);
    let adv: Vec<f64> = (0..b.b()).map(|i| alpha * (r[i] - mu[i].v)).collect();
    let per = map_tok(b, |i, t| -adv[i] * lp[i][t]);
    Out {
        loss: agg(b, &per, x.p("loss_agg_mode")),
        metrics: vec![("adv_mean", mean(&consts_of(&adv)).v)],
        outputs: vec![("adv", adv)],
    }
}

fn luspo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), 1e-4, true, true);
    let (el, eh) = (x.p("epsilon"), x.p("epsilon_high"));
    let s: Vec<D> = (0..b.b())
        .map(|i| {
            seq_mean(
                &(0..b.len[i])
                    .map(|t| lp[i][t] - old[i][t])
                    .collect::<Vec<_>>(),
            )
            .exp()
        })
        .collect();
    let per: Vec<D> = (0..b.b())
        .map(|i| b.len[i] as f64 * ppo_clip(s[i], adv[i], el, eh))
        .collect();
    Out {
        loss: mean(&per),
        metrics: vec![
            (
                "clip_frac",
                mean(
                    &(0..b.b())
                        .map(|i| c(f64::from(clipped(s[i].v, adv[i], el, eh))))
                        .collect::<Vec<_>>(),
                )
                .v,
            ),
            ("seq_ratio_mean", mean(&s).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn vespo(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old) = (x.tok("logp"), x.tokv("old_logp"));
    let adv = grpo_adv(b, &x.seq("reward"), 1e-4, true, true);
    let phi: Vec<f64> = (0..b.b())
        .map(|i| {
            let s: f64 = (0..b.len[i])
                .map(|t| (lp[i][t].v - old[i][t]).clamp(-20.0, 20.0))
                .sum();
            let lw = s.clamp(1e-8f64.ln(), 20.0);
            let (k, lam) = if adv[i] >= 0.0 {
                (x.p("k_pos"), x.p("lambda_pos"))
            } else {
                (x.p("k_neg"), x.p("lambda_neg"))
            };
            (lam + k * lw - lam * lw.exp()).exp()
        })
        .collect();
    let per = map_tok(b, |i, t| -phi[i] * adv[i] * lp[i][t]);
    Out {
        loss: token_mean(&per),
        metrics: vec![
            ("phi_mean", mean(&consts_of(&phi)).v),
            (
                "approx_kl",
                token_mean(&map_tok(b, |i, t| old[i][t] - lp[i][t])).v,
            ),
        ],
        outputs: vec![("adv", adv)],
    }
}

fn grpo_entropy(x: &Ctx) -> Out {
    let b = x.b;
    let (lp, old, rf, h) = (
        x.tok("logp"),
        x.tokv("old_logp"),
        x.tokv("ref_logp"),
        x.tok("entropy"),
    );
    let adv = grpo_adv(b, &x.seq("reward"), x.p("std_eps"), true, true);
    let (el, eh, mode) = (x.p("eps"), x.p("eps_high"), x.p("loss_agg_mode"));
    let rho = map_tok(b, |i, t| ratio(lp[i][t], old[i][t], 20.0));
    let kl = map_tok(b, |i, t| k3(lp[i][t], rf[i][t], true));
    let per = map_tok(b, |i, t| {
        dual_clip(rho[i][t], adv[i], el, eh, 3.0) + x.p("beta") * kl[i][t]
    });
    let ent = agg(b, &h, mode);
    Out {
        loss: agg(b, &per, mode) - x.p("entropy_coeff") * ent,
        metrics: vec![
            ("entropy", ent.v),
            (
                "clip_frac",
                tok_frac(b, |i, t| clipped(rho[i][t].v, adv[i], el, eh)),
            ),
            ("kl", token_mean(&kl).v),
        ],
        outputs: vec![("adv", adv)],
    }
}

pub fn refs() -> Vec<Ref> {
    vec![
        Ref {
            name: "grpo",
            shape: Shape::Policy,
            params: &[
                ("eps", 0.2),
                ("eps_high", 0.2),
                ("beta", 0.04),
                ("std_eps", 1e-6),
                ("unbiased", 1.0),
                ("scale_adv", 1.0),
                ("clip_ratio_c", 3.0),
                ("lr_clamp", 20.0),
                ("k3_clamp", 1.0),
                ("loss_agg_mode", 2.0),
            ],
            diff: LP,
            f: grpo,
            cases: &[
                &[("loss_agg_mode", 0.0), ("unbiased", 0.0), ("k3_clamp", 0.0)],
                &[
                    ("loss_agg_mode", 1.0),
                    ("scale_adv", 0.0),
                    ("lr_clamp", INF),
                    ("clip_ratio_c", INF),
                ],
                &[
                    ("loss_agg_mode", 3.0),
                    ("eps_high", 0.28),
                    ("std_eps", 1e-4),
                ],
            ],
        },
        Ref {
            name: "dapo",
            shape: Shape::Policy,
            params: &[
                ("eps_low", 0.2),
                ("eps_high", 0.28),
                ("clip_ratio_c", 3.0),
                ("lr_clamp", 20.0),
                ("std_eps", 1e-6),
                ("max_resp_len", 20480.0),
                ("overlong_buffer", 4096.0),
                ("overlong_penalty", 1.0),
                ("filter_groups", 0.0),
            ],
            diff: LP,
            f: dapo,
            cases: &[
                &[("max_resp_len", 8.0), ("overlong_buffer", 4.0)],
                &[
                    ("filter_groups", 1.0),
                    ("lr_clamp", INF),
                    ("clip_ratio_c", INF),
                ],
            ],
        },
        Ref {
            name: "gspo",
            shape: Shape::Policy,
            params: &[
                ("eps_low", 3e-4),
                ("eps_high", 4e-4),
                ("beta", 0.0),
                ("std_eps", 1e-6),
                ("k3_clamp", 1.0),
            ],
            diff: LP,
            f: gspo,
            cases: &[
                &[("eps_low", 0.2), ("eps_high", 0.28), ("beta", 0.04)],
                &[("beta", 0.1), ("k3_clamp", 0.0)],
            ],
        },
        Ref {
            name: "gspo_token",
            shape: Shape::Policy,
            params: &[("eps_low", 3e-4), ("eps_high", 4e-4), ("cap", 10.0)],
            diff: LP,
            f: gspo_token,
            cases: &[&[("eps_low", 0.2), ("eps_high", 0.28)], &[("cap", 0.05)]],
        },
        Ref {
            name: "ppo",
            shape: Shape::Policy,
            params: &[
                ("eps_low", 0.2),
                ("eps_high", 0.2),
                ("clip_ratio_c", 3.0),
                ("gamma", 1.0),
                ("lam", 1.0),
                ("lr_clamp", 20.0),
                ("loss_agg_mode", 0.0),
            ],
            diff: LP,
            f: ppo,
            cases: &[&[("gamma", 0.9), ("lam", 0.95), ("loss_agg_mode", 2.0)]],
        },
        Ref {
            name: "dr_grpo",
            shape: Shape::Policy,
            params: &[
                ("eps_low", 0.2),
                ("eps_high", 0.2),
                ("clip_ratio_c", 3.0),
                ("lr_clamp", 20.0),
                ("max_len", 0.0),
            ],
            diff: LP,
            f: dr_grpo,
            cases: &[&[("max_len", 16.0), ("lr_clamp", INF), ("clip_ratio_c", INF)]],
        },
        Ref {
            name: "bnpo",
            shape: Shape::Policy,
            params: &[
                ("epsilon", 0.2),
                ("epsilon_high", 0.2),
                ("beta", 0.0),
                ("delta", INF),
            ],
            diff: LP,
            f: bnpo,
            cases: &[&[("beta", 0.04), ("delta", 1.5), ("epsilon_high", 0.28)]],
        },
        Ref {
            name: "gmpo",
            shape: Shape::Policy,
            params: &[("eps_low", 0.4), ("eps_high", 0.4), ("std_eps", 1e-6)],
            diff: LP,
            f: gmpo,
            cases: &[&[("eps_low", 0.2), ("eps_high", 0.3)]],
        },
        Ref {
            name: "cispo",
            shape: Shape::Policy,
            params: &[
                ("eps_low", 0.2),
                ("eps_high", 0.2),
                ("one_sided", 0.0),
                ("eps_max", 5.0),
                ("std_eps", 1e-6),
            ],
            diff: LP,
            f: cispo,
            cases: &[
                &[("one_sided", 1.0)],
                &[("one_sided", 1.0), ("eps_max", 1.1)],
            ],
        },
        Ref {
            name: "sapo",
            shape: Shape::Policy,
            params: &[("tau_pos", 1.0), ("tau_neg", 1.05), ("std_eps", 1e-6)],
            diff: LP,
            f: sapo,
            cases: &[&[("tau_pos", 2.0), ("tau_neg", 0.5)]],
        },
        Ref {
            name: "gpg",
            shape: Shape::Policy,
            params: &[("loss_agg_mode", 0.0)],
            diff: LP,
            f: gpg,
            cases: &[&[("loss_agg_mode", 2.0)]],
        },
        Ref {
            name: "luspo",
            shape: Shape::Policy,
            params: &[("epsilon", 3e-4), ("epsilon_high", 4e-4)],
            diff: LP,
            f: luspo,
            cases: &[&[("epsilon", 0.2), ("epsilon_high", 0.28)]],
        },
        Ref {
            name: "vespo",
            shape: Shape::Policy,
            params: &[
                ("k_pos", 2.0),
                ("lambda_pos", 3.0),
                ("k_neg", 3.0),
                ("lambda_neg", 2.0),
            ],
            diff: LP,
            f: vespo,
            cases: &[&[("k_pos", 1.0), ("lambda_pos", 1.0)]],
        },
        Ref {
            name: "grpo_entropy",
            shape: Shape::Policy,
            params: &[
                ("eps", 0.2),
                ("eps_high", 0.2),
                ("beta", 0.04),
                ("entropy_coeff", 1e-3),
                ("std_eps", 1e-6),
                ("loss_agg_mode", 2.0),
            ],
            diff: &["logp", "entropy"],
            f: grpo_entropy,
            cases: &[&[("entropy_coeff", 0.5), ("loss_agg_mode", 0.0)]],
        },
    ]
}
