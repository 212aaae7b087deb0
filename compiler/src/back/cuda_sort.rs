//! The launches of the batch-rank radix sorts and batch-quantile radix selects (planned by
//! `add_sort`/`add_select` in `cuda_fuse.rs`): each a thin kernel around a `rlo_sort_*` /
//! `rlo_select_*` helper of `rlo_common.cuh`, except the per-sequence keys kernels, which read
//! the value being ranked like a token pass. Split from `cuda_emit.rs` to keep files small.

use super::*;

/// The kernel of one step of a batch rank's radix sort (`rlo_common.cuh`: `rlo_sort_*`). A
/// digit pass's kernel takes the digit `j` as its second argument (launched once per digit);
/// keys and slots alternate between the `a` and `b` buffers: digit `j` reads `a` when `j` is
/// even.
pub(super) fn write_sort(p: &Plan, w: &mut W, k: &KernelPlan, step: SortStep) -> R<()> {
    let m = p.m;
    let Some(&h) = k.nodes.first() else {
        return Err(err(m, m.loss, "internal: sort without a rank"));
    };
    let Expr::Rank { arg, .. } = m.exprs[h] else {
        return Err(err(m, h, "internal: sort of a non-rank"));
    };
    let r = h.index();
    open_kernel(w, k);
    match step {
        SortStep::Keys => {
            let key = format!(
                "ctx.ka{r}[i] = __uint_as_float(rlo_rank_key({}));",
                val(p, &[], arg, Level::Tok)?
            );
            let slot = format!("ctx.ia{r}[i] = __uint_as_float((unsigned)i);");
            // padding slots sort after every real token
            let pad = format!("ctx.ka{r}[i] = __uint_as_float(0xffffffffu);");
            token_slots(p, w, &[key, slot.clone()], &[pad, slot]);
        }
        SortStep::Hist(_) => {
            w.line(&format!(
                "rlo_sort_hist(digit % 2 == 0 ? ctx.ka{r} : ctx.kb{r}, RLO_N_SLOTS, 4 * digit, ctx.h{r});"
            ));
        }
        SortStep::Scan(_) => {
            w.line(&format!(
                "rlo_sort_scan(ctx.h{r}, 16 * rlo_sort_tiles(RLO_N_SLOTS));"
            ));
        }
        SortStep::Scatter(_) => {
            w.line("const bool even = digit % 2 == 0;");
            w.line(&format!(
                "rlo_sort_scatter(even ? ctx.ka{r} : ctx.kb{r}, even ? ctx.ia{r} : ctx.ib{r}, even ? ctx.kb{r} : ctx.ka{r}, even ? ctx.ib{r} : ctx.ia{r}, RLO_N_SLOTS, 4 * digit, ctx.h{r});"
            ));
        }
        SortStep::Place => {
            // 8 digit passes: the sorted slots are back in the `a` buffers
            w.line(&format!(
                "rlo_sort_place(ctx.ia{r}, RLO_N_SLOTS, ctx.n_tokens, ctx.v{r});"
            ));
        }
    }
    w.close("}");
    Ok(())
}

