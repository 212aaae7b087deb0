//! IR → IR passes: constant folding, CSE, DCE, exact algebraic identities. (Owned by the IR work.)

use crate::ir::Module;

pub fn simplify(m: Module) -> Module {
    m
}
