//! The [`Fault`] service: asks the plan about each call, and hands the
//! future what to do — call at once, call after a delay, or fail.

use std::fmt;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::error::Injected;
use super::future::ResponseFuture;
use super::handle::Faults;
use super::plan::Decision;
use crate::BoxError;
use crate::later::SendLater;

/// How an injected failure reaches the caller: as an [`Injected`] error
/// ([`AsError`], the default), or as a response of the service's own type
/// (a closure `Fn(&Injected) -> Response`: a `503` for an HTTP server).
pub trait Respond<Res> {
    /// The result an injected failure becomes.
    fn respond(&self, injected: Injected) -> Result<Res, BoxError>;
}

/// Injected failures are errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsError;

impl<Res> Respond<Res> for AsError {
    fn respond(&self, injected: Injected) -> Result<Res, BoxError> {
        Err(Box::new(injected))
    }
}

impl<F, Res> Respond<Res> for F
where
    F: Fn(&Injected) -> Res,
{
    fn respond(&self, injected: Injected) -> Result<Res, BoxError> {
        Ok(self(&injected))
    }
}

/// Injects the faults of a [`Faults`] plan into calls to a service.
/// Errors are [`BoxError`]s: the inner service's, or an [`Injected`].
pub struct Fault<S, R = AsError> {
    inner: S,
    faults: Faults,
    respond: R,
}

impl<S> Fault<S> {
    /// Injects `faults` into calls to `inner`.
    pub fn new(inner: S, faults: Faults) -> Self {
        Fault {
            inner,
            faults,
            respond: AsError,
        }
    }
}

impl<S, R> Fault<S, R> {
    /// The faults.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    inner_accessors!();
}

impl<S, R, Req> Service<Req> for Fault<S, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    R: Respond<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, R, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.faults.decide() {
            Decision::Call { delay: None } => {
                ResponseFuture::later(SendLater::called(self.inner.call(request)))
            }
            Decision::Call { delay: Some(delay) } => {
                // The instance made ready waits with the call; this one
                // goes on with a clone.
                let clone = self.inner.clone();
                let readied = std::mem::replace(&mut self.inner, clone);
                let at = later(delay);
                ResponseFuture::later(SendLater::at(Some(at), readied, request, (), None))
            }
            Decision::Fail { delay, kind } => {
                ResponseFuture::fail(Injected::new(kind), delay.map(later), self.respond.clone())
            }
        }
    }
}

impl<S: Clone, R: Clone> Clone for Fault<S, R> {
    fn clone(&self) -> Self {
        Fault {
            inner: self.inner.clone(),
            faults: self.faults.clone(),
            respond: self.respond.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for Fault<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("inner", &self.inner)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Wraps services in [`Fault`], all with one [`Faults`] handle.
#[derive(Clone, Debug)]
pub struct FaultLayer<R = AsError> {
    faults: Faults,
    respond: R,
}

impl FaultLayer {
    /// Injects `faults`; injected failures are [`Injected`] errors.
    pub fn new(faults: Faults) -> Self {
        FaultLayer {
            faults,
            respond: AsError,
        }
    }
}

impl<R> FaultLayer<R> {
    /// Injected failures become `respond(&injected)`, a response of the
    /// service's own type (an HTTP server's `503`, a dropped-connection
    /// stand-in).
    pub fn respond_with<R2>(self, respond: R2) -> FaultLayer<R2> {
        FaultLayer {
            faults: self.faults,
            respond,
        }
    }
}

impl<S, R: Clone> Layer<S> for FaultLayer<R> {
    type Service = Fault<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault {
            inner,
            faults: self.faults.clone(),
            respond: self.respond.clone(),
        }
    }
}

/// `delay` from now, or about 30 years for a delay too long for an
/// instant (a call scripted never to answer).
fn later(delay: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30))
}
