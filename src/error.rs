//! The one error every builder in the crate returns, and how a layer
//! tells another layer's rejection from its inner service's failure.
//!
//! Configuration is checked when it is built, not when it is first used: a
//! zero base delay, a cap below the base, a NaN multiplier or a ratio outside
//! its range is rejected by `build()` with a [`ConfigError`] that names the
//! field, so a typo in a config file fails at start-up instead of panicking
//! (or silently misbehaving) in the middle of an outage.

use std::fmt;

/// A builder was given a value it cannot work with.
///
/// [`field`](ConfigError::field) names the offending setting the way it is
/// written in code (`"backoff.cap"`, `"budget.ratio"`, ...), and the
/// [`Display`](fmt::Display) text says what is wrong with it.
///
/// ```
/// use std::time::Duration;
/// use dephase::backoff::ExponentialBackoff;
///
/// let err = ExponentialBackoff::builder()
///     .base(Duration::from_secs(2))
///     .cap(Duration::from_secs(1))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "backoff.cap");
/// assert!(err.to_string().contains("must not be less than the base"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The setting that was rejected, e.g. `"backoff.multiplier"`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with the value, e.g. `"must be finite (got NaN)"`.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Checks that a float setting is finite and inside `[min, max]`.
pub(crate) fn check_f64(
    field: &'static str,
    value: f64,
    min: f64,
    max: f64,
) -> Result<f64, ConfigError> {
    if !value.is_finite() {
        return Err(ConfigError::new(
            field,
            format!("must be finite (got {value})"),
        ));
    }
    if value < min || value > max {
        return Err(ConfigError::new(
            field,
            format!("must be between {min} and {max} (got {value})"),
        ));
    }
    Ok(value)
}

/// A rejection by one of this crate's layers: the call was turned away
/// before it reached the service behind that layer.
#[derive(Debug, Clone, Copy)]
// The rejections themselves are read by the axum responses only.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) enum Local<'a> {
    Breaker(&'a crate::breaker::error::Rejected),
    Pace(&'a crate::pace::error::Overloaded),
    Throttle(&'a crate::throttle::error::Throttled),
    Deadline(&'a crate::deadline::DeadlineExceeded),
    Limit(&'a crate::limit::error::LimitExceeded),
    #[cfg(feature = "redis")]
    Gate(&'a crate::redis::error::GateError),
}

impl<'a> Local<'a> {
    /// The first rejection by a dephase layer in `error`'s cause chain
    /// (through a coalesced or cached call's `SharedError`), if any.
    pub(crate) fn find(error: &'a (dyn std::error::Error + 'static)) -> Option<Local<'a>> {
        let mut next = Some(error);
        while let Some(error) = next {
            // reqwest-middleware's error is transparent over an `anyhow`
            // error: its `source` skips the error it holds.
            #[cfg(feature = "reqwest-middleware")]
            if let Some(reqwest_middleware::Error::Middleware(inner)) = error.downcast_ref() {
                let inner: &(dyn std::error::Error + 'static) = &**inner;
                if let Some(local) = Local::find(inner) {
                    return Some(local);
                }
            }
            if let Some(rejected) = error.downcast_ref() {
                return Some(Local::Breaker(rejected));
            }
            if let Some(overloaded) = error.downcast_ref() {
                return Some(Local::Pace(overloaded));
            }
            if let Some(throttled) = error.downcast_ref() {
                return Some(Local::Throttle(throttled));
            }
            if let Some(exceeded) = error.downcast_ref() {
                return Some(Local::Deadline(exceeded));
            }
            if let Some(exceeded) = error.downcast_ref() {
                return Some(Local::Limit(exceeded));
            }
            #[cfg(feature = "redis")]
            if let Some(refused) = error.downcast_ref() {
                return Some(Local::Gate(refused));
            }
            next = error.source();
        }
        None
    }

    /// The label a classifier gives it (`dephase.retry.reason`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Local::Breaker(_) => "breaker_open",
            Local::Pace(_) => "pace_overloaded",
            Local::Throttle(_) => "throttled",
            Local::Deadline(_) => "deadline_exceeded",
            Local::Limit(_) => "limit_exceeded",
            #[cfg(feature = "redis")]
            Local::Gate(_) => "fleet_gate",
        }
    }
}
