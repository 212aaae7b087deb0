//! IR → IR passes: constant folding, CSE, DCE, exact algebraic identities, broadcast sinking,
//! sum factoring.

pub mod builder;
mod simplify;

pub use simplify::{simplify, simplify_with, Factor, SimplifyOptions};
