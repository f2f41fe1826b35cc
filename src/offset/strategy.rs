//! [`Offset`]: where in a window one key, instance or process goes.

use std::fmt;
use std::time::Duration;

use super::siphash::siphash24;
use crate::error::ConfigError;
use crate::rng::{mix64, process_entropy};
use crate::telemetry;
use tracing::Level;

/// How an [`Offset`] was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `SipHash-2-4(key) mod window`.
    Hash,
    /// `i · window / n`.
    Index,
    /// A random fraction of the window, fixed per process or per seed.
    Random,
}

impl Strategy {
    /// The name recorded as `dephase.offset.strategy`: `hash`, `index` or `random`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Strategy::Hash => "hash",
            Strategy::Index => "index",
            Strategy::Random => "random",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delay inside a window, and how it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Offset {
    duration: Duration,
    strategy: Strategy,
}

impl Offset {
    /// The SipHash key of [`Offset::hash`]: the 16 ASCII bytes `dephase-offset-1`.
    /// It is part of this crate's stability promise and will not change.
    pub const DEFAULT_KEY: [u8; 16] = *b"dephase-offset-1";

    /// `SipHash-2-4(DEFAULT_KEY, key) mod window`, in nanoseconds.
    ///
    /// # Errors
    ///
    /// A zero window (`offset.window`).
    pub fn hash(key: impl AsRef<[u8]>, window: Duration) -> Result<Offset, ConfigError> {
        Offset::hash_with_key(&Offset::DEFAULT_KEY, key, window)
    }

    /// `SipHash-2-4(secret, key) mod window`, in nanoseconds.
    ///
    /// A secret of your own gives your fleet a spread of its own (systemd
    /// keys its fixed delays by the machine id in the same way).
    ///
    /// # Errors
    ///
    /// A zero window (`offset.window`).
    pub fn hash_with_key(
        secret: &[u8; 16],
        key: impl AsRef<[u8]>,
        window: Duration,
    ) -> Result<Offset, ConfigError> {
        let window = window_nanos(window)?;
        let hash = u128::from(siphash24(secret, key.as_ref()));
        Ok(Offset::from_nanos(hash % window, Strategy::Hash))
    }

    /// Instance `index` of `count` gets `index · window / count` (rounded down
    /// to the nanosecond): evenly spaced offsets.
    ///
    /// # Errors
    ///
    /// A zero window (`offset.window`), a zero count (`offset.count`), or an
    /// index that is not below the count (`offset.index`).
    pub fn index(index: u64, count: u64, window: Duration) -> Result<Offset, ConfigError> {
        let window = window_nanos(window)?;
        if count == 0 {
            return Err(ConfigError::new(
                "offset.count",
                "must be greater than zero",
            ));
        }
        if index >= count {
            return Err(ConfigError::new(
                "offset.index",
                format!("must be less than the count (index {index}, count {count})"),
            ));
        }
        // index · window / count without overflow: window = q · count + r.
        let (index, count) = (u128::from(index), u128::from(count));
        let (q, r) = (window / count, window % count);
        Ok(Offset::from_nanos(
            index * q + index * r / count,
            Strategy::Index,
        ))
    }

    /// A random fraction of `window`, drawn once per process: every call in
    /// this process with the same window gets the same offset.
    ///
    /// # Errors
    ///
    /// A zero window (`offset.window`).
    pub fn splay(window: Duration) -> Result<Offset, ConfigError> {
        Offset::fraction(process_entropy(), window)
    }

    /// Like [`splay`](Self::splay), but the fraction comes from `seed`, for
    /// tests and for callers who keep their own per-instance seed.
    ///
    /// # Errors
    ///
    /// A zero window (`offset.window`).
    pub fn splay_seeded(seed: u64, window: Duration) -> Result<Offset, ConfigError> {
        Offset::fraction(seed, window)
    }

    fn fraction(seed: u64, window: Duration) -> Result<Offset, ConfigError> {
        let window = window_nanos(window)?;
        // A uniform fraction in [0, 1) as a 64-bit fixed-point number, times
        // the window (split in two halves so the product cannot overflow).
        let fraction = u128::from(mix64(seed));
        let (high, low) = (window >> 64, window & u128::from(u64::MAX));
        let scaled = fraction * high + ((fraction * low) >> 64);
        Ok(Offset::from_nanos(scaled, Strategy::Random))
    }

    fn from_nanos(nanos: u128, strategy: Strategy) -> Offset {
        let secs = (nanos / 1_000_000_000) as u64;
        let sub = (nanos % 1_000_000_000) as u32;
        Offset {
            duration: Duration::new(secs, sub),
            strategy,
        }
    }

    /// The offset itself.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// How it was chosen.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Records `dephase.offset_ms` and `dephase.offset.strategy` on the
    /// current span (if it declared them) and emits a `DEBUG` event with both.
    ///
    /// Call it where the offset is applied, for example just before
    /// sleeping for it.
    pub fn record(&self) {
        let millis = record_on_span(self.duration, self.strategy.as_str());
        tracing::event!(
            target: "dephase::offset",
            Level::DEBUG,
            dephase.offset_ms = millis,
            dephase.offset.strategy = self.strategy.as_str(),
            "offset applied"
        );
    }
}

/// Records an applied offset on the current span (`dephase.offset_ms`,
/// `dephase.offset.strategy`); returns it in milliseconds.
pub(crate) fn record_on_span(offset: Duration, strategy: &'static str) -> f64 {
    let millis = telemetry::millis(offset);
    let span = tracing::Span::current();
    span.record(telemetry::OFFSET_MS, millis);
    span.record(telemetry::OFFSET_STRATEGY, strategy);
    let layer = if strategy == "pace" { "pace" } else { "offset" };
    telemetry::count::applied_offset(layer, offset);
    millis
}

fn window_nanos(window: Duration) -> Result<u128, ConfigError> {
    if window.is_zero() {
        return Err(ConfigError::new(
            "offset.window",
            "must be greater than zero",
        ));
    }
    Ok(window.as_nanos())
}
