//! The runtime's one error type. Every variant names the tensor, parameter or backend at fault,
//! and says what was expected of it. (Other workers add variants; keep each one self-describing.)

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown parameter `{name}` (this objective has: {})", known.join(", "))]
    UnknownParam { name: String, known: Vec<String> },
    #[error("{0}")]
    Unsupported(String),
    #[error("objective `{objective}` takes {expected} parameter values, got {got}")]
    ParamCount {
        objective: String,
        expected: usize,
        got: usize,
    },

    // ---- files ----
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a valid safetensors file: {message}")]
    BadFile { path: String, message: String },

    // ---- batch binding (bind.rs): each names the tensor ----
    #[error("tensor `{name}` is missing: expected {expected}")]
    MissingTensor { name: String, expected: String },
    #[error("tensor `{name}` has shape {got:?}: expected {expected}")]
    Shape {
        name: String,
        expected: String,
        got: Vec<usize>,
    },
    #[error("tensor `{name}` has dtype {got}: expected {expected}")]
    DType {
        name: String,
        expected: String,
        got: String,
    },
    #[error("tensor `{name}` has non-finite value {value} at valid position {index}")]
    NonFinite {
        name: String,
        index: String,
        value: f64,
    },
    #[error("tensor `{name}` at {index}: {message}")]
    BadValue {
        name: String,
        index: String,
        message: String,
    },
    #[error("tensor `{name}` gives an empty batch (B = 0): a batch needs at least one sequence")]
    EmptyBatch { name: String },
    /// A problem with the batch layout as a whole (conflicting or missing layout tensors, groups).
    #[error("batch layout: {message}")]
    Layout { message: String },
    #[error("input `{name}` uses a name reserved for layout tensors (mask, lengths, seq_offsets, group, turn); rename the input")]
    ReservedName { name: String },
    #[error("invalid --group-size {size}: {message}")]
    GroupSize { size: usize, message: String },

    // ---- evaluation ----
    #[error("batch input `{name}` has {got} values; its level `{level}` has {expected} elements")]
    InputLength {
        name: String,
        level: String,
        expected: usize,
        got: usize,
    },
    #[error("interpreter: {0}")]
    Interp(String),
    #[error("evaluation returned {got} values for `{name}`, expected {expected}")]
    ResultShape {
        name: String,
        expected: usize,
        got: usize,
    },

    // ---- micro-batching ----
    /// The objective's gradient over a batch is not the sum of its gradients over parts of it; the
    /// message is the compiler's explanation, rendered with source spans.
    #[error("objective `{objective}` cannot be split into micro-batches exactly:\n{explanation}")]
    NotSplittable {
        objective: String,
        explanation: String,
    },
    /// The objective cannot be evaluated data-parallel exactly (`dataparallel::ShardPlan`).
    #[error("{explanation}")]
    NotShardable {
        objective: String,
        explanation: String,
    },
    #[error("micro-batch split: {0}")]
    Split(String),

    // ---- cuda (cuda.rs) ----
    /// No usable CUDA driver, GPU or NVRTC library; says which and how to fix it.
    #[error("cuda unavailable: {0}")]
    CudaUnavailable(String),
    /// NVRTC rejected the generated source: its log, the options, and where the source was written.
    #[error("NVRTC could not compile the generated CUDA (source written to {source_path}, options {options:?}):\n{log}")]
    Nvrtc {
        log: String,
        source_path: String,
        options: Vec<String>,
    },
    /// The CUDA code generator rejected the objective (unsupported construct), at a source location.
    #[error("cuda codegen: {location}: {message}")]
    CudaCodegen { location: String, message: String },
    /// A CUDA driver call failed (allocation, copy, module load, launch).
    #[error("cuda: {0}")]
    Cuda(String),

    // ---- cpu (cpu.rs) ----
    /// The CPU (Cranelift) backend failed: codegen, JIT, or a batch it cannot bind.
    #[error(transparent)]
    Cpu(#[from] crate::cpu::CpuError),
}
