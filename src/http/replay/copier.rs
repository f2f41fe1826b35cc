//! Which requests the retry layer may send again, and how they are copied.

use http::{HeaderMap, Method, Request};

use super::body::ReplayableBody;
use crate::retry::CloneRequest;

/// The HTTP request copier for the retry layer: only idempotent requests,
/// only replayable bodies.
///
/// By default a request is sent again only if its method is idempotent
/// (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or it carries
/// an `Idempotency-Key` header; [`any_method`](Self::any_method) opts POST,
/// PATCH and the rest in. The body must be [`ReplayableBody`]; wrap
/// streaming bodies with [`ReplayLayer`](super::ReplayLayer). Method, URI,
/// version, headers and extensions are copied.
///
/// ```
/// use dephase::http::IdempotentRequests;
/// use dephase::retry::CloneRequest;
/// use http_body_util::Full;
///
/// let copier = IdempotentRequests::new();
/// let get = http::Request::get("http://origin/a").body(Full::new(bytes::Bytes::new())).unwrap();
/// assert!(copier.clone_request(&get).is_some());
/// let post = http::Request::post("http://origin/a").body(Full::new(bytes::Bytes::new())).unwrap();
/// assert!(copier.clone_request(&post).is_none());
/// let keyed = http::Request::post("http://origin/a")
///     .header("idempotency-key", "7f0c")
///     .body(Full::new(bytes::Bytes::new()))
///     .unwrap();
/// assert!(copier.clone_request(&keyed).is_some());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdempotentRequests {
    any_method: bool,
}

impl IdempotentRequests {
    /// Copies requests with idempotent methods or an `Idempotency-Key`.
    pub const fn new() -> Self {
        IdempotentRequests { any_method: false }
    }

    /// Copies requests whatever their method: use only for an API whose
    /// POSTs you know to be safe to repeat.
    pub const fn any_method(mut self) -> Self {
        self.any_method = true;
        self
    }

    /// Whether a request with this method and headers may be sent again.
    pub fn may_resend(&self, method: &Method, headers: &HeaderMap) -> bool {
        self.any_method
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
            || headers.contains_key(IDEMPOTENCY_KEY)
    }
}

/// The header that makes a POST or PATCH safe to repeat
/// (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<B: ReplayableBody> CloneRequest<Request<B>> for IdempotentRequests {
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        if !self.may_resend(request.method(), request.headers()) {
            return None;
        }
        let mut copy = Request::new(request.body().replay()?);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }

    fn can_resend(&self, copy: &Request<B>) -> bool {
        copy.body().can_replay()
    }

    fn mark(&self, copy: &mut Request<B>, attempt: crate::retry::Attempt) {
        copy.extensions_mut().insert(attempt);
    }
}

#[cfg(feature = "reqwest")]
impl CloneRequest<reqwest::Request> for IdempotentRequests {
    fn clone_request(&self, request: &reqwest::Request) -> Option<reqwest::Request> {
        if !self.may_resend(request.method(), request.headers()) {
            return None;
        }
        // `None` for a streaming body: reqwest cannot copy it.
        request.try_clone()
    }
}
