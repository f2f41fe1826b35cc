//! How a paced call waits for its turn: the [`ResponseFuture`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::Turn;
use super::error::Overloaded;
use crate::BoxError;

pin_project! {
    /// The future returned by [`Pace`](super::Pace).
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // Until the turn comes: the service and the request it will take.
        waiting: Option<(S, Req)>,
        turn: Option<Turn>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Waiting { #[pin] sleep: Sleep },
        Ready,
        Called { #[pin] future: F },
        Overloaded { error: Option<Overloaded> },
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(super) fn called(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Called { future },
            waiting: None,
            turn: None,
        }
    }

    pub(super) fn waiting(at: Instant, turn: Turn, service: S, request: Req) -> Self {
        ResponseFuture {
            state: State::Waiting {
                sleep: tokio::time::sleep_until(at),
            },
            waiting: Some((service, request)),
            turn: Some(turn),
        }
    }

    pub(super) fn overloaded(error: Overloaded) -> Self {
        ResponseFuture {
            state: State::Overloaded { error: Some(error) },
            waiting: None,
            turn: None,
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let (service, _) = this
                        .waiting
                        .as_mut()
                        .expect("a waiting call holds its service and request");
                    // If the caller goes away while the service is not ready,
                    // dropping the unspent turn gives it back.
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let (mut service, request) = this.waiting.take().expect("checked above");
                    if let Some(turn) = this.turn.take() {
                        turn.spend();
                    }
                    this.state.set(State::Called {
                        future: service.call(request),
                    });
                }
                StateProj::Called { future } => {
                    return Poll::Ready(ready!(future.poll(cx)).map_err(Into::into));
                }
                StateProj::Overloaded { error } => {
                    let error = error
                        .take()
                        .expect("an overloaded future is polled after it completed");
                    return Poll::Ready(Err(error.into()));
                }
            }
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Ready => "ready",
            State::Called { .. } => "called",
            State::Overloaded { .. } => "overloaded",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
