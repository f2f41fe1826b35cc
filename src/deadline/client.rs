//! [`PropagateDeadline`]: the client side — each outgoing request carries
//! the time its caller has left, and no attempt outlives it.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::HeaderName;
use tower_layer::Layer;
use tower_service::Service;

use super::error::DeadlineExceeded;
use super::future::PropagateFuture;
use super::header::{GRPC_TIMEOUT, format_timeout};
use super::scope::Deadline;
use crate::BoxError;

/// Wraps services in [`PropagateDeadline`].
///
/// ```
/// use std::time::Duration;
/// use dephase::deadline::{Deadline, PropagateDeadlineLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), dephase::BoxError> {
/// let client = ServiceBuilder::new()
///     .layer(PropagateDeadlineLayer::new())
///     .service(tower::service_fn(|request: http::Request<()>| async move {
///         // The origin sees the caller's remaining time.
///         let sent = request.headers()["grpc-timeout"].to_str().unwrap().to_owned();
///         Ok::<_, dephase::BoxError>(http::Response::new(sent))
///     }));
///
/// let request = http::Request::get("http://origin/").body(())?;
/// let response = Deadline::after(Duration::from_millis(800))
///     .scope(client.oneshot(request))
///     .await?;
/// assert_eq!(response.body(), "800000u");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PropagateDeadlineLayer {
    header: HeaderName,
    min_time: Duration,
}

impl PropagateDeadlineLayer {
    /// Writes `grpc-timeout`; sends a request whenever any time is left.
    pub fn new() -> Self {
        PropagateDeadlineLayer {
            header: GRPC_TIMEOUT,
            min_time: Duration::ZERO,
        }
    }

    /// The header to write the remaining time into (in `grpc-timeout`'s
    /// format), for HTTP services that read another name.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Refuse to send a request (with [`DeadlineExceeded`]) when less than
    /// `min_time` is left: an attempt that cannot finish is wasted work
    /// for the service below. Zero by default: refused only once the
    /// deadline has passed.
    pub fn min_time(mut self, min_time: Duration) -> Self {
        self.min_time = min_time;
        self
    }
}

impl Default for PropagateDeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline {
            inner,
            header: self.header.clone(),
            min_time: self.min_time,
        }
    }
}

/// Sends each request's remaining time in a header and bounds the call by
/// it.
///
/// The deadline is the request's own (a [`Deadline`] in its extensions),
/// else the one in scope ([`Deadline::current`]: the server layer's, or
/// yours); with neither, the request passes through untouched. With one,
/// the request carries the time left, is refused at once with
/// [`DeadlineExceeded`] when that is below the minimum, and is dropped
/// (failing with [`DeadlineExceeded`]) if it has no answer when the
/// deadline passes. Dropping a hyper client's response future closes the
/// connection it was using (hyper cannot reuse a connection in the middle
/// of a response), so the server sees the request cancelled.
#[derive(Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
    header: HeaderName,
    min_time: Duration,
}

impl<S> PropagateDeadline<S> {
    inner_accessors!();
}

impl<S, B> Service<http::Request<B>> for PropagateDeadline<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let deadline = match request.extensions().get::<Deadline>() {
            Some(own) => Some(own.or_current()),
            None => Deadline::current(),
        };
        let Some(deadline) = deadline else {
            return PropagateFuture::plain(self.inner.call(request));
        };
        let remaining = deadline.remaining();
        if remaining.is_zero() || remaining < self.min_time {
            tracing::event!(
                target: "dephase::deadline",
                tracing::Level::DEBUG,
                dephase.deadline.remaining_ms = crate::telemetry::millis(remaining),
                "request not sent: its deadline leaves too little time"
            );
            return PropagateFuture::refused(DeadlineExceeded::new(remaining, false));
        }
        request
            .headers_mut()
            .insert(self.header.clone(), format_timeout(remaining));
        // On the span once: a re-send (marked with its `Attempt`) would
        // export the field again (tracing-opentelemetry appends a value
        // per record).
        if request
            .extensions()
            .get::<crate::retry::Attempt>()
            .is_none()
        {
            crate::telemetry::record_deadline(remaining);
        }
        PropagateFuture::bounded(self.inner.call(request), deadline)
    }
}

impl<S: fmt::Debug> fmt::Debug for PropagateDeadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropagateDeadline")
            .field("inner", &self.inner)
            .field("header", &self.header)
            .field("min_time", &self.min_time)
            .finish()
    }
}
