//! rlo-runtime: binds batches (safetensors), runs compiled objectives on a backend (interp, cpu,
//! cuda), splits optimizer steps into micro-batches exactly, and hosts the `rloc` CLI.
//!
//! The API every user of the runtime goes through (CLI, candle op, training example, tests):
//! [`Objective::compile`] → [`Objective::param_values`] → [`Objective::evaluate`].

pub mod bind;
pub mod cpu;
mod cpu_helpers;
pub mod cuda;
pub mod dataparallel;
pub mod error;
pub mod microbatch;
pub mod split_plan;
pub mod tensor;
pub mod write;

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
        if params.len() != self.compiled.module.params.len() {
            return Err(RuntimeError::ParamCount {
                objective: self.compiled.module.name.clone(),
                expected: self.compiled.module.params.len(),
                got: params.len(),
            });
        }
        check_batch(&self.compiled.module, batch)?;
        match backend {
            Backend::Interp => interp_evaluate(&self.compiled, batch, params),
            Backend::Cpu => Ok(cpu::evaluate(
                &self.compiled,
                batch,
                params,
                cpu::CpuOptions::default(),
            )?),
            Backend::Cuda => cuda::evaluate(&self.compiled, batch, params),
        }
    }

    /// Binds a batch (named tensors) to this objective's inputs; see [`bind`].
    pub fn bind(
        &self,
        tensors: &tensor::Tensors,
        opts: &bind::BindOptions,
    ) -> Result<bind::Bound, RuntimeError> {
        bind::bind(tensors, &self.compiled.module, opts)
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "interp" => Ok(Backend::Interp),
            "cpu" => Ok(Backend::Cpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(format!(
                "unknown backend `{s}` (expected interp, cpu or cuda)"
            )),
        }
    }
}

/// A batch every backend can trust: valid layout, one value per element for every input.
pub fn check_batch(m: &rlo_compiler::Module, batch: &Batch) -> Result<(), RuntimeError> {
    batch
        .layout
        .validate()
        .map_err(|message| RuntimeError::Layout { message })?;
    for input in &m.inputs {
        let expected = batch.layout.count(input.ty.level);
        match batch.values.get(&input.name) {
            None => {
                return Err(RuntimeError::MissingTensor {
                    name: input.name.clone(),
                    expected: format!("{expected} `{}` values", input.ty),
                })
            }
            Some(v) if v.len() != expected => {
                return Err(RuntimeError::InputLength {
                    name: input.name.clone(),
                    level: input.ty.level.to_string(),
                    expected,
                    got: v.len(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The reference interpreter on a compiled objective.
fn interp_evaluate(
    c: &Compiled,
    batch: &Batch,
    params: &[f64],
) -> Result<Evaluation, RuntimeError> {
    rlo_compiler::back::interp::evaluate(&c.module, &c.schedule, batch, params)
        .map_err(|e| RuntimeError::Interp(e.to_string()))
}
