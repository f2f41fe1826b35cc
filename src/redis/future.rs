//! The future of a call through a fleet layer
//! ([`FleetGateLayer`](super::FleetGateLayer),
//! [`FleetPaceLayer`](super::FleetPaceLayer)): waiting for what Redis
//! grants (a slot, a turn), then the call, holding the grant until it is done.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// Waiting for a grant: one or more Redis round trips and jittered sleeps.
pub(super) type Acquire<G> = Pin<Box<dyn Future<Output = Result<G, BoxError>> + Send>>;

pin_project! {
    /// The future returned by [`Gated`](super::Gated) (`G`: the
    /// [`SlotGuard`](super::SlotGuard) held during the call) and
    /// [`FleetPaced`](super::FleetPaced) (`G`: the wait applied).
    pub struct ResponseFuture<S, Req, G>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, G>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, G>
    where
        S: Service<Req>,
    {
        Waiting {
            acquire: Acquire<G>,
            service: Option<S>,
            request: Option<Req>,
        },
        Called {
            #[pin]
            future: S::Future,
            slot: Option<G>,
        },
    }
}

impl<S: Service<Req>, Req, G> ResponseFuture<S, Req, G> {
    pub(super) fn new(acquire: Acquire<G>, service: S, request: Req) -> Self {
        ResponseFuture {
            state: State::Waiting {
                acquire,
                service: Some(service),
                request: Some(request),
            },
        }
    }
}

impl<S, Req, G> Future for ResponseFuture<S, Req, G>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    acquire,
                    service,
                    request,
                } => {
                    let slot = ready!(acquire.as_mut().poll(cx))?;
                    let mut service = service.take().expect("polled after completion");
                    let request = request.take().expect("polled after completion");
                    // The service was made ready for this call before it
                    // waited (and kept its readiness): call it now.
                    let future = service.call(request);
                    this.state.set(State::Called {
                        future,
                        slot: Some(slot),
                    });
                }
                StateProj::Called { future, slot } => {
                    let result = ready!(future.poll(cx));
                    // A slot goes back as soon as the call is done.
                    drop(slot.take());
                    return Poll::Ready(result.map_err(Into::into));
                }
            }
        }
    }
}

impl<S: Service<Req>, Req, G> fmt::Debug for ResponseFuture<S, Req, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Called { .. } => "called",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
