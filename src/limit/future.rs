//! The limited call's [`ResponseFuture`]: the call with its slot, a
//! caller waiting for one, or the rejection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::error::LimitExceeded;
use super::state::{Limiter, Permit, Seen, Waiter};
use crate::BoxError;
use crate::classify::{Classify, Outcome};

pin_project! {
    /// The future returned by [`ConcurrencyLimit`](super::ConcurrencyLimit).
    pub struct ResponseFuture<S, C, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req>,
        classify: C,
        permit: Option<Permit>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] future: S::Future },
        // Boxed, the timer too: the admitted call's future (the common
        // case) stays small, and is moved as such.
        Waiting {
            wait: Box<Wait<S, Req>>,
            sleep: Pin<Box<Sleep>>,
        },
        Rejected { error: Option<LimitExceeded> },
    }
}

/// A caller waiting for a slot: its place in the queue, the service made
/// ready for it, its request.
pub(super) struct Wait<S, Req> {
    pub(super) limiter: Limiter,
    pub(super) waiter: Option<Arc<Waiter>>,
    pub(super) service: Option<S>,
    pub(super) request: Option<Req>,
    pub(super) since: Instant,
}

impl<S, Req> Drop for Wait<S, Req> {
    fn drop(&mut self) {
        // Gone before its turn: out of the queue; a slot given to it in
        // the meantime goes to the next caller.
        if let Some(waiter) = self.waiter.take() {
            drop(self.limiter.leave(&waiter));
        }
    }
}

impl<S: Service<Req>, C, Req> ResponseFuture<S, C, Req> {
    pub(super) fn called(future: S::Future, permit: Permit, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            classify,
            permit: Some(permit),
        }
    }

    pub(super) fn waiting(wait: Wait<S, Req>, until: Instant, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Waiting {
                wait: Box::new(wait),
                sleep: Box::pin(tokio::time::sleep_until(until)),
            },
            classify,
            permit: None,
        }
    }

    pub(super) fn rejected(error: LimitExceeded, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
            classify,
            permit: None,
        }
    }
}

impl<S, C, Req> Future for ResponseFuture<S, C, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    if let Some(permit) = this.permit.take() {
                        let seen = match this.classify.classify(result.as_ref()) {
                            Outcome::Success => Seen::Answered,
                            Outcome::Retry { .. } => Seen::Dropped,
                            Outcome::Failure { .. } => Seen::Ignored,
                        };
                        permit.finish(seen);
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                KindProj::Rejected { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("a rejected future is polled after it completed")
                        .into()));
                }
                KindProj::Waiting { wait, sleep } => {
                    let waiter = wait.waiter.as_ref().expect("waiting in the queue");
                    let mut permit = wait.limiter.poll_grant(waiter, cx.waker());
                    if permit.is_none() && sleep.as_mut().poll(cx).is_ready() {
                        let waiter = wait.waiter.take().expect("waiting in the queue");
                        permit = wait.limiter.leave(&waiter);
                        if permit.is_none() {
                            let waited = wait.since.elapsed();
                            let error = wait.limiter.reject(waiter.partition, waited, true);
                            record_rejection(&error);
                            this.kind.set(Kind::Rejected { error: Some(error) });
                            continue;
                        }
                    }
                    let Some(permit) = permit else {
                        return Poll::Pending;
                    };
                    wait.waiter = None;
                    let waited = wait.since.elapsed();
                    crate::telemetry::count::limit_waited(waited);
                    record_wait(waited);
                    let mut service = wait.service.take().expect("a waiting call has its service");
                    let request = wait.request.take().expect("a waiting call has its request");
                    // The service was made ready for this call before it
                    // waited (and kept its readiness): call it now.
                    let future = service.call(request);
                    *this.permit = Some(permit);
                    this.kind.set(Kind::Called { future });
                }
            }
        }
    }
}

/// Records a rejection on the current span.
pub(super) fn record_rejection(error: &LimitExceeded) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record(crate::telemetry::LIMIT_CURRENT, i64::from(error.limit()));
        span.record(
            crate::telemetry::LIMIT_IN_FLIGHT,
            i64::from(error.in_flight()),
        );
        span.record(
            crate::telemetry::LIMIT_WAIT_MS,
            crate::telemetry::millis(error.waited()),
        );
        if let Some(partition) = error.partition() {
            span.record(crate::telemetry::LIMIT_PRIORITY, partition);
        }
    }
    tracing::event!(
        target: "dephase::limit",
        tracing::Level::DEBUG,
        dephase.limit.current = i64::from(error.limit()),
        dephase.limit.in_flight = i64::from(error.in_flight()),
        dephase.limit.wait_ms = crate::telemetry::millis(error.waited()),
        "call turned away: concurrency limit reached"
    );
}

fn record_wait(waited: std::time::Duration) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record(
            crate::telemetry::LIMIT_WAIT_MS,
            crate::telemetry::millis(waited),
        );
    }
}

impl<S: Service<Req>, C, Req> fmt::Debug for ResponseFuture<S, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Waiting { .. } => "waiting",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
