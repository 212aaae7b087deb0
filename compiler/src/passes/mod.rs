//! IR → IR passes: constant folding, CSE, DCE, exact algebraic identities.

pub mod builder;
mod simplify;

pub use simplify::simplify;
