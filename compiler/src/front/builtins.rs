//! The one table of builtins: name, parameters (positional names, named arguments with defaults),
//! level rule and dtype rule. The checker (`check.rs`) matches call arguments against
//! [`Builtin::params`] and applies [`Kind`]'s rules; the builder (`lower.rs`) lowers each kind to
//! IR primitives. spec.md §6 documents every entry.

use super::lower::{RedKind, Structural};
use crate::ir::{BinaryOp, ScanOp, UnaryOp};
use crate::types::Level;

/// A parameter of a builtin: its name (usable as a named argument) and its default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub default: Default,
    /// Only accepted as a named argument (`where:`).
    pub named_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Default {
    /// Must be given.
    Required,
    /// May be omitted (`where:`: no filter).
    Absent,
    Bool(bool),
}

/// How a builtin types and lowers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// f32 → f32 elementwise, lowered to one IR unary op.
    Unary(UnaryOp),
    /// `log_sigmoid(x) = -softplus(-x)`.
    LogSigmoid,
    /// `sign(x)` ∈ {-1, 0, 1}.
    Sign,
    /// `square(x) = x * x`.
    Square,
    /// f32 × f32 → f32 at the finer level.
    Binary(BinaryOp),
    /// `clamp(x, lo, hi)`.
    Clamp,
    /// `where(c, a, b)`: c bool; a, b of one dtype.
    Where,
    /// `float(b)`: bool → f32 (identity on f32).
    Float,
    /// `detach(x)`: same type, no gradient.
    Detach,
    /// `<to>_<op>(x, [q], where:, [unbiased:])`: reduces to level `to` from any finer level.
    Reduce(Level, RedKind),
    /// `<within>_rank(x)`: rank at x's level (finer than `within`).
    Rank(Level),
    /// `seq_cumsum` etc.: x at tok or turn.
    Scan(ScanOp),
    /// `group_pos_<op>(x)`: tok → tok.
    PosReduce(RedKind),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Builtin {
    pub name: &'static str,
    pub params: &'static [Param],
    pub kind: Kind,
}

const fn req(name: &'static str) -> Param {
    Param {
        name,
        default: Default::Required,
        named_only: false,
    }
}

const WHERE: Param = Param {
    name: "where",
    default: Default::Absent,
    named_only: true,
};
const UNBIASED: Param = Param {
    name: "unbiased",
    default: Default::Bool(true),
    named_only: true,
};

const X: &[Param] = &[req("x")];
const AB: &[Param] = &[req("a"), req("b")];
const RED: &[Param] = &[req("x"), WHERE];
const RED_STD: &[Param] = &[req("x"), WHERE, UNBIASED];
const RED_Q: &[Param] = &[req("x"), req("q"), WHERE];

/// Every builtin function except the reductions, which [`lookup`] builds from their names.
const TABLE: &[Builtin] = &[
    un("exp", UnaryOp::Exp),
    un("log", UnaryOp::Log),
    un("log1p", UnaryOp::Log1p),
    un("expm1", UnaryOp::Expm1),
    un("lgamma", UnaryOp::Lgamma),
    un("sqrt", UnaryOp::Sqrt),
    un("abs", UnaryOp::Abs),
    un("sigmoid", UnaryOp::Sigmoid),
    un("softplus", UnaryOp::Softplus),
    un("tanh", UnaryOp::Tanh),
    un("floor", UnaryOp::Floor),
    un("ceil", UnaryOp::Ceil),
    un("round", UnaryOp::Round),
    b("log_sigmoid", X, Kind::LogSigmoid),
    b("sign", X, Kind::Sign),
    b("square", X, Kind::Square),
    b("min", AB, Kind::Binary(BinaryOp::Min)),
    b("max", AB, Kind::Binary(BinaryOp::Max)),
    b("pow", AB, Kind::Binary(BinaryOp::Pow)),
    b("clamp", &[req("x"), req("lo"), req("hi")], Kind::Clamp),
    b("where", &[req("cond"), req("a"), req("b")], Kind::Where),
    b("float", X, Kind::Float),
    b("detach", X, Kind::Detach),
    b("group_rank", X, Kind::Rank(Level::Group)),
    b("batch_rank", X, Kind::Rank(Level::Batch)),
    b("seq_cumsum", X, Kind::Scan(ScanOp::CumSum)),
    b("seq_revcumsum", X, Kind::Scan(ScanOp::RevCumSum)),
    b("seq_next", X, Kind::Scan(ScanOp::Next)),
    b("seq_prev", X, Kind::Scan(ScanOp::Prev)),
    b(
        "seq_discounted_revcumsum",
        &[req("x"), req("gamma")],
        Kind::Scan(ScanOp::DiscountedRevCumSum),
    ),
    b("group_pos_sum", X, Kind::PosReduce(RedKind::Sum)),
    b("group_pos_mean", X, Kind::PosReduce(RedKind::Mean)),
    b("group_pos_max", X, Kind::PosReduce(RedKind::Max)),
    b("group_pos_min", X, Kind::PosReduce(RedKind::Min)),
    b("group_pos_count", X, Kind::PosReduce(RedKind::Count)),
];

const fn un(name: &'static str, op: UnaryOp) -> Builtin {
    Builtin {
        name,
        params: X,
        kind: Kind::Unary(op),
    }
}

