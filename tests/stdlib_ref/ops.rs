//! Reference building blocks written from the catalog's formulas as plain loops over the padded
//! batch. Conventions (design.md / BRIEF): empty sets give 0 (sum, mean, max, min, std,
//! quantile); the std of one element is 0; quantiles are numpy-linear; ranks are 0-based,
//! ascending, ties by batch position.

use super::batch::Pad;
use super::dual::{c, D};

pub type Tok = Vec<Vec<D>>;

pub fn sum(xs: &[D]) -> D {
    xs.iter().fold(c(0.0), |a, &x| a + x)
}

pub fn mean(xs: &[D]) -> D {
    if xs.is_empty() {
        c(0.0)
    } else {
        sum(xs) / xs.len() as f64
    }
}

/// Variance, unbiased (n − 1) or biased (n); 0 for fewer than two elements.
pub fn var(xs: &[D], unbiased: bool) -> D {
    let n = xs.len();
    if n < 2 {
        return c(0.0);
    }
    let m = mean(xs);
    let ss = sum(&xs.iter().map(|&x| (x - m).sq()).collect::<Vec<_>>());
    ss / if unbiased { (n - 1) as f64 } else { n as f64 }
}

pub fn std(xs: &[D], unbiased: bool) -> D {
    var(xs, unbiased).sqrt()
}

/// Maximum; a tie splits the derivative evenly among the tied elements; empty → 0.
pub fn maxd(xs: &[D]) -> D {
    extreme(xs, |a, b| a > b)
}

fn extreme(xs: &[D], better: impl Fn(f64, f64) -> bool) -> D {
    let Some(first) = xs.first() else {
        return c(0.0);
    };
    let best = xs
        .iter()
        .fold(first.v, |m, x| if better(x.v, m) { x.v } else { m });
    let tied: Vec<D> = xs.iter().copied().filter(|x| x.v == best).collect();
    D {
        v: best,
        d: tied.iter().map(|x| x.d).sum::<f64>() / tied.len() as f64,
    }
}

/// m + log Σ exp(x − m), m the maximum; empty → 0.
pub fn logsumexp(xs: &[D]) -> D {
    if xs.is_empty() {
        return c(0.0);
    }
    let m = c(xs.iter().fold(f64::NEG_INFINITY, |a, x| a.max(x.v)));
    m + sum(&xs.iter().map(|&x| (x - m).exp()).collect::<Vec<_>>()).ln()
}

/// numpy "linear" quantile; ties in the sort broken by position; empty → 0.
pub fn quantile(xs: &[D], q: f64) -> D {
    if xs.is_empty() {
        return c(0.0);
    }
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].v.total_cmp(&xs[b].v).then(a.cmp(&b)));
    let pos = q.clamp(0.0, 1.0) * (xs.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - pos.floor();
    xs[idx[lo]] + (xs[idx[hi]] - xs[idx[lo]]) * frac
}

/// Applies `f` to the sequence values of every group; result per group.
pub fn per_group(b: &Pad, x: &[D], f: impl Fn(&[D]) -> D) -> Vec<D> {
    (0..b.n_groups)
        .map(|g| f(&b.members(g).iter().map(|&i| x[i]).collect::<Vec<_>>()))
        .collect()
}

/// Group statistic broadcast back to each sequence.
pub fn group_bcast(b: &Pad, x: &[D], f: impl Fn(&[D]) -> D) -> Vec<D> {
    let g = per_group(b, x, f);
    (0..b.b()).map(|i| g[b.group[i]]).collect()
}

pub fn flat(x: &Tok) -> Vec<D> {
    x.iter().flatten().copied().collect()
}

/// Token mean over the batch (verl token-mean).
pub fn token_mean(x: &Tok) -> D {
    mean(&flat(x))
}

/// verl agg_loss, mode 0..3 (token-mean, seq-mean-token-sum, seq-mean-token-mean,
/// seq-mean-token-sum-norm with T_max = the longest sequence).
pub fn agg(b: &Pad, x: &Tok, mode: f64) -> D {
    let nonempty: Vec<usize> = (0..b.b()).filter(|&i| b.len[i] > 0).collect();
    match mode as i64 {
        1 => mean(&nonempty.iter().map(|&i| sum(&x[i])).collect::<Vec<_>>()),
        2 => mean(
            &nonempty
                .iter()
                .map(|&i| sum(&x[i]) / (b.len[i] as f64 + 1e-8))
                .collect::<Vec<_>>(),
        ),
        3 => sum(&flat(x)) / b.max_len() as f64,
        _ => token_mean(x),
    }
}

/// Token-level values from a per-token closure.
pub fn map_tok(b: &Pad, f: impl Fn(usize, usize) -> D) -> Tok {
    (0..b.b())
        .map(|i| (0..b.len[i]).map(|t| f(i, t)).collect())
        .collect()
}

/// Fraction of valid tokens where `f` holds.
pub fn tok_frac(b: &Pad, f: impl Fn(usize, usize) -> bool) -> f64 {
    token_mean(&map_tok(b, |i, t| c(f64::from(f(i, t))))).v
}

// ---- catalog formulas shared by many objectives ------------------------------------------

/// GRPO advantage: (r − μ_g)/(σ_g + eps), σ unbiased/biased; `scale: false` → r − μ_g.
pub fn grpo_adv(b: &Pad, r: &[f64], eps: f64, unbiased: bool, scale: bool) -> Vec<f64> {
    let rd: Vec<D> = r.iter().map(|&x| c(x)).collect();
    let mu = group_bcast(b, &rd, mean);
    let sd = group_bcast(b, &rd, |xs| std(xs, unbiased));
    (0..b.b())
        .map(|i| {
            let a = r[i] - mu[i].v;
            if scale {
                a / (sd[i].v + eps)
            } else {
                a
            }
        })
        .collect()
}

/// ρ = exp(clamp(logp − old, −cl, cl)).
pub fn ratio(lp: D, old: f64, cl: f64) -> D {
    (lp - old).clamp(-cl, cl).exp()
}

/// max(−Aρ, −A·clip(ρ, 1−εl, 1+εh)).
pub fn ppo_clip(rho: D, a: f64, el: f64, eh: f64) -> D {
    (-a * rho).max(-a * rho.clamp(1.0 - el, 1.0 + eh))
}

/// verl vanilla: dual clip at −A·cc for A < 0.
pub fn dual_clip(rho: D, a: f64, el: f64, eh: f64, cc: f64) -> D {
    let l = ppo_clip(rho, a, el, eh);
    if a < 0.0 {
        c(-a * cc).min(l)
    } else {
        l
    }
}

pub fn clipped(rho: f64, a: f64, el: f64, eh: f64) -> bool {
    -a * rho.clamp(1.0 - el, 1.0 + eh) > -a * rho
}

/// verl low_var_kl: x = clamp(ref − logp, ±20), clamp(e^x − x − 1, ±10); plain k3 if !clamped.
pub fn k3(lp: D, rf: f64, clamped: bool) -> D {
    if clamped {
        let x = (rf - lp).clamp(-20.0, 20.0);
        (x.exp() - x - 1.0).clamp(-10.0, 10.0)
    } else {
        let x = rf - lp;
        x.exp() - x - 1.0
    }
}
