//! rlo-runtime: binds batches (safetensors), runs compiled objectives on a backend (interp, cpu,
//! cuda), splits optimizer steps into micro-batches exactly, and hosts the `rloc` CLI.
//!
//! The API every user of the runtime goes through (CLI, candle op, training example, tests):
//! [`Objective::compile`] → [`Objective::param_values`] → [`Objective::evaluate`].

pub mod bind;
pub mod cpu;
mod cpu_helpers;
pub mod cuda;
pub mod error;
pub mod microbatch;

#[cfg(feature = "candle")]
pub mod candle;

pub use error::RuntimeError;
pub use rlo_compiler::{Batch, Compiled, Evaluation, Layout};

/// Which backend evaluates an objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The f64 reference interpreter.
    Interp,
    /// Native code through Cranelift (f32 math).
    Cpu,
    /// CUDA kernels compiled by NVRTC.
    Cuda,
}

/// A compiled objective, ready to evaluate on batches.
pub struct Objective {
    pub compiled: Compiled,
}

impl Objective {
    /// Compiles `.rlo` source; on failure the error renders every diagnostic.
    pub fn compile(
        name: &str,
        text: &str,
        opts: &rlo_compiler::Options,
    ) -> Result<Objective, Box<rlo_compiler::Failure>> {
        rlo_compiler::compile(name, text, opts).map(|compiled| Objective { compiled })
    }

    /// Parameter values: the defaults with `overrides` (by name) applied. Unknown names are errors.
    pub fn param_values(&self, overrides: &[(String, f64)]) -> Result<Vec<f64>, RuntimeError> {
        let params = &self.compiled.module.params;
        let mut v: Vec<f64> = params.iter().map(|p| p.default).collect();
        for (name, value) in overrides {
            match params.iter().position(|p| &p.name == name) {
                Some(i) => {
                    if let Some(slot) = v.get_mut(i) {
                        *slot = *value;
                    }
                }
                None => {
                    return Err(RuntimeError::UnknownParam {
                        name: name.clone(),
                        known: params.iter().map(|p| p.name.clone()).collect(),
                    })
                }
            }
        }
        Ok(v)
    }

    /// Loss, gradients, metrics and outputs of one batch.
    pub fn evaluate(
        &self,
        batch: &Batch,
        params: &[f64],
        backend: Backend,
    ) -> Result<Evaluation, RuntimeError> {
        match backend {
            Backend::Cpu => Ok(cpu::evaluate(
                &self.compiled,
                batch,
                params,
                cpu::CpuOptions::default(),
            )?),
            Backend::Interp | Backend::Cuda => {
                Err(RuntimeError::Unsupported("evaluation not wired yet".into()))
            }
        }
    }
}
