//! The one error every builder in the crate returns.
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
