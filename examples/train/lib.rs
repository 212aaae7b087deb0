//! RL post-training of a small transformer policy with any `.rlo` objective: the pieces of the
//! `train` example (model, task, sampling, losses, loop, plot), as a library so tests reach them.

pub mod loss;
pub mod model;
pub mod plot;
pub mod rollout;
pub mod task;
pub mod trainer;

/// Errors of the example: candle, rlo and I/O errors, all boxed.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;
