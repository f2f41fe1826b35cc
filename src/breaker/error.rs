//! The error a breaker returns instead of calling the inner service.

use std::fmt;
use std::time::Duration;

use super::State;

/// The breaker turned the call away without calling the inner service.
///
/// [`retry_after`](Rejected::retry_after) says when the breaker will admit
/// a probe (open), or when its probes will have decided (half-open); an
/// isolated breaker has no answer until an operator resets it.
///
/// Whether a retry layer above should retry it is a choice:
/// [`HttpClassifier`](crate::http::HttpClassifier) does not (retrying
/// would queue callers for the moment the breaker lets them through);
/// [`RetryErrors`](crate::classify::RetryErrors), the default, retries it
/// like any error. To retry it no sooner than the breaker will admit a
/// probe — with a budget and a deadline, as the herd lab's `retry_storm`
/// does — pass `retry_after` on as a server hint:
///
/// ```
/// use dephase::breaker::error::Rejected;
/// use dephase::classify::Outcome;
/// use dephase::BoxError;
///
/// fn classify<T>(result: Result<&T, &BoxError>) -> Outcome {
///     match result {
///         Ok(_) => Outcome::Success,
///         Err(e) => match e.downcast_ref::<Rejected>() {
///             Some(rejected) => match rejected.retry_after() {
///                 Some(after) => Outcome::retry_after(after, "breaker_open"),
///                 None => Outcome::failure("breaker_isolated"),
///             },
///             None => Outcome::retry("error"),
///         },
///     }
/// }
/// # let _ = classify::<()>;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    state: State,
    retry_after: Option<Duration>,
}

impl Rejected {
    pub(super) fn new(state: State, retry_after: Option<Duration>) -> Rejected {
        Rejected { state, retry_after }
    }

    /// The breaker's state when it rejected the call.
    pub fn state(&self) -> State {
        self.state
    }

    /// When to come back, if the breaker knows.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after) {
            (State::HalfOpen, Some(after)) => write!(
                f,
                "circuit breaker is half-open and its probes are out; retry after {after:?}"
            ),
            (_, Some(after)) => write!(f, "circuit breaker is open; retry after {after:?}"),
            (state, None) => write!(f, "circuit breaker is {state}"),
        }
    }
}

impl std::error::Error for Rejected {}