const fn b(name: &'static str, params: &'static [Param], kind: Kind) -> Builtin {
    Builtin { name, params, kind }
}

/// The reductions each level offers (`turn_sum`, ..., `batch_quantile`).
const REDUCTIONS: &[(Level, &[RedKind])] = &[
    (
        Level::Turn,
        &[
            RedKind::Sum,
            RedKind::Mean,
            RedKind::Max,
            RedKind::Min,
            RedKind::Count,
        ],
    ),
    (Level::Seq, ALL_BUT_QUANTILE),
    (Level::Group, ALL_REDUCTIONS),
    (Level::Batch, ALL_REDUCTIONS),
];

const ALL_BUT_QUANTILE: &[RedKind] = &[
    RedKind::Sum,
    RedKind::Mean,
    RedKind::Max,
    RedKind::Min,
    RedKind::Count,
    RedKind::Std,
    RedKind::Var,
    RedKind::LogSumExp,
];

const ALL_REDUCTIONS: &[RedKind] = &[
    RedKind::Sum,
    RedKind::Mean,
    RedKind::Max,
    RedKind::Min,
    RedKind::Count,
    RedKind::Std,
    RedKind::Var,
    RedKind::LogSumExp,
    RedKind::Quantile,
];

fn reduction_params(kind: RedKind) -> &'static [Param] {
    match kind {
        RedKind::Std | RedKind::Var => RED_STD,
        RedKind::Quantile => RED_Q,
        RedKind::Sum
        | RedKind::Mean
        | RedKind::Max
        | RedKind::Min
        | RedKind::Count
        | RedKind::LogSumExp => RED,
    }
}

/// The builtin function called `name`, if any.
pub fn lookup(name: &str) -> Option<Builtin> {
    if let Some(b) = TABLE.iter().find(|b| b.name == name) {
        return Some(*b);
    }
    all_reductions().find(|b| b.name == name)
}

fn all_reductions() -> impl Iterator<Item = Builtin> {
    REDUCTIONS.iter().flat_map(|(level, kinds)| {
        kinds.iter().map(move |&k| Builtin {
            name: reduction_name(*level, k),
            params: reduction_params(k),
            kind: Kind::Reduce(*level, k),
        })
    })
}

/// `"seq_mean"` for `(Seq, Mean)`; a static string so the table stays `Copy`.
fn reduction_name(level: Level, kind: RedKind) -> &'static str {
    macro_rules! names {
        ($($l:ident $k:ident $s:literal),* $(,)?) => {
            match (level, kind) {
                $((Level::$l, RedKind::$k) => $s,)*
                _ => "",
            }
        };
    }
    names!(
        Turn Sum "turn_sum", Turn Mean "turn_mean", Turn Max "turn_max", Turn Min "turn_min",
        Turn Count "turn_count",
        Seq Sum "seq_sum", Seq Mean "seq_mean", Seq Max "seq_max", Seq Min "seq_min",
        Seq Count "seq_count", Seq Std "seq_std", Seq Var "seq_var", Seq LogSumExp "seq_logsumexp",
        Group Sum "group_sum", Group Mean "group_mean", Group Max "group_max",
        Group Min "group_min", Group Count "group_count", Group Std "group_std",
        Group Var "group_var", Group LogSumExp "group_logsumexp",
        Group Quantile "group_quantile",
        Batch Sum "batch_sum", Batch Mean "batch_mean", Batch Max "batch_max",
        Batch Min "batch_min", Batch Count "batch_count", Batch Std "batch_std",
        Batch Var "batch_var", Batch LogSumExp "batch_logsumexp",
        Batch Quantile "batch_quantile",
    )
}

/// Every builtin function name (for "did you mean" and for the docs).
pub fn function_names() -> Vec<&'static str> {
    TABLE
        .iter()
        .map(|b| b.name)
        .chain(all_reductions().map(|b| b.name))
        .collect()
}

/// Builtin values: structural values of the batch and `inf`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Structural(Structural),
    Inf,
}

const VALUES: &[(&str, Value)] = &[
    ("pos", Value::Structural(Structural::Pos)),
    ("seq_len", Value::Structural(Structural::SeqLen)),
    ("turn_index", Value::Structural(Structural::TurnIndex)),
    ("turn_len", Value::Structural(Structural::TurnLen)),
    ("seq_turns", Value::Structural(Structural::SeqTurns)),
    ("group_size", Value::Structural(Structural::GroupSize)),
    ("num_seqs", Value::Structural(Structural::NumSeqs)),
    ("num_tokens", Value::Structural(Structural::NumTokens)),
    ("num_groups", Value::Structural(Structural::NumGroups)),
    ("inf", Value::Inf),
];

pub fn lookup_value(name: &str) -> Option<Value> {
    VALUES.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

pub fn value_names() -> impl Iterator<Item = &'static str> {
    VALUES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reduction_has_a_name_and_names_are_unique() {
        let names = function_names();
        assert!(names.iter().all(|n| !n.is_empty()));
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        // 5 turn + 8 seq + 9 group + 9 batch reductions.
        assert_eq!(all_reductions().count(), 31);
        assert!(lookup("group_quantile").is_some());
        assert!(lookup("seq_quantile").is_none());
        assert!(lookup("turn_std").is_none());
    }
}
