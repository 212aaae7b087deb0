//! Backends: the reference interpreter, CUDA C text, Cranelift IR.

pub mod clif;
mod clif_emit;
mod clif_plan;
pub mod interp;
