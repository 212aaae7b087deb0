//! Backends: the reference interpreter, CUDA C text, Cranelift IR.

pub mod cuda;
pub mod interp;
