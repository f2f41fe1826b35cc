//! The breaker's [`ResponseFuture`]: the call, then its outcome booked.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tracing::{Level, Span};

use super::error::Rejected;
use super::state::Permit;
use crate::BoxError;
use crate::classify::Classify;
use crate::telemetry::{self, BREAKER_RETRY_AFTER_MS, BREAKER_STATE};

fn record_rejection(rejected: &Rejected) {
    let span = Span::current();
    span.record(BREAKER_STATE, rejected.state().as_str());
    telemetry::count::breaker_rejected(rejected.state().as_str());
    let after_ms = rejected.retry_after().map(telemetry::millis);
    if let Some(ms) = after_ms {
        span.record(BREAKER_RETRY_AFTER_MS, ms);
    }
    tracing::event!(
        target: "dephase::breaker",
        Level::DEBUG,
        dephase.breaker.state = rejected.state().as_str(),
        dephase.breaker.retry_after_ms = after_ms,
        "call rejected by the circuit breaker"
    );
}

pin_project! {
    /// The future returned by [`CircuitBreaker`](super::CircuitBreaker).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classify: C,
        },
        Rejected {
            error: Option<Rejected>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: F, permit: Permit, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(super) fn rejected(error: Rejected) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                permit,
                classify,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(classify.classify(result.as_ref()));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => {
                let rejected = error
                    .take()
                    .expect("a rejected future is polled after it completed");
                // Recorded here rather than in `call`: the caller's span is
                // the one entered while its future is polled.
                record_rejection(&rejected);
                Poll::Ready(Err(rejected.into()))
            }
        }
    }
}
