//! Special functions the language has beyond the C library's: `lgamma` (log |Γ(x)|, from the
//! `libm` crate, the same port of musl on every platform) and its derivative, digamma ψ(x),
//! written here. Shared by the interpreter (f64) and the CPU backend's helpers (f32 and f64);
//! `runtime/kernels/rlo_common.cuh` has the same digamma in `float` for CUDA.

/// log |Γ(x)|; +inf at the poles (0, −1, −2, …).
pub fn lgamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// log |Γ(x)| in f32 (computed in f64: correctly rounded but for double rounding, where
/// `libm::lgammaf` loses relative accuracy near the roots x = 1, 2).
pub fn lgammaf(x: f32) -> f32 {
    libm::lgamma(f64::from(x)) as f32
}

/// ψ(x) = d/dx log |Γ(x)|: NaN at the poles (0, −1, −2, …). Reflection ψ(x) = ψ(1 − x) −
/// π / tan(πx) below 1/2, the recurrence ψ(x) = ψ(x + 1) − 1/x up to x ≥ 10, then the asymptotic
/// series ln x − 1/(2x) − Σ B₂ₖ/(2k·x²ᵏ) to x⁻¹⁰ (error below 1e-13 there).
pub fn digamma(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return f64::NAN;
    }
    if x <= 0.0 && x == x.floor() {
        return f64::NAN;
    }
    let mut x = x;
    let mut acc = 0.0;
    if x < 0.5 {
        // ψ(x) = ψ(1 − x) − π / tan(πx)
        acc -= std::f64::consts::PI / (std::f64::consts::PI * x).tan();
        x = 1.0 - x;
    }
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let r = 1.0 / (x * x);
    let series = r
        * (1.0 / 12.0
            - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r * (1.0 / 240.0 - r * (1.0 / 132.0)))));
    acc + x.ln() - 0.5 / x - series
}

/// ψ(x) in f32 (computed in f64).
pub fn digammaf(x: f32) -> f32 {
    digamma(f64::from(x)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values: ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(n + 1) = H_n − γ, ψ(−1/2) = ψ(1/2) + 2;
    /// and the derivative of lgamma by central differences.
    #[test]
    fn digamma_values_and_lgamma_derivative() {
        let g = 0.577_215_664_901_532_9_f64;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
        assert!(close(digamma(1.0), -g));
        assert!(close(digamma(0.5), -g - 2.0 * std::f64::consts::LN_2));
        assert!(close(digamma(-0.5), digamma(0.5) + 2.0));
        let h10: f64 = (1..=10).map(|k| 1.0 / f64::from(k)).sum();
        assert!(close(digamma(11.0), h10 - g));
        assert!(digamma(0.0).is_nan() && digamma(-3.0).is_nan());
        for x in [0.03f64, 0.7, 1.5, 2.0, 3.7, 9.5, 40.0, 1e4, -0.3, -2.5] {
            let h = 1e-6 * f64::max(1.0, x.abs());
            let fd = (lgamma(x + h) - lgamma(x - h)) / (2.0 * h);
            assert!(
                (fd - digamma(x)).abs() <= 1e-6 * digamma(x).abs().max(1.0),
                "x = {x}: {fd} vs {}",
                digamma(x)
            );
        }
        assert!(close(lgamma(5.0), 24f64.ln()));
        assert!(lgamma(0.0).is_infinite());
    }
}
