//! Shared helpers for the cross-crate tests (random batches, reference code).
