//! Adaptive client-side throttling: shed load locally, in proportion to how
//! much the backend has been refusing.
//!
//! # Why
//!
//! A circuit breaker is modal: all or (almost) nothing. When a backend is
//! *overloaded* rather than down — it serves some requests and refuses the
//! rest — the best a client can do is send roughly what the backend accepts
//! and fail the rest locally, cheaply, before they cost the backend anything
//! to refuse. The Google SRE book ("Handling Overload") does this with two
//! counts over a trailing window (two minutes by default): `requests` the
//! client attempted and `accepts` the backend served. Each new request is
//! rejected locally with probability
//!
//! ```text
//! max(0, (requests − K · accepts) / (requests + 1))
//! ```
//!
//! `K` (default 2) is how much more than the backend accepts a client may
//! send: with `K = 2` a backend that accepts half of what it gets sees no
//! throttling at all, one that accepts less sees the client back off in
//! proportion. What counts as an accept comes from the same
//! [`Classify`] a retry layer uses: anything but a failure.
//! Locally rejected requests count as requests (that is what makes the
//! client converge). AWS SDKs' adaptive mode and Envoy's admission control
//! work the same way.
//!
//! ```
//! use std::time::Duration;
//! use dephase::throttle::{Throttler, ThrottleLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), dephase::ConfigError> {
//! let throttler = Throttler::builder().k(2.0).window(Duration::from_secs(120)).seed(1).build()?;
//! let mut service = ServiceBuilder::new()
//!     .layer(ThrottleLayer::new(throttler.clone()))
//!     .service(tower::service_fn(|_: ()| async { Err::<(), _>("overloaded") }));
//!
//! let mut reached = 0;
//! for _ in 0..1000 {
//!     match service.ready().await.unwrap().call(()).await {
//!         Err(e) if e.is::<dephase::throttle::error::Throttled>() => {}
//!         _ => reached += 1,
//!     }
//! }
//! // A backend that refuses everything gets a trickle: about ln(1000) ≈ 7 calls.
//! assert!(reached < 20, "{reached}");
//! # Ok(()) }
//! ```

pub mod error;
pub mod future;
mod layer;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;
use tracing::{Level, Span};

use self::error::Throttled;
pub use self::future::ResponseFuture;
pub use self::layer::ThrottleLayer;
use crate::BoxError;
use crate::classify::{Classify, RetryErrors};
use crate::error::{ConfigError, check_f64};
use crate::rng::{RngSource, Stream};
use crate::telemetry::THROTTLE_PROBABILITY;
use crate::window::{Window, pair};

/// The counts of an adaptive throttle, shared by every clone.
#[derive(Clone)]
pub struct Throttler {
    shared: Arc<Shared>,
}

struct Shared {
    /// (requests, accepts) per slot.
    window: Window,
    k: f64,
    rng: RngSource,
}

impl Throttler {
    /// A builder with the SRE book's defaults: `K = 2`, a two-minute window
    /// (in 120 one-second buckets).
    pub fn builder() -> ThrottlerBuilder {
        ThrottlerBuilder::default()
    }

    /// `(requests, accepts)` in the window now.
    pub fn counts(&self) -> (u64, u64) {
        self.shared.window.now();
        self.shared.window.sum_pairs()
    }

    /// The probability that a request made now is rejected locally.
    pub fn probability(&self) -> f64 {
        let (requests, accepts) = self.counts();
        probability(requests, accepts, self.shared.k)
    }

    /// Counts one request and decides whether it may go. `draw` is a
    /// uniform fraction of 2⁶⁴.
    fn admit(&self, draw: u64) -> Result<(), Throttled> {
        let window = &self.shared.window;
        let now = window.now();
        let (requests, accepts) = window.sum_pairs();
        let p = probability(requests, accepts, self.shared.k);
        window.add(now, pair(1, 0));
        if p > 0.0 && (draw as f64) < p * 2f64.powi(64) {
            Err(Throttled::new(p))
        } else {
            Ok(())
        }
    }

