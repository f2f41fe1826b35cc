//! What each rejection answers.

use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::breaker::error::Rejected;
use crate::pace::error::Overloaded;
use crate::throttle::error::Throttled;

/// `Retry-After` in whole seconds, rounded up (at least 1).
fn retry_after(after: Duration) -> HeaderValue {
    let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

fn answer(status: StatusCode, after: Option<Duration>, text: String) -> Response {
    let mut response = (status, text).into_response();
    if let Some(after) = after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(after));
    }
    response
}

/// `503 Service Unavailable` with `Retry-After` (rounded up; none while
/// the breaker is isolated).
impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            self.retry_after(),
            self.to_string(),
        )
    }
}

/// `429 Too Many Requests` with `Retry-After`: when this caller's turn
/// would be within the pacer's maximum wait, rounded up.
impl IntoResponse for Overloaded {
    fn into_response(self) -> Response {
        let after = self.wait().saturating_sub(self.max_wait());
        answer(StatusCode::TOO_MANY_REQUESTS, Some(after), self.to_string())
    }
}

/// `503 Service Unavailable` with `Retry-After: 1`: the throttle decides
/// afresh for every request.
impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(1)),
            self.to_string(),
        )
    }
}

/// The response for a dephase error; any other error is a `500`.
pub(super) fn for_error(error: crate::BoxError) -> Response {
    let error = match error.downcast::<Rejected>() {
        Ok(rejected) => return rejected.into_response(),
        Err(other) => other,
    };
    let error = match error.downcast::<Overloaded>() {
        Ok(overloaded) => return overloaded.into_response(),
        Err(other) => other,
    };
    match error.downcast::<Throttled>() {
        Ok(throttled) => throttled.into_response(),
        Err(other) => {
            tracing::event!(
                target: "dephase::axum",
                tracing::Level::ERROR,
                error = %other,
                "a service behind the rejection layer failed; answering 500"
            );
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
