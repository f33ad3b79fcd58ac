//! benches live in benches/benches
