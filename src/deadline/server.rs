//! [`ServerDeadline`]: the server side — read the caller's remaining time,
//! bound the handler by it, and put it in scope for the calls the handler
//! makes.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use http::header::HeaderName;
use tower_layer::Layer;
use tower_service::Service;

use super::future::ServerFuture;
use super::header::{GRPC_TIMEOUT, parse_timeout};
use super::scope::Deadline;
use crate::error::ConfigError;

/// Wraps services in [`ServerDeadline`].
///
/// ```
/// use std::time::Duration;
/// use dephase::deadline::{Deadline, ServerDeadlineLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let server = ServiceBuilder::new()
///     .layer(ServerDeadlineLayer::new().max(Duration::from_secs(10))?)
///     .service(tower::service_fn(|_request: http::Request<()>| async move {
///         // The handler (and the client layers it calls) see the deadline.
///         let left = Deadline::current().map(Deadline::remaining);
///         tokio::time::sleep(Duration::from_secs(1)).await;
///         Ok::<_, std::convert::Infallible>(http::Response::new(format!("{left:?}")))
///     }));
///
/// // The caller has 300 ms left: the handler is cut short with a 504.
/// let request = http::Request::get("/").header("grpc-timeout", "300m").body(())?;
/// let response = server.clone().oneshot(request).await?;
/// assert_eq!(response.status(), 504);
///
/// // Two seconds: the handler finishes.
/// let request = http::Request::get("/").header("grpc-timeout", "2S").body(())?;
/// let response = server.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.body(), "Some(2s)");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServerDeadlineLayer {
    config: Config,
}

#[derive(Clone, Debug)]
struct Config {
    header: HeaderName,
    max: Duration,
    default: Option<Duration>,
    status: StatusCode,
}

impl ServerDeadlineLayer {
    /// Reads `grpc-timeout`; at most 30 s whatever the header says; no
    /// deadline for a request without one; `504 Gateway Timeout` when the
    /// deadline passes.
    pub fn new() -> Self {
        ServerDeadlineLayer {
            config: Config {
                header: GRPC_TIMEOUT,
                max: Duration::from_secs(30),
                default: None,
                status: StatusCode::GATEWAY_TIMEOUT,
            },
        }
    }

    /// The header to read (in `grpc-timeout`'s format).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.config.header = header;
        self
    }

    /// The longest a request may be given, whatever its header says.
    ///
    /// # Errors
    ///
    /// Zero (`deadline.max`).
    pub fn max(mut self, max: Duration) -> Result<Self, ConfigError> {
        if max.is_zero() {
            return Err(ConfigError::new(
                "deadline.max",
                "must be greater than zero",
            ));
        }
        self.config.max = max;
        Ok(self)
    }

    /// The time a request without a (valid) header is given, at most the
    /// maximum. None by default: such a request has no deadline of its
    /// own.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default = Some(timeout);
        self
    }

    /// The status answered when the deadline passes (default 504).
    pub fn status(mut self, status: StatusCode) -> Self {
        self.config.status = status;
        self
    }
}

impl Default for ServerDeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ServerDeadlineLayer {
    type Service = ServerDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerDeadline {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Bounds each request by the deadline its caller sent.
///
/// The deadline is the header's time (at most the maximum; the default
/// timeout when there is no valid header), or the one already in scope if
/// that is earlier. The handler runs with it in scope
/// ([`Deadline::current`]) and in the request's extensions; once it has
/// passed, the handler's future is dropped and the configured status is
/// answered with an empty body — without calling the handler when it had
/// passed already (a header of `0n`), and also when the handler answered at that
/// very instant (a client layer below failing with its
/// [`DeadlineExceeded`](super::DeadlineExceeded) at the same deadline). A header that does not parse (a sign,
/// more than eight digits, no unit...) is ignored with a DEBUG event.
#[derive(Clone)]
pub struct ServerDeadline<S> {
    inner: S,
    config: Config,
}

impl<S> ServerDeadline<S> {
    inner_accessors!();
}

impl<S, B, ResBody> Service<http::Request<B>> for ServerDeadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let config = &self.config;
        let sent = request.headers().get(&config.header).and_then(|value| {
            let parsed = parse_timeout(value);
            if parsed.is_none() {
                tracing::event!(
                    target: "dephase::deadline",
                    tracing::Level::DEBUG,
                    header = %config.header,
                    value = ?value,
                    "deadline header ignored: not a valid timeout"
                );
            }
            parsed
        });
        let timeout = sent.or(config.default).map(|t| t.min(config.max));
        let deadline = match timeout {
            Some(timeout) => Some(Deadline::after(timeout).or_current()),
            None => Deadline::current(),
        };
        let Some(deadline) = deadline else {
            return ServerFuture::plain(self.inner.call(request));
        };
        if sent.is_some() {
            crate::telemetry::record_deadline(deadline.remaining());
        }
        if deadline.is_expired() {
            // No time left (`0n`, or a caller's deadline already past):
            // the handler would only do work nobody waits for.
            return ServerFuture::expired(config.status);
        }
        request.extensions_mut().insert(deadline);
        let future = deadline.sync_scope(|| self.inner.call(request));
        ServerFuture::bounded(future, deadline, config.status)
    }
}

impl<S: fmt::Debug> fmt::Debug for ServerDeadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerDeadline")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}
