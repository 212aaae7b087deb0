//! References of the preference objectives (DPO, IPO, SimPO, ORPO, f-DPO on pairs; KTO unpaired).
//! Pair convention of std::pref: each group is one pair, `chosen` marks the preferred sequence.

use super::batch::{Ctx, Shape};
use super::dual::{c, D};
use super::ops::*;
use super::{Out, Ref};

const LP: &[&str] = &["logp"];

/// Per pair: (chosen index, rejected index).
fn pairs(x: &Ctx) -> Vec<(usize, usize)> {
    let ch = x.seqb("chosen");
    (0..x.b.n_groups)
        .map(|g| {
            let m = x.b.members(g);
            let w = *m.iter().find(|&&i| ch[i]).expect("a chosen sequence");
            let l = *m.iter().find(|&&i| !ch[i]).expect("a rejected sequence");
            (w, l)
        })
        .collect()
}

/// u_i = Σ_t (logp − ref_logp).
fn logratio_sum(x: &Ctx) -> Vec<D> {
    let (lp, rf) = (x.tok("logp"), x.tokv("ref_logp"));
    (0..x.b.b())
        .map(|i| {
            sum(&(0..x.b.len[i])
                .map(|t| lp[i][t] - rf[i][t])
                .collect::<Vec<_>>())
        })
        .collect()
}

fn avg(lp: &[D]) -> D {
    sum(lp) / lp.len().max(1) as f64
}

fn mean_v(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<D> = v.map(c).collect();
    mean(&v).v
}

fn dpo(x: &Ctx) -> Out {
    let u = logratio_sum(x);
    let (be, ls) = (x.p("beta"), x.p("label_smoothing"));
    let pr = pairs(x);
    let d: Vec<D> = pr.iter().map(|&(w, l)| u[w] - u[l]).collect();
    let per: Vec<D> = d
        .iter()
        .map(|&d| -(1.0 - ls) * (be * d).log_sigmoid() - ls * (-(be * d)).log_sigmoid())
        .collect();
    Out {
        loss: mean(&per),
        metrics: vec![
            (
                "rewards_chosen",
                mean_v(pr.iter().map(|&(w, _)| be * u[w].v)),
            ),
            (
                "rewards_rejected",
                mean_v(pr.iter().map(|&(_, l)| be * u[l].v)),
            ),
            (
                "rewards_accuracy",
                mean_v(d.iter().map(|d| f64::from(d.v > 0.0))),
            ),
            ("rewards_margin", mean_v(d.iter().map(|d| be * d.v))),
        ],
        outputs: vec![],
    }
}

fn ipo(x: &Ctx) -> Out {
    let (lp, rf) = (x.tok("logp"), x.tokv("ref_logp"));
    let be = x.p("beta");
    let um: Vec<D> = (0..x.b.b())
        .map(|i| {
            avg(&(0..x.b.len[i])
                .map(|t| lp[i][t] - rf[i][t])
                .collect::<Vec<_>>())
        })
        .collect();
    let h: Vec<D> = pairs(x).iter().map(|&(w, l)| um[w] - um[l]).collect();
    Out {
        loss: mean(
            &h.iter()
                .map(|&h| (h - 1.0 / (2.0 * be)).sq())
                .collect::<Vec<_>>(),
        ),
        metrics: vec![
            (
                "rewards_accuracy",
                mean_v(h.iter().map(|h| f64::from(h.v > 0.0))),
            ),
            ("rewards_margin", mean_v(h.iter().map(|h| be * h.v))),
        ],
        outputs: vec![],
    }
}

/// Mean of −logp over the chosen sequences' tokens (the NLL / SFT term).
fn chosen_nll(x: &Ctx, lp: &Tok) -> D {
    let ch = x.seqb("chosen");
    mean(
        &(0..x.b.b())
            .filter(|&i| ch[i])
            .flat_map(|i| lp[i].iter().map(|&l| -l))
            .collect::<Vec<_>>(),
    )
}

fn simpo(x: &Ctx) -> Out {
    let lp = x.tok("logp");
    let (be, ga, ls) = (x.p("beta"), x.p("simpo_gamma"), x.p("label_smoothing"));
    let z: Vec<D> = pairs(x)
        .iter()
        .map(|&(w, l)| be * (avg(&lp[w]) - avg(&lp[l])) - ga)
        .collect();
    let per: Vec<D> = z
        .iter()
        .map(|&z| -(1.0 - ls) * z.log_sigmoid() - ls * (-z).log_sigmoid())
        .collect();
    let nll = chosen_nll(x, &lp);
    Out {
        loss: mean(&per) + x.p("cpo_alpha") * nll,
        metrics: vec![
            (
                "rewards_accuracy",
                mean_v(z.iter().map(|z| f64::from(z.v + ga > 0.0))),
            ),
            ("nll", nll.v),
        ],
        outputs: vec![],
    }
}

