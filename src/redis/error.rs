//! The one error the Redis store returns to its own callers (requests never
//! see it: they fall back to the origin).

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
