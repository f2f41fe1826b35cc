//! What each rejection answers.

use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::breaker::error::Rejected;
use crate::error::Local;
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

/// `504 Gateway Timeout`: the request's deadline passed (or left too
/// little time) before an answer came from below.
impl IntoResponse for crate::deadline::DeadlineExceeded {
    fn into_response(self) -> Response {
        answer(StatusCode::GATEWAY_TIMEOUT, None, self.to_string())
    }
}

/// `503 Service Unavailable` with `Retry-After` (the jittered
/// `retry_after`, rounded up): the concurrency limit was reached.
impl IntoResponse for crate::limit::error::LimitExceeded {
    fn into_response(self) -> Response {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(self.retry_after()),
            self.to_string(),
        )
    }
}

/// `503 Service Unavailable`: no slot of a fleet gate (its wait ran out,
/// or Redis was unreachable and the gate fails closed).
#[cfg(feature = "redis")]
impl IntoResponse for crate::redis::error::GateError {
    fn into_response(self) -> Response {
        answer(StatusCode::SERVICE_UNAVAILABLE, None, self.to_string())
    }
}

/// The response for an error of a service behind dephase's layers: a
/// breaker's, a pacer's or a throttle's rejection, or a deadline's
/// [`DeadlineExceeded`](crate::deadline::DeadlineExceeded), answers as its
/// [`IntoResponse`] says — also when it reached you wrapped, through a
/// coalesced or cached call's shared error — and any other error is a
/// `500 Internal Server Error` (logged at `ERROR`, target `dephase::axum`).
/// What [`RejectionLayer`](super::RejectionLayer) answers; for a handler
/// that calls a guarded service itself.
///
/// ```
/// use axum::extract::Path;
/// use axum::response::{IntoResponse, Response};
/// use dephase::BoxError;
/// use tower::{ServiceExt, util::BoxCloneSyncService};
///
/// async fn user(
///     axum::extract::State(backend): axum::extract::State<BoxCloneSyncService<u32, String, BoxError>>,
///     Path(id): Path<u32>,
/// ) -> Response {
///     match backend.oneshot(id).await {
///         Ok(user) => user.into_response(),
///         Err(error) => dephase::axum::error_response(error), // an open breaker: 503 + Retry-After
///     }
/// }
/// # let _ = user;
/// ```
pub fn error_response(error: crate::BoxError) -> Response {
    match Local::find(&*error) {
        Some(Local::Breaker(rejected)) => rejected.clone().into_response(),
        Some(Local::Pace(overloaded)) => overloaded.clone().into_response(),
        Some(Local::Throttle(throttled)) => throttled.clone().into_response(),
        Some(Local::Deadline(exceeded)) => exceeded.clone().into_response(),
        Some(Local::Limit(exceeded)) => exceeded.clone().into_response(),
        #[cfg(feature = "redis")]
        Some(Local::Gate(refused)) => refused.clone().into_response(),
        None => {
            tracing::event!(
                target: "dephase::axum",
                tracing::Level::ERROR,
                error = %error,
                "a service behind dephase's layers failed; answering 500"
            );
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
