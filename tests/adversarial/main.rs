//! The standing adversarial suite: the public API attacked the way a
//! hostile or unlucky caller would, one file per class of fault.
//!
//! - `readiness`: every layer over a service whose `poll_ready` reserves
//!   capacity (tower's `ConcurrencyLimit(1)`, `Buffer`), driven the usual
//!   way (`ready().await?.call(req)`);
//! - `hangs`: waiters that must be woken (replayed bodies read by two
//!   copies at once), random drop points on a multi-threaded runtime;
//! - `growth`: state per waiter or per key that must not grow with the
//!   number of callers (a flight kept alive by 100 000 overlapping callers,
//!   100 000 keys through a keyed breaker at capacity);
//! - `races`: loads that finish after an invalidation, failures inside a
//!   stale window, interleavings of load / refresh / invalidate;
//! - `arithmetic`: thresholds and budgets checked against the published
//!   rules (gRPC A6, Finagle, resilience4j), exactly;
//! - `redis`: a TCP proxy on loopback that holds single Redis replies;
//! - `limit`: the adaptive concurrency limit and the fault layer (the
//!   queue and the partitions, the algorithms against Netflix's source,
//!   overflow, cancellation at the instant of a grant);
//! - `tail`: the hedge and deadline layers (copies never sent, fatal
//!   failures, every failed copy booked, expired deadlines, scopes).
//!
//! Every wait is bounded: under paused time a hang auto-advances the clock
//! to a timeout and fails; on the real clock a timeout of a few seconds
//! catches it. Each test says in its first doc line what it proves.
//!
//! It needs the `http` feature (on by default): the HTTP layers are among
//! those attacked.
#![cfg(feature = "http")]

#[path = "../support/mod.rs"]
mod support;

mod arithmetic;
mod growth;
mod hangs;
mod limit;
mod races;
mod readiness;
#[cfg(feature = "redis")]
mod redis;
mod tail;
