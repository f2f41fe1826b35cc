//! The coalesced call's [`ResponseFuture`]: a direct call, or a place in a flight.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tracing::{Level, Span};

use super::flight::Waiter;
use crate::BoxError;
use crate::telemetry::{COALESCE_ROLE, COALESCE_WAITERS};

pin_project! {
    /// The future returned by [`Coalesce`](super::Coalesce).
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
        // The request had no key: called directly.
        Direct { #[pin] future: F },
        // The request shares a flight.
        Shared { waiter: Waiter<K, T>, recorded: bool },
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> ResponseFuture<F, K, T> {
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Direct { future },
        }
    }

    pub(super) fn shared(waiter: Waiter<K, T>) -> Self {
        ResponseFuture {
            kind: Kind::Shared {
                waiter,
                recorded: false,
            },
        }
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
            KindProj::Direct { future } => Poll::Ready(ready!(future.poll(cx)).map_err(Into::into)),
            KindProj::Shared { waiter, recorded } => {
                let role = if waiter.is_leader() {
                    "leader"
                } else {
                    "follower"
                };
                if !*recorded {
                    // Recorded at the first poll: the caller's span is entered then.
                    Span::current().record(COALESCE_ROLE, role);
                    if !waiter.is_leader() {
                        crate::telemetry::count::coalesce_follower();
                    }
                    *recorded = true;
                }
                let result = ready!(waiter.poll(cx));
                let waiters = i64::try_from(waiter.joined()).unwrap_or(i64::MAX);
                Span::current().record(COALESCE_WAITERS, waiters);
                tracing::event!(
                    target: "dephase::coalesce",
                    Level::DEBUG,
                    dephase.coalesce.role = role,
                    dephase.coalesce.waiters = waiters,
                    "coalesced call finished"
                );
                Poll::Ready(result)
            }
        }
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> fmt::Debug for ResponseFuture<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Direct { .. } => "direct",
            Kind::Shared { waiter, .. } if waiter.is_leader() => "leader",
            Kind::Shared { .. } => "follower",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
