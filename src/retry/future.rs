//! How the retry layer waits and re-sends: the [`ResponseFuture`] state machine.
//!
//! `call` sends the first attempt and hands this future everything it needs.
//! The future then loops: wait for the attempt → classify → (budget, backoff,
//! deadline) → sleep → wait for the service to be ready → send the copy.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;
use tracing::{Level, Span};

use super::policy::{CloneRequest, RetryPolicy};
use crate::backoff::Sequence;
use crate::budget::{RetryBudget, Withdrawal};
use crate::classify::{Classify, Outcome};
use crate::telemetry::{self, BUDGET, JITTER, RESEND_COUNT, RETRY_DELAY_MS, RETRY_REASON};

pin_project! {
    /// The future returned by [`Retry`](super::Retry): the response of the
    /// last attempt that was made.
    pub struct ResponseFuture<S, C, K, B, Req>
    where
        S: Service<Req>,
        B: RetryBudget,
    {
        #[pin]
        state: State<S::Future>,
        control: Control<S, C, K, B, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called { #[pin] future: F },
        // Backing off before the next attempt (the timer is in `Retrying`).
        Sleeping,
        // Waiting for the service to accept the next attempt.
        Ready,
    }
}

/// The part of the future that is not pinned: what has been done so far.
struct Control<S, C, K, B: RetryBudget, Req> {
    policy: Arc<RetryPolicy<C, K, B>>,
    /// `Some` only when the request could be copied: the service for re-sends.
    service: Option<S>,
    /// The copy that the next attempt will send.
    request: Option<Req>,
    /// Attempts sent so far.
    attempts: u32,
    /// When the first attempt was sent, if there is a deadline.
    started: Option<Instant>,
    /// Everything only a retried request needs, made at its first retry.
    ///
    /// Boxed so that the future of a request that succeeds at once (the hot
    /// path) stays small: the timer and the backoff state are most of the
    /// size, and a retried request sleeps anyway, so one allocation there
    /// costs nothing that matters.
    retrying: Option<Pin<Box<Retrying<B>>>>,
}

pin_project! {
    /// The state of a request that is being retried.
    struct Retrying<B>
    where
        B: RetryBudget,
    {
        #[pin]
        sleep: Sleep,
        // This request's own backoff sequence.
        backoff: Sequence,
        // Total backoff slept so far, as measured on tokio's clock (the
        // timer wakes on whole milliseconds, so this is what was applied,
        // not what was planned).
        slept: Duration,
        // When the current sleep began.
        asleep_since: Instant,
        // The withdrawal for a retry that is planned but not sent yet.
        unsent: Option<Unsent<B>>,
        // The withdrawal that paid for the attempt in flight.
        paid: Option<Withdrawal>,
        // For the span: why the last retry was wanted, and what the budget said.
        reason: &'static str,
        budget: Option<&'static str>,
        // Whether the span has its fields already.
        recorded: bool,
    }
}

/// A granted retry that has not been sent: refunded if dropped unspent.
struct Unsent<B: RetryBudget> {
    budget: B,
    withdrawal: Option<Withdrawal>,
}

impl<B: RetryBudget> Unsent<B> {
    fn spend(mut self) -> Option<Withdrawal> {
        self.withdrawal.take()
    }
}

impl<B: RetryBudget> Drop for Unsent<B> {
    fn drop(&mut self) {
        if let Some(withdrawal) = self.withdrawal.take() {
            self.budget.refund(withdrawal);
        }
    }
}

impl<S, C, K, B, Req> ResponseFuture<S, C, K, B, Req>
where
    S: Service<Req>,
    B: RetryBudget,
{
    pub(super) fn new(
        future: S::Future,
        policy: Arc<RetryPolicy<C, K, B>>,
        service: Option<S>,
        request: Option<Req>,
    ) -> Self {
        let started = policy.deadline.map(|_| Instant::now());
        ResponseFuture {
            state: State::Called { future },
            control: Control {
                policy,
                service,
                request,
                attempts: 1,
                started,
                retrying: None,
            },
        }
    }
}

impl<S, C, K, B, Req> Future for ResponseFuture<S, C, K, B, Req>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
    B: RetryBudget + Clone,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let control = this.control;
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    let outcome = control.policy.classify.classify(result.as_ref());
                    if control.after_attempt(outcome) {
                        this.state.set(State::Sleeping);
                    } else {
                        control.record_span();
                        return Poll::Ready(result);
                    }
                }
                StateProj::Sleeping => {
                    let retrying = control
                        .retrying
                        .as_mut()
                        .expect("a retry is only planned with its retry state");
                    let mut retrying = retrying.as_mut().project();
                    ready!(retrying.sleep.as_mut().poll(cx));
                    *retrying.slept += retrying.asleep_since.elapsed();
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let service = control
                        .service
                        .as_mut()
                        .expect("a retry is only planned when the future holds a service");
                    let retrying = control
                        .retrying
                        .as_mut()
                        .expect("a retry is only planned with its retry state")
                        .as_mut()
                        .project();
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        // The retry is not sent: dropping `unsent` refunds it.
                        *retrying.unsent = None;
                        control.record_span();
                        return Poll::Ready(Err(error));
                    }
                    let request = control
                        .request
                        .take()
                        .expect("a retry is only planned when a copy of the request exists");
                    control.attempts += 1;
                    if control.attempts < control.policy.max_attempts {
                        control.request = control.policy.clone.clone_request(&request);
                    }
                    *retrying.paid = retrying.unsent.take().and_then(Unsent::spend);
                    this.state.set(State::Called {
                        future: service.call(request),
                    });
                }
            }
        }
    }
}

