//! The coalesced call's [`ResponseFuture`]: a direct call, or a place in a
//! flight (the flight engine's), with its telemetry.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tracing::{Level, Span};

use crate::BoxError;
use crate::flight::{Keyed, Landed, Waiter};
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
        keyed: Keyed<F, K, T>,
        recorded: bool,
    }
}

impl<F, K: Hash + Eq + Clone, T: Clone> ResponseFuture<F, K, T> {
    pub(super) fn direct(future: F) -> Self {
        ResponseFuture {
            keyed: Keyed::direct(future),
            recorded: false,
        }
    }

    pub(super) fn shared(waiter: Waiter<K, T>) -> Self {
        ResponseFuture {
            keyed: Keyed::shared(waiter),
            recorded: false,
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
        let mut this = self.project();
        let role = this.keyed.waiter().map(|w| w.is_leader());
        if let (Some(leader), false) = (role, *this.recorded) {
            // Recorded at the first poll: the caller's span is entered then.
            Span::current().record(COALESCE_ROLE, role_name(leader));
            if !leader {
                crate::telemetry::count::coalesce_follower();
            }
            *this.recorded = true;
        }
        match ready!(this.keyed.as_mut().poll_landed(cx)) {
            Landed::Direct(result) => Poll::Ready(result.map_err(Into::into)),
            Landed::Shared(result) => {
                let joined = this.keyed.waiter().map_or(1, Waiter::joined);
                let waiters = i64::try_from(joined).unwrap_or(i64::MAX);
                Span::current().record(COALESCE_WAITERS, waiters);
                if waiters > 1 {
                    tracing::event!(
                        target: "dephase::coalesce",
                        Level::DEBUG,
                        dephase.coalesce.role = role_name(role.unwrap_or(true)),
                        dephase.coalesce.waiters = waiters,
                        "coalesced call finished"
                    );
                }
                Poll::Ready(result)
            }
        }
    }
}

fn role_name(leader: bool) -> &'static str {
    if leader { "leader" } else { "follower" }
}

impl<F, K: Hash + Eq + Clone, T: Clone> fmt::Debug for ResponseFuture<F, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.keyed.waiter() {
            None => "direct",
            Some(w) if w.is_leader() => "leader",
            Some(_) => "follower",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
