//! [`ThrottlerBuilder`]: a throttle's settings, checked when it is built.

use std::sync::Arc;
use std::time::Duration;

use super::state::{Shared, Throttler};
use crate::error::{ConfigError, check_f64};
use crate::rng::RngSource;
use crate::window::{self, Window};

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
        window::check(
            ("throttle.window", self.window),
            ("throttle.buckets", self.buckets),
        )?;
        Ok(Throttler {
            shared: Arc::new(Shared {
                window: Window::new(self.window, self.buckets as usize),
                k,
                rng: RngSource::from_seed(self.seed),
                rejections: Default::default(),
            }),
        })
    }
}
