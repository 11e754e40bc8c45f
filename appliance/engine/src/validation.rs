//! Strict comparator validation (placeholder until written).
