//! Keys for coalescing and caching HTTP requests: method + URI + chosen headers.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body::Body;

use crate::offset::{Offset, SipHasher24};

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
///
/// It is hashed once, when it is made: a key is looked up in several
/// tables per request (the coalescing table, the cache, its loads), and
/// hashing a URI byte by byte each time cost more than the lookups. Its
/// `Hash` writes that 64-bit fingerprint (SipHash-2-4 under a fixed key of
/// what the method, URI and header values hash as: the same in every
/// process of one architecture and `http` version, as `TtlJitter::PerKey`
/// needs); equality still compares every part.
#[derive(Debug, Clone)]
pub struct HttpKey {
    method: Method,
    uri: Uri,
    headers: Box<[Option<HeaderValue>]>,
    fingerprint: u64,
}

impl HttpKey {
    fn new(method: Method, uri: Uri, headers: Box<[Option<HeaderValue>]>) -> HttpKey {
        let mut hasher = SipHasher24::new(&Offset::DEFAULT_KEY);
        (&method, &uri, &headers).hash(&mut hasher);
        HttpKey {
            fingerprint: hasher.finish(),
            method,
            uri,
            headers,
        }
    }
}

impl PartialEq for HttpKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
            && self.method == other.method
            && self.uri == other.uri
            && self.headers == other.headers
    }
}

impl Eq for HttpKey {}

impl Hash for HttpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.fingerprint);
    }
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
        Some(HttpKey::new(
            method.clone(),
            request.uri().clone(),
            self.headers
                .iter()
                .map(|name| request.headers().get(name).cloned())
                .collect(),
        ))
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
