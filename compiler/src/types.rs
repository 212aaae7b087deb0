//! Levels and dtypes: the static type of every value.

use serde::Serialize;

/// Where a value lives. Ordered from finest to coarsest: `Tok < Turn < Seq < Group < Batch`.
/// Broadcast goes down (coarser → finer, implicit in the language, explicit in the IR);
/// reductions go up (explicit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// One value per valid token of a sequence.
    Tok,
    /// One value per turn of a sequence (each valid token belongs to exactly one turn).
    Turn,
    /// One value per sequence (completion).
    Seq,
    /// One value per group (the samples of one prompt).
    Group,
    /// One value for the whole batch (a scalar).
    Batch,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Tok,
        Level::Turn,
        Level::Seq,
        Level::Group,
        Level::Batch,
    ];

    /// The keyword used in source (`tok`, `turn`, `seq`, `group`, `batch`).
    pub fn keyword(self) -> &'static str {
        match self {
            Level::Tok => "tok",
            Level::Turn => "turn",
            Level::Seq => "seq",
            Level::Group => "group",
            Level::Batch => "batch",
        }
    }

    pub fn from_keyword(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.keyword() == s)
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.keyword())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DType {
    F32,
    Bool,
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::Bool => "bool",
        })
    }
}

/// The type of a value: a level and a dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Ty {
    pub level: Level,
    pub dtype: DType,
}

impl Ty {
    pub fn new(level: Level, dtype: DType) -> Ty {
        Ty { level, dtype }
    }
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.level, self.dtype)
    }
}