impl<S, C, K: CloneRequest<Req>, B: RetryBudget + Clone, Req> Control<S, C, K, B, Req> {
    /// Books the attempt's outcome with the budget and decides whether to
    /// retry. `true`: the retry is planned and its timer set.
    #[inline]
    fn after_attempt(&mut self, outcome: Outcome) -> bool {
        let paid = self
            .retrying
            .as_mut()
            .and_then(|r| r.as_mut().project().paid.take());
        let budget = self.policy.budget.as_ref();
        let (after, reason) = match outcome {
            Outcome::Success => {
                if let Some(budget) = budget {
                    budget.on_success(paid);
                }
                return false;
            }
            Outcome::Failure { .. } => {
                if let Some(budget) = budget {
                    budget.on_failure();
                }
                return false;
            }
            Outcome::Retry { after, reason } => {
                if let Some(budget) = budget {
                    budget.on_failure();
                }
                (after, reason)
            }
        };
        self.plan_retry(after, reason)
    }

    /// Decides whether (and after how long) to retry; sets the timer.
    /// Out of line: the success path should not pay for its size.
    #[cold]
    #[inline(never)]
    fn plan_retry(&mut self, after: Option<Duration>, reason: &'static str) -> bool {
        let resends = self.attempts - 1;
        if self.attempts >= self.policy.max_attempts {
            tracing::event!(target: "dephase::retry", Level::DEBUG, http.request.resend_count = i64::from(resends), dephase.retry.reason = reason, "retry stopped: attempts exhausted");
            return false;
        }
        let can_resend = self
            .request
            .as_ref()
            .is_some_and(|copy| self.policy.clone.can_resend(copy));
        if !can_resend || self.service.is_none() {
            tracing::event!(target: "dephase::retry", Level::DEBUG, dephase.retry.reason = reason, "retry stopped: the request could not be copied");
            return false;
        }

        let cap = self.policy.backoff.cap();
        let retrying = self.retrying.get_or_insert_with(|| {
            Box::pin(Retrying {
                sleep: tokio::time::sleep_until(Instant::now()),
                backoff: self.policy.backoff.sequence(),
                slept: Duration::ZERO,
                asleep_since: Instant::now(),
                unsent: None,
                paid: None,
                reason,
                budget: None,
                recorded: false,
            })
        });
        let mut retrying = retrying.as_mut().project();
        *retrying.reason = reason;
        let jitter = retrying.backoff.jitter().as_str();
        let computed = retrying.backoff.next_delay();
        // A server hint is a floor, and this request's own jittered backoff
        // is added on top of it: callers told the same `Retry-After` at the
        // same moment must not all come back at the same moment. The sum
        // never passes the cap, and is never below the computed backoff.
        let delay = after.map_or(computed, |hint| hint.saturating_add(computed).min(cap));

        if let (Some(deadline), Some(started)) = (self.policy.deadline, self.started) {
            if started.elapsed() + delay > deadline {
                tracing::event!(target: "dephase::retry", Level::DEBUG, http.request.resend_count = i64::from(resends), dephase.retry.reason = reason, delay_ms = telemetry::millis(delay), "retry stopped: the backoff would end past the deadline");
                return false;
            }
        }

        if let Some(budget) = &self.policy.budget {
            match budget.withdraw() {
                Some(withdrawal) => {
                    *retrying.unsent = Some(Unsent {
                        budget: budget.clone(),
                        withdrawal: Some(withdrawal),
                    });
                    *retrying.budget = Some("granted");
                }
                None => {
                    *retrying.budget = Some("denied");
                    telemetry::count::budget_denied();
                    tracing::event!(target: "dephase::retry", Level::DEBUG, http.request.resend_count = i64::from(resends), dephase.budget = "denied", dephase.retry.reason = reason, "retry stopped: the retry budget is empty");
                    return false;
                }
            }
        }

        *retrying.asleep_since = Instant::now();
        retrying.sleep.as_mut().reset(Instant::now() + delay);
        let delay_ms = telemetry::millis(delay);
        telemetry::count::retry(reason, delay);
        tracing::event!(
            target: "dephase::retry",
            Level::DEBUG,
            http.request.resend_count = i64::from(resends + 1),
            dephase.retry.delay_ms = delay_ms,
            dephase.jitter = jitter,
            dephase.budget = if retrying.unsent.is_some() { "granted" } else { "none" },
            dephase.retry.reason = reason,
            "retrying after backoff"
        );
        true
    }
}

