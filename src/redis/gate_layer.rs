//! The fleet gate as a tower layer: each call holds a slot of a
//! [`FleetGate`] for as long as it runs.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::gate::{FleetGate, SlotGuard};
use crate::BoxError;

/// Wraps services in [`Gated`]: every call waits for a slot of `gate` and
/// holds it until its response is ready — at most `K` such calls at once
/// across the fleet.
///
/// Set the gate's `max_wait`: without it, a call waits until a slot frees.
/// A call whose slot is lost while it runs (see
/// [`SlotGuard`](super::SlotGuard)) is not interrupted.
///
/// ```no_run
/// use std::time::Duration;
/// use dephase::redis::{FleetGate, FleetGateLayer};
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), dephase::ConfigError> {
/// let gate = FleetGate::builder("redis://127.0.0.1:6379/", "reindex")
///     .slots(3)
///     .max_wait(Duration::from_secs(5))
///     .build()?;
/// let _reindex = ServiceBuilder::new()
///     .layer(FleetGateLayer::new(gate))
///     .service(tower::service_fn(|shard: u32| async move {
///         Ok::<_, std::io::Error>(shard)
///     }));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetGateLayer {
    gate: FleetGate,
}

impl FleetGateLayer {
    /// Calls hold slots of `gate`.
    pub fn new(gate: FleetGate) -> Self {
        FleetGateLayer { gate }
    }
}

impl<S> Layer<S> for FleetGateLayer {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            gate: self.gate.clone(),
        }
    }
}

impl fmt::Debug for FleetGateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetGateLayer")
            .field("gate", &self.gate)
            .finish()
    }
}

/// A service whose calls each hold a slot of a [`FleetGate`]: made by
/// [`FleetGateLayer`]. Errors are [`BoxError`]s: the inner service's, or a
/// [`GateError`](super::error::GateError).
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    gate: FleetGate,
}

impl<S, Req> Service<Req> for Gated<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, SlotGuard>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The instance made ready for this call waits with it; this one
        // goes on with a clone.
        let clone = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        ResponseFuture::new(
            Box::pin(async move { Ok(gate.acquire().await?) }),
            readied,
            request,
        )
    }
}

impl<S: fmt::Debug> fmt::Debug for Gated<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gated")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish()
    }
}
