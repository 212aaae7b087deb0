//! Backends: the reference interpreter, CUDA C text, Cranelift IR.

pub mod interp;
pub mod cuda;

