//! Name resolution (after naga's `front/wgsl/index.rs`): loads the stdlib modules a file imports
//! (and the modules they import), builds one global table of functions and one scope per module,
//! and checks every name of every body.
//!
//! Rules (spec.md §7):
//! - Functions are global to a module: a module's scope holds its own `fn`s and the ones it
//!   imports; a function may be called before its definition. Builtin functions and values cannot
//!   be redefined. Explicit imports conflicting with a local `fn` are errors; a glob import never
//!   overrides a local or explicitly imported name.
//! - Values (objective parameters, inputs, `let`s; function parameters and `let`s) share one
//!   namespace per body and are visible from their definition on. **No shadowing**: a `let` may
//!   not reuse the name of an earlier parameter, input or `let`. Builtin values (`pos`, `inf`, ...)
//!   cannot be redefined. Values and functions live in separate namespaces.
//! - Modules may import each other, but not in a cycle. Functions may not be recursive (directly
//!   or through other functions): they are inlined at every call.

use std::collections::HashMap;

use super::builtins;
use super::error::{suggest, FrontError};
use crate::types::{DType, Level};
use crate::Options;
use rlo_grammar::{ast, Diagnostic, SourceMap, Span};

pub type FnId = usize;

pub struct ModuleInfo {
    /// `main` for the user's file, `std::kl` for a stdlib module.
    pub name: String,
    pub file: ast::File,
    /// Functions defined in this module.
    pub defs: HashMap<String, FnId>,
    /// Every function callable from this module (definitions and imports).
    pub scope: HashMap<String, FnId>,
    /// The module did not parse (its errors are reported); names it should provide are not
    /// reported again as unknown.
    pub broken: bool,
    /// Imports from a broken module: unknown function names are not reported.
    pub imports_broken: bool,
}

pub struct FnInfo {
    pub decl: ast::FnDecl,
    pub module: usize,
    /// Part of a call cycle (already reported); calls to it are not expanded.
    pub recursive: bool,
}

/// All modules of a compilation; `modules[0]` is the user's file.
pub struct Program {
    pub modules: Vec<ModuleInfo>,
    pub fns: Vec<FnInfo>,
}

/// The level and dtype an annotation names; unknown words are reported in `errors`.
pub fn parse_ann(
    ann: &ast::TypeAnn,
    errors: &mut Vec<FrontError>,
) -> (Option<Level>, Option<DType>) {
    let mut level = None;
    let mut dtype = None;
    for id in ann.level.iter().chain(ann.dtype.iter()) {
        if let Some(l) = Level::from_keyword(&id.name) {
            level = Some(l);
        } else if id.name == "f32" {
            dtype = Some(DType::F32);
        } else if id.name == "bool" {
            dtype = Some(DType::Bool);
        } else {
            let words = ["tok", "turn", "seq", "group", "batch", "f32", "bool"];
            errors.push(FrontError::UnknownType {
                span: id.span,
                name: id.name.clone(),
                suggestion: suggest(&id.name, words),
            });
        }
    }
    (level, dtype)
}

struct Loader<'a> {
    sources: &'a mut SourceMap,
    opts: &'a Options,
    modules: Vec<ModuleInfo>,
    by_name: HashMap<String, usize>,
    /// `(module, index of the use item)` → the imported module (None when unresolved).
    uses: HashMap<(usize, usize), usize>,
    stack: Vec<String>,
    errors: Vec<FrontError>,
    parse_errors: Vec<Diagnostic>,
}

