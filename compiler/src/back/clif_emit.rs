//! Cranelift IR emission for the plans of `clif_plan.rs` (loops, element indexing, ops).

use super::clif::{
    BackendError, ClifOptions, Import, LAY_LEN, LAY_SEQ_GROUP, LAY_SEQ_OFFSETS, LAY_TOK_SEQ,
    LAY_TOK_TURN, LAY_TURN_OFFSETS, LAY_TURN_SEQ,
};
use super::clif_plan::{ex, Body, FnPlan, Item, Loc, Plan};
use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, IndexKind, Module, ReduceOp, UnaryOp};
use crate::types::{DType, Level};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, BlockArg, ExtFuncData, ExternalName, FuncRef, Function, InstBuilder,
    MemFlagsData, Signature, Type, UserExternalName, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, TargetFrontendConfig};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use std::collections::{BTreeSet, HashMap};

type H = Handle<Expr>;
pub(crate) type R<T> = Result<T, BackendError>;

/// `rlo_<op>_<f32|f64>`: the symbol of an imported helper.
pub(crate) fn symbol(op: &str, f64: bool) -> String {
    format!("rlo_{op}_{}", if f64 { "f64" } else { "f32" })
}

/// The host's C calling convention.
pub(crate) fn call_conv() -> CallConv {
    if cfg!(windows) {
        CallConv::WindowsFastcall
    } else if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        CallConv::AppleAarch64
    } else {
        CallConv::SystemV
    }
}

/// The ABI signature shared by every generated function.
pub(crate) fn stage_signature() -> Signature {
    let mut sig = Signature::new(call_conv());
    for _ in 0..6 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

pub(crate) struct Emitter<'a> {
    pub m: &'a Module,
    pub plan: &'a Plan,
    pub t: Type,
    pub f64: bool,
    imports: Vec<Import>,
    import_idx: HashMap<String, usize>,
    frontend: TargetFrontendConfig,
}

impl<'a> Emitter<'a> {
    pub fn new(m: &'a Module, plan: &'a Plan, opts: ClifOptions) -> R<Emitter<'a>> {
        let isa = cranelift_codegen::isa::lookup_by_name(std::env::consts::ARCH)
            .map_err(|e| BackendError::general(format!("no Cranelift target for this host: {e}")))?
            .finish(cranelift_codegen::settings::Flags::new(
                cranelift_codegen::settings::builder(),
            ))
            .map_err(|e| BackendError::general(format!("Cranelift target: {e}")))?;
        Ok(Emitter {
            frontend: isa.frontend_config(),
            m,
            plan,
            t: if opts.f64 { types::F64 } else { types::F32 },
            f64: opts.f64,
            imports: Vec::new(),
            import_idx: HashMap::new(),
        })
    }

    pub fn into_imports(self) -> Vec<Import> {
        self.imports
    }

    /// Builds one function. Emitted until stable (at most 3 times): a run finds which buffer
    /// pointers it uses (the next loads them once in the entry block) and which buffers it
    /// writes (the next marks loads from every other buffer movable, see [`Fx::load_elem`]).
    pub fn function(&mut self, f: &FnPlan) -> R<Function> {
        let mut preload = BTreeSet::new();
        let mut written = BTreeSet::new();
        for _ in 0..3 {
            let (func, missing, stored) = self.build(f, &preload, &written)?;
            if missing.is_empty() && stored.is_subset(&written) {
                return Ok(func);
            }
            preload.extend(missing);
            written.extend(stored);
        }
        Err(BackendError::general("buffer preload did not converge"))
    }

    pub(crate) fn build(
        &mut self,
        f: &FnPlan,
        preload: &BTreeSet<usize>,
        written: &BTreeSet<usize>,
    ) -> R<(Function, BTreeSet<usize>, BTreeSet<usize>)> {
        let mut func =
            Function::with_name_signature(UserFuncName::testcase(&f.name), stage_signature());
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let arg = |i: usize| {
            p.get(i)
                .copied()
                .ok_or_else(|| BackendError::general("bad signature"))
        };
        let (bufs, lay, counts, params, s0, s1) =
            (arg(0)?, arg(1)?, arg(2)?, arg(3)?, arg(4)?, arg(5)?);
        let fl = MemFlagsData::trusted();
        let lay_ptrs: Vec<Value> = (0..LAY_LEN)
            .map(|i| b.ins().load(types::I64, fl, lay, (i * 8) as i32))
            .collect();
        let count_vals: Vec<Value> = (0..5)
            .map(|i| b.ins().load(types::I64, fl, counts, i * 8))
            .collect();
        let mut bufptr = HashMap::new();
        for &i in preload {
            let v = b.ins().load(types::I64, fl, bufs, (i * 8) as i32);
            bufptr.insert(i, v);
        }
        let mut fx = Fx {
            e: self,
            b,
            bufs,
            lay,
            counts,
            params,
            lay_ptrs,
            count_vals,
            bufptr,
            missing: BTreeSet::new(),
            movable: matches!(f.body, Body::Token(_)),
            written: written.clone(),
            stored: BTreeSet::new(),
            funcs: HashMap::new(),
            local: HashMap::new(),
            vlocal: HashMap::new(),
        };
        match &f.body {
            Body::Small(items) => {
                for it in items {
                    fx.item(it)?;
                }
            }
            Body::Token(steps) => fx.token(steps, s0, s1)?,
        }
        fx.b.ins().return_(&[]);
        fx.b.seal_all_blocks();
        let missing = std::mem::take(&mut fx.missing);
        let stored = std::mem::take(&mut fx.stored);
        let frontend = fx.e.frontend;
        fx.b.finalize(frontend);
        Ok((func, missing, stored))
    }

    pub(crate) fn import(&mut self, name: &str, sig: impl FnOnce() -> Signature) -> usize {
        if let Some(&i) = self.import_idx.get(name) {
            return i;
        }
        self.imports.push(Import {
            symbol: name.to_string(),
            signature: sig(),
        });
        let i = self.imports.len() - 1;
        self.import_idx.insert(name.to_string(), i);
        i
    }
}

