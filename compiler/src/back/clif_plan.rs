//! Planning for the Cranelift backend: which function and which sweep computes each node, and
//! which buffer (if any) holds it. See the module docs of `clif.rs` for the rules.
//!
//! A `Small` stage becomes one serial function that computes each node with a loop over the
//! elements of its level. A `TokenPass` stage becomes up to three functions:
//! - `pre` (serial): nodes of the stage that only a token-level loop would not fit (group/batch
//!   math, reductions of seq values, helpers) and that depend on nothing computed in the pass;
//! - the token function (parallel over sequences): per sequence, a list of *steps* — a block of
//!   seq-level math, a sweep over the sequence's turns, a sweep over its tokens, or a scan — run
//!   in order; a node joins the earliest step that comes after everything it reads;
//! - `post` (serial): the combination of per-sequence partials of group/batch reductions, and
//!   every node that reads one of them.
//!
//! Any node can be computed by the serial "small" form, so every schedule that puts operands
//! before users is accepted; the steps are only what makes the common case fast.

use super::clif::{BackendError, BufferDesc, BufferKind, Roots};
use crate::arena::Handle;
use crate::ir::{Expr, Module, ReduceOp};
use crate::schedule::{Schedule, StageKind};
use crate::types::Level;
use std::collections::HashMap;

