//! Independent f64 reference implementations of every stdlib objective, written from the
//! formulas of `objectives_catalog.md` as plain loops over a padded batch (never through the
//! compiler). Gradients are exact forward-mode derivatives (`dual`), one seeded input element at
//! a time.

pub mod batch;
pub mod dual;
pub mod lib_fns;
pub mod ops;
pub mod policy;
pub mod policy2;
pub mod pref;

use batch::{Ctx, Shape};
use dual::D;

/// What a reference returns: the loss (its derivative is the seeded input's gradient), the
/// metrics and outputs (values) by name; outputs packed at their level.
pub struct Out {
    pub loss: D,
    pub metrics: Vec<(&'static str, f64)>,
    pub outputs: Vec<(&'static str, Vec<f64>)>,
}

/// One objective's reference: its stdlib file, the batch shape it consumes, its parameters with
/// the defaults of the reference frameworks (checked against the `.rlo` defaults), its `diff`
/// inputs, the formula, and extra parameter settings to test beside the defaults.
pub struct Ref {
    pub name: &'static str,
    pub shape: Shape,
    pub params: &'static [(&'static str, f64)],
    pub diff: &'static [&'static str],
    pub f: fn(&Ctx) -> Out,
    pub cases: &'static [&'static [(&'static str, f64)]],
}

pub fn all() -> Vec<Ref> {
    let mut v = policy::refs();
    v.extend(policy2::refs());
    v.extend(pref::refs());
    v.extend(lib_fns::refs());
    v
}
