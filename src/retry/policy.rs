//! What the retry layer decides: how many attempts, how long to wait, who
//! pays — [`RetryPolicy::plan`] after each attempt, as a pure function of
//! the policy, the attempt's outcome and the request's own backoff.

use std::any::type_name;
use std::fmt;
use std::time::Duration;

use crate::backoff::{ExponentialBackoff, Sequence};
use crate::budget::{BudgetDebug, NoBudget, RetryBudget, Withdrawal};
use crate::classify::{Outcome, RetryErrors};
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

    /// Marks a re-send with its [`Attempt`](super::Attempt) number, just
    /// before it is sent (nothing by default). [`IdempotentRequests`] puts
    /// it into an `http::Request`'s extensions. The first attempt is not
    /// marked (that would cost every request an allocation): a layer that
    /// finds no `Attempt` is below the first.
    ///
    /// [`IdempotentRequests`]: crate::http::IdempotentRequests
    fn mark(&self, copy: &mut Req, attempt: super::Attempt) {
        let _ = (copy, attempt);
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
/// backoff, deadline, the classifier `C`, the request copier `R` and the
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
///
/// A clone shares the budget (budgets are shared by their clones): build
/// one policy and clone it for every client that should draw from it.
#[derive(Clone)]
pub struct RetryPolicy<C = RetryErrors, R = CloneRequests, B = NoBudget> {
    pub(super) max_attempts: u32,
    pub(super) backoff: ExponentialBackoff,
    pub(super) budget: Option<B>,
    pub(super) deadline: Option<Duration>,
    pub(super) min_attempt_time: Duration,
    pub(super) classify: C,
    pub(super) clone: R,
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
            min_attempt_time: Duration::ZERO,
            classify: RetryErrors,
            clone: CloneRequests,
        }
    }
}

impl<C, R, B> RetryPolicy<C, R, B> {
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

/// A retry that a policy wants after an attempt: the server's hint, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) after: Option<Duration>,
    pub(crate) reason: &'static str,
}

/// What a policy decides once a retry is wanted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Sleep `delay`, then re-send; `withdrawal` paid for it (if there is a
    /// budget).
    Retry {
        delay: Duration,
        withdrawal: Option<Withdrawal>,
    },
    /// No retry: the caller gets the last result.
    Stop(Stop),
}

/// Why a wanted retry is not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `max_attempts` were sent.
    Attempts,
    /// The request could not be copied (or its copy cannot be sent).
    NoCopy,
    /// The backoff (`delay`) would end past the deadline, or leave less
    /// than the minimum attempt time before the deadline in scope.
    Deadline(Duration),
    /// The budget said no.
    Budget,
}

