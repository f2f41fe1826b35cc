//! [`Attempt`]: which attempt of a request this is, for the layers and the
//! tracing below the retry.

/// The number of an attempt of one request: 1 for the first, 2 for the
/// first re-send, and so on. The retry layer puts it into each re-send's
/// `http::Request` extensions (through [`CloneRequest::mark`]; a request
/// without one is the first attempt); the `reqwest-middleware`
/// integration puts it into the chain's `Extensions` for every attempt. A
/// tracing layer *inside* the retry (tower-http's `TraceLayer`,
/// `reqwest-tracing`) records `http.request.resend_count` from it
/// (`resend_count()`) on the span of each physical request, as the
/// OpenTelemetry HTTP semantic conventions ask; the retry layer records the
/// totals on the logical request's span.
///
/// [`CloneRequest::mark`]: super::CloneRequest::mark
///
/// ```
/// use dephase::retry::Attempt;
///
/// let second = Attempt::new(2);
/// assert_eq!(second.number(), 2);
/// assert_eq!(second.resend_count(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempt(u32);

impl Attempt {
    /// The `number`-th attempt (1-based; 0 is read as 1).
    pub const fn new(number: u32) -> Attempt {
        Attempt(if number == 0 { 1 } else { number })
    }

    /// 1 for the first attempt, 2 for the first re-send...
    pub const fn number(self) -> u32 {
        self.0
    }

    /// Re-sends before this attempt: the value of `http.request.resend_count`.
    pub const fn resend_count(self) -> u32 {
        self.0 - 1
    }

    /// Records `http.request.resend_count` on `span` (which must declare
    /// the field, as `Empty`), as the integer OpenTelemetry expects, if
    /// this attempt is a re-send; nothing for a first attempt (the
    /// convention leaves the attribute off the first request).
    ///
    /// ```
    /// use dephase::retry::Attempt;
    /// use tracing::field::Empty;
    ///
    /// // In a tower-http `TraceLayer::make_span_with`, below the retry:
    /// // `request.extensions().get::<Attempt>()`, `None` on a first attempt.
    /// let attempt = Some(Attempt::new(2));
    /// let span = tracing::info_span!("GET", http.request.resend_count = Empty);
    /// if let Some(attempt) = attempt {
    ///     attempt.record(&span); // http.request.resend_count = 1
    /// }
    /// ```
    pub fn record(self, span: &tracing::Span) {
        if self.0 > 1 {
            span.record(
                crate::telemetry::RESEND_COUNT,
                i64::from(self.resend_count()),
            );
        }
    }
}