impl<S, C, K, B: RetryBudget, Req> Control<S, C, K, B, Req> {
    /// Records what the retries did on the current span, once, with the
    /// final values (`tracing-opentelemetry` appends an attribute per
    /// record, so recording at every re-send would export each field once
    /// per retry). Nothing for a request that was never retried.
    fn record_span(&mut self) {
        let Some(retrying) = self.retrying.as_mut() else {
            return;
        };
        let retrying = retrying.as_mut().project();
        if std::mem::replace(retrying.recorded, true) {
            return;
        }
        let span = Span::current();
        if self.attempts > 1 {
            span.record(RESEND_COUNT, i64::from(self.attempts - 1));
            span.record(RETRY_DELAY_MS, telemetry::millis(*retrying.slept));
            span.record(JITTER, retrying.backoff.jitter().as_str());
        }
        span.record(RETRY_REASON, *retrying.reason);
        if let Some(budget) = *retrying.budget {
            span.record(BUDGET, budget);
        }
    }
}

impl<S, C, K, B: RetryBudget, Req> Drop for Control<S, C, K, B, Req> {
    fn drop(&mut self) {
        // Cancelled mid-retry: the span still learns what was done (an
        // instrumented future is dropped inside its span).
        if self.retrying.is_some() {
            self.record_span();
        }
    }
}

impl<S, C, K, B, Req> fmt::Debug for ResponseFuture<S, C, K, B, Req>
where
    S: Service<Req>,
    B: RetryBudget,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Sleeping => "sleeping",
            State::Ready => "ready",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.control.attempts)
            .field("slept", &self.control.retrying.as_ref().map(|r| r.slept))
            .finish_non_exhaustive()
    }
}