fn kto(x: &Ctx) -> Out {
    let u = logratio_sum(x);
    let be = x.p("beta");
    let des = x.seqb("desirable");
    let (kp, kr) = (x.seq("kl_logp"), x.seq("kl_ref_logp"));
    let z0 = (kp.iter().zip(&kr).map(|(a, b)| a - b).sum::<f64>() / kp.len() as f64).max(0.0);
    let per: Vec<D> = (0..x.b.b())
        .map(|i| {
            if des[i] {
                x.p("desirable_weight") * (1.0 - (be * (u[i] - z0)).sigmoid())
            } else {
                x.p("undesirable_weight") * (1.0 - (be * (z0 - u[i])).sigmoid())
            }
        })
        .collect();
    let sel = |want: bool| {
        mean_v(
            (0..x.b.b())
                .filter(|&i| des[i] == want)
                .map(|i| be * u[i].v),
        )
    };
    Out {
        loss: mean(&per),
        metrics: vec![
            ("kl", z0),
            ("rewards_desirable", sel(true)),
            ("rewards_undesirable", sel(false)),
        ],
        outputs: vec![],
    }
}

fn orpo(x: &Ctx) -> Out {
    let lp = x.tok("logp");
    let be = x.p("beta");
    let m: Vec<D> = lp.iter().map(|l| avg(l)).collect();
    let log1mexp = |v: D| (1.0 - v.exp()).ln();
    let lo: Vec<D> = pairs(x)
        .iter()
        .map(|&(w, l)| (m[w] - m[l]) - (log1mexp(m[w]) - log1mexp(m[l])))
        .collect();
    let ls: Vec<D> = lo.iter().map(|&z| z.log_sigmoid()).collect();
    let nll = chosen_nll(x, &lp);
    Out {
        loss: nll - be * mean(&ls),
        metrics: vec![
            ("nll", nll.v),
            ("log_odds_ratio", mean(&ls).v),
            ("log_odds_chosen", mean(&lo).v),
        ],
        outputs: vec![],
    }
}

fn f_dpo(x: &Ctx) -> Out {
    let u = logratio_sum(x);
    let (be, al, ft) = (x.p("beta"), x.p("alpha"), x.p("f_type"));
    let phi = |u: D| -> D {
        match ft as i64 {
            1 => -(-u).exp(),
            2 => u.sigmoid().ln(),
            3 if al != 1.0 => ((al - 1.0) * u).exp() / (al - 1.0),
            _ => u,
        }
    };
    let d: Vec<D> = pairs(x)
        .iter()
        .map(|&(w, l)| phi(u[w]) - phi(u[l]))
        .collect();
    Out {
        loss: mean(
            &d.iter()
                .map(|&d| -(be * d).log_sigmoid())
                .collect::<Vec<_>>(),
        ),
        metrics: vec![(
            "rewards_accuracy",
            mean_v(d.iter().map(|d| f64::from(d.v > 0.0))),
        )],
        outputs: vec![],
    }
}

pub fn refs() -> Vec<Ref> {
    vec![
        Ref {
            name: "dpo",
            shape: Shape::Pairs,
            params: &[("beta", 0.1), ("label_smoothing", 0.0)],
            diff: LP,
            f: dpo,
            cases: &[&[("beta", 0.5), ("label_smoothing", 0.1)]],
        },
        Ref {
            name: "ipo",
            shape: Shape::Pairs,
            params: &[("beta", 0.1)],
            diff: LP,
            f: ipo,
            cases: &[&[("beta", 0.5)]],
        },
        Ref {
            name: "simpo",
            shape: Shape::Pairs,
            params: &[
                ("beta", 0.1),
                ("simpo_gamma", 0.5),
                ("label_smoothing", 0.0),
                ("cpo_alpha", 0.0),
            ],
            diff: LP,
            f: simpo,
            cases: &[&[("cpo_alpha", 1.0), ("label_smoothing", 0.1), ("beta", 2.0)]],
        },
        Ref {
            name: "kto",
            shape: Shape::Policy,
            params: &[
                ("beta", 0.1),
                ("desirable_weight", 1.0),
                ("undesirable_weight", 1.0),
            ],
            diff: LP,
            f: kto,
            cases: &[&[("beta", 0.5), ("undesirable_weight", 1.5)]],
        },
        Ref {
            name: "orpo",
            shape: Shape::Pairs,
            params: &[("beta", 0.1)],
            diff: LP,
            f: orpo,
            cases: &[&[("beta", 0.5)]],
        },
        Ref {
            name: "f_dpo",
            shape: Shape::Pairs,
            params: &[("beta", 0.1), ("f_type", 0.0), ("alpha", 0.5)],
            diff: LP,
            f: f_dpo,
            cases: &[
                &[("f_type", 1.0)],
                &[("f_type", 2.0)],
                &[("f_type", 3.0)],
                &[("f_type", 3.0), ("alpha", 1.0)],
            ],
        },
    ]
}
