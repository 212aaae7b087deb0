//! `rloc run FILE --batch B.safetensors --out O.safetensors`: bind, evaluate, write, print.

use std::path::PathBuf;
use std::process::ExitCode;

use rlo_runtime::bind::BindOptions;
use rlo_runtime::Backend;

use super::{compile_file, CliError};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The `.rlo` file.
    pub file: PathBuf,
    /// The batch (safetensors; see runtime/README.md for the layouts accepted).
    #[arg(long)]
    pub batch: PathBuf,
    /// Where to write `loss`, `grad.<input>`, `metric.<name>`, `output.<name>` (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Set a parameter: `--param eps=0.1` (repeatable; `true`/`false` for bool parameters).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// interp (f64 reference), cpu (Cranelift) or cuda (NVRTC).
    #[arg(long, default_value = "interp")]
    pub backend: Backend,
    /// Groups are runs of this many consecutive sequences (instead of a `group` tensor).
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Evaluate as this many micro-batches (split at sequence boundaries) and sum: must equal
    /// the whole-batch result.
    #[arg(long, default_value_t = 1)]
    pub micro_batches: usize,
    /// Evaluate as this many data-parallel ranks holding whole groups (group g on rank g mod k),
    /// with normalizers all-reduced between them, and gather: must equal the whole-batch result.
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// Which objective of the file (needed when it has several).
    #[arg(long)]
    pub objective: Option<String>,
    /// Write results as f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
}

/// `name=value` → (name, value); `true`/`false` are 1/0.
fn parse_param(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--param `{s}`: expected NAME=VALUE"))?;
    let value = match v.trim() {
        "true" => 1.0,
        "false" => 0.0,
        x => x
            .parse::<f64>()
            .map_err(|_| format!("--param `{s}`: `{x}` is not a number"))?,
    };
    Ok((k.trim().to_string(), value))
}

pub fn run(a: &RunArgs) -> Result<ExitCode, CliError> {
    let overrides = a
        .params
        .iter()
        .map(|p| parse_param(p))
        .collect::<Result<Vec<_>, _>>()?;
    let obj = compile_file(&a.file, a.objective.clone())?;
    let params = obj.param_values(&overrides).map_err(|e| e.to_string())?;
    let tensors = rlo_runtime::tensor::read_file(&a.batch).map_err(|e| e.to_string())?;
    let opts = BindOptions {
        group_size: a.group_size,
    };
    let bound = obj
        .bind(&tensors, &opts)
        .map_err(|e| format!("{}: {e}", a.batch.display()))?;
    if a.ranks != 1 && a.micro_batches != 1 {
        return Err("--ranks and --micro-batches cannot be combined"
            .to_string()
            .into());
    }
    let eval = if a.ranks != 1 {
        rlo_runtime::dataparallel::ShardPlan::new(&obj)
            .and_then(|plan| plan.evaluate_ranks(&bound.batch, &params, a.backend, a.ranks))
    } else if a.micro_batches == 1 {
        obj.evaluate(&bound.batch, &params, a.backend)
    } else {
        let sizes =
            rlo_runtime::microbatch::even_sizes(bound.batch.layout.n_seqs(), a.micro_batches)
                .map_err(|e| e.to_string())?;
        rlo_runtime::microbatch::evaluate(&obj, &bound.batch, &params, a.backend, &sizes)
    }
    .map_err(|e| match e {
        rlo_runtime::RuntimeError::NotSplittable { explanation, .. }
        | rlo_runtime::RuntimeError::NotShardable { explanation, .. } => {
            CliError::Rendered(explanation)
        }
        e => CliError::Plain(e.to_string()),
    })?;

    let m = &obj.compiled.module;
    outln!("loss = {}", eval.loss);
    for (metric, v) in m.metrics.iter().zip(&eval.metrics) {
        outln!("metric.{} = {v}", metric.name);
    }
    let dtype = if a.f64 {
        safetensors::Dtype::F64
    } else {
        safetensors::Dtype::F32
    };
    let out =
        rlo_runtime::write::evaluation_tensors(m, &bound.batch.layout, &bound.shapes, &eval, dtype)
            .map_err(|e| e.to_string())?;
    rlo_runtime::tensor::write_file(&a.out, &out).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
