//! What a result means: one answer for every layer.
//!
//! The retry layer asks "should this be tried again, and after how long?";
//! a circuit breaker or a throttle asks "did the dependency fail?". Both
//! questions are answered by one [`Classify`] implementation returning one
//! [`Outcome`], so a service is never retried for a response that the breaker
//! thinks is healthy, or the other way round.
//!
//! A closure works as a classifier:
//!
//! ```
//! use std::time::Duration;
//! use dephase::classify::{Classify, Outcome};
//!
//! #[derive(Debug)]
//! enum Error { Busy { retry_in: Duration }, NotFound, Broken }
//!
//! let classify = |result: Result<&String, &Error>| match result {
//!     Ok(_) | Err(Error::NotFound) => Outcome::Success, // the dependency answered properly
//!     Err(Error::Busy { retry_in }) => Outcome::retry_after(*retry_in, "busy"),
//!     Err(Error::Broken) => Outcome::failure("broken"),
//! };
//! assert_eq!(classify.classify(Err(&Error::NotFound)), Outcome::Success);
//! assert!(classify.classify(Err(&Error::Broken)).is_failure());
//! ```

use std::time::Duration;

/// What a layer should make of one attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency did its job (this includes answers such as "not found"
    /// that are the caller's business, not the dependency's health).
    /// Not retried; counts as a success for budgets and breakers.
    Success,
    /// The dependency failed in a way that another attempt may fix.
    /// Counts as a failure.
    Retry {
        /// How long the server asked the caller to wait, if it said
        /// (`Retry-After`, gRPC pushback). The retry layer never obeys it
        /// blindly: it waits the hint plus its own jittered backoff, at most
        /// the cap.
        after: Option<Duration>,
        /// A short, static label for telemetry (`dephase.retry.reason`).
        reason: &'static str,
    },
    /// The dependency failed and another attempt will not help.
    /// Not retried; counts as a failure.
    Failure {
        /// A short, static label for telemetry.
        reason: &'static str,
    },
}

impl Outcome {
    /// A retryable failure without a server hint.
    pub const fn retry(reason: &'static str) -> Outcome {
        Outcome::Retry {
            after: None,
            reason,
        }
    }

    /// A retryable failure for which the server asked to wait `after`.
    pub const fn retry_after(after: Duration, reason: &'static str) -> Outcome {
        Outcome::Retry {
            after: Some(after),
            reason,
        }
    }

    /// A failure that another attempt will not fix.
    pub const fn failure(reason: &'static str) -> Outcome {
        Outcome::Failure { reason }
    }

    /// Whether this outcome counts against the dependency's health.
    pub const fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Success)
    }

    /// Whether another attempt may help.
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }

    /// The telemetry label: `"success"` or the failure's reason.
    pub const fn reason(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry { reason, .. } | Outcome::Failure { reason } => reason,
        }
    }
}

/// Decides the [`Outcome`] of one attempt from its result.
///
/// Implemented for closures `Fn(Result<&Res, &E>) -> Outcome` and for
/// [`RetryErrors`], the default.
pub trait Classify<Res, E> {
    /// Looks at one attempt's result.
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        self(result)
    }
}

/// A classifier from a closure, with the closure's signature fixed for it:
/// `|result| ...` then needs no lifetime gymnastics (a bare closure passed
/// to `.classify(...)` must spell `for<'a> Fn(Result<&'a Res, &'a E>)` to
/// compile), only the types the body uses.
///
/// ```
/// use dephase::classify::{self, Classify, Outcome};
///
/// let classifier = classify::from_fn(|result: Result<&u16, &std::io::Error>| match result {
///     Ok(503) => Outcome::retry("unavailable"),
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::retry("io"),
/// });
/// assert!(classifier.classify(Ok(&503)).is_retryable());
/// ```
pub fn from_fn<Res, E, F>(f: F) -> FromFn<F>
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    FromFn(f)
}

/// The classifier [`from_fn`] makes.
#[derive(Debug, Clone, Copy)]
pub struct FromFn<F>(F);

impl<F, Res, E> Classify<Res, E> for FromFn<F>
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        (self.0)(result)
    }
}

/// The default classifier: every `Ok` is a success, every `Err` is retryable
/// — a rejection by another dephase layer below the retry too (a breaker's
/// `Rejected`, a pacer's `Overloaded`, a throttle's `Throttled`), at once,
/// with the request's backoff. [`HttpClassifier`](crate::http::HttpClassifier)
/// does not retry those; to retry a breaker's rejection after its open time,
/// see [`Rejected`](crate::breaker::error::Rejected).
///
/// ```
/// use dephase::classify::{Classify, Outcome, RetryErrors};
///
/// assert_eq!(Classify::<(), ()>::classify(&RetryErrors, Ok(&())), Outcome::Success);
/// assert_eq!(Classify::<(), ()>::classify(&RetryErrors, Err(&())), Outcome::retry("error"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryErrors;

impl<Res, E> Classify<Res, E> for RetryErrors {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::retry("error"),
        }
    }
}