    /// Books an accepted request.
    fn accept(&self) {
        let window = &self.shared.window;
        window.add(window.now(), pair(0, 1));
    }
}

fn probability(requests: u64, accepts: u64, k: f64) -> f64 {
    ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
}

impl fmt::Debug for Throttler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (requests, accepts) = self.counts();
        f.debug_struct("Throttler")
            .field("k", &self.shared.k)
            .field("requests", &requests)
            .field("accepts", &accepts)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Throttler`]; [`build`](Self::build) checks every field.
#[derive(Debug, Clone)]
pub struct ThrottlerBuilder {
    k: f64,
    window: Duration,
    buckets: u32,
    seed: Option<u64>,
}

impl Default for ThrottlerBuilder {
    fn default() -> Self {
        ThrottlerBuilder {
            k: 2.0,
            window: Duration::from_secs(120),
            buckets: 120,
            seed: None,
        }
    }
}

impl ThrottlerBuilder {
    /// How many times what the backend accepts a client may send (at least 1; default 2).
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// How far back the counts go (default two minutes).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many buckets the window is kept in (1 to 10 000; default 120).
    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// Makes the rejection draws reproducible.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// `K` below 1, NaN or infinite (`throttle.k`), a zero window
    /// (`throttle.window`), or buckets outside 1–10 000 or narrower than a
    /// millisecond (`throttle.buckets`).
    pub fn build(self) -> Result<Throttler, ConfigError> {
        let k = check_f64("throttle.k", self.k, 1.0, 1e9)?;
        if self.window.is_zero() {
            return Err(ConfigError::new(
                "throttle.window",
                "must be greater than zero",
            ));
        }
        if self.buckets == 0
            || self.buckets > 10_000
            || self.window / self.buckets < Duration::from_millis(1)
        {
            return Err(ConfigError::new(
                "throttle.buckets",
                format!(
                    "must be between 1 and 10000, each at least 1 ms wide (got {} over {:?})",
                    self.buckets, self.window
                ),
            ));
        }
        Ok(Throttler {
            shared: Arc::new(Shared {
                window: Window::new(self.window, self.buckets as usize),
                k,
                rng: RngSource::from_seed(self.seed),
            }),
        })
    }
}

/// A service behind an adaptive throttle. Errors are [`BoxError`]s: the
/// inner service's, or an [`error::Throttled`].
pub struct Throttle<S, C = RetryErrors> {
    inner: S,
    throttler: Throttler,
    classify: C,
    rng: Stream,
}

impl<S, C> Throttle<S, C> {
    /// Throttles `inner`; `classify` decides what the backend accepted.
    pub fn new(inner: S, throttler: Throttler, classify: C) -> Self {
        let rng = throttler.shared.rng.stream().independent();
        Throttle {
            inner,
            throttler,
            classify,
            rng,
        }
    }

    /// The throttler.
    pub fn throttler(&self) -> &Throttler {
        &self.throttler
    }

    inner_accessors!();
}

impl<S, C, Req> Service<Req> for Throttle<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.throttler.admit(self.rng.fraction()) {
            Ok(()) => ResponseFuture::called(
                self.inner.call(request),
                self.throttler.clone(),
                self.classify.clone(),
            ),
            Err(throttled) => {
                Span::current().record(THROTTLE_PROBABILITY, throttled.probability());
                tracing::event!(
                    target: "dephase::throttle",
                    Level::DEBUG,
                    dephase.throttle.probability = throttled.probability(),
                    "call shed by the adaptive throttle"
                );
                ResponseFuture::throttled(throttled)
            }
        }
    }
}

impl<S: Clone, C: Clone> Clone for Throttle<S, C> {
    fn clone(&self) -> Self {
        Throttle::new(
            self.inner.clone(),
            self.throttler.clone(),
            self.classify.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("throttler", &self.throttler)
            .finish_non_exhaustive()
    }
}
