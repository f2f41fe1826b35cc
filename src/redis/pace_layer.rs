//! The fleet pacer as a tower layer: each call waits its turn in the
//! fleet's schedule.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::pacer::FleetPacer;
use crate::BoxError;

/// Wraps services in [`FleetPaced`]: every call waits its turn in a
/// [`FleetPacer`]'s schedule (shared by the fleet through Redis), or is
/// turned away with [`Overloaded`](crate::pace::error::Overloaded).
///
/// ```no_run
/// use std::time::Duration;
/// use dephase::redis::{FleetPacer, FleetPaceLayer};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), dephase::ConfigError> {
/// let pacer = FleetPacer::builder("redis://127.0.0.1:6379/", "warmup")
///     .rate(100, Duration::from_secs(1))
///     .replicas(30)
///     .build()?;
/// let _warm = ServiceBuilder::new()
///     .layer(FleetPaceLayer::new(pacer))
///     .service(tower::service_fn(|key: String| async move {
///         Ok::<_, std::io::Error>(key)
///     }));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetPaceLayer {
    pacer: FleetPacer,
}

impl FleetPaceLayer {
    /// Calls wait their turns in `pacer`.
    pub fn new(pacer: FleetPacer) -> Self {
        FleetPaceLayer { pacer }
    }
}

impl<S> Layer<S> for FleetPaceLayer {
    type Service = FleetPaced<S>;

    fn layer(&self, inner: S) -> FleetPaced<S> {
        FleetPaced {
            inner,
            pacer: self.pacer.clone(),
        }
    }
}

impl fmt::Debug for FleetPaceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetPaceLayer")
            .field("pacer", &self.pacer)
            .finish()
    }
}

/// A service whose calls wait their turns in a [`FleetPacer`]: made by
/// [`FleetPaceLayer`]. Errors are [`BoxError`]s: the inner service's, or
/// an [`Overloaded`](crate::pace::error::Overloaded).
#[derive(Clone)]
pub struct FleetPaced<S> {
    inner: S,
    pacer: FleetPacer,
}

impl<S, Req> Service<Req> for FleetPaced<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, Duration>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The instance made ready for this call waits with it.
        let clone = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, clone);
        let pacer = self.pacer.clone();
        ResponseFuture::new(
            Box::pin(async move { Ok(pacer.wait().await?) }),
            readied,
            request,
        )
    }
}

impl<S: fmt::Debug> fmt::Debug for FleetPaced<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetPaced")
            .field("inner", &self.inner)
            .field("pacer", &self.pacer)
            .finish()
    }
}
