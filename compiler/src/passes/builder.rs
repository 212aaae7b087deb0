//! A hash-consing IR builder (tinygrad-style CSE at construction): appending a node that already
//! exists returns the existing handle. Node types follow the typing rules of `ir::Expr`, so
//! callers never write a type by hand. Used by autodiff, the simplifier and the test generators.

use std::collections::HashMap;

use crate::arena::Handle;
use crate::ir::{BinaryOp, Expr, IndexKind, Module, NodeKey, ReduceOp, ScanOp, UnaryOp};
use crate::types::{DType, Level, Ty};
use crate::valid::binary_types;
use rlo_grammar::Span;

/// Appends to a module, reusing structurally equal nodes; `span` is given to every new node.
pub struct Builder {
    pub m: Module,
    pub span: Span,
    memo: HashMap<NodeKey, Handle<Expr>>,
}

impl Builder {
    /// Wraps `m`, indexing its existing nodes (the first of equal nodes is the one reused).
    pub fn new(m: Module) -> Builder {
        let mut memo = HashMap::new();
        for (h, e) in m.exprs.iter() {
            memo.entry(NodeKey(e.clone(), m.ty(h))).or_insert(h);
        }
        Builder {
            m,
            span: Span::default(),
            memo,
        }
    }

    pub fn finish(self) -> Module {
        self.m
    }

    pub fn level(&self, h: Handle<Expr>) -> Level {
        self.m.level(h)
    }

    /// Appends `e` with type `ty` unless an equal node exists.
    pub fn node(&mut self, e: Expr, ty: Ty) -> Handle<Expr> {
        let k = NodeKey(e, ty);
        if let Some(&h) = self.memo.get(&k) {
            return h;
        }
        let h = self.m.append(k.0.clone(), ty, self.span);
        self.memo.insert(k, h);
        h
    }

    pub fn constant(&mut self, v: f64) -> Handle<Expr> {
        self.node(Expr::Const(v), Ty::new(Level::Batch, DType::F32))
    }

    pub fn boolean(&mut self, v: bool) -> Handle<Expr> {
        self.node(Expr::Bool(v), Ty::new(Level::Batch, DType::Bool))
    }

    pub fn param(&mut self, i: u32) -> Handle<Expr> {
        self.node(Expr::Param(i), Ty::new(Level::Batch, DType::F32))
    }

    pub fn input(&mut self, i: u32) -> Handle<Expr> {
        let ty = self
            .m
            .inputs
            .get(i as usize)
            .map(|x| x.ty)
            .unwrap_or(Ty::new(Level::Batch, DType::F32));
        self.node(Expr::Input(i), ty)
    }

    pub fn index(&mut self, k: IndexKind) -> Handle<Expr> {
        let level = match k {
            IndexKind::Pos => Level::Tok,
            IndexKind::TurnIndex => Level::Turn,
        };
        self.node(Expr::Index(k), Ty::new(level, DType::F32))
    }

    /// The constant `v` at `level` (a broadcast of a batch constant).
    pub fn const_at(&mut self, v: f64, level: Level) -> Handle<Expr> {
        let c = self.constant(v);
        self.bcast(c, level)
    }

    /// `x` copied down to `level` (no-op when already there).
    pub fn bcast(&mut self, x: Handle<Expr>, level: Level) -> Handle<Expr> {
        let ty = self.m.ty(x);
        if ty.level <= level {
            return x;
        }
        self.node(
            Expr::Broadcast { arg: x, to: level },
            Ty::new(level, ty.dtype),
        )
    }

    pub fn unary(&mut self, op: UnaryOp, arg: Handle<Expr>) -> Handle<Expr> {
        let dtype = if op == UnaryOp::Not {
            DType::Bool
        } else {
            DType::F32
        };
        let level = self.level(arg);
        self.node(Expr::Unary { op, arg }, Ty::new(level, dtype))
    }

