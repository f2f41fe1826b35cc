//! Keys for coalescing and caching HTTP requests: method + URI + chosen headers.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body::Body;

/// Builds the [`HttpKey`] of a request, for [`coalesce`](crate::coalesce)
/// and [`cache`](crate::cache).
///
/// Only GET and HEAD requests whose body is empty get a key: other methods
/// change something (two POSTs are two actions, not one), and a request
/// body is not part of the key. Headers that change the response
/// (`Accept`, `Accept-Language`, an `Authorization` that selects the user)
/// must be named with [`header`](Self::header), or callers with different
/// values would share one response.
///
/// ```
/// use dephase::http::RequestKey;
///
/// type Body = http_body_util::Empty<bytes::Bytes>;
/// let key = RequestKey::new().header(http::header::ACCEPT).into_fn();
/// let get = |accept| http::Request::get("http://origin/users/7").header("accept", accept).body(Body::new()).unwrap();
/// let (a, b) = (get("text/html"), get("application/json"));
/// let post = http::Request::post("http://origin/users").body(Body::new()).unwrap();
/// assert_ne!(key(&a), key(&b));
/// assert_eq!(key(&a), key(&a.clone()));
/// assert_eq!(key(&post), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RequestKey {
    headers: Arc<[HeaderName]>,
}

/// The key of an HTTP request: method, URI and the chosen headers' values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpKey {
    method: Method,
    uri: Uri,
    headers: Box<[Option<HeaderValue>]>,
}

impl HttpKey {
    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

impl RequestKey {
    /// Keys by method and URI.
    pub fn new() -> Self {
        RequestKey::default()
    }

    /// Adds a header whose value is part of the key (a missing header and
    /// an empty one differ).
    pub fn header(self, name: HeaderName) -> Self {
        let mut headers = self.headers.to_vec();
        headers.push(name);
        RequestKey {
            headers: headers.into(),
        }
    }

    /// The key of `request`, or `None` if it must not be shared.
    pub fn key<B: Body>(&self, request: &Request<B>) -> Option<HttpKey> {
        let method = request.method();
        if !(method == Method::GET || method == Method::HEAD) || !request.body().is_end_stream() {
            return None;
        }
        Some(HttpKey {
            method: method.clone(),
            uri: request.uri().clone(),
            headers: self
                .headers
                .iter()
                .map(|name| request.headers().get(name).cloned())
                .collect(),
        })
    }

    /// This key as the function that the coalesce and cache layers take.
    pub fn into_fn<B: Body>(self) -> impl Fn(&Request<B>) -> Option<HttpKey> + Clone {
        move |request| self.key(request)
    }
}

/// `METHOD URI`, then for each chosen header ` |=value` (or ` |-` when the
/// request did not have it): how the key is named in Redis by the
/// [`redis`](crate::redis) store. Header bytes other than printable ASCII,
/// `%` and `|` are written `%XX`, so two different keys never print alike.
impl fmt::Display for HttpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.uri)?;
        for value in &self.headers {
            let Some(value) = value else {
                f.write_str(" |-")?;
                continue;
            };
            f.write_str(" |=")?;
            for &byte in value.as_bytes() {
                if byte.is_ascii_graphic() && byte != b'%' && byte != b'|' || byte == b' ' {
                    write!(f, "{}", byte as char)?;
                } else {
                    write!(f, "%{byte:02X}")?;
                }
            }
        }
        Ok(())
    }
}
