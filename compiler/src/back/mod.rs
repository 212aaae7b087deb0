//! Backends: the reference interpreter, CUDA C text, Cranelift IR.

pub mod clif;
mod clif_emit;
mod clif_plan;
mod clif_reduce;
mod clif_scan;
mod clif_sweep;
pub mod cuda;
pub mod interp;
