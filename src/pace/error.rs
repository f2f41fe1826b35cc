//! The error a pacer returns instead of making a caller wait too long.

use std::fmt;
use std::time::Duration;

/// The caller would have had to wait longer than the pacer's maximum; it was
/// turned away at once, without calling the inner service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    wait: Duration,
    max_wait: Duration,
}

impl Overloaded {
    pub(crate) fn new(wait: Duration, max_wait: Duration) -> Overloaded {
        Overloaded { wait, max_wait }
    }

    /// How long the caller would have waited for its turn.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The longest the caller could wait: the pacer's maximum wait, or
    /// less when the caller's deadline
    /// ([`Deadline`](crate::deadline::Deadline)) came first.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "paced: the next turn is {:?} away, more than the maximum wait of {:?}",
            self.wait, self.max_wait
        )
    }
}

impl std::error::Error for Overloaded {}
