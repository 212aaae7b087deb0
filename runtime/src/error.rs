//! The runtime's one error type. Every variant names the tensor, parameter or backend at fault.

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown parameter `{name}` (this objective has: {})", known.join(", "))]
    UnknownParam { name: String, known: Vec<String> },
    #[error("{0}")]
    Unsupported(String),
    /// The CPU (Cranelift) backend failed: codegen, JIT, or a batch it cannot bind.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
}
