//! The deadline layers' futures: the call raced against the deadline's
//! timer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::StatusCode;
use pin_project_lite::pin_project;
use tokio::time::{Sleep, sleep_until};

use super::error::DeadlineExceeded;
use super::scope::{Deadline, Scoped};
use crate::BoxError;

pin_project! {
    /// The future returned by [`PropagateDeadline`](super::PropagateDeadline).
    pub struct PropagateFuture<F> {
        #[pin]
        kind: Client<F>,
    }
}

pin_project! {
    #[project = ClientProj]
    enum Client<F> {
        Plain { #[pin] future: F },
        Bounded { #[pin] future: F, #[pin] sleep: Sleep },
        Refused { error: Option<DeadlineExceeded> },
    }
}

impl<F> PropagateFuture<F> {
    pub(super) fn plain(future: F) -> Self {
        PropagateFuture {
            kind: Client::Plain { future },
        }
    }

    pub(super) fn bounded(future: F, deadline: Deadline) -> Self {
        PropagateFuture {
            kind: Client::Bounded {
                future,
                sleep: sleep_until(deadline.instant()),
            },
        }
    }

    pub(super) fn refused(error: DeadlineExceeded) -> Self {
        PropagateFuture {
            kind: Client::Refused { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for PropagateFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            ClientProj::Plain { future } => future.poll(cx).map_err(Into::into),
            ClientProj::Bounded { future, sleep } => {
                if let Poll::Ready(result) = future.poll(cx) {
                    return Poll::Ready(result.map_err(Into::into));
                }
                ready!(sleep.poll(cx));
                Poll::Ready(Err(DeadlineExceeded::new(Default::default(), true).into()))
            }
            ClientProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("a refused future is polled after it completed")
                .into())),
        }
    }
}

impl<F> fmt::Debug for PropagateFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Client::Plain { .. } => "plain",
            Client::Bounded { .. } => "bounded",
            Client::Refused { .. } => "refused",
        };
        f.debug_struct("PropagateFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The future returned by [`ServerDeadline`](super::ServerDeadline).
    pub struct ServerFuture<F> {
        #[pin]
        kind: Server<F>,
    }
}

pin_project! {
    #[project = ServerProj]
    enum Server<F> {
        Plain { #[pin] future: F },
        Bounded { #[pin] future: Scoped<F>, #[pin] sleep: Sleep, status: StatusCode },
        Expired { status: StatusCode },
    }
}

impl<F> ServerFuture<F> {
    pub(super) fn plain(future: F) -> Self {
        ServerFuture {
            kind: Server::Plain { future },
        }
    }

    /// The deadline had passed when the request came: the handler is not called.
    pub(super) fn expired(status: StatusCode) -> Self {
        ServerFuture {
            kind: Server::Expired { status },
        }
    }

    pub(super) fn bounded(future: F, deadline: Deadline, status: StatusCode) -> Self
    where
        F: Future,
    {
        ServerFuture {
            kind: Server::Bounded {
                future: deadline.scope(future),
                sleep: sleep_until(deadline.instant()),
                status,
            },
        }
    }
}

impl<F, B, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            ServerProj::Plain { future } => future.poll(cx),
            ServerProj::Bounded {
                future,
                sleep,
                status,
            } => {
                // The deadline first: once it has passed, the answer is the
                // configured status, also when the handler answered at the
                // same instant (with its own call's `DeadlineExceeded`).
                if sleep.poll(cx).is_pending() {
                    return future.poll(cx);
                }
                tracing::event!(
                    target: "dephase::deadline",
                    tracing::Level::DEBUG,
                    "handler cut short: the request's deadline passed"
                );
                Poll::Ready(Ok(deadline_response(*status)))
            }
            ServerProj::Expired { status } => {
                tracing::event!(
                    target: "dephase::deadline",
                    tracing::Level::DEBUG,
                    "handler not called: the request's deadline had passed"
                );
                Poll::Ready(Ok(deadline_response(*status)))
            }
        }
    }
}

/// The answer once a request's deadline has passed: `status`, no body.
fn deadline_response<B: Default>(status: StatusCode) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() = status;
    response
}

impl<F> fmt::Debug for ServerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Server::Plain { .. } => "plain",
            Server::Bounded { .. } => "bounded",
            Server::Expired { .. } => "expired",
        };
        f.debug_struct("ServerFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
