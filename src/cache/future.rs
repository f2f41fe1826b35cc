//! The cache's [`ResponseFuture`]: an answer from the store, a direct call,
//! or a place in the key's flight; and what it records.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tracing::{Level, Span};

use super::store::{Looked, LookedKind, Served};
use crate::BoxError;
use crate::flight::{Keyed, Landed};
use crate::telemetry::{self, CACHE_EXPIRES_IN_MS, CACHE_RESULT, REDIS_LEASE, REDIS_WAIT_MS};

pin_project! {
    /// The future returned by [`Cache`](super::Cache).
    pub struct ResponseFuture<F, K, T>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        T: Clone,
    {
        #[pin]
        kind: Kind<F, K, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, K, T>
    where
        K: Hash,
        K: Eq,
        K: Clone,
        T: Clone,
    {
        // Answered by the store (a hit, an early refresh, a stale value).
        Answered { answer: Option<Result<T, BoxError>>, served: Served },
        // Its own call, or its place in the key's flight; `stale` is served
        // if the load fails (stale-if-error).
        Keyed { #[pin] keyed: Keyed<F, K, (T, Served)>, stale: Option<T> },
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> ResponseFuture<F, K, T> {
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Keyed {
                keyed: Keyed::direct(future),
                stale: None,
            },
        }
    }

    pub(super) fn looked(looked: Looked<K, T>) -> Self {
        let kind = match looked.kind {
            LookedKind::Now(answer, served) => Kind::Answered {
                answer: Some(answer),
                served,
            },
            LookedKind::Flight { waiter, stale } => Kind::Keyed {
                keyed: Keyed::shared(waiter),
                stale,
            },
        };
        ResponseFuture { kind }
    }
}

impl<F, E, K, T> Future for ResponseFuture<F, K, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    K: Hash + Eq + Clone,
    T: Clone,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Answered { answer, served } => {
                record(served);
                Poll::Ready(
                    answer
                        .take()
                        .expect("an answer is polled after it completed"),
                )
            }
            KindProj::Keyed { keyed, stale } => Poll::Ready(match ready!(keyed.poll_landed(cx)) {
                Landed::Direct(result) => result.map_err(Into::into),
                Landed::Shared(Ok((value, served))) => {
                    record(&served);
                    Ok(value)
                }
                // Stale-if-error: the load failed, the old value is still
                // within its bound.
                Landed::Shared(Err(error)) => match stale.take() {
                    Some(old) => {
                        record(&Served::new(Served::STALE));
                        Ok(old)
                    }
                    None => {
                        record(&Served::new(Served::MISS));
                        Err(error)
                    }
                },
            }),
        }
    }
}

/// Records what the cache did for this request on the current span.
fn record(served: &Served) {
    // Nothing is recorded on a span no subscriber keeps (the usual hit);
    // with no subscriber at all (the most verbose level any subscriber
    // enables is "off"), the span is not even looked up.
    let span = (tracing::level_filters::LevelFilter::current()
        != tracing::level_filters::LevelFilter::OFF)
        .then(Span::current);
    let span = span.as_ref().filter(|span| !span.is_disabled());
    let result = served.result();
    telemetry::count::cache_result(served.result_index());
    if let Some(span) = span {
        span.record(CACHE_RESULT, result);
        if let Some(left) = served.expires_in() {
            span.record(CACHE_EXPIRES_IN_MS, telemetry::millis(left));
        }
    }
    if let Some(lease) = served.lease() {
        telemetry::count::redis_lease(lease, served.waited());
        if let Some(span) = span {
            span.record(REDIS_LEASE, lease);
            if !served.waited().is_zero() {
                span.record(REDIS_WAIT_MS, telemetry::millis(served.waited()));
            }
        }
    }
    tracing::event!(
        target: "dephase::cache",
        Level::TRACE,
        dephase.cache.result = result,
        // Evaluated only when the event is enabled.
        dephase.cache.expires_in_ms = served.expires_in().map(telemetry::millis),
        "cache lookup"
    );
}

impl<F, K: Hash + Eq + Clone, T: Clone> fmt::Debug for ResponseFuture<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Answered { served, .. } => served.result(),
            Kind::Keyed { keyed, .. } => keyed.kind(),
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