/// The element a loop body is at: indices (i64) at each level, filled lazily.
#[derive(Clone, Copy)]
pub(crate) struct Ctx {
    pub t: Option<Value>,
    pub k: Option<Value>,
    pub s: Option<Value>,
    pub g: Option<Value>,
}

impl Ctx {
    pub(crate) fn at(level: Level, i: Value) -> Ctx {
        let mut c = Ctx {
            t: None,
            k: None,
            s: None,
            g: None,
        };
        match level {
            Level::Tok => c.t = Some(i),
            Level::Turn => c.k = Some(i),
            Level::Seq => c.s = Some(i),
            Level::Group => c.g = Some(i),
            Level::Batch => {}
        }
        c
    }
}

pub(crate) struct Fx<'e, 'a, 'f> {
    pub e: &'e mut Emitter<'a>,
    pub b: FunctionBuilder<'f>,
    bufs: Value,
    pub lay: Value,
    pub counts: Value,
    params: Value,
    lay_ptrs: Vec<Value>,
    count_vals: Vec<Value>,
    bufptr: HashMap<usize, Value>,
    missing: BTreeSet<usize>,
    /// Whether loads from buffers this function does not write may be moved (token passes).
    movable: bool,
    /// Buffers written by this function (found by the previous build).
    written: BTreeSet<usize>,
    /// Buffers written so far by this build.
    pub stored: BTreeSet<usize>,
    funcs: HashMap<usize, FuncRef>,
    /// Values of the nodes of the current sweep at the current element.
    pub local: HashMap<H, Value>,
    /// Values of the nodes of the current SIMD sweep at the current 4 tokens.
    pub vlocal: HashMap<H, Value>,
}

fn bug(msg: &str) -> BackendError {
    BackendError::general(format!("internal: {msg}"))
}

