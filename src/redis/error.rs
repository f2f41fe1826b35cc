//! The errors of the fleet stores: the cache store's own (its requests never
//! see it: they fall back to the origin) and the fleet gate's refusals.

use std::fmt;

/// Redis could not be reached (or did not answer within `op_timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    _private: (),
}

impl Unavailable {
    pub(super) fn new() -> Self {
        Unavailable { _private: () }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redis is unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// Why a [`FleetGate`](super::FleetGate) gave no slot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateError {
    /// Every slot stayed taken for the gate's `max_wait`.
    Timeout {
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// Redis could not be reached, and the gate fails closed: nobody can
    /// prove that a slot is free.
    Unavailable {
        /// How long the caller waited before that.
        waited: std::time::Duration,
    },
}

impl GateError {
    pub(super) fn timeout(waited: std::time::Duration) -> Self {
        GateError::Timeout { waited }
    }

    pub(super) fn unavailable(waited: std::time::Duration) -> Self {
        GateError::Unavailable { waited }
    }

    /// How long the caller waited for a slot.
    pub fn waited(&self) -> std::time::Duration {
        match self {
            GateError::Timeout { waited } | GateError::Unavailable { waited } => *waited,
        }
    }
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::Timeout { waited } => {
                write!(f, "fleet gate full: no slot freed within {waited:?}")
            }
            GateError::Unavailable { .. } => f.write_str(
                "fleet gate unavailable: Redis could not be reached, so no slot can be proven free",
            ),
        }
    }
}

impl std::error::Error for GateError {}
