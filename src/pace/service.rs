//! The [`Pace`] service: each call takes a turn of the pacer; one whose
//! turn is later waits for it with the instance that was made ready.

use std::fmt;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::ResponseFuture;
use super::pacer::Pacer;
use crate::BoxError;
use crate::later::{SendLater, Ticket};
use crate::rng::Stream;

/// A service whose callers are released at a [`Pacer`]'s rate. Errors are
/// [`BoxError`]s: the inner service's, or an [`error::Overloaded`](super::error::Overloaded).
pub struct Pace<S> {
    inner: S,
    pacer: Pacer,
    rng: Stream,
}

impl<S> Pace<S> {
    /// Paces calls to `inner`.
    pub fn new(inner: S, pacer: Pacer) -> Self {
        let rng = pacer.shared.rng.stream();
        Pace { inner, pacer, rng }
    }

    /// The pacer.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    inner_accessors!();
}

impl<S, Req> Service<Req> for Pace<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.pacer.reserve(&mut self.rng) {
            Err(overloaded) => ResponseFuture::overloaded(overloaded),
            Ok(turn) => match turn.at {
                // Its turn is now: the service made ready for this call takes it.
                None => {
                    turn.spend();
                    ResponseFuture::later(SendLater::called(self.inner.call(request)))
                }
                // Later: the service made ready for this call waits with it
                // (and keeps what its readiness reserved); this service
                // goes on with a clone, to be made ready for the next call.
                Some(at) => {
                    let clone = self.inner.clone();
                    let readied = std::mem::replace(&mut self.inner, clone);
                    ResponseFuture::later(SendLater::at(Some(at), readied, request, turn, None))
                }
            },
        }
    }
}

impl<S: Clone> Clone for Pace<S> {
    fn clone(&self) -> Self {
        Pace::new(self.inner.clone(), self.pacer.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for Pace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("inner", &self.inner)
            .field("pacer", &self.pacer)
            .finish()
    }
}