impl Fx<'_, '_, '_> {
    pub(crate) fn m(&self) -> &Module {
        self.e.m
    }

    pub(crate) fn tsize(&self) -> i64 {
        if self.e.f64 {
            8
        } else {
            4
        }
    }

    pub(crate) fn ptr(&mut self, buf: usize) -> Value {
        if let Some(&v) = self.bufptr.get(&buf) {
            return v;
        }
        self.missing.insert(buf);
        self.b.ins().load(
            types::I64,
            MemFlagsData::trusted(),
            self.bufs,
            (buf * 8) as i32,
        )
    }

    pub(crate) fn lay_ptr(&self, i: usize) -> R<Value> {
        self.lay_ptrs
            .get(i)
            .copied()
            .ok_or_else(|| bug("layout index"))
    }

    pub(crate) fn count(&self, level: Level) -> R<Value> {
        self.count_vals
            .get(level as usize)
            .copied()
            .ok_or_else(|| bug("count index"))
    }

    pub(crate) fn load_u32(&mut self, arr: usize, i: Value) -> R<Value> {
        let p = self.lay_ptr(arr)?;
        let off = self.b.ins().ishl_imm_u(i, 2);
        let a = self.b.ins().iadd(p, off);
        let fl = if self.movable {
            MemFlagsData::trusted().with_readonly().with_can_move()
        } else {
            MemFlagsData::trusted()
        };
        let v = self.b.ins().load(types::I32, fl, a, 0);
        Ok(self.b.ins().uextend(types::I64, v))
    }

    pub(crate) fn elem_addr(&mut self, buf: usize, i: Value) -> Value {
        let p = self.ptr(buf);
        let sh = if self.e.f64 { 3 } else { 2 };
        let off = self.b.ins().ishl_imm_u(i, sh);
        self.b.ins().iadd(p, off)
    }

    /// Loads element `i` of `buf`. In a token pass, a buffer the function never writes is
    /// constant while it runs, so its loads are marked `readonly` + `can_move`: Cranelift then
    /// merges repeated loads and hoists per-sequence and batch values out of the token loop.
    /// (Hoisting only crosses the loops of the pass, whose indices are valid for every
    /// sequence/group index they depend on; batch buffers have one element.)
    pub(crate) fn load_elem(&mut self, buf: usize, i: Value) -> Value {
        let a = self.elem_addr(buf, i);
        let fl = if self.movable_for(buf) {
            MemFlagsData::trusted().with_readonly().with_can_move()
        } else {
            MemFlagsData::trusted()
        };
        self.b.ins().load(self.e.t, fl, a, 0)
    }

    /// Whether loads from `buf` may move: a token pass that never writes it.
    pub(crate) fn movable_for(&self, buf: usize) -> bool {
        self.movable && !self.written.contains(&buf)
    }

    pub(crate) fn store_elem(&mut self, buf: usize, i: Value, v: Value) {
        self.stored.insert(buf);
        let a = self.elem_addr(buf, i);
        self.b.ins().store(MemFlagsData::trusted(), v, a, 0);
    }

    pub(crate) fn fconst(&mut self, c: f64) -> Value {
        if self.e.f64 {
            self.b.ins().f64const(c)
        } else {
            self.b.ins().f32const(c as f32)
        }
    }

    pub(crate) fn bool_to_t(&mut self, b: Value) -> Value {
        let one = self.fconst(1.0);
        let zero = self.fconst(0.0);
        self.b.ins().select(b, one, zero)
    }

    pub(crate) fn t_to_bool(&mut self, v: Value) -> Value {
        let zero = self.fconst(0.0);
        self.b.ins().fcmp(FloatCC::NotEqual, v, zero)
    }

    /// Index of the element at `level` that contains the context's element.
    pub(crate) fn idx(&mut self, c: &mut Ctx, level: Level) -> R<Value> {
        match level {
            Level::Tok => c.t.ok_or_else(|| bug("token index outside a token loop")),
            Level::Turn => {
                if let Some(k) = c.k {
                    return Ok(k);
                }
                let t = c.t.ok_or_else(|| bug("turn index"))?;
                let k = self.load_u32(LAY_TOK_TURN, t)?;
                c.k = Some(k);
                Ok(k)
            }
            Level::Seq => {
                if let Some(s) = c.s {
                    return Ok(s);
                }
                let s = match (c.t, c.k) {
                    (Some(t), _) => self.load_u32(LAY_TOK_SEQ, t)?,
                    (None, Some(k)) => self.load_u32(LAY_TURN_SEQ, k)?,
                    (None, None) => return Err(bug("seq index")),
                };
                c.s = Some(s);
                Ok(s)
            }
            Level::Group => {
                if let Some(g) = c.g {
                    return Ok(g);
                }
                let s = self.idx(c, Level::Seq)?;
                let g = self.load_u32(LAY_SEQ_GROUP, s)?;
                c.g = Some(g);
                Ok(g)
            }
            Level::Batch => Ok(self.b.ins().iconst(types::I64, 0)),
        }
    }

    pub(crate) fn is_bool(&self, h: H) -> bool {
        self.m().ty(h).dtype == DType::Bool
    }

    pub(crate) fn load_node(&mut self, buf: usize, h: H, c: &mut Ctx) -> R<Value> {
        let i = self.idx(c, self.m().level(h))?;
        let v = self.load_elem(buf, i);
        Ok(if self.is_bool(h) {
            self.t_to_bool(v)
        } else {
            v
        })
    }

    /// The value of `h` at the context's element (views are read through).
    pub(crate) fn value(&mut self, h: H, c: &mut Ctx) -> R<Value> {
        let m = self.e.m;
        let e = m.exprs.get(h).ok_or_else(|| bug("handle"))?;
        match *e {
            Expr::Const(x) => Ok(self.fconst(x)),
            Expr::Bool(x) => Ok(self.b.ins().iconst(types::I8, i64::from(x))),
            Expr::Param(i) => {
                let off = i64::from(i) * self.tsize();
                let off = i32::try_from(off).map_err(|_| bug("param offset"))?;
                // Parameters are constant during a run: movable (hoisted out of loops).
                let fl = MemFlagsData::trusted().with_readonly().with_can_move();
                Ok(self.b.ins().load(self.e.t, fl, self.params, off))
            }
            Expr::Input(i) => {
                let buf = *self
                    .e
                    .plan
                    .input_buf
                    .get(i as usize)
                    .ok_or_else(|| BackendError::at(m, h, "unknown input"))?;
                self.load_node(buf, h, c)
            }
            Expr::Index(kind) => {
                let s = self.idx(c, Level::Seq)?;
                let (i, arr) = match kind {
                    IndexKind::Pos => (self.idx(c, Level::Tok)?, LAY_SEQ_OFFSETS),
                    IndexKind::TurnIndex => (self.idx(c, Level::Turn)?, LAY_TURN_OFFSETS),
                };
                let start = self.load_u32(arr, s)?;
                let d = self.b.ins().isub(i, start);
                Ok(self.b.ins().fcvt_from_uint(self.e.t, d))
            }
            Expr::Broadcast { arg, .. } | Expr::Detach { arg } => self.value(arg, c),
            Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => {
                if let Some(&v) = self.local.get(&h) {
                    return Ok(v);
                }
                match self.e.plan.loc.get(h.index()) {
                    Some(Loc::Buf(b)) => self.load_node(*b, h, c),
                    _ => Err(BackendError::at(
                        m,
                        h,
                        "value read outside the sweep computing it",
                    )),
                }
            }
        }
    }

    pub(crate) fn call(
        &mut self,
        name: &str,
        args: &[Value],
        ret: Option<Type>,
    ) -> R<Option<Value>> {
        let (t, arg_tys): (Type, Vec<Type>) = (
            self.e.t,
            args.iter()
                .map(|&a| self.b.func.dfg.value_type(a))
                .collect(),
        );
        let _ = t;
        let idx = self.e.import(name, || {
            let mut sig = Signature::new(call_conv());
            sig.params
                .extend(arg_tys.iter().map(|&ty| AbiParam::new(ty)));
            sig.returns.extend(ret.map(AbiParam::new));
            sig
        });
        let fref = match self.funcs.get(&idx) {
            Some(&f) => f,
            None => {
                let sig = self
                    .e
                    .imports
                    .get(idx)
                    .map(|i| i.signature.clone())
                    .ok_or_else(|| bug("import"))?;
                let sigref = self.b.import_signature(sig);
                let idx32 = u32::try_from(idx).map_err(|_| bug("import index"))?;
                let uref = self
                    .b
                    .func
                    .declare_imported_user_function(UserExternalName::new(0, idx32));
                let f = self.b.import_function(ExtFuncData {
                    name: ExternalName::user(uref),
                    signature: sigref,
                    colocated: false,
                    patchable: false,
                });
                self.funcs.insert(idx, f);
                f
            }
        };
        let inst = self.b.ins().call(fref, args);
        Ok(self.b.inst_results(inst).first().copied())
    }

    pub(crate) fn math(&mut self, op: &str, args: &[Value]) -> R<Value> {
        let name = symbol(op, self.e.f64);
        self.call(&name, args, Some(self.e.t))?
            .ok_or_else(|| bug("math call without result"))
    }

    /// Elementwise nodes.
    pub(crate) fn compute(&mut self, h: H, c: &mut Ctx) -> R<Value> {
        let m = self.e.m;
        match *ex(m, h) {
            Expr::Unary { op, arg } => {
                let x = self.value(arg, c)?;
                Ok(match op {
                    UnaryOp::Neg => self.b.ins().fneg(x),
                    UnaryOp::Not => self.b.ins().bxor_imm_u(x, 1),
                    UnaryOp::ToF32 => self.bool_to_t(x),
                    UnaryOp::Exp if !self.e.f64 => self.exp_f32(x),
                    UnaryOp::Exp => self.math("exp", &[x])?,
                    UnaryOp::Log => self.math("log", &[x])?,
                    UnaryOp::Log1p => self.math("log1p", &[x])?,
                    UnaryOp::Expm1 => self.math("expm1", &[x])?,
                    UnaryOp::Lgamma => self.math("lgamma", &[x])?,
                    UnaryOp::Digamma => self.math("digamma", &[x])?,
                    UnaryOp::Sqrt => self.b.ins().sqrt(x),
                    UnaryOp::Abs => self.b.ins().fabs(x),
                    UnaryOp::Sigmoid => self.math("sigmoid", &[x])?,
                    UnaryOp::Softplus => self.math("softplus", &[x])?,
                    UnaryOp::Tanh => self.math("tanh", &[x])?,
                    UnaryOp::Floor => self.b.ins().floor(x),
                    UnaryOp::Ceil => self.b.ins().ceil(x),
                    UnaryOp::Round => self.b.ins().nearest(x),
                })
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.value(lhs, c)?;
                let b = self.value(rhs, c)?;
                let i = &mut self.b;
                Ok(match op {
                    BinaryOp::Add => i.ins().fadd(a, b),
                    BinaryOp::Sub => i.ins().fsub(a, b),
                    BinaryOp::Mul => i.ins().fmul(a, b),
                    BinaryOp::Div => i.ins().fdiv(a, b),
                    BinaryOp::Pow => self.math("pow", &[a, b])?,
                    BinaryOp::Min => i.ins().fmin(a, b),
                    BinaryOp::Max => i.ins().fmax(a, b),
                    BinaryOp::Lt => i.ins().fcmp(FloatCC::LessThan, a, b),
                    BinaryOp::Le => i.ins().fcmp(FloatCC::LessThanOrEqual, a, b),
                    BinaryOp::Gt => i.ins().fcmp(FloatCC::GreaterThan, a, b),
                    BinaryOp::Ge => i.ins().fcmp(FloatCC::GreaterThanOrEqual, a, b),
                    BinaryOp::Eq => i.ins().fcmp(FloatCC::Equal, a, b),
                    BinaryOp::Ne => i.ins().fcmp(FloatCC::NotEqual, a, b),
                    BinaryOp::And => i.ins().band(a, b),
                    BinaryOp::Or => i.ins().bor(a, b),
                })
            }
            Expr::Select {
                cond,
                on_true,
                on_false,
            } => {
                let cv = self.value(cond, c)?;
                let a = self.value(on_true, c)?;
                let b = self.value(on_false, c)?;
                Ok(self.b.ins().select(cv, a, b))
            }
            Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Broadcast { .. }
            | Expr::Detach { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => self.value(h, c),
        }
    }

    /// Stores a node's value (bools as 0/1).
    pub(crate) fn store_node(&mut self, h: H, i: Value, v: Value) -> R<()> {
        if let Some(Loc::Buf(buf)) = self.e.plan.loc.get(h.index()).copied() {
            let v = if self.is_bool(h) {
                self.bool_to_t(v)
            } else {
                v
            };
            self.store_elem(buf, i, v);
        }
        Ok(())
    }

    pub(crate) fn node_buf(&self, h: H) -> R<usize> {
        match self.e.plan.loc.get(h.index()) {
            Some(Loc::Buf(b)) => Ok(*b),
            _ => Err(BackendError::at(self.e.m, h, "node has no buffer")),
        }
    }

    /// `for i in start..end { body(i) }` (`rev`: from `end - 1` down to `start`); the body also
    /// gets whether `i` is the first element visited.
    pub(crate) fn for_range(
        &mut self,
        start: Value,
        end: Value,
        rev: bool,
        body: &mut dyn FnMut(&mut Self, Value, Value) -> R<()>,
    ) -> R<()> {
        self.counted_loop(start, end, 1, &mut |fx, j| {
            let i = if rev {
                let se = fx.b.ins().iadd(start, end);
                let se1 = fx.b.ins().iadd_imm_s(se, -1);
                fx.b.ins().isub(se1, j)
            } else {
                j
            };
            let first = fx.b.ins().icmp(IntCC::Equal, j, start);
            body(fx, i, first)
        })
    }

    /// `for (j = start; j < end; j += step) body(j)`.
    pub(crate) fn counted_loop(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value) -> R<()>,
    ) -> R<()> {
        let header = self.b.create_block();
        let j = self.b.append_block_param(header, types::I64);
        let blk = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[BlockArg::Value(start)]);
        self.b.switch_to_block(header);
        let cmp = self.b.ins().icmp(IntCC::SignedLessThan, j, end);
        self.b.ins().brif(cmp, blk, &[], exit, &[]);
        self.b.switch_to_block(blk);
        self.b.seal_block(blk);
        body(self, j)?;
        let next = self.b.ins().iadd_imm_s(j, step);
        self.b.ins().jump(header, &[BlockArg::Value(next)]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    pub(crate) fn for_level(
        &mut self,
        level: Level,
        body: &mut dyn FnMut(&mut Self, Value, Value) -> R<()>,
    ) -> R<()> {
        let zero = self.b.ins().iconst(types::I64, 0);
        let n = self.count(level)?;
        self.for_range(zero, n, false, body)
    }

    /// The elements (tokens or turns) of sequence `s`.
    pub(crate) fn seq_range(&mut self, level: Level, s: Value) -> R<(Value, Value)> {
        let arr = if level == Level::Tok {
            LAY_SEQ_OFFSETS
        } else {
            LAY_TURN_OFFSETS
        };
        let a = self.load_u32(arr, s)?;
        let s1 = self.b.ins().iadd_imm_s(s, 1);
        let e = self.load_u32(arr, s1)?;
        Ok((a, e))
    }

    pub(crate) fn item(&mut self, it: &Item) -> R<()> {
        let m = self.e.m;
        match *it {
            Item::Copy { node, buf } => self.for_level(m.level(node), &mut |fx, i, _| {
                let mut c = Ctx::at(m.level(node), i);
                let v = fx.value(node, &mut c)?;
                let v = if fx.is_bool(node) { fx.bool_to_t(v) } else { v };
                fx.store_elem(buf, i, v);
                Ok(())
            }),
            Item::Combine(h) => self.small_reduce(h, true),
            Item::Node(h) => match *ex(m, h) {
                Expr::Reduce { .. } => self.small_reduce(h, false),
                Expr::Scan { .. } => {
                    let zero = self.b.ins().iconst(types::I64, 0);
                    let n = self.count(Level::Seq)?;
                    self.for_range(zero, n, false, &mut |fx, s, _| {
                        let g = fx.load_u32(LAY_SEQ_GROUP, s)?;
                        fx.scan_seq(h, s, g)
                    })
                }
                Expr::Rank { .. } | Expr::Quantile { .. } | Expr::PosReduce { .. } => {
                    self.helper(h)
                }
                Expr::Unary { .. } | Expr::Binary { .. } | Expr::Select { .. } => {
                    self.for_level(m.level(h), &mut |fx, i, _| {
                        let mut c = Ctx::at(m.level(h), i);
                        let v = fx.compute(h, &mut c)?;
                        fx.store_node(h, i, v)
                    })
                }
                Expr::Const(_)
                | Expr::Bool(_)
                | Expr::Param(_)
                | Expr::Input(_)
                | Expr::Index(_)
                | Expr::Broadcast { .. }
                | Expr::Detach { .. } => Ok(()),
            },
        }
    }

    pub(crate) fn init_of(&mut self, op: ReduceOp) -> Value {
        self.fconst(match op {
            ReduceOp::Sum => 0.0,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        })
    }

    pub(crate) fn combine(&mut self, op: ReduceOp, acc: Value, x: Value) -> Value {
        match op {
            ReduceOp::Sum => self.b.ins().fadd(acc, x),
            ReduceOp::Max => self.b.ins().fmax(acc, x),
            ReduceOp::Min => self.b.ins().fmin(acc, x),
        }
    }
}
