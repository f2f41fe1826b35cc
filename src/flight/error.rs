//! The errors a flight hands to every caller that waited for it (re-exported
//! by the layers that use flights: `coalesce::error`, `cache::error`).

use std::fmt;
use std::sync::Arc;

use crate::BoxError;

/// The error of a coalesced call, shared by every caller that waited for it.
///
/// [`source`](std::error::Error::source) (and [`inner`](SharedError::inner)) is
/// the inner service's error, so a classifier can look through it:
///
/// ```
/// use dephase::coalesce::error::SharedError;
/// use dephase::BoxError;
///
/// fn is_timeout(error: &BoxError) -> bool {
///     let error = match error.downcast_ref::<SharedError>() {
///         Some(shared) => shared.inner(),
///         None => error,
///     };
///     error.to_string().contains("timed out")
/// }
/// # let _ = is_timeout;
/// ```
#[derive(Debug, Clone)]
pub struct SharedError {
    inner: Arc<BoxError>,
}

impl SharedError {
    pub(crate) fn new(inner: Arc<BoxError>) -> SharedError {
        SharedError { inner }
    }

    /// The inner service's error.
    pub fn inner(&self) -> &BoxError {
        &self.inner
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.inner)
    }
}

/// The coalesced call panicked. Every caller that waited for it gets this
/// error (`error.downcast_ref::<Panicked>()` finds it); the key is freed
/// and the next call starts afresh.
#[derive(Debug, Clone)]
pub struct Panicked {
    message: String,
}

impl Panicked {
    pub(crate) fn new(message: String) -> Panicked {
        Panicked { message }
    }

    pub(crate) fn from_payload(payload: Box<dyn std::any::Any + Send>) -> Panicked {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_string()
        };
        Panicked::new(message)
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the coalesced call panicked: {}", self.message)
    }
}

impl std::error::Error for Panicked {}
