//! What an HTTP result means: status codes, `Retry-After`, connection failures.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderValue, Response, StatusCode};

use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::error::Local;

/// The classifier for `http` responses and HTTP client errors.
///
/// | result | outcome | retried? | a breaker failure? |
/// |---|---|---|---|
/// | 1xx, 2xx, 3xx | `Success` | no | no |
/// | 408, 429 | `Retry` (with the `Retry-After` hint, if any) | yes | yes |
/// | other 4xx | `Success` (the caller's mistake, not the server's health) | no | no |
/// | 501, 505 (the server says it never will) | `Failure` | no | yes |
/// | other 5xx | `Retry` (with the `Retry-After` hint, if any) | yes | yes |
/// | connection refused, reset, aborted, closed early, timed out | `Retry` | yes | yes |
/// | any other error | `Failure` | no | yes |
///
/// Connection failures are found by walking the error's
/// [`source`](std::error::Error::source) chain for an [`io::Error`] of a
/// connection kind, a [`hyper::Error`] that says the connection closed or
/// timed out, a hyper-util client's connect error (feature `hyper-util`) or a
/// `reqwest` connect or timeout error (feature `reqwest`). A rejection by
/// another dephase layer — a breaker's
/// [`Rejected`](crate::breaker::error::Rejected), a pacer's
/// [`Overloaded`](crate::pace::error::Overloaded), a throttle's
/// [`Throttled`](crate::throttle::error::Throttled), a deadline's
/// [`DeadlineExceeded`](crate::deadline::DeadlineExceeded), also inside a
/// shared error — is a `Failure` (`"breaker_open"`, `"pace_overloaded"`,
/// `"throttled"`, `"deadline_exceeded"`): retrying it would only queue more
/// callers for the moment the layer lets them through (or, for a deadline,
/// start an attempt nobody waits for). A breaker or a throttle above that
/// layer does not book it at all: the service never saw the call (or the
/// caller, not the service, ran out of time).
///
/// Whether a request *may* be sent again (its method, its body) is not the
/// classifier's business but the copier's: see
/// [`IdempotentRequests`](super::IdempotentRequests).
///
/// ```
/// use std::time::Duration;
/// use dephase::classify::{Classify, Outcome};
/// use dephase::http::HttpClassifier;
///
/// let busy = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let outcome = Classify::<_, std::io::Error>::classify(&HttpClassifier::new(), Ok(&busy));
/// assert_eq!(outcome, Outcome::retry_after(Duration::from_secs(2), "unavailable"));
///
/// let missing = http::Response::builder().status(404).body(()).unwrap();
/// let outcome = Classify::<_, std::io::Error>::classify(&HttpClassifier::new(), Ok(&missing));
/// assert_eq!(outcome, Outcome::Success);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    // One bit per status code 0..1024: retried; a failure (for breakers,
    // throttles and budgets). Retried codes are always failures.
    retry: [u64; 16],
    failure: [u64; 16],
}

impl HttpClassifier {
    /// The classification of the table above.
    pub const fn new() -> Self {
        let mut classifier = HttpClassifier {
            retry: [0; 16],
            failure: [0; 16],
        };
        classifier = classifier.retry_on(StatusCode::REQUEST_TIMEOUT);
        classifier = classifier.retry_on(StatusCode::TOO_MANY_REQUESTS);
        let mut code = 500;
        while code < 600 {
            classifier.retry = set(classifier.retry, code, true);
            classifier.failure = set(classifier.failure, code, true);
            code += 1;
        }
        classifier
            .never_retry(StatusCode::NOT_IMPLEMENTED)
            .never_retry(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
    }

    /// Also retries responses with `status` (for example a 409 that your
    /// service uses for "try again"); a retried status counts as a failure.
    pub const fn retry_on(mut self, status: StatusCode) -> Self {
        self.retry = set(self.retry, status.as_u16(), true);
        self.failure = set(self.failure, status.as_u16(), true);
        self
    }

    /// Never retries responses with `status`. Only retrying changes: a
    /// status that counted as a failure (5xx, 408, 429) still does, and
    /// any other (a 404, say) is still a success.
    pub const fn never_retry(mut self, status: StatusCode) -> Self {
        self.retry = set(self.retry, status.as_u16(), false);
        self
    }

    const fn has(bits: &[u64; 16], code: u16) -> bool {
        bits[(code / 64) as usize] & (1 << (code % 64)) != 0
    }

    /// The outcome of a response, from its status and `Retry-After`.
    pub fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        let code = response.status().as_u16();
        if Self::has(&self.retry, code) {
            let reason = status_reason(code);
            return match response.headers().get(RETRY_AFTER) {
                Some(value) => match parse_retry_after(value, SystemTime::now()) {
                    Some(after) => Outcome::retry_after(after, reason),
                    None => Outcome::retry(reason),
                },
                None => Outcome::retry(reason),
            };
        }
        if Self::has(&self.failure, code) {
            return Outcome::failure(status_reason(code));
        }
        Outcome::Success
    }
}

/// `bits` with `code`'s bit set to `on`.
const fn set(mut bits: [u64; 16], code: u16, on: bool) -> [u64; 16] {
    let (word, bit) = ((code / 64) as usize, code % 64);
    if on {
        bits[word] |= 1 << bit;
    } else {
        bits[word] &= !(1 << bit);
    }
    bits
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier::new()
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes = |bits: &[u64; 16]| -> Vec<u16> {
            (0..1024u16).filter(|&c| Self::has(bits, c)).collect()
        };
        f.debug_struct("HttpClassifier")
            .field("retry", &codes(&self.retry))
            .field("failure", &codes(&self.failure))
            .finish()
    }
}