    /// Elementwise binary op; broadcasts the coarser operand down to the finer one's level.
    pub fn binary(&mut self, op: BinaryOp, lhs: Handle<Expr>, rhs: Handle<Expr>) -> Handle<Expr> {
        let level = self.level(lhs).min(self.level(rhs));
        let lhs = self.bcast(lhs, level);
        let rhs = self.bcast(rhs, level);
        let (_, dtype) = binary_types(op);
        self.node(Expr::Binary { op, lhs, rhs }, Ty::new(level, dtype))
    }

    pub fn add(&mut self, a: Handle<Expr>, b: Handle<Expr>) -> Handle<Expr> {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: Handle<Expr>, b: Handle<Expr>) -> Handle<Expr> {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: Handle<Expr>, b: Handle<Expr>) -> Handle<Expr> {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn div(&mut self, a: Handle<Expr>, b: Handle<Expr>) -> Handle<Expr> {
        self.binary(BinaryOp::Div, a, b)
    }
    pub fn neg(&mut self, a: Handle<Expr>) -> Handle<Expr> {
        self.unary(UnaryOp::Neg, a)
    }
    /// `k · x` for a literal `k`.
    pub fn scale(&mut self, k: f64, x: Handle<Expr>) -> Handle<Expr> {
        let c = self.constant(k);
        self.mul(c, x)
    }

    /// `cond ? t : f`, broadcasting all three to the finest of their levels.
    pub fn select(&mut self, cond: Handle<Expr>, t: Handle<Expr>, f: Handle<Expr>) -> Handle<Expr> {
        let level = self.level(cond).min(self.level(t)).min(self.level(f));
        let (cond, on_true, on_false) = (
            self.bcast(cond, level),
            self.bcast(t, level),
            self.bcast(f, level),
        );
        let dtype = self.m.ty(on_true).dtype;
        self.node(
            Expr::Select {
                cond,
                on_true,
                on_false,
            },
            Ty::new(level, dtype),
        )
    }

    /// `cond ? x : 0`.
    pub fn keep(&mut self, cond: Handle<Expr>, x: Handle<Expr>) -> Handle<Expr> {
        let z = self.constant(0.0);
        self.select(cond, x, z)
    }

    pub fn reduce(
        &mut self,
        op: ReduceOp,
        arg: Handle<Expr>,
        to: Level,
        filter: Option<Handle<Expr>>,
    ) -> Handle<Expr> {
        self.node(
            Expr::Reduce {
                op,
                arg,
                to,
                filter,
            },
            Ty::new(to, DType::F32),
        )
    }

    /// Number of `level` elements inside each `to` element where `filter` holds.
    pub fn count(&mut self, level: Level, to: Level, filter: Option<Handle<Expr>>) -> Handle<Expr> {
        let one = self.const_at(1.0, level);
        self.reduce(ReduceOp::Sum, one, to, filter)
    }

    pub fn scan(
        &mut self,
        op: ScanOp,
        arg: Handle<Expr>,
        discount: Option<Handle<Expr>>,
    ) -> Handle<Expr> {
        let level = self.level(arg);
        let discount = discount.map(|d| self.bcast(d, level));
        self.node(Expr::Scan { op, arg, discount }, Ty::new(level, DType::F32))
    }

    pub fn rank(&mut self, arg: Handle<Expr>, within: Level) -> Handle<Expr> {
        let level = self.level(arg);
        self.node(Expr::Rank { arg, within }, Ty::new(level, DType::F32))
    }

    pub fn quantile(
        &mut self,
        arg: Handle<Expr>,
        q: Handle<Expr>,
        to: Level,
        filter: Option<Handle<Expr>>,
    ) -> Handle<Expr> {
        self.node(
            Expr::Quantile { arg, q, to, filter },
            Ty::new(to, DType::F32),
        )
    }

    pub fn pos_reduce(&mut self, op: ReduceOp, arg: Handle<Expr>) -> Handle<Expr> {
        self.node(Expr::PosReduce { op, arg }, Ty::new(Level::Tok, DType::F32))
    }

    pub fn detach(&mut self, arg: Handle<Expr>) -> Handle<Expr> {
        let ty = self.m.ty(arg);
        self.node(Expr::Detach { arg }, ty)
    }
}
