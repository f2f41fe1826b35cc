//! The atomics of the lock-free state (budgets, breaker, trailing windows):
//! std's, or loom's when the crate is built for its loom models
//! (`RUSTFLAGS="--cfg dephase_loom"`, `tests/loom.rs`).

#[cfg(dephase_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
#[cfg(not(dephase_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
