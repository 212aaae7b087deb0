//! The standard library, embedded at build time from `stdlib/*.rlo` (see `build.rs`).
//! `use std::kl::k3` resolves module `kl` to `stdlib/kl.rlo`.

include!(concat!(env!("OUT_DIR"), "/stdlib.rs"));

/// The source of stdlib module `name` (`"kl"` for `std::kl`).
pub fn module_source(name: &str) -> Option<&'static str> {
    STDLIB.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Names of all stdlib modules, sorted.
pub fn module_names() -> impl Iterator<Item = &'static str> {
    STDLIB.iter().map(|(n, _)| *n)
}
