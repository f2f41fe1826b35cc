//! How the retry layer waits and re-sends: the [`ResponseFuture`].
//!
//! `call` sends the first attempt and hands this future everything it
//! needs. The future then loops: wait for the attempt → book it and ask
//! the policy (`RetryPolicy::book`, `RetryPolicy::plan`) → hand the copy
//! to the send-later engine (sleep, get the service ready, send). It
//! decides nothing itself.

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

use super::attempt::Attempt as Number;
use super::policy::{CloneRequest, Plan, RetryPolicy, Stop, Wanted};
use crate::backoff::Sequence;
use crate::budget::{RetryBudget, Unsent};
use crate::classify::Classify;
use crate::deadline::Deadline;
use crate::later::SendLater;
use crate::telemetry::{self, BUDGET, JITTER, RESEND_COUNT, RETRY_DELAY_MS, RETRY_REASON};

pin_project! {
    /// The future returned by [`Retry`](super::Retry): the response of the
    /// last attempt that was made.
    pub struct ResponseFuture<S, C, R, B, Req>
    where
        S: Service<Req>,
        B: RetryBudget,
        B: Clone,
    {
        #[pin]
        attempt: Attempt<S, Req, B>,
        control: Control<S, C, R, B, Req>,
    }

    impl<S, C, R, B, Req> PinnedDrop for ResponseFuture<S, C, R, B, Req>
    where
        S: Service<Req>,
        B: RetryBudget,
        B: Clone,
    {
        fn drop(this: Pin<&mut Self>) {
            // Cancelled mid-retry: the span still learns what was done (an
            // instrumented future is dropped inside its span), counting a
            // re-send in flight but not one still waiting to be sent.
            let this = this.project();
            let control = this.control;
            if control.retrying.as_ref().is_some_and(|r| !r.recorded) {
                if let AttemptProj::Resend { later } = this.attempt.project() {
                    if later.is_sent() {
                        control.attempts += 1;
                    }
                }
                control.record_span();
            }
        }
    }
}

pin_project! {
    /// The attempt in flight: the first, sent by `call` (the success path
    /// keeps the future small), or a re-send, boxed (a retried request
    /// sleeps anyway; the box is reused from one re-send to the next).
    #[project = AttemptProj]
    enum Attempt<S, Req, B>
    where
        S: Service<Req>,
        B: RetryBudget,
    {
        First { #[pin] future: S::Future },
        Resend { later: Pin<Box<SendLater<S, Req, Unsent<B>>>> },
    }
}

/// What has been done so far, beside the attempt in flight.
struct Control<S, C, R, B: RetryBudget, Req> {
    policy: Arc<RetryPolicy<C, R, B>>,
    /// `Some` only when the request could be copied: the service for re-sends.
    service: Option<S>,
    /// The copy that the next attempt will send.
    copy: Option<Req>,
    /// Attempts sent so far.
    attempts: u32,
    /// When the first attempt was sent, if there is a deadline.
    started: Option<Instant>,
    /// Everything only a retried request needs, made at its first retry.
    ///
    /// Boxed so that the future of a request that succeeds at once (the hot
    /// path) stays small: a retried request sleeps anyway, so one
    /// allocation there costs nothing that matters.
    retrying: Option<Box<Retrying>>,
}

/// The state of a request that is being retried.
struct Retrying {
    /// This request's own backoff sequence.
    backoff: Sequence,
    /// The timer, reused from one wait to the next.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Total backoff slept so far (what was applied, not planned).
    slept: Duration,
    /// For the span: why the last retry was wanted, what the budget said.
    reason: &'static str,
    budget: Option<&'static str>,
    /// Whether the span has its fields already.
    recorded: bool,
}

impl<S, C, R, B, Req> ResponseFuture<S, C, R, B, Req>
where
    S: Service<Req>,
    B: RetryBudget + Clone,
{
    pub(super) fn new(
        future: S::Future,
        policy: Arc<RetryPolicy<C, R, B>>,
        service: Option<S>,
        copy: Option<Req>,
    ) -> Self {
        let started = policy.deadline.map(|_| Instant::now());
        ResponseFuture {
            attempt: Attempt::First { future },
            control: Control {
                policy,
                service,
                copy,
                attempts: 1,
                started,
                retrying: None,
            },
        }
    }
}

impl<S, C, R, B, Req> Future for ResponseFuture<S, C, R, B, Req>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    B: RetryBudget + Clone,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let control = this.control;
        loop {
            let (result, paid) = match this.attempt.as_mut().project() {
                AttemptProj::First { future } => (ready!(future.poll(cx)), None),
                AttemptProj::Resend { later } => {
                    let result = ready!(later.as_mut().poll(cx));
                    // Take back what the finished re-send held.
                    let retrying = control
                        .retrying
                        .as_mut()
                        .expect("a re-send is planned with its retry state");
                    retrying.slept += later.waited();
                    retrying.sleep = later.as_mut().take_sleep();
                    control.service = later.as_mut().take_service();
                    if !later.is_sent() {
                        // The service failed to get ready for the re-send:
                        // that error is the caller's answer.
                        control.record_span();
                        return Poll::Ready(result);
                    }
                    control.attempts += 1;
                    (result, later.as_mut().take_spent().flatten())
                }
            };
            let outcome = control.policy.classify.classify(result.as_ref());
            let Some(wanted) = control.policy.book(outcome, paid) else {
                control.record_span();
                return Poll::Ready(result);
            };
            let Some(next) = control.plan(wanted) else {
                control.record_span();
                return Poll::Ready(result);
            };
            match this.attempt.as_mut().project() {
                AttemptProj::Resend { later } => later.set(next),
                AttemptProj::First { .. } => this.attempt.set(Attempt::Resend {
                    later: Box::pin(next),
                }),
            }
        }
    }
}

