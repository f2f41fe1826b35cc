//! The error a concurrency limit returns instead of letting a caller in.

use std::fmt;
use std::time::Duration;

/// The concurrency limit was reached (and the caller's partition had no
/// reserve left): the call was turned away without reaching the service —
/// at once, or after waiting up to the limiter's maximum wait.
///
/// [`retry_after`](Self::retry_after) is jittered (one to two of the last
/// window's round trips; 1 to 2 ms before the first window has been
/// sampled), so callers turned away together do not come back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    limit: u32,
    in_flight: u32,
    retry_after: Duration,
    waited: Duration,
    partition: Option<Box<str>>,
}

impl LimitExceeded {
    pub(super) fn new(
        limit: u32,
        in_flight: u32,
        retry_after: Duration,
        waited: Duration,
        partition: Option<Box<str>>,
    ) -> LimitExceeded {
        LimitExceeded {
            limit,
            in_flight,
            retry_after,
            waited,
            partition,
        }
    }

    /// The limit when the caller was turned away.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Requests in flight then.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// When to try again: jittered, one to two of the last window's round
    /// trips (1 to 2 ms before the first window).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// How long the caller waited for a slot (zero if turned away at once).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The caller's partition, if it had one.
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "concurrency limit reached ({} in flight, limit {}",
            self.in_flight, self.limit
        )?;
        if let Some(partition) = &self.partition {
            write!(f, ", partition {partition:?}")?;
        }
        if !self.waited.is_zero() {
            write!(f, ", after waiting {:?}", self.waited)?;
        }
        write!(f, "); retry after {:?}", self.retry_after)
    }
}

impl std::error::Error for LimitExceeded {}