impl Loader<'_> {
    fn module_text(&self, name: &str) -> Option<String> {
        self.opts
            .extra_modules
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .or_else(|| crate::stdlib::module_source(name).map(str::to_string))
    }

    fn known_modules(&self) -> Vec<String> {
        crate::stdlib::module_names()
            .map(|n| format!("std::{n}"))
            .chain(
                self.opts
                    .extra_modules
                    .iter()
                    .map(|(n, _)| format!("std::{n}")),
            )
            .collect()
    }

    /// Loads the imports of module `m` (depth first; the stack detects cycles).
    fn load_imports(&mut self, m: usize) {
        let uses: Vec<(usize, ast::UseDecl)> = match self.modules.get(m) {
            Some(info) => info
                .file
                .items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| match it {
                    ast::Item::Use(u) => Some((i, u.clone())),
                    ast::Item::Fn(_) | ast::Item::Objective(_) => None,
                })
                .collect(),
            None => return,
        };
        for (i, u) in uses {
            let path: Vec<&str> = u.module.iter().map(|id| id.name.as_str()).collect();
            let path_span = match (u.module.first(), u.module.last()) {
                (Some(a), Some(b)) => a.span.to(b.span),
                _ => u.span,
            };
            let full = path.join("::");
            let name = match path.as_slice() {
                ["std", name] => *name,
                _ => {
                    let known = self.known_modules();
                    self.errors.push(FrontError::UnknownModule {
                        span: path_span,
                        path: full.clone(),
                        suggestion: suggest(&full, known.iter().map(String::as_str)),
                    });
                    continue;
                }
            };
            if let Some(pos) = self.stack.iter().position(|s| s == &full) {
                let mut cycle: Vec<String> = self.stack.get(pos..).unwrap_or(&[]).to_vec();
                cycle.push(full.clone());
                self.errors.push(FrontError::ImportCycle {
                    span: path_span,
                    cycle,
                });
                continue;
            }
            if let Some(&idx) = self.by_name.get(&full) {
                self.uses.insert((m, i), idx);
                continue;
            }
            let Some(text) = self.module_text(name) else {
                let known = self.known_modules();
                self.errors.push(FrontError::UnknownModule {
                    span: path_span,
                    path: full.clone(),
                    suggestion: suggest(&full, known.iter().map(String::as_str)),
                });
                continue;
            };
            let file_id = self.sources.add(full.clone(), text.clone());
            let mut broken = false;
            let file = match rlo_grammar::parse(&text, file_id) {
                Ok(f) => f,
                Err(d) => {
                    self.parse_errors.extend(d);
                    broken = true;
                    ast::File {
                        items: Vec::new(),
                        comments: Vec::new(),
                        span: Span::new(file_id, 0, 0),
                    }
                }
            };
            let idx = self.modules.len();
            self.modules.push(ModuleInfo {
                name: full.clone(),
                file,
                defs: HashMap::new(),
                scope: HashMap::new(),
                broken,
                imports_broken: false,
            });
            self.by_name.insert(full.clone(), idx);
            self.uses.insert((m, i), idx);
            self.stack.push(full);
            self.load_imports(idx);
            self.stack.pop();
        }
    }
}