/// One launch of a batch quantile's radix select (`rlo_common.cuh`: `rlo_select_*`).
pub(super) fn write_select(p: &Plan, w: &mut W, k: &KernelPlan, step: SelectStep) -> R<()> {
    let m = p.m;
    let Some(&h) = k.nodes.first() else {
        return Err(err(m, m.loss, "internal: select without a quantile"));
    };
    let Expr::Quantile { arg, q, filter, .. } = m.exprs[h] else {
        return Err(err(m, h, "internal: select of a non-quantile"));
    };
    let n = h.index();
    open_kernel(w, k);
    match step {
        SelectStep::Keys => {
            let key = format!("rlo_select_key({})", val(p, &[], arg, Level::Tok)?);
            let key = match filter {
                Some(f) => format!("({} ? {key} : 0xffffffffu)", val(p, &[], f, Level::Tok)?),
                None => key,
            };
            let valid = format!("ctx.ka{n}[i] = __uint_as_float({key});");
            let pad = format!("ctx.ka{n}[i] = __uint_as_float(0xffffffffu);");
            token_slots(p, w, &[valid], &[pad]);
        }
        // most significant digit first
        SelectStep::Hist(_) => w.line(&format!(
            "rlo_select_hist(ctx.ka{n}, RLO_N_SLOTS, 28 - 4 * digit, ctx.st{n}, ctx.h{n});"
        )),
        SelectStep::Pick(_) => {
            params(p, w);
            w.line(&format!(
                "rlo_select_pick(ctx.h{n}, RLO_N_SLOTS, 28 - 4 * digit, digit == 0, {}, ctx.st{n});",
                val(p, &[], q, Level::Batch)?
            ));
        }
        SelectStep::Value => w.line(&format!(
            "if (threadIdx.x == 0) {{ ctx.v{n}[0] = rlo_select_value(ctx.st{n}); }}"
        )),
    }
    w.close("}");
    Ok(())
}

/// Turn, sequence or group quantiles of token values (`KernelKind::UnitQuantiles`): block `b`
/// takes sequences or groups `b`, `b + gridDim.x`, … and runs the block-cooperative select over
/// the unit's tokens, or (turns) one thread per turn of the sequence the serial select — what a
/// one-block kernel did for every unit in turn.
pub(super) fn write_unit_quantiles(p: &Plan, w: &mut W, k: &KernelPlan) -> R<()> {
    let m = p.m;
    open_kernel(w, k);
    params(p, w);
    for &h in &k.nodes {
        let Expr::Quantile { arg, q, to, filter } = m.exprs[h] else {
            return Err(err(m, h, "internal: a unit quantile of a non-quantile"));
        };
        let n = h.index();
        w.line(&format!(
            "// e{n}: quantile tok -> {to}{}",
            span_comment(p, h)
        ));
        if to == Level::Turn {
            w.open("for (long long s = blockIdx.x; s < ctx.n_seqs; s += gridDim.x) {");
            w.line("const long long g = ctx.seq_group[s];");
            w.open("for (long long k = ctx.turn_off[s] + threadIdx.x; k < ctx.turn_off[s + 1]; k += blockDim.x) {");
            w.line(&quantile_each(p, arg, filter, to, &[], false)?);
            let qv = val(p, &[], q, to)?;
            w.line(&format!("ctx.v{n}[k] = rlo_serial_quantile(each, {qv});"));
            w.close("}");
            w.close("}");
            continue;
        }
        match to {
            Level::Seq => {
                w.open("for (long long s = blockIdx.x; s < ctx.n_seqs; s += gridDim.x) {");
                w.line("const long long g = ctx.seq_group[s];");
            }
            Level::Group => {
                w.open("for (long long g = blockIdx.x; g < ctx.n_groups; g += gridDim.x) {")
            }
            Level::Tok | Level::Batch | Level::Turn => {
                return Err(err(m, h, format!("internal: a unit quantile to {to}")))
            }
        }
        w.line(&quantile_each(p, arg, filter, to, &[], true)?);
        let qv = val(p, &[], q, to)?;
        w.line(&format!("const float r = rlo_block_quantile(each, {qv});"));
        w.line(&format!(
            "if (threadIdx.x == 0) {{ ctx.v{n}[{}] = r; }}",
            idx(to)
        ));
        w.close("}");
    }
    w.close("}");
    Ok(())
}

/// `extern "C" __global__ void NAME(const RloCtx ctx[, const int digit]) {`
fn open_kernel(w: &mut W, k: &KernelPlan) {
    let extra = if k.kind.digit().is_some() {
        ", const int digit"
    } else {
        ""
    };
    w.open(&format!(
        "extern \"C\" __global__ void __launch_bounds__({}) {}(const RloCtx ctx{extra}) {{",
        k.threads, k.name
    ));
}