impl<S, C, R, B, Req> Control<S, C, R, B, Req>
where
    S: Service<Req>,
    R: CloneRequest<Req>,
    B: RetryBudget + Clone,
{
    /// Asks the policy about a wanted retry; the next attempt if it is made.
    /// Out of line: the success path should not pay for its size.
    #[cold]
    #[inline(never)]
    fn plan(&mut self, wanted: Wanted) -> Option<SendLater<S, Req, Unsent<B>>> {
        let policy = &*self.policy;
        let retrying = self.retrying.get_or_insert_with(|| {
            Box::new(Retrying {
                backoff: policy.backoff.sequence(),
                sleep: None,
                slept: Duration::ZERO,
                reason: wanted.reason,
                budget: None,
                recorded: false,
            })
        });
        retrying.reason = wanted.reason;
        let resends = self.attempts - 1;
        let copy = self.copy.as_ref().filter(|_| self.service.is_some());
        let elapsed = self.started.map(|started| started.elapsed());
        let remaining = Deadline::current().map(Deadline::remaining);
        let plan = policy.plan(
            wanted,
            self.attempts,
            copy,
            elapsed,
            remaining,
            &mut retrying.backoff,
        );
        let (delay, withdrawal) = match plan {
            Plan::Retry { delay, withdrawal } => (delay, withdrawal),
            Plan::Stop(stop) => {
                announce_stop(stop, resends, wanted.reason);
                if stop == Stop::Budget {
                    retrying.budget = Some("denied");
                    telemetry::count::budget_denied();
                }
                return None;
            }
        };
        if policy.budget.is_some() {
            retrying.budget = Some("granted");
        }
        let mut copy = self.copy.take().expect("planned with a copy");
        if self.attempts + 1 < policy.max_attempts {
            self.copy = policy.clone.clone_request(&copy);
        }
        policy.clone.mark(&mut copy, Number::new(self.attempts + 1));
        let service = self.service.take().expect("planned with a service");
        telemetry::count::retry(wanted.reason, delay);
        tracing::event!(
            target: "dephase::retry",
            Level::DEBUG,
            http.request.resend_count = i64::from(resends + 1),
            dephase.retry.delay_ms = telemetry::millis(delay),
            dephase.jitter = retrying.backoff.jitter().as_str(),
            dephase.budget = if withdrawal.is_some() { "granted" } else { "none" },
            dephase.retry.reason = wanted.reason,
            "retrying after backoff"
        );
        let ticket = Unsent::new(policy.budget.clone(), withdrawal);
        Some(SendLater::at(
            Some(Instant::now() + delay),
            service,
            copy,
            ticket,
            retrying.sleep.take(),
        ))
    }
}

/// The event that says why a wanted retry is not made.
fn announce_stop(stop: Stop, resends: u32, reason: &'static str) {
    let resends = i64::from(resends);
    match stop {
        Stop::Attempts => {
            tracing::event!(target: "dephase::retry", Level::DEBUG, http.request.resend_count = resends, dephase.retry.reason = reason, "retry stopped: attempts exhausted")
        }
        Stop::NoCopy => {
            tracing::event!(target: "dephase::retry", Level::DEBUG, dephase.retry.reason = reason, "retry stopped: the request could not be copied")
        }
        Stop::Deadline(delay) => {
            tracing::event!(target: "dephase::retry", Level::DEBUG, http.request.resend_count = resends, dephase.retry.reason = reason, delay_ms = telemetry::millis(delay), "retry stopped: the backoff would end past the deadline (or too close to the caller's)")
        }
        Stop::Budget => {
            tracing::event!(target: "dephase::retry", Level::DEBUG, http.request.resend_count = resends, dephase.budget = "denied", dephase.retry.reason = reason, "retry stopped: the retry budget is empty")
        }
    }
}

impl<S, C, R, B: RetryBudget, Req> Control<S, C, R, B, Req> {
    /// Records what the retries did on the current span, once, with the
    /// final values (`tracing-opentelemetry` appends an attribute per
    /// record, so recording at every re-send would export each field once
    /// per retry). Nothing for a request that was never retried.
    #[inline]
    fn record_span(&mut self) {
        if self.retrying.is_some() {
            self.record_retries();
        }
    }

    /// [`record_span`](Self::record_span) for a request that was retried.
    #[cold]
    #[inline(never)]
    fn record_retries(&mut self) {
        let Some(retrying) = self.retrying.as_mut() else {
            return;
        };
        if std::mem::replace(&mut retrying.recorded, true) {
            return;
        }
        let span = Span::current();
        if self.attempts > 1 {
            telemetry::count::retried_call(self.attempts - 1, retrying.slept);
            span.record(RESEND_COUNT, i64::from(self.attempts - 1));
            span.record(RETRY_DELAY_MS, telemetry::millis(retrying.slept));
            span.record(JITTER, retrying.backoff.jitter().as_str());
        }
        span.record(RETRY_REASON, retrying.reason);
        if let Some(budget) = retrying.budget {
            span.record(BUDGET, budget);
        }
    }
}

impl<S, C, R, B, Req> fmt::Debug for ResponseFuture<S, C, R, B, Req>
where
    S: Service<Req>,
    B: RetryBudget + Clone,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempt: &dyn fmt::Debug = match &self.attempt {
            Attempt::First { .. } => &"first",
            Attempt::Resend { later } => later,
        };
        f.debug_struct("ResponseFuture")
            .field("attempt", attempt)
            .field("attempts", &self.control.attempts)
            .field("slept", &self.control.retrying.as_ref().map(|r| r.slept))
            .finish_non_exhaustive()
    }
}