/// Resolves `file` and everything it imports. Errors go to `errors`; parse errors of stdlib
/// modules to `parse_errors`.
pub fn resolve(
    file: &ast::File,
    sources: &mut SourceMap,
    opts: &Options,
    errors: &mut Vec<FrontError>,
    parse_errors: &mut Vec<Diagnostic>,
) -> Program {
    let mut loader = Loader {
        sources,
        opts,
        modules: vec![ModuleInfo {
            name: "main".into(),
            file: file.clone(),
            defs: HashMap::new(),
            scope: HashMap::new(),
            broken: false,
            imports_broken: false,
        }],
        by_name: HashMap::new(),
        uses: HashMap::new(),
        stack: Vec::new(),
        errors: Vec::new(),
        parse_errors: Vec::new(),
    };
    loader.load_imports(0);
    errors.append(&mut loader.errors);
    parse_errors.append(&mut loader.parse_errors);
    let uses = loader.uses;
    let mut modules = loader.modules;

    // Definitions.
    let mut fns: Vec<FnInfo> = Vec::new();
    for (mi, m) in modules.iter_mut().enumerate() {
        for item in &m.file.items {
            let ast::Item::Fn(f) = item else { continue };
            let name = &f.name.name;
            if builtins::lookup(name).is_some() || builtins::lookup_value(name).is_some() {
                errors.push(FrontError::ShadowsBuiltin {
                    span: f.name.span,
                    name: name.clone(),
                });
                continue;
            }
            if let Some(&first) = m.defs.get(name) {
                let first = fns.get(first).map(|f| f.decl.name.span).unwrap_or_default();
                errors.push(FrontError::Duplicate {
                    span: f.name.span,
                    name: name.clone(),
                    first,
                    what: "function",
                });
                continue;
            }
            let id = fns.len();
            fns.push(FnInfo {
                decl: f.clone(),
                module: mi,
                recursive: false,
            });
            m.defs.insert(name.clone(), id);
            m.scope.insert(name.clone(), id);
        }
    }

    // Imports.
    for mi in 0..modules.len() {
        let Some(items) = modules.get(mi).map(|m| m.file.items.clone()) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let ast::Item::Use(u) = item else { continue };
            let Some(&target) = uses.get(&(mi, i)) else {
                continue;
            };
            let Some(tm) = modules.get(target) else {
                continue;
            };
            let (tname, tdefs, tbroken) = (tm.name.clone(), tm.defs.clone(), tm.broken);
            let Some(m) = modules.get_mut(mi) else {
                continue;
            };
            if tbroken {
                m.imports_broken = true;
                continue;
            }
            match &u.names {
                ast::UseNames::Glob(_) => {
                    let mut sorted: Vec<_> = tdefs.iter().collect();
                    sorted.sort();
                    for (n, &id) in sorted {
                        m.scope.entry(n.clone()).or_insert(id);
                    }
                }
                ast::UseNames::List(names) => {
                    for id in names {
                        let Some(&f) = tdefs.get(&id.name) else {
                            errors.push(FrontError::UnknownImport {
                                span: id.span,
                                module: tname.clone(),
                                name: id.name.clone(),
                                suggestion: suggest(&id.name, tdefs.keys().map(String::as_str)),
                            });
                            continue;
                        };
                        match m.scope.get(&id.name) {
                            Some(&other) if other != f => {
                                let first =
                                    fns.get(other).map(|f| f.decl.name.span).unwrap_or_default();
                                errors.push(FrontError::Duplicate {
                                    span: id.span,
                                    name: id.name.clone(),
                                    first,
                                    what: "function",
                                });
                            }
                            _ => {
                                m.scope.insert(id.name.clone(), f);
                            }
                        }
                    }
                }
            }
        }
    }

    let mut prog = Program { modules, fns };
    find_recursion(&mut prog, errors);
    if let Some(user) = prog.modules.first() {
        for m in &prog.modules {
            for item in &m.file.items {
                match item {
                    ast::Item::Use(_) => {}
                    ast::Item::Fn(f) => check_fn_names(f, m, user, errors),
                    ast::Item::Objective(o) => check_objective_names(o, m, user, errors),
                }
            }
        }
    }
    prog
}

/// Calls in an expression, in source order: `(callee name, span)`.
fn calls<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Ident>) {
    match &e.kind {
        ast::ExprKind::Number(_) | ast::ExprKind::Bool(_) | ast::ExprKind::Name(_) => {}
        ast::ExprKind::Unary { operand, .. } => calls(operand, out),
        ast::ExprKind::Binary { lhs, rhs, .. } => {
            calls(lhs, out);
            calls(rhs, out);
        }
        ast::ExprKind::Call { callee, args } => {
            out.push(callee);
            for a in args {
                calls(&a.value, out);
            }
        }
        ast::ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            calls(cond, out);
            calls(then, out);
            calls(otherwise, out);
        }
        ast::ExprKind::Paren(inner) => calls(inner, out),
    }
}

fn body_calls(b: &ast::Block) -> Vec<&ast::Ident> {
    let mut out = Vec::new();
    for s in &b.stmts {
        if let ast::StmtKind::Let { value, .. } = &s.kind {
            calls(value, &mut out);
        }
    }
    calls(&b.result, &mut out);
    out
}

