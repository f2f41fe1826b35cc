//! The fan-out's future: the shared response, or this caller's own call
//! (through the send-later engine) when the shared one was
//! too large and taken.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::collected::{Collected, FanoutBody};
use crate::BoxError;
use crate::http::error::NotShared;
use crate::later::SendLater;

pin_project! {
    /// The future of [`Fanout`](crate::http::Fanout): the shared response,
    /// or this caller's own call when the shared one was too large and
    /// taken.
    pub struct FanoutFuture<S, F, RB>
    where
        S: Service<Request<RB>>,
    {
        #[pin]
        state: State<S, F, RB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, RB>
    where
        S: Service<Request<RB>>,
    {
        // Waiting for the shared call; the request's head and a service,
        // kept in case this caller must make its own call.
        Shared { #[pin] future: F, retained: Option<(Parts, S)> },
        // This caller's own call.
        Own { #[pin] call: SendLater<S, Request<RB>, ()> },
    }
}

impl<S: Service<Request<RB>>, F, RB> FanoutFuture<S, F, RB> {
    pub(super) fn new(future: F, retained: Option<(Parts, S)>) -> Self {
        FanoutFuture {
            state: State::Shared { future, retained },
        }
    }
}

impl<S, F, E, RB, B> Future for FanoutFuture<S, F, RB>
where
    S: Service<Request<RB>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<Collected<B>, E>>,
    E: Into<BoxError>,
    RB: Default,
{
    type Output = Result<Response<FanoutBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Shared { future, retained } => {
                    let collected = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(response) = collected.into_response() {
                        return Poll::Ready(Ok(response));
                    }
                    // Over the limit, and another caller took the stream.
                    let Some((parts, service)) = retained.take() else {
                        return Poll::Ready(Err(NotShared::new().into()));
                    };
                    let request = Request::from_parts(parts, RB::default());
                    this.state.set(State::Own {
                        call: SendLater::at(None, service, request, (), None),
                    });
                }
                StateProj::Own { call } => {
                    let response = ready!(call.poll(cx)).map_err(Into::into)?;
                    return Poll::Ready(Ok(
                        response.map(|body| FanoutBody::streaming(Vec::new(), Box::pin(body)))
                    ));
                }
            }
        }
    }
}

impl<S: Service<Request<RB>>, F, RB> fmt::Debug for FanoutFuture<S, F, RB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Shared { .. } => "shared",
            State::Own { .. } => "own",
        };
        f.debug_struct("FanoutFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