impl<C, R, B: RetryBudget> RetryPolicy<C, R, B> {
    /// A new request (not a re-send): the budget learns of it.
    pub(crate) fn on_request(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// Books an attempt's outcome with the budget (`paid` is the withdrawal
    /// that paid for it, when it was a re-send) and says whether a retry is
    /// wanted.
    pub(crate) fn book(&self, outcome: Outcome, paid: Option<Withdrawal>) -> Option<Wanted> {
        let budget = self.budget.as_ref();
        match outcome {
            Outcome::Success => {
                if let Some(budget) = budget {
                    budget.on_success(paid);
                }
                None
            }
            Outcome::Failure { .. } => {
                if let Some(budget) = budget {
                    budget.on_attempt_failure(false);
                }
                None
            }
            Outcome::Retry { after, reason } => {
                if let Some(budget) = budget {
                    budget.on_attempt_failure(true);
                }
                Some(Wanted { after, reason })
            }
        }
    }

    /// Decides whether, and after how long, a wanted retry is made, after
    /// `attempts` were sent and `elapsed` since the first (if there is a
    /// deadline); `copy` is the copy of the request the retry would send;
    /// `backoff` this request's own sequence; `remaining` the time the
    /// deadline in scope leaves. A granted retry has taken its withdrawal
    /// from the budget.
    pub(crate) fn plan<Req>(
        &self,
        wanted: Wanted,
        attempts: u32,
        copy: Option<&Req>,
        elapsed: Option<Duration>,
        remaining: Option<Duration>,
        backoff: &mut Sequence,
    ) -> Plan
    where
        R: CloneRequest<Req>,
    {
        if attempts >= self.max_attempts {
            return Plan::Stop(Stop::Attempts);
        }
        if !copy.is_some_and(|copy| self.clone.can_resend(copy)) {
            return Plan::Stop(Stop::NoCopy);
        }
        // A server hint is a floor, and this request's own jittered backoff
        // is added on top of it: callers told the same `Retry-After` at the
        // same moment must not all come back at the same moment. The sum
        // never passes the cap, and is never below the computed backoff.
        let computed = backoff.next_delay();
        let delay = wanted.after.map_or(computed, |hint| {
            hint.saturating_add(computed).min(self.backoff.cap())
        });
        if let (Some(deadline), Some(elapsed)) = (self.deadline, elapsed) {
            if elapsed + delay > deadline {
                return Plan::Stop(Stop::Deadline(delay));
            }
        }
        // The caller's deadline: never sleep past it, never start an
        // attempt with less than the minimum attempt time left.
        if let Some(left) = remaining {
            if delay >= left || left - delay < self.min_attempt_time {
                return Plan::Stop(Stop::Deadline(delay));
            }
        }
        let withdrawal = match &self.budget {
            None => None,
            Some(budget) => match budget.withdraw_for(wanted.reason) {
                Some(withdrawal) => Some(withdrawal),
                None => return Plan::Stop(Stop::Budget),
            },
        };
        Plan::Retry { delay, withdrawal }
    }
}

impl<C, R, B: RetryBudget> fmt::Debug for RetryPolicy<C, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget.as_ref().map(BudgetDebug))
            .field("deadline", &self.deadline)
            .field("min_attempt_time", &self.min_attempt_time)
            .field("classify", &type_name::<C>())
            .field("clone", &type_name::<R>())
            .finish()
    }
}

/// Builds a [`RetryPolicy`]; [`build`](Self::build) checks the settings.
pub struct RetryPolicyBuilder<C = RetryErrors, R = CloneRequests, B = NoBudget> {
    max_attempts: u32,
    backoff: ExponentialBackoff,
    budget: Option<B>,
    deadline: Option<Duration>,
    min_attempt_time: Duration,
    classify: C,
    clone: R,
}

impl<C, R, B> RetryPolicyBuilder<C, R, B> {
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
    pub fn budget<B2: RetryBudget + Clone>(self, budget: B2) -> RetryPolicyBuilder<C, R, B2> {
        RetryPolicyBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: Some(budget),
            deadline: self.deadline,
            min_attempt_time: self.min_attempt_time,
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

    /// The least time an attempt needs: no retry starts when the deadline
    /// in scope ([`Deadline::current`](crate::deadline::Deadline::current),
    /// a caller's deadline carried by
    /// [`ServerDeadline`](crate::deadline::ServerDeadline) or opened with
    /// [`Deadline::scope`](crate::deadline::Deadline::scope)) would leave
    /// less than this after the backoff (default zero: no retry whose
    /// backoff reaches the deadline). Unlike [`deadline`](Self::deadline),
    /// this is the *caller's* time, which the retry learns per request.
    pub fn min_attempt_time(mut self, min: Duration) -> Self {
        self.min_attempt_time = min;
        self
    }

    /// Decides from each result whether to retry (default: retry every error).
    pub fn classify<C2>(self, classify: C2) -> RetryPolicyBuilder<C2, R, B> {
        RetryPolicyBuilder {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: self.budget,
            deadline: self.deadline,
            min_attempt_time: self.min_attempt_time,
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
            min_attempt_time: self.min_attempt_time,
            classify: self.classify,
            clone,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// Zero attempts (`retry.max_attempts`) or a zero deadline (`retry.deadline`).
    pub fn build(self) -> Result<RetryPolicy<C, R, B>, ConfigError> {
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
            min_attempt_time: self.min_attempt_time,
            classify: self.classify,
            clone: self.clone,
        })
    }
}

impl<C, R, B: RetryBudget> fmt::Debug for RetryPolicyBuilder<C, R, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicyBuilder")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget.as_ref().map(BudgetDebug))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
