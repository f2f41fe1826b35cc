//! The layers on HTTP: what a response means, which requests may be sent
//! again, how bodies are replayed and how responses are shared.
//!
//! # Why
//!
//! The layers of this crate are generic over requests and responses; HTTP
//! needs a few decisions made once and made right:
//!
//! - **What a result means** ([`HttpClassifier`]): 5xx (except 501 and 505,
//!   which say "never"), 408, 429 and connection-level failures are
//!   retryable and count against a breaker; other 4xx are the caller's
//!   business. `Retry-After` (seconds or an HTTP-date) becomes the retry
//!   layer's server hint; a bad value is ignored and a large one clamped
//!   to the cap ([`parse_retry_after`]).
//! - **What may be sent again** ([`IdempotentRequests`]): idempotent
//!   methods, or a POST/PATCH with an `Idempotency-Key`, or any method when
//!   you opt in.
//! - **Bodies** ([`ReplayBody`], [`ReplayLayer`]): a body that is cheap to
//!   clone is cloned; a streaming body is recorded as it is sent, up to a
//!   cap, and replayed by the retry — past the cap the request is simply not
//!   retried.
//! - **Sharing responses** ([`RequestKey`], [`FanoutLayer`]): coalesced and
//!   cached responses must be copied to many callers, so their bodies are
//!   collected into `Bytes` up to a limit; over the limit, each caller
//!   makes its own call and nothing is cached.
//!
//! With the `reqwest` feature, [`HttpClassifier`] classifies
//! `reqwest::Response`/`reqwest::Error` and [`IdempotentRequests`] copies
//! `reqwest::Request`s with `try_clone`.
//!
//! # Example: a client with retries that replays streaming bodies
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use dephase::http::{HttpClassifier, IdempotentRequests, ReplayLayer};
//! use dephase::{ExponentialBackoff, RetryLayer, RetryPolicy, TokenBucket};
//! use http_body_util::BodyExt;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let policy = RetryPolicy::builder()
//!     .max_attempts(3)
//!     .backoff(ExponentialBackoff::builder().base(Duration::from_millis(50)).build()?)
//!     .budget(TokenBucket::aws_standard())
//!     .classify(HttpClassifier::new())
//!     .clone_requests(IdempotentRequests::new())
//!     .build()?;
//!
//! // An origin that is unavailable for its first call, and echoes the body.
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let origin = tower::service_fn(move |request: http::Request<_>| {
//!     let first = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
//!     async move {
//!         let body = BodyExt::collect(request.into_body()).await?.to_bytes();
//!         let status = if first { 503 } else { 200 };
//!         Ok::<_, dephase::BoxError>(http::Response::builder().status(status).body(body)?)
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(ReplayLayer::new(64 * 1024)) // record up to 64 KiB of each body
//!     .layer(RetryLayer::new(policy))
//!     .service(origin);
//!
//! // A streaming body: the first attempt records it, the retry replays it.
//! let chunks = ["hello, ", "herd"].map(|c| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(c))));
//! let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
//! let request = http::Request::put("http://origin/items/7").body(body)?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.into_body(), Bytes::from("hello, herd"));
//! # Ok(()) }
//! ```

mod chunk;
mod classify;
pub mod error;
mod fanout;
pub mod future;
mod key;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod replay;

pub use self::classify::{HttpClassifier, classify_error, parse_retry_after};
pub use self::fanout::{Collect, Collected, Fanout, FanoutBody, FanoutLayer};
pub use self::key::{HttpKey, RequestKey};
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use self::middleware::DephaseMiddleware;
pub use self::replay::{
    IDEMPOTENCY_KEY, IdempotentRequests, Replay, ReplayBody, ReplayLayer, ReplayableBody,
};
