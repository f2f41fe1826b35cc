//! What the retry layer does: how many attempts, how long to wait, who pays.

use std::any::type_name;
use std::fmt;
use std::time::Duration;

use crate::backoff::ExponentialBackoff;
use crate::budget::{BudgetDebug, NoBudget, RetryBudget};
use crate::classify::RetryErrors;
use crate::error::ConfigError;

/// Makes the copy of a request that a retry sends.
///
/// Returning `None` means "this request cannot be copied": it is sent once
/// and never retried (there is no panic and no error). Implemented for
/// [`CloneRequests`] (the default, for `Req: Clone`) and for closures
/// `Fn(&Req) -> Option<Req>` — `reqwest::Request::try_clone` is one.
pub trait CloneRequest<Req> {
    /// A copy of `request` to send again, or `None` if it cannot be copied.
    fn clone_request(&self, request: &Req) -> Option<Req>;

    /// Asked when a retry is being planned, after the attempt before it has
    /// run: can `copy` (made by [`clone_request`](Self::clone_request)
    /// before that attempt) still be sent? `true` by default. A request
    /// whose body is replayed from a buffer says `false` once its body
    /// outgrew the buffer (see `http::ReplayBody`): the retry is not made
    /// and the caller gets the last result.
    fn can_resend(&self, copy: &Req) -> bool {
        let _ = copy;
        true
    }
}

impl<F, Req> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// The default [`CloneRequest`]: copies requests with [`Clone`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneRequests;

impl<Req: Clone> CloneRequest<Req> for CloneRequests {
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// Everything the [`Retry`](super::Retry) layer needs to decide: attempts,
/// backoff, deadline, the classifier `C`, the request copier `K` and the
/// budget `B` (a [`RetryBudget`]; clones share it).
///
/// ```
/// use std::time::Duration;
/// use dephase::backoff::{ExponentialBackoff, Jitter};
/// use dephase::budget::RatioBudget;
/// use dephase::classify::Outcome;
/// use dephase::retry::RetryPolicy;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dephase::ConfigError> {
/// let policy = RetryPolicy::builder()
///     .max_attempts(4)
///     .backoff(ExponentialBackoff::builder().base(Duration::from_millis(50)).jitter(Jitter::Full).build()?)
///     .budget(RatioBudget::builder().build()?)
///     .deadline(Duration::from_secs(2))
///     .classify(|result: Result<&u16, &std::io::Error>| match result {
///         Ok(503) => Outcome::retry("unavailable"),
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::retry("io"),
///     })
///     .build()?;
/// assert_eq!(policy.max_attempts(), 4);
/// # Ok(()) }
/// ```
pub struct RetryPolicy<C = RetryErrors, K = CloneRequests, B = NoBudget> {
    pub(super) max_attempts: u32,
    pub(super) backoff: ExponentialBackoff,
    pub(super) budget: Option<B>,
    pub(super) deadline: Option<Duration>,
    pub(super) classify: C,
    pub(super) clone: K,
}

impl RetryPolicy {
    /// A builder with the defaults: 3 attempts, [`ExponentialBackoff::default`]
    /// (100 ms doubling to 10 s, full jitter), no budget, no deadline, every
    /// error retried, requests copied with `Clone`.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            max_attempts: 3,
            backoff: ExponentialBackoff::default(),
            budget: None,
            deadline: None,
            classify: RetryErrors,
            clone: CloneRequests,
        }
    }
}

impl<C, K, B> RetryPolicy<C, K, B> {
    /// Attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> &ExponentialBackoff {
        &self.backoff
    }

    /// The shared budget, if any.
    pub fn budget(&self) -> Option<&B> {
        self.budget.as_ref()
    }

    /// How long after the first attempt a retry may still start.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classify
    }
}

impl<C, K, B: RetryBudget> fmt::Debug for RetryPolicy<C, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget.as_ref().map(BudgetDebug))
            .field("deadline", &self.deadline)
            .field("classify", &type_name::<C>())
            .field("clone", &type_name::<K>())
            .finish()
    }
}

/// Builds a [`RetryPolicy`]; [`build`](Self::build) checks the settings.
pub struct RetryPolicyBuilder<C = RetryErrors, K = CloneRequests, B = NoBudget> {
    max_attempts: u32,
    backoff: ExponentialBackoff,
    budget: Option<B>,
    deadline: Option<Duration>,
    classify: C,
    clone: K,
}

impl<C, K, B> RetryPolicyBuilder<C, K, B> {
    /// Attempts per request, the first included (default 3; 1 turns retries off).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The backoff between attempts. Every request draws its own sequence.
    pub fn backoff(mut self, backoff: ExponentialBackoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A budget shared with every other holder of a clone of `budget`.
    /// (For a budget chosen at run time, pass an `Arc<dyn RetryBudget>`.)
    pub fn budget<B2: RetryBudget + Clone>(self, budget: B2) -> RetryPolicyBuilder<C, K, B2> {
        RetryPolicyBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: Some(budget),
            deadline: self.deadline,
            classify: self.classify,
            clone: self.clone,
        }
    }

    /// No retry whose backoff would end more than `deadline` after the
    /// request's first attempt started. The deadline limits *when retries
    /// start*; it does not cut an attempt short (put a timeout inside the
    /// retry layer for that).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Decides from each result whether to retry (default: retry every error).
    pub fn classify<C2>(self, classify: C2) -> RetryPolicyBuilder<C2, K, B> {
        RetryPolicyBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: self.budget,
            deadline: self.deadline,
            classify,
            clone: self.clone,
        }
    }

    /// Copies requests for retries (default: [`Clone`]).
    pub fn clone_requests<K2>(self, clone: K2) -> RetryPolicyBuilder<C, K2, B> {
        RetryPolicyBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: self.budget,
            deadline: self.deadline,
            classify: self.classify,
            clone,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// Zero attempts (`retry.max_attempts`) or a zero deadline (`retry.deadline`).
    pub fn build(self) -> Result<RetryPolicy<C, K, B>, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "retry.deadline",
                "must be greater than zero",
            ));
        }
        Ok(RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: self.budget,
            deadline: self.deadline,
            classify: self.classify,
            clone: self.clone,
        })
    }
}

impl<C, K, B: RetryBudget> fmt::Debug for RetryPolicyBuilder<C, K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget.as_ref().map(BudgetDebug))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