/// Finds call cycles among functions (depth-first search, one error per back edge).
fn find_recursion(prog: &mut Program, errors: &mut Vec<FrontError>) {
    let n = prog.fns.len();
    let edges: Vec<Vec<(FnId, Span)>> = prog
        .fns
        .iter()
        .map(|f| {
            let scope = prog.modules.get(f.module).map(|m| &m.scope);
            body_calls(&f.decl.body)
                .into_iter()
                .filter_map(|c| scope?.get(&c.name).map(|&id| (id, c.span)))
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done.
    let mut state = vec![0u8; n];
    let mut recursive = vec![false; n];
    let mut stack: Vec<FnId> = Vec::new();
    fn dfs(
        v: FnId,
        edges: &[Vec<(FnId, Span)>],
        state: &mut [u8],
        stack: &mut Vec<FnId>,
        recursive: &mut [bool],
        found: &mut Vec<(Span, Vec<FnId>)>,
    ) {
        if let Some(s) = state.get_mut(v) {
            *s = 1;
        }
        stack.push(v);
        for &(w, span) in edges.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            match state.get(w).copied().unwrap_or(2) {
                0 => dfs(w, edges, state, stack, recursive, found),
                1 => {
                    let pos = stack.iter().position(|&x| x == w).unwrap_or(0);
                    let mut cycle: Vec<FnId> = stack.get(pos..).unwrap_or(&[]).to_vec();
                    for &c in &cycle {
                        if let Some(r) = recursive.get_mut(c) {
                            *r = true;
                        }
                    }
                    cycle.push(w);
                    found.push((span, cycle));
                }
                _ => {}
            }
        }
        stack.pop();
        if let Some(s) = state.get_mut(v) {
            *s = 2;
        }
    }
    let mut found = Vec::new();
    for v in 0..n {
        if state.get(v) == Some(&0) {
            dfs(
                v,
                &edges,
                &mut state,
                &mut stack,
                &mut recursive,
                &mut found,
            );
        }
    }
    for (span, cycle) in found {
        let names = cycle
            .iter()
            .filter_map(|&c| prog.fns.get(c).map(|f| f.decl.name.name.clone()))
            .collect();
        errors.push(FrontError::Recursion { span, cycle: names });
    }
    for (f, r) in prog.fns.iter_mut().zip(recursive) {
        f.recursive = r;
    }
}

/// The value namespace of one body while it is being walked.
struct Names<'a> {
    module: &'a ModuleInfo,
    /// name → (definition span, used?, warn if unused?)
    defined: HashMap<String, (Span, bool, bool)>,
    /// Every name the body defines anywhere (for "defined later").
    all: HashMap<String, Span>,
    /// Names used before their definition (already an error; not also "unused").
    used_early: Vec<String>,
    /// Report unused `let`s (only in the user's file: stdlib warnings are not the user's).
    warn_unused: bool,
    errors: &'a mut Vec<FrontError>,
}

impl<'a> Names<'a> {
    /// The name table of one body (a fn's or an objective's): every name its `let`s and `input`s
    /// bind, for "defined later" errors, with its parameters' annotations checked and the
    /// parameters defined.
    fn for_body<'p>(
        module: &'a ModuleInfo,
        user: &ModuleInfo,
        stmts: &[ast::Stmt],
        params: impl Iterator<Item = (&'p ast::Ident, Option<&'p ast::TypeAnn>)>,
        errors: &'a mut Vec<FrontError>,
    ) -> Names<'a> {
        let mut all = HashMap::new();
        for s in stmts {
            match &s.kind {
                ast::StmtKind::Let { name, .. } | ast::StmtKind::Input { name, .. } => {
                    all.entry(name.name.clone()).or_insert(name.span);
                }
                ast::StmtKind::Loss { .. }
                | ast::StmtKind::Metric { .. }
                | ast::StmtKind::Output { .. } => {}
            }
        }
        let mut names = Names {
            module,
            defined: HashMap::new(),
            all,
            used_early: Vec::new(),
            warn_unused: std::ptr::eq(module, user),
            errors,
        };
        for (name, ann) in params {
            if let Some(ann) = ann {
                parse_ann(ann, names.errors);
            }
            names.define(name, false);
        }
        names
    }

    fn define(&mut self, id: &ast::Ident, what_unused: bool) {
        if builtins::lookup_value(&id.name).is_some() {
            self.errors.push(FrontError::ShadowsBuiltin {
                span: id.span,
                name: id.name.clone(),
            });
            return;
        }
        if let Some((first, _, _)) = self.defined.get(&id.name) {
            self.errors.push(FrontError::Duplicate {
                span: id.span,
                name: id.name.clone(),
                first: *first,
                what: "name",
            });
            return;
        }
        self.defined
            .insert(id.name.clone(), (id.span, false, what_unused));
    }

    fn expr(&mut self, e: &ast::Expr) {
        match &e.kind {
            ast::ExprKind::Number(_) | ast::ExprKind::Bool(_) => {}
            ast::ExprKind::Name(id) => self.name(id),
            ast::ExprKind::Unary { operand, .. } => self.expr(operand),
            ast::ExprKind::Binary { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            ast::ExprKind::Call { callee, args } => {
                self.callee(callee);
                for a in args {
                    self.expr(&a.value);
                }
            }
            ast::ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.expr(cond);
                self.expr(then);
                self.expr(otherwise);
            }
            ast::ExprKind::Paren(inner) => self.expr(inner),
        }
    }

    fn name(&mut self, id: &ast::Ident) {
        if let Some(d) = self.defined.get_mut(&id.name) {
            d.1 = true;
            return;
        }
        if builtins::lookup_value(&id.name).is_some() {
            return;
        }
        if self.module.scope.contains_key(&id.name) || builtins::lookup(&id.name).is_some() {
            self.errors.push(FrontError::NotAValue {
                span: id.span,
                name: id.name.clone(),
            });
            return;
        }
        let later = self.all.get(&id.name).copied();
        if later.is_some() {
            self.used_early.push(id.name.clone());
        }
        let mut candidates: Vec<&str> = self.defined.keys().map(String::as_str).collect();
        for n in builtins::value_names() {
            candidates.push(n);
        }
        self.errors.push(FrontError::UnknownName {
            span: id.span,
            name: id.name.clone(),
            suggestion: suggest(&id.name, candidates),
            later,
        });
    }

    fn callee(&mut self, id: &ast::Ident) {
        if builtins::lookup(&id.name).is_some() || self.module.scope.contains_key(&id.name) {
            return;
        }
        if self.module.imports_broken {
            return;
        }
        if let Some(d) = self.defined.get_mut(&id.name) {
            d.1 = true;
        }
        if self.defined.contains_key(&id.name) || builtins::lookup_value(&id.name).is_some() {
            self.errors.push(FrontError::NotAFunction {
                span: id.span,
                name: id.name.clone(),
            });
            return;
        }
        let fns = builtins::function_names();
        let candidates = fns
            .iter()
            .copied()
            .chain(self.module.scope.keys().map(String::as_str));
        self.errors.push(FrontError::UnknownFunction {
            span: id.span,
            name: id.name.clone(),
            suggestion: suggest(&id.name, candidates),
        });
    }

    fn finish(self) {
        if !self.warn_unused {
            return;
        }
        let mut unused: Vec<_> = self
            .defined
            .into_iter()
            .filter(|(n, (_, used, warn))| {
                *warn && !*used && !n.starts_with('_') && !self.used_early.contains(n)
            })
            .collect();
        unused.sort_by_key(|(_, (s, _, _))| *s);
        for (name, (span, _, _)) in unused {
            self.errors.push(FrontError::Unused {
                span,
                name,
                what: "`let`",
            });
        }
    }
}