/// A static telemetry label for a status code.
fn status_reason(code: u16) -> &'static str {
    match code {
        408 => "request_timeout",
        429 => "too_many_requests",
        500 => "internal_server_error",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "gateway_timeout",
        505 => "http_version_not_supported",
        _ if code < 400 => "status",
        _ if code < 500 => "client_error",
        _ => "server_error",
    }
}

/// `error` as a `dyn Error` whose cause chain [`classify_error`] can walk,
/// for the error types this crate knows: any error boxed as a
/// [`BoxError`] (what every layer here returns), `io::Error`,
/// `hyper::Error`, hyper-util's client error (feature `hyper-util`),
/// `reqwest::Error` (feature `reqwest`). Told apart at run time, so that
/// [`HttpClassifier`] classifies a result whatever its error type (and any
/// order of layers compiles); an error of another type counts as a failure
/// that is not retried.
fn walkable<E: 'static>(error: &E) -> Option<&(dyn StdError + 'static)> {
    let error = error as &dyn Any;
    if let Some(boxed) = error.downcast_ref::<BoxError>() {
        return Some(&**boxed);
    }
    if let Some(boxed) = error.downcast_ref::<Box<dyn StdError + 'static>>() {
        return Some(&**boxed);
    }
    if let Some(error) = error.downcast_ref::<io::Error>() {
        return Some(error);
    }
    if let Some(error) = error.downcast_ref::<hyper::Error>() {
        return Some(error);
    }
    #[cfg(feature = "hyper-util")]
    if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
        return Some(error);
    }
    #[cfg(feature = "reqwest")]
    if let Some(error) = error.downcast_ref::<reqwest::Error>() {
        return Some(error);
    }
    #[cfg(feature = "reqwest-middleware")]
    if let Some(error) = error.downcast_ref::<reqwest_middleware::Error>() {
        return Some(match error {
            reqwest_middleware::Error::Reqwest(error) => error,
            reqwest_middleware::Error::Middleware(error) => error.as_ref(),
        });
    }
    None
}

/// The outcome of a client error: `Retry` for a connection-level failure
/// (see [`HttpClassifier`]), `Failure` otherwise.
///
/// ```
/// use std::io;
/// use dephase::http::classify_error;
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert!(classify_error(&refused).is_retryable());
/// let bad = io::Error::from(io::ErrorKind::InvalidInput);
/// assert!(!classify_error(&bad).is_retryable());
/// ```
pub fn classify_error(error: &(dyn StdError + 'static)) -> Outcome {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(local) = Local::find(error) {
            return Outcome::failure(local.reason());
        }
        if let Some(error) = error.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            match error.kind() {
                ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected
                | BrokenPipe | UnexpectedEof => return Outcome::retry("connection"),
                TimedOut => return Outcome::retry("timeout"),
                _ => {}
            }
        }
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            if error.is_timeout() {
                return Outcome::retry("timeout");
            }
            if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
                return Outcome::retry("connection");
            }
        }
        #[cfg(feature = "hyper-util")]
        if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
            if error.is_connect() {
                return Outcome::retry("connection");
            }
        }
        #[cfg(feature = "reqwest")]
        if let Some(error) = error.downcast_ref::<reqwest::Error>() {
            if error.is_timeout() {
                return Outcome::retry("timeout");
            }
            if error.is_connect() {
                return Outcome::retry("connection");
            }
        }
        next = error.source();
    }
    Outcome::failure("error")
}

impl<B, E: 'static> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(error) => walkable(error).map_or(Outcome::failure("error"), classify_error),
        }
    }
}

#[cfg(feature = "reqwest")]
impl<E: 'static> Classify<reqwest::Response, E> for HttpClassifier {
    fn classify(&self, result: Result<&reqwest::Response, &E>) -> Outcome {
        match result {
            Ok(response) => {
                let mut head = Response::new(());
                *head.status_mut() = response.status();
                if let Some(value) = response.headers().get(RETRY_AFTER) {
                    head.headers_mut().insert(RETRY_AFTER, value.clone());
                }
                self.classify_response(&head)
            }
            Err(error) => walkable(error).map_or(Outcome::failure("error"), classify_error),
        }
    }
}

/// Reads a `Retry-After` value (RFC 9110 §10.2.3) as a wait from `now`.
///
/// - delta-seconds (`"120"`): that many seconds; a number too large for a
///   `u64` saturates (the retry layer then clamps the wait to its cap);
/// - an HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, and the two obsolete
///   forms RFC 9110 asks recipients to accept): the time from `now` until
///   then, zero if it has passed;
/// - anything else — empty, negative, fractional, garbage, non-ASCII —
///   `None`: the value is ignored and the retry uses its own backoff.
///
/// The hint is never obeyed blindly: the retry layer waits the hint plus
/// its jittered backoff, at most its cap, and gives up rather than sleep
/// past its deadline.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// use dephase::http::parse_retry_after;
///
/// let now = SystemTime::now();
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("120"), now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("1.5"), now), None);
/// assert_eq!(parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"), now), Some(Duration::ZERO));
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim_matches([' ', '\t']);
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = text.bytes().fold(0u64, |n, digit| {
            n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
        });
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}
