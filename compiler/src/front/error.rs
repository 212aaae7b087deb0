//! Every front-end problem as data ([`FrontError`]), and the one place holding their wording
//! ([`FrontError::to_diagnostic`]). Codes: `E01xx` names and modules, `E02xx` levels, dtypes and
//! calls, `E03xx` structure of an objective, `W0xxx` warnings. spec.md §9 lists them all.

use crate::types::{DType, Level, Ty};
use rlo_grammar::{Diagnostic, Span};

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FrontError {
    // ---- E01xx: names, modules, definitions
    #[error("unknown name `{name}`")]
    UnknownName {
        span: Span,
        name: String,
        suggestion: Option<String>,
        /// Where the name is defined later in the same body (use before definition).
        later: Option<Span>,
    },
    #[error("unknown function `{name}`")]
    UnknownFunction {
        span: Span,
        name: String,
        suggestion: Option<String>,
    },
    #[error("unknown module `{path}`")]
    UnknownModule {
        span: Span,
        path: String,
        suggestion: Option<String>,
    },
    #[error("module `{module}` has no function `{name}`")]
    UnknownImport {
        span: Span,
        module: String,
        name: String,
        suggestion: Option<String>,
    },
    #[error("import cycle")]
    ImportCycle { span: Span, cycle: Vec<String> },
    #[error("recursive function")]
    Recursion { span: Span, cycle: Vec<String> },
    #[error("`{name}` is defined twice")]
    Duplicate {
        span: Span,
        name: String,
        first: Span,
        /// "name", "function", "metric", "output", "parameter".
        what: &'static str,
    },
    #[error("`{name}` is a builtin")]
    ShadowsBuiltin { span: Span, name: String },
    #[error("`{name}` is not a function")]
    NotAFunction { span: Span, name: String },
    #[error("`{name}` is a function")]
    NotAValue { span: Span, name: String },
    #[error("unknown level or type `{name}`")]
    UnknownType {
        span: Span,
        name: String,
        suggestion: Option<String>,
    },

    // ---- E02xx: levels, dtypes, calls
    #[error("reduction does not go up")]
    ReduceNotUp {
        span: Span,
        func: String,
        to: Level,
        found: Level,
    },
    #[error("filter finer than argument")]
    FilterTooFine {
        span: Span,
        filter: Level,
        arg: Level,
    },
    #[error("expected bool")]
    ExpectedBool { span: Span, context: &'static str },
    #[error("branches differ")]
    BranchMismatch {
        span: Span,
        then_ty: DType,
        else_ty: DType,
    },
    #[error("wrong number of arguments")]
    TooManyArgs {
        span: Span,
        func: String,
        max: usize,
        found: usize,
        /// A parameter only accepted by name (`where`), for the hint.
        named_only: Option<&'static str>,
    },
    #[error("missing argument")]
    MissingArg {
        span: Span,
        func: String,
        param: String,
    },
    #[error("unknown named argument")]
    UnknownNamedArg {
        span: Span,
        func: String,
        name: String,
        suggestion: Option<String>,
    },
    #[error("duplicate argument")]
    DuplicateArg {
        span: Span,
        name: String,
        first: Span,
    },
    #[error("positional argument after named")]
    PositionalAfterNamed { span: Span, named: Span },
    #[error("diff on a bool input")]
    DiffNotF32 { span: Span, diff: Span },
    #[error("scan level")]
    ScanLevel {
        span: Span,
        func: String,
        found: Level,
    },
    #[error("not a batch scalar")]
    NotBatch {
        span: Span,
        what: &'static str,
        found: Level,
    },
    #[error("argument too fine for parameter")]
    ArgTooFine {
        span: Span,
        param: String,
        expected: Level,
        found: Level,
    },
    #[error("default is not a constant")]
    NotConstant { span: Span },
    #[error("rank level")]
    RankLevel {
        span: Span,
        func: String,
        found: Level,
    },
    #[error("level annotation on a parameter")]
    ParamLevel { span: Span },
    #[error("loss must be a batch value")]
    LossLevel { span: Span, found: Ty },
    #[error("metric must be a batch value")]
    MetricLevel { span: Span, name: String, found: Ty },
    #[error("parameter type")]
    ParamDefaultType { span: Span, expected: DType },

    // ---- E03xx: structure
    #[error("no loss")]
    MissingLoss { span: Span, objective: String },
    #[error("two losses")]
    DuplicateLoss { span: Span, first: Span },
    #[error("no objective")]
    NoObjective { span: Span },
    #[error("several objectives")]
    AmbiguousObjective { span: Span, names: Vec<String> },
    #[error("unknown objective")]
    UnknownObjective {
        span: Span,
        name: String,
        names: Vec<String>,
    },
    #[error("input without level")]
    InputWithoutLevel { span: Span, name: String },
    #[error("parameter without default")]
    ParamWithoutDefault { span: Span, name: String },
    #[error("too deep")]
    TooDeep { span: Span },

    // ---- warnings
    #[error("loss does not depend on a diff input")]
    LossNotDifferentiable { span: Span },
    #[error("unused")]
    Unused {
        span: Span,
        name: String,
        what: &'static str,
    },
}

fn did_you_mean(d: Diagnostic, s: &Option<String>) -> Diagnostic {
    match s {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d,
    }
}

fn reduce_fn(to: Level) -> String {
    format!("{to}_mean")
}

impl FrontError {
    pub fn span(&self) -> Span {
        use FrontError::*;
        match self {
            UnknownName { span, .. }
            | UnknownFunction { span, .. }
            | UnknownModule { span, .. }
            | UnknownImport { span, .. }
            | ImportCycle { span, .. }
            | Recursion { span, .. }
            | Duplicate { span, .. }
            | ShadowsBuiltin { span, .. }
            | NotAFunction { span, .. }
            | NotAValue { span, .. }
            | UnknownType { span, .. }
            | ReduceNotUp { span, .. }
            | FilterTooFine { span, .. }
            | ExpectedBool { span, .. }
            | BranchMismatch { span, .. }
            | TooManyArgs { span, .. }
            | MissingArg { span, .. }
            | UnknownNamedArg { span, .. }
            | DuplicateArg { span, .. }
            | PositionalAfterNamed { span, .. }
            | DiffNotF32 { span, .. }
            | ScanLevel { span, .. }
            | NotBatch { span, .. }
            | ArgTooFine { span, .. }
            | NotConstant { span }
            | RankLevel { span, .. }
            | ParamLevel { span }
            | LossLevel { span, .. }
            | MetricLevel { span, .. }
            | ParamDefaultType { span, .. }
            | MissingLoss { span, .. }
            | DuplicateLoss { span, .. }
            | NoObjective { span }
            | AmbiguousObjective { span, .. }
            | UnknownObjective { span, .. }
            | InputWithoutLevel { span, .. }
            | ParamWithoutDefault { span, .. }
            | TooDeep { span }
            | LossNotDifferentiable { span }
            | Unused { span, .. } => *span,
        }
    }

    /// All the wording of the front end.
    pub fn to_diagnostic(&self) -> Diagnostic {
        use FrontError::*;
        match self {
            UnknownName {
                span,
                name,
                suggestion,
                later,
            } => {
                let d = Diagnostic::error("E0101", format!("unknown name `{name}`"))
                    .with_primary(*span, "not defined here");
                match later {
                    Some(l) => d
                        .with_secondary(*l, "defined later here")
                        .with_help("names must be defined before they are used"),
                    None => did_you_mean(d, suggestion),
                }
            }
            UnknownFunction {
                span,
                name,
                suggestion,
            } => did_you_mean(
                Diagnostic::error("E0102", format!("unknown function `{name}`"))
                    .with_primary(*span, "no builtin, local or imported function of this name"),
                suggestion,
            ),
            UnknownModule {
                span,
                path,
                suggestion,
            } => did_you_mean(
                Diagnostic::error("E0103", format!("unknown module `{path}`"))
                    .with_primary(*span, "no such module")
                    .with_note("modules are `std::<name>`, one per file of stdlib/"),
                suggestion,
            ),
            UnknownImport {
                span,
                module,
                name,
                suggestion,
            } => did_you_mean(
                Diagnostic::error("E0104", format!("module `{module}` has no function `{name}`"))
                    .with_primary(*span, "not found in this module"),
                suggestion,
            ),
            ImportCycle { span, cycle } => Diagnostic::error("E0105", "import cycle between modules")
                .with_primary(*span, "this import closes the cycle")
                .with_note(format!("cycle: {}", cycle.join(" → "))),
            Recursion { span, cycle } => Diagnostic::error(
                "E0106",
                format!("function `{}` is recursive", cycle.first().map(String::as_str).unwrap_or("?")),
            )
            .with_primary(*span, "this call closes the cycle")
            .with_note(format!("cycle: {}", cycle.join(" → ")))
            .with_note("functions are inlined at every call, so recursion is not allowed"),
            Duplicate {
                span,
                name,
                first,
                what,
            } => {
                let d = Diagnostic::error("E0107", format!("the {what} `{name}` is defined twice"))
                    .with_primary(*span, "redefined here")
                    .with_secondary(*first, "first defined here");
                if *what == "name" {
                    d.with_help("inputs, parameters and `let`s share one namespace and cannot be shadowed; choose a new name")
                } else {
                    d
                }
            }
            ShadowsBuiltin { span, name } => {
                Diagnostic::error("E0108", format!("`{name}` is the name of a builtin"))
                    .with_primary(*span, "cannot be redefined")
                    .with_help("choose another name")
            }
            NotAFunction { span, name } => {
                Diagnostic::error("E0109", format!("`{name}` is a value, not a function"))
                    .with_primary(*span, "called here")
                    .with_help(format!("write `{name}` without arguments"))
            }
            NotAValue { span, name } => {
                Diagnostic::error("E0110", format!("`{name}` is a function, not a value"))
                    .with_primary(*span, "used as a value here")
                    .with_help(format!("call it: `{name}(...)`"))
            }
            UnknownType {
                span,
                name,
                suggestion,
            } => did_you_mean(
                Diagnostic::error("E0111", format!("unknown level or dtype `{name}`"))
                    .with_primary(*span, "not a level or a dtype")
                    .with_note("levels: tok turn seq group batch; dtypes: f32 bool"),
                suggestion,
            ),
            ReduceNotUp {
                span,
                func,
                to,
                found,
            } => {
                let d = Diagnostic::error(
                    "E0201",
                    format!("`{func}` reduces to `{to}`, but its argument is already at `{found}`"),
                )
                .with_primary(*span, format!("this is a `{found}` value"))
                .with_note("a reduction goes up: its argument must be at a finer level than the result (tok < turn < seq < group < batch)");
                if found == to {
                    d.with_help("the value is already per-`{to}`; use it directly".replace("{to}", to.keyword()))
                } else {
                    d.with_help(format!(
                        "a `{found}` value is broadcast down to `{to}` implicitly; to aggregate at `{found}` use e.g. `{}`",
                        reduce_fn(*found)
                    ))
                }
            }
            FilterTooFine { span, filter, arg } => Diagnostic::error(
                "E0202",
                format!("the filter is at `{filter}`, finer than the reduced value at `{arg}`"),
            )
            .with_primary(*span, format!("this filter is a `{filter}` value"))
            .with_help(format!(
                "a `where:` filter must be at the argument's level or coarser; reduce it to `{arg}` first, e.g. `{arg}_max(float(m)) > 0` (any) or `{arg}_min(float(m)) > 0` (all)"
            )),
            ExpectedBool { span, context } => Diagnostic::error(
                "E0203",
                format!("{context} must be bool, found f32"),
            )
            .with_primary(*span, "this is an f32 value")
            .with_help("f32 never converts to bool implicitly; compare it, e.g. `x != 0`"),
            BranchMismatch {
                span,
                then_ty,
                else_ty,
            } => Diagnostic::error(
                "E0204",
                format!("the branches have different dtypes: `{then_ty}` and `{else_ty}`"),
            )
            .with_primary(*span, "branches differ")
            .with_help("convert the bool branch with `float(...)`"),
            TooManyArgs {
                span,
                func,
                max,
                found,
                named_only,
            } => {
                let d = Diagnostic::error(
                    "E0205",
                    format!(
                        "`{func}` takes at most {max} positional argument{}, found {found}",
                        if *max == 1 { "" } else { "s" }
                    ),
                )
                .with_primary(*span, "unexpected argument");
                match named_only {
                    Some(n) => d.with_help(format!("`{n}` is passed by name: `{func}(x, {n}: ...)`")),
                    None => d,
                }
            }
            MissingArg { span, func, param } => {
                Diagnostic::error("E0206", format!("missing argument `{param}` of `{func}`"))
                    .with_primary(*span, format!("`{param}` is required"))
            }
            UnknownNamedArg {
                span,
                func,
                name,
                suggestion,
            } => did_you_mean(
                Diagnostic::error("E0207", format!("`{func}` has no parameter `{name}`"))
                    .with_primary(*span, "unknown named argument"),
                suggestion,
            ),
            DuplicateArg { span, name, first } => {
                Diagnostic::error("E0208", format!("argument `{name}` is given twice"))
                    .with_primary(*span, "given again here")
                    .with_secondary(*first, "first given here")
            }
            PositionalAfterNamed { span, named } => {
                Diagnostic::error("E0209", "positional argument after a named argument")
                    .with_primary(*span, "positional argument")
                    .with_secondary(*named, "named argument before it")
                    .with_help("put positional arguments first")
            }
            DiffNotF32 { span, diff } => Diagnostic::error("E0210", "`diff` on a bool input")
                .with_primary(*diff, "cannot differentiate with respect to a bool")
                .with_secondary(*span, "declared bool here")
                .with_help("only f32 inputs can be `diff`"),
            ScanLevel { span, func, found } => Diagnostic::error(
                "E0211",
                format!("`{func}` scans along a sequence: its argument must be at `tok` or `turn`, found `{found}`"),
            )
            .with_primary(*span, format!("this is a `{found}` value")),
            NotBatch { span, what, found } => Diagnostic::error(
                "E0212",
                format!("{what} must be a batch scalar, found a `{found}` value"),
            )
            .with_primary(*span, format!("this is a `{found}` value"))
            .with_help("use a constant, a parameter or a `batch_*` reduction"),
            ArgTooFine {
                span,
                param,
                expected,
                found,
            } => Diagnostic::error(
                "E0213",
                format!("parameter `{param}` must be at `{expected}` or coarser, but the argument is at the finer level `{found}`"),
            )
            .with_primary(*span, format!("this is a `{found}` value"))
            .with_help(format!("reduce it first, e.g. `{}(...)`", reduce_fn(*expected))),
            NotConstant { span } => Diagnostic::error("E0214", "a default value must be a constant")
                .with_primary(*span, "not a constant")
                .with_help("use a number, `true`, `false` or `inf` (with `-` and arithmetic on them)"),
            RankLevel { span, func, found } => Diagnostic::error(
                "E0215",
                format!("`{func}` ranks within a coarser level, but its argument is at `{found}`"),
            )
            .with_primary(*span, format!("this is a `{found}` value")),
            ParamLevel { span } => Diagnostic::error("E0216", "objective parameters are batch scalars")
                .with_primary(*span, "a level is not allowed here")
                .with_help("write `f32` or `bool`"),
            LossLevel { span, found } => Diagnostic::error(
                "E0217",
                format!("the loss must be a `batch` value, found `{}`", found.level),
            )
            .with_primary(*span, format!("this is a `{found}` value"))
            .with_help(format!("reduce it, e.g. `{}(...)`", reduce_fn(Level::Batch))),
            MetricLevel { span, name, found } => Diagnostic::error(
                "E0218",
                format!("metric `{name}` must be a `batch` value, found `{}`", found.level),
            )
            .with_primary(*span, format!("this is a `{found}` value"))
            .with_help("reduce it, e.g. `batch_mean(...)`, or make it an `output`"),
            ParamDefaultType { span, expected } => Diagnostic::error(
                "E0219",
                format!("the default does not match the parameter's dtype `{expected}`"),
            )
            .with_primary(*span, "wrong dtype"),
            MissingLoss { span, objective } => {
                Diagnostic::error("E0301", format!("objective `{objective}` has no `loss`"))
                    .with_primary(*span, "declared here")
                    .with_help("add exactly one `loss batch_mean(...)` statement")
            }
            DuplicateLoss { span, first } => Diagnostic::error("E0302", "an objective has exactly one `loss`")
                .with_primary(*span, "second loss")
                .with_secondary(*first, "first loss")
                .with_help("add the terms into one loss, or make one of them a `metric`"),
            NoObjective { span } => Diagnostic::error("E0303", "the file has no objective")
                .with_primary(*span, "no `objective` in this file"),
            AmbiguousObjective { span, names } => Diagnostic::error(
                "E0304",
                "the file has several objectives; choose one",
            )
            .with_primary(*span, "in this file")
            .with_note(format!("objectives: {}", names.join(", ")))
            .with_help("select one with `--objective NAME`"),
            UnknownObjective { span, name, names } => {
                Diagnostic::error("E0305", format!("no objective `{name}` in this file"))
                    .with_primary(*span, "in this file")
                    .with_note(format!("objectives: {}", names.join(", ")))
            }
            InputWithoutLevel { span, name } => {
                Diagnostic::error("E0306", format!("input `{name}` has no level"))
                    .with_primary(*span, "add a level here")
                    .with_help("e.g. `input x: tok`")
            }
            ParamWithoutDefault { span, name } => Diagnostic::error(
                "E0307",
                format!("parameter `{name}` has no default value"),
            )
            .with_primary(*span, "needs a default")
            .with_help(format!("e.g. `{name}: f32 = 0.2`")),
            TooDeep { span } => Diagnostic::error("E0308", "functions nest too deeply")
                .with_primary(*span, "while expanding this call"),
            LossNotDifferentiable { span } => Diagnostic::warning(
                "W0001",
                "the loss does not depend on any `diff` input",
            )
            .with_primary(*span, "its gradient is zero")
            .with_help("mark the policy's input `diff` (e.g. `input logp: tok diff`), or check for a misplaced `detach`"),
            Unused { span, name, what } => {
                Diagnostic::warning("W0002", format!("unused {what} `{name}`"))
                    .with_primary(*span, "never used")
                    .with_help(format!("remove it, or prefix it with `_`: `_{name}`"))
            }
        }
    }
}

// Keep errors small enough to move around cheaply (naga's size check).
const _: () = assert!(std::mem::size_of::<FrontError>() <= 96);

/// Edit distance between two names (optimal string alignment: insertions, deletions,
/// substitutions and transpositions of adjacent characters each cost 1), for "did you mean".
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    let at = |i: usize, j: usize| i * w + j;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            let v = if i == 0 || j == 0 {
                i + j
            } else {
                let get = |k: usize| d.get(k).copied().unwrap_or(usize::MAX - 1);
                let cost = usize::from(a.get(i - 1) != b.get(j - 1));
                let mut v = (get(at(i - 1, j)) + 1)
                    .min(get(at(i, j - 1)) + 1)
                    .min(get(at(i - 1, j - 1)) + cost);
                if i > 1 && j > 1 && a.get(i - 1) == b.get(j - 2) && a.get(i - 2) == b.get(j - 1) {
                    v = v.min(get(at(i - 2, j - 2)) + 1);
                }
                v
            };
            if let Some(slot) = d.get_mut(at(i, j)) {
                *slot = v;
            }
        }
    }
    d.get(at(a.len(), b.len())).copied().unwrap_or(0)
}

/// The closest candidate within a distance of a third of the name's length (at least 1).
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(suggest("ratoi", ["ratio", "reward"]), Some("ratio".into()));
        assert_eq!(suggest("xyz", ["ratio", "reward"]), None);
        assert_eq!(
            suggest("grup_mean", ["group_mean", "group_max"]),
            Some("group_mean".into())
        );
    }
}