type H = Handle<Expr>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Loc {
    /// Not computed (not needed, or a view).
    #[default]
    None,
    /// Lives in registers inside its token sweep only.
    Ssa,
    Buf(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepKind {
    Seq,
    Turn,
    Tok,
    Scan,
}

#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub kind: StepKind,
    pub nodes: Vec<H>,
}

#[derive(Clone, Debug)]
pub(crate) enum Item {
    /// Compute a node with a serial loop over its level.
    Node(H),
    /// Combine the per-sequence partials of a reduction computed by a token pass.
    Combine(H),
    /// Copy the value of a node (usually a view) into a buffer at its level.
    Copy { node: H, buf: usize },
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Small(Vec<Item>),
    Token(Vec<Step>),
}

#[derive(Clone, Debug)]
pub(crate) struct FnPlan {
    pub name: String,
    pub stage: Option<usize>,
    pub body: Body,
}

impl FnPlan {
    pub fn kind(&self) -> super::clif::FnKind {
        match self.body {
            Body::Small(_) => super::clif::FnKind::Small,
            Body::Token(_) => super::clif::FnKind::Token,
        }
    }
}

pub(crate) struct Plan {
    pub buffers: Vec<BufferDesc>,
    pub loc: Vec<Loc>,
    pub input_buf: Vec<usize>,
    /// Per-sequence partial (and partial count, for max/min) of token-pass group/batch reductions.
    pub partial: HashMap<H, (usize, Option<usize>)>,
    /// Count buffer (at the reduction's `to` level) of max/min reductions.
    pub count: HashMap<H, usize>,
    /// Copies of helper operands that are views.
    pub copy: HashMap<H, usize>,
    pub functions: Vec<FnPlan>,
    pub roots: Roots,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum Place {
    #[default]
    Unplaced,
    Small(usize),
    Pre(usize),
    Step(usize, usize),
    Post(usize),
}

static DUMMY: Expr = Expr::Const(0.0);

/// The node behind a handle. Handles are checked against the arena before planning starts
/// (`plan` rejects out-of-range stage nodes and operands that do not precede their users).
pub(crate) fn ex(m: &Module, h: H) -> &Expr {
    m.exprs.get(h).unwrap_or(&DUMMY)
}

fn at<V: Copy + Default>(v: &[V], h: H) -> V {
    v.get(h.index()).copied().unwrap_or_default()
}

fn set<V>(v: &mut [V], h: H, x: V) {
    if let Some(s) = v.get_mut(h.index()) {
        *s = x;
    }
}

pub(crate) fn is_view(e: &Expr) -> bool {
    matches!(
        e,
        Expr::Const(_)
            | Expr::Bool(_)
            | Expr::Param(_)
            | Expr::Input(_)
            | Expr::Index(_)
            | Expr::Broadcast { .. }
            | Expr::Detach { .. }
    )
}

/// The computed node a value reads through views (`None` for constants, inputs, indices).
pub(crate) fn base(m: &Module, mut h: H) -> Option<H> {
    loop {
        match m.exprs.get(h)? {
            Expr::Broadcast { arg, .. } | Expr::Detach { arg } => h = *arg,
            Expr::Const(_) | Expr::Bool(_) | Expr::Param(_) | Expr::Input(_) | Expr::Index(_) => {
                return None
            }
            Expr::Unary { .. }
            | Expr::Binary { .. }
            | Expr::Select { .. }
            | Expr::Reduce { .. }
            | Expr::Scan { .. }
            | Expr::Rank { .. }
            | Expr::Quantile { .. }
            | Expr::PosReduce { .. } => return Some(h),
        }
    }
}

fn deps(m: &Module, h: H) -> Vec<H> {
    let mut v: Vec<H> = ex(m, h)
        .operands()
        .into_iter()
        .filter_map(|o| base(m, o))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Operands a helper reads from memory.
fn helper_operands(e: &Expr) -> Vec<H> {
    match *e {
        Expr::Rank { arg, .. } | Expr::PosReduce { arg, .. } => vec![arg],
        Expr::Quantile { arg, filter, .. } => {
            let mut v = vec![arg];
            v.extend(filter);
            v
        }
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Unary { .. }
        | Expr::Binary { .. }
        | Expr::Select { .. }
        | Expr::Broadcast { .. }
        | Expr::Reduce { .. }
        | Expr::Scan { .. }
        | Expr::Detach { .. } => vec![],
    }
}

fn domain(m: &Module, h: H) -> Option<StepKind> {
    match *ex(m, h) {
        Expr::Unary { .. } | Expr::Binary { .. } | Expr::Select { .. } => match m.level(h) {
            Level::Tok => Some(StepKind::Tok),
            Level::Turn => Some(StepKind::Turn),
            Level::Seq => Some(StepKind::Seq),
            Level::Group | Level::Batch => None,
        },
        Expr::Reduce { arg, .. } => match m.level(arg) {
            Level::Tok => Some(StepKind::Tok),
            Level::Turn => Some(StepKind::Turn),
            Level::Seq | Level::Group | Level::Batch => None,
        },
        Expr::Scan { .. } => Some(StepKind::Scan),
        Expr::Const(_)
        | Expr::Bool(_)
        | Expr::Param(_)
        | Expr::Input(_)
        | Expr::Index(_)
        | Expr::Broadcast { .. }
        | Expr::Detach { .. }
        | Expr::Rank { .. }
        | Expr::Quantile { .. }
        | Expr::PosReduce { .. } => None,
    }
}

fn is_partial_reduce(m: &Module, h: H) -> bool {
    matches!(*ex(m, h), Expr::Reduce { arg, to, .. }
        if m.level(arg) <= Level::Turn && to >= Level::Group)
}

struct Planner<'a> {
    m: &'a Module,
    place: Vec<Place>,
    buffers: Vec<BufferDesc>,
    copy: HashMap<H, usize>,
    functions: Vec<FnPlan>,
}

impl Planner<'_> {
    fn new_buf(&mut self, level: Level, kind: BufferKind) -> usize {
        self.buffers.push(BufferDesc { level, kind });
        self.buffers.len() - 1
    }

    fn check_deps(&self, h: H) -> Result<Vec<H>, BackendError> {
        let d = deps(self.m, h);
        for &x in &d {
            if at(&self.place, x) == Place::Unplaced {
                return Err(BackendError::at(
                    self.m,
                    h,
                    format!("operand {x} is not computed by an earlier stage of the schedule"),
                ));
            }
        }
        Ok(d)
    }

    /// Before a helper call: copies of view operands that have no memory of their own.
    fn helper_copies(&mut self, h: H, items: &mut Vec<Item>) {
        for op in helper_operands(ex(self.m, h)) {
            let own = base(self.m, op) == Some(op) || matches!(*ex(self.m, op), Expr::Input(_));
            if !own && !self.copy.contains_key(&op) {
                let buf = self.new_buf(self.m.level(op), BufferKind::Copy(op));
                self.copy.insert(op, buf);
                items.push(Item::Copy { node: op, buf });
            }
        }
    }

    fn small_stage(&mut self, si: usize, nodes: &[H]) -> Result<(), BackendError> {
        let fi = self.functions.len();
        let mut items = Vec::new();
        for &h in nodes {
            if is_view(ex(self.m, h)) || at(&self.place, h) != Place::Unplaced {
                continue;
            }
            self.check_deps(h)?;
            self.helper_copies(h, &mut items);
            items.push(Item::Node(h));
            set(&mut self.place, h, Place::Small(fi));
        }
        self.functions.push(FnPlan {
            name: format!("stage{si}_small"),
            stage: Some(si),
            body: Body::Small(items),
        });
        Ok(())
    }

    fn token_stage(&mut self, si: usize, nodes: &[H]) -> Result<(), BackendError> {
        let m = self.m;
        let fi = self.functions.len();
        let (f_pre, f_tok, f_post) = (fi, fi + 1, fi + 2);
        let mut pre = Vec::new();
        let mut post = Vec::new();
        let mut steps = vec![
            Step {
                kind: StepKind::Seq,
                nodes: vec![],
            },
            Step {
                kind: StepKind::Turn,
                nodes: vec![],
            },
            Step {
                kind: StepKind::Tok,
                nodes: vec![],
            },
        ];
        for &h in nodes {
            if is_view(ex(m, h)) || at(&self.place, h) != Place::Unplaced {
                continue;
            }
            let d = self.check_deps(h)?;
            let in_post = d.iter().any(|&x| {
                at(&self.place, x) == Place::Post(f_post)
                    || (matches!(at(&self.place, x), Place::Step(f, _) if f == f_tok)
                        && is_partial_reduce(m, x))
            });
            let in_steps = d
                .iter()
                .any(|&x| matches!(at(&self.place, x), Place::Step(f, _) if f == f_tok));
            let dom = domain(m, h);
            let place = match dom {
                _ if in_post => Place::Post(f_post),
                None if in_steps => Place::Post(f_post),
                None => Place::Pre(f_pre),
                Some(kind) => {
                    let mut r = 0;
                    for &x in &d {
                        if let Place::Step(_, j) = at(&self.place, x) {
                            let xk = steps.get(j).map(|s| s.kind);
                            let same = xk == Some(kind)
                                && kind != StepKind::Scan
                                && !matches!(*ex(m, x), Expr::Reduce { .. });
                            r = r.max(if same { j } else { j + 1 });
                        }
                    }
                    let found = (kind != StepKind::Scan)
                        .then(|| {
                            (r..steps.len()).find(|&i| steps.get(i).is_some_and(|s| s.kind == kind))
                        })
                        .flatten();
                    let j = match found {
                        Some(j) => j,
                        None => {
                            steps.push(Step {
                                kind,
                                nodes: vec![],
                            });
                            steps.len() - 1
                        }
                    };
                    if let Some(s) = steps.get_mut(j) {
                        s.nodes.push(h);
                    }
                    Place::Step(f_tok, j)
                }
            };
            match place {
                Place::Pre(_) => {
                    self.helper_copies(h, &mut pre);
                    pre.push(Item::Node(h));
                }
                Place::Post(_) => {
                    self.helper_copies(h, &mut post);
                    post.push(Item::Node(h));
                }
                Place::Step(..) | Place::Unplaced | Place::Small(_) => {}
            }
            if matches!(place, Place::Step(..)) && is_partial_reduce(m, h) {
                post.push(Item::Combine(h));
            }
            set(&mut self.place, h, place);
        }
        steps.retain(|s| !s.nodes.is_empty());
        // Step indices changed: renumber the places of this pass.
        for (j, s) in steps.iter().enumerate() {
            for &h in &s.nodes {
                set(&mut self.place, h, Place::Step(f_tok, j));
            }
        }
        let name = |part: &str| format!("stage{si}_{part}");
        self.functions.push(FnPlan {
            name: name("pre"),
            stage: Some(si),
            body: Body::Small(pre),
        });
        self.functions.push(FnPlan {
            name: name("tokens"),
            stage: Some(si),
            body: Body::Token(steps),
        });
        self.functions.push(FnPlan {
            name: name("post"),
            stage: Some(si),
            body: Body::Small(post),
        });
        Ok(())
    }
}

pub(crate) fn plan(m: &Module, s: &Schedule) -> Result<Plan, BackendError> {
    let n = m.exprs.len();
    let mut p = Planner {
        m,
        place: vec![Place::Unplaced; n],
        buffers: Vec::new(),
        copy: HashMap::new(),
        functions: Vec::new(),
    };
    for (h, e) in m.exprs.iter() {
        for op in e.operands() {
            if op >= h {
                return Err(BackendError::at(m, h, "operand does not precede its user"));
            }
        }
    }
    let input_buf: Vec<usize> = m
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| p.new_buf(inp.ty.level, BufferKind::Input(i as u32)))
        .collect();
    for (si, stage) in s.stages.iter().enumerate() {
        if stage.nodes.iter().any(|h| h.index() >= n) {
            return Err(BackendError::general(format!(
                "stage {si} names a node outside the module"
            )));
        }
        match stage.kind {
            StageKind::Small => p.small_stage(si, &stage.nodes)?,
            StageKind::TokenPass => p.token_stage(si, &stage.nodes)?,
        }
    }
    // Roots: computed nodes are read from their buffer; views are copied at the end.
    let mut root_list: Vec<H> = vec![m.loss];
    root_list.extend(m.grads.iter().map(|g| g.value));
    root_list.extend(m.metrics.iter().map(|x| x.value));
    root_list.extend(m.outputs.iter().map(|x| x.value));
    let mut final_items = Vec::new();
    let mut root_bufs = Vec::new();
    let final_fn = p.functions.len();
    for &r in &root_list {
        if r.index() >= n {
            return Err(BackendError::general(
                "a root names a node outside the module",
            ));
        }
        for x in deps(m, r).into_iter().chain(base(m, r)) {
            if at(&p.place, x) == Place::Unplaced {
                return Err(BackendError::at(
                    m,
                    x,
                    "a result depends on an unscheduled node",
                ));
            }
        }
        if base(m, r) == Some(r) {
            root_bufs.push(None);
        } else {
            let buf = p.new_buf(m.level(r), BufferKind::Copy(r));
            final_items.push(Item::Copy { node: r, buf });
            root_bufs.push(Some(buf));
        }
    }
    p.functions.push(FnPlan {
        name: "roots".into(),
        stage: None,
        body: Body::Small(final_items),
    });

    // Which token-sweep nodes must be stored: read outside their own step, or a root, or read
    // by a helper from memory.
    let mut need = vec![false; n];
    let places = p.place.clone();
    for (h, e) in m.exprs.iter() {
        let ph = at(&places, h);
        if ph == Place::Unplaced {
            continue;
        }
        for d in deps(m, h) {
            if at(&places, d) != ph {
                set(&mut need, d, true);
            }
        }
        for op in helper_operands(e) {
            if let Some(b) = base(m, op) {
                set(&mut need, b, true);
            }
        }
    }
    for &r in &root_list {
        if let Some(b) = base(m, r) {
            set(&mut need, b, true);
        }
    }
    let _ = final_fn;

    let mut loc = vec![Loc::None; n];
    let mut partial = HashMap::new();
    let mut count = HashMap::new();
    for h in m.exprs.handles() {
        let place = at(&places, h);
        if place == Place::Unplaced {
            continue;
        }
        let e = ex(m, h);
        let level = m.level(h);
        let ssa_ok = level == Level::Tok
            && !matches!(e, Expr::Scan { .. } | Expr::Reduce { .. })
            && matches!(place, Place::Step(..))
            && !at(&need, h);
        let l = if ssa_ok {
            Loc::Ssa
        } else {
            Loc::Buf(p.new_buf(level, BufferKind::Node(h)))
        };
        set(&mut loc, h, l);
        if let Expr::Reduce { op, to, arg, .. } = *e {
            let minmax = op != ReduceOp::Sum;
            let in_step = matches!(place, Place::Step(..));
            if in_step && is_partial_reduce(m, h) {
                let pb = p.new_buf(Level::Seq, BufferKind::Partial(h));
                let pc = minmax.then(|| p.new_buf(Level::Seq, BufferKind::Count(h)));
                partial.insert(h, (pb, pc));
            }
            let needs_count = minmax && (!in_step || to >= Level::Group || to == Level::Turn);
            if needs_count && m.level(arg) < to {
                count.insert(h, p.new_buf(to, BufferKind::Count(h)));
            }
        }
    }
    let pick = |r: H, copy: Option<usize>| -> Result<usize, BackendError> {
        match (copy, at(&loc, r)) {
            (Some(b), _) | (None, Loc::Buf(b)) => Ok(b),
            (None, Loc::None | Loc::Ssa) => Err(BackendError::at(m, r, "result has no buffer")),
        }
    };
    let mut it = root_list.iter().zip(root_bufs.iter());
    let mut next = || -> Result<usize, BackendError> {
        match it.next() {
            Some((&r, &c)) => pick(r, c),
            None => Err(BackendError::general("root list mismatch")),
        }
    };
    let loss = next()?;
    let grads = m.grads.iter().map(|_| next()).collect::<Result<_, _>>()?;
    let metrics = m.metrics.iter().map(|_| next()).collect::<Result<_, _>>()?;
    let outputs = m.outputs.iter().map(|_| next()).collect::<Result<_, _>>()?;
    let mut functions = p.functions;
    functions.retain(|f| match &f.body {
        Body::Small(v) => !v.is_empty(),
        Body::Token(v) => !v.is_empty(),
    });
    Ok(Plan {
        buffers: p.buffers,
        loc,
        input_buf,
        partial,
        count,
        copy: p.copy,
        functions,
        roots: Roots {
            loss,
            grads,
            metrics,
            outputs,
        },
    })
}
