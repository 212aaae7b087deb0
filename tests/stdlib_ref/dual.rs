//! A forward-mode dual number `v + d·ε` (ε² = 0): the derivative of a reference computation with
//! respect to one seeded input, exactly, with no finite-difference error and no compiler code.
//!
//! Subgradient conventions follow design.md (PyTorch): `clamp` passes the derivative at its
//! bounds, a tie in `min`/`max` splits it evenly, `abs`/`sign` have derivative 0 at 0.

use std::ops::{Add, Div, Mul, Neg, Sub};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct D {
    pub v: f64,
    pub d: f64,
}

/// A constant (derivative 0).
pub fn c(v: f64) -> D {
    D { v, d: 0.0 }
}

impl D {
    pub fn var(v: f64, seeded: bool) -> D {
        D {
            v,
            d: if seeded { 1.0 } else { 0.0 },
        }
    }
    /// Stop-gradient.
    pub fn sg(self) -> D {
        c(self.v)
    }
    /// `f(self)` with `f' = dv`; a constant stays a constant even where `f'` is infinite
    /// (`sqrt(0)` of a zero variance), so no `0·inf` NaN appears.
    fn chain(self, v: f64, dv: f64) -> D {
        let d = if self.d == 0.0 { 0.0 } else { self.d * dv };
        D { v, d }
    }
    pub fn exp(self) -> D {
        let e = self.v.exp();
        self.chain(e, e)
    }
    pub fn ln(self) -> D {
        self.chain(self.v.ln(), 1.0 / self.v)
    }
    pub fn ln_1p(self) -> D {
        self.chain(self.v.ln_1p(), 1.0 / (1.0 + self.v))
    }
    pub fn exp_m1(self) -> D {
        self.chain(self.v.exp_m1(), self.v.exp())
    }
    pub fn sqrt(self) -> D {
        let s = self.v.sqrt();
        self.chain(s, 0.5 / s)
    }
    pub fn sq(self) -> D {
        self * self
    }
    pub fn abs(self) -> D {
        let s = if self.v > 0.0 {
            1.0
        } else if self.v < 0.0 {
            -1.0
        } else {
            0.0
        };
        self.chain(self.v.abs(), s)
    }
    pub fn sigmoid(self) -> D {
        let s = 1.0 / (1.0 + (-self.v).exp());
        self.chain(s, s * (1.0 - s))
    }
    /// log(1 + e^x), computed stably.
    pub fn softplus(self) -> D {
        let v = self.v.max(0.0) + (-self.v.abs()).exp().ln_1p();
        self.chain(v, 1.0 / (1.0 + (-self.v).exp()))
    }
    pub fn log_sigmoid(self) -> D {
        -(-self).softplus()
    }
    pub fn powd(self, e: D) -> D {
        // a^e = exp(e ln a)
        (e * self.ln()).exp()
    }
    pub fn min(self, o: D) -> D {
        if self.v < o.v {
            self
        } else if o.v < self.v {
            o
        } else {
            D {
                v: self.v,
                d: 0.5 * (self.d + o.d),
            }
        }
    }
    pub fn max(self, o: D) -> D {
        if self.v > o.v {
            self
        } else if o.v > self.v {
            o
        } else {
            D {
                v: self.v,
                d: 0.5 * (self.d + o.d),
            }
        }
    }
    pub fn clamp(self, lo: f64, hi: f64) -> D {
        self.clamp_d(c(lo), c(hi))
    }
    pub fn clamp_d(self, lo: D, hi: D) -> D {
        if self.v < lo.v {
            lo
        } else if self.v > hi.v {
            hi
        } else {
            self
        }
    }
}

impl Add for D {
    type Output = D;
    fn add(self, o: D) -> D {
        D {
            v: self.v + o.v,
            d: self.d + o.d,
        }
    }
}
impl Sub for D {
    type Output = D;
    fn sub(self, o: D) -> D {
        D {
            v: self.v - o.v,
            d: self.d - o.d,
        }
    }
}
impl Mul for D {
    type Output = D;
    fn mul(self, o: D) -> D {
        D {
            v: self.v * o.v,
            d: self.d * o.v + self.v * o.d,
        }
    }
}
impl Div for D {
    type Output = D;
    fn div(self, o: D) -> D {
        D {
            v: self.v / o.v,
            d: (self.d * o.v - self.v * o.d) / (o.v * o.v),
        }
    }
}
impl Neg for D {
    type Output = D;
    fn neg(self) -> D {
        D {
            v: -self.v,
            d: -self.d,
        }
    }
}
macro_rules! scalar_ops {
    ($($tr:ident $f:ident),*) => {$(
        impl $tr<f64> for D {
            type Output = D;
            fn $f(self, o: f64) -> D {
                $tr::$f(self, c(o))
            }
        }
        impl $tr<D> for f64 {
            type Output = D;
            fn $f(self, o: D) -> D {
                $tr::$f(c(self), o)
            }
        }
    )*};
}
scalar_ops!(Add add, Sub sub, Mul mul, Div div);
