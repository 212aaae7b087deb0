//! The reference interpreter (f64): executes the schedule; the semantic oracle of every backend.
//! (Owned by the IR work.)
