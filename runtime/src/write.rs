//! Results → tensors: an [`Evaluation`] in the shapes the batch came in.
//!
//! Names: `loss` (`[]`), `grad.<input>` for every `diff` input (the **same shape as the input**,
//! exactly 0 at padding), `metric.<name>` (`[]`), `output.<name>`: `tok` outputs in the token
//! shape of the batch (`[B, T]` padded, 0 at padding, or `[N]` packed), `turn` outputs `[B, K]`
//! (0 past a sequence's turns), `seq` `[B]`, `group` `[G]`, `batch` `[]`. f32 by default.

use rlo_compiler::ir::Module;
use rlo_compiler::types::Level;
use rlo_compiler::{Evaluation, Layout};
use safetensors::Dtype;

use crate::bind::{Shapes, TokShape};
use crate::tensor::{Tensor, Tensors};
use crate::RuntimeError;

/// Puts packed values of `level` into a tensor of `shape` (zeros elsewhere).
fn unpack(
    name: &str,
    packed: &[f64],
    level: Level,
    shape: &[usize],
    layout: &Layout,
    shapes: &Shapes,
) -> Result<Vec<f64>, RuntimeError> {
    let want = layout.count(level);
    if packed.len() != want {
        return Err(RuntimeError::ResultShape {
            name: name.into(),
            expected: want,
            got: packed.len(),
        });
    }
    let numel: usize = shape.iter().product();
    let mut out = vec![0.0; numel];
    let mut put = |dst: usize, x: f64| {
        if let Some(slot) = out.get_mut(dst) {
            *slot = x;
        }
    };
    match level {
        Level::Tok => match &shapes.tok {
            TokShape::Padded { src, .. } => {
                for (&d, &x) in src.iter().zip(packed) {
                    put(d, x);
                }
            }
            TokShape::Packed { .. } => packed.iter().enumerate().for_each(|(i, &x)| put(i, x)),
        },
        Level::Turn if shape.len() == 2 => {
            let k = shape[1];
            for s in 0..layout.n_seqs() {
                let (a, b) = (layout.turn_offsets[s], layout.turn_offsets[s + 1]);
                for (j, &x) in packed[a..b].iter().enumerate() {
                    put(s * k + j, x);
                }
            }
        }
        _ => packed.iter().enumerate().for_each(|(i, &x)| put(i, x)),
    }
    Ok(out)
}

/// The shape a result at `level` is written in.
fn result_shape(level: Level, layout: &Layout, shapes: &Shapes) -> Vec<usize> {
    match level {
        Level::Tok => match &shapes.tok {
            TokShape::Padded { t, .. } => vec![layout.n_seqs(), *t],
            TokShape::Packed { n } => vec![*n],
        },
        Level::Turn => vec![layout.n_seqs(), shapes.turn_k],
        Level::Seq => vec![layout.n_seqs()],
        Level::Group => vec![layout.n_groups],
        Level::Batch => vec![],
    }
}

/// The tensors of an evaluation (see the module docs), in `dtype` (F32 or F64).
pub fn evaluation_tensors(
    module: &Module,
    layout: &Layout,
    shapes: &Shapes,
    eval: &Evaluation,
    dtype: Dtype,
) -> Result<Tensors, RuntimeError> {
    let mut out = Tensors::new();
    out.insert("loss".into(), Tensor::from_f64(dtype, &[], &[eval.loss])?);
    for (g, v) in module.grads.iter().zip(&eval.grads) {
        let Some(input) = module.inputs.get(g.input as usize) else {
            continue;
        };
        let level = input.ty.level;
        let shape = shapes
            .inputs
            .get(&input.name)
            .cloned()
            .unwrap_or_else(|| result_shape(level, layout, shapes));
        let name = format!("grad.{}", input.name);
        let vals = unpack(&name, v, level, &shape, layout, shapes)?;
        out.insert(name, Tensor::from_f64(dtype, &shape, &vals)?);
    }
    for (m, &v) in module.metrics.iter().zip(&eval.metrics) {
        out.insert(
            format!("metric.{}", m.name),
            Tensor::from_f64(dtype, &[], &[v])?,
        );
    }
    for (o, v) in module.outputs.iter().zip(&eval.outputs) {
        let level = module.level(o.value);
        let shape = result_shape(level, layout, shapes);
        let name = format!("output.{}", o.name);
        let vals = unpack(&name, v, level, &shape, layout, shapes)?;
        out.insert(name, Tensor::from_f64(dtype, &shape, &vals)?);
    }
    Ok(out)
}