fn check_fn_names(
    f: &ast::FnDecl,
    m: &ModuleInfo,
    user: &ModuleInfo,
    errors: &mut Vec<FrontError>,
) {
    let params = f.params.iter().map(|p| (&p.name, p.ty.as_ref()));
    let mut names = Names::for_body(m, user, &f.body.stmts, params, errors);
    for s in &f.body.stmts {
        if let ast::StmtKind::Let { name, value } = &s.kind {
            names.expr(value);
            names.define(name, true);
        }
    }
    names.expr(&f.body.result);
    names.finish();
}

fn check_objective_names(
    o: &ast::ObjectiveDecl,
    m: &ModuleInfo,
    user: &ModuleInfo,
    errors: &mut Vec<FrontError>,
) {
    let params = o.params.iter().map(|p| (&p.name, p.ty.as_ref()));
    let mut names = Names::for_body(m, user, &o.body, params, errors);
    let mut metrics: HashMap<&str, Span> = HashMap::new();
    let mut outputs: HashMap<&str, Span> = HashMap::new();
    for s in &o.body {
        match &s.kind {
            ast::StmtKind::Input { name, ty, .. } => {
                parse_ann(ty, names.errors);
                names.define(name, false);
            }
            ast::StmtKind::Let { name, value } => {
                names.expr(value);
                names.define(name, true);
            }
            ast::StmtKind::Loss { value } => {
                names.expr(value);
            }
            ast::StmtKind::Metric { name, value } | ast::StmtKind::Output { name, value } => {
                names.expr(value);
                let (table, what) = if matches!(s.kind, ast::StmtKind::Metric { .. }) {
                    (&mut metrics, "metric")
                } else {
                    (&mut outputs, "output")
                };
                if let Some(first) = table.get(name.name.as_str()) {
                    names.errors.push(FrontError::Duplicate {
                        span: name.span,
                        name: name.name.clone(),
                        first: *first,
                        what,
                    });
                } else {
                    table.insert(&name.name, name.span);
                }
            }
        }
    }
    names.finish();
}
