//! What a value looks like in Redis: a small header that every replica
//! reads the same way (how long the value took to compute, how long it is
//! kept past its freshness), then the value's own bytes.
//!
//! Freshness is judged on **Redis's** clock: an entry is written with
//! `PX = fresh life + stale window`, and a reader asks for `PTTL`, so the
//! time left is the same for every replica whatever their clocks say.

use std::time::Duration;

use crate::cache::policy::Age;

/// A value that can live in Redis: how it is written and read back.
///
/// Implemented for `String`, `Vec<u8>`, [`bytes::Bytes`] and (feature
/// `http`) [`Collected`](crate::http::Collected) responses. When the bytes
/// under a key fail to decode (another program's, or a changed format),
/// the request is answered by the origin — never with an error — and the
/// bytes are left alone (they are not this store's to overwrite).
pub trait RedisValue: Sized {
    /// Whether this value can be written at all (default: yes). A value
    /// that cannot is still handed to the callers that waited for it.
    fn is_storable(&self) -> bool {
        true
    }

    /// Appends the value's bytes to `out` (called only if
    /// [`is_storable`](Self::is_storable)).
    fn encode(&self, out: &mut Vec<u8>);

    /// Reads a value back; `None` if `bytes` are not one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl RedisValue for Vec<u8> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl RedisValue for String {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl RedisValue for bytes::Bytes {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes::Bytes::copy_from_slice(bytes))
    }
}

/// A complete HTTP response (status, version, headers, body). A response
/// that was too large to collect is not storable; to keep error statuses
/// out as well, give the store `store_if(Collected::is_cacheable)`.
#[cfg(feature = "http")]
impl<B> RedisValue for crate::http::Collected<B> {
    fn is_storable(&self) -> bool {
        self.is_complete()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let Some(response) = self.as_complete() else {
            return; // not storable: never called
        };
        out.extend_from_slice(&response.status().as_u16().to_le_bytes());
        let version = [
            http::Version::HTTP_09,
            http::Version::HTTP_10,
            http::Version::HTTP_11,
            http::Version::HTTP_2,
            http::Version::HTTP_3,
        ]
        .iter()
        .position(|v| *v == response.version())
        .unwrap_or(2);
        out.push(version as u8);
        let headers = response.headers();
        out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        for (name, value) in headers {
            out.extend_from_slice(&(name.as_str().len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(response.body());
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut input = Reader(bytes);
        let status = http::StatusCode::from_u16(u16::from_le_bytes(input.array()?)).ok()?;
        let version = match input.take(1)?[0] {
            0 => http::Version::HTTP_09,
            1 => http::Version::HTTP_10,
            2 => http::Version::HTTP_11,
            3 => http::Version::HTTP_2,
            4 => http::Version::HTTP_3,
            _ => return None,
        };
        let count = u32::from_le_bytes(input.array()?) as usize;
        let mut builder = http::Response::builder().status(status).version(version);
        for _ in 0..count {
            let len = u32::from_le_bytes(input.array()?) as usize;
            let name = http::HeaderName::from_bytes(input.take(len)?).ok()?;
            let len = u32::from_le_bytes(input.array()?) as usize;
            let value = http::HeaderValue::from_bytes(input.take(len)?).ok()?;
            builder = builder.header(name, value);
        }
        let body = bytes::Bytes::copy_from_slice(input.0);
        Some(crate::http::Collected::complete(builder.body(body).ok()?))
    }
}

/// Reads a byte string front to back; `None` past its end.
#[cfg(feature = "http")]
struct Reader<'a>(&'a [u8]);

#[cfg(feature = "http")]
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// The first two bytes of every entry: a marker and the format's version.
const MAGIC: [u8; 2] = [0xd5, 1];
const HEADER: usize = 2 + 8 + 8;

/// An entry read back from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    /// Δ: how long the value took to compute.
    pub(super) delta: Duration,
    /// How long the entry is kept past its freshness (stale-while-revalidate).
    pub(super) stale: Duration,
}

/// The bytes stored for `value`.
pub(super) fn encode<T: RedisValue>(value: &T, header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&micros(header.delta).to_le_bytes());
    out.extend_from_slice(&micros(header.stale).to_le_bytes());
    value.encode(&mut out);
    out
}

/// Reads an entry; `None` if the bytes are not one of ours.
pub(super) fn decode<T: RedisValue>(bytes: &[u8]) -> Option<(Header, T)> {
    if bytes.len() < HEADER || bytes[..2] != MAGIC {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let header = Header {
        delta: Duration::from_micros(word(2)),
        stale: Duration::from_micros(word(10)),
    };
    Some((header, T::decode(&bytes[HEADER..])?))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where an entry that Redis reports `pttl` milliseconds of life for is in
/// its life, written with a stale window of `stale`: fresh until only the
/// stale window is left. A key without an expiry (`-1`, written by someone
/// else) is fresh for good; one gone since it was read (`-2`) has expired.
pub(super) fn age(pttl: i64, stale: Duration) -> Age {
    match pttl {
        -1 => {
            return Age::Fresh {
                left: Duration::MAX,
            };
        }
        ..=-2 => return Age::Expired { ago: stale },
        _ => {}
    }
    let left = Duration::from_millis(pttl.unsigned_abs());
    match left.checked_sub(stale) {
        Some(fresh) if !fresh.is_zero() => Age::Fresh { left: fresh },
        _ => Age::Expired {
            ago: stale.saturating_sub(left),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_foreign_bytes_do_not() {
        let header = Header {
            delta: Duration::from_micros(51_234),
            stale: Duration::from_secs(10),
        };
        let bytes = encode(&"user 7".to_string(), &header);
        assert_eq!(
            decode::<String>(&bytes),
            Some((header.clone(), "user 7".to_string()))
        );
        assert_eq!(decode::<String>(b""), None);
        assert_eq!(decode::<String>(b"user 7 written by somebody else"), None);
        assert_eq!(decode::<String>(&bytes[..HEADER - 1]), None);
        let mut not_utf8 = encode(&Vec::<u8>::new(), &header);
        not_utf8.push(0xff);
        assert_eq!(decode::<String>(&not_utf8), None);
        assert_eq!(
            decode::<Vec<u8>>(&not_utf8).map(|(_, v)| v),
            Some(vec![0xff])
        );
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_responses_read_back_whole_and_no_cut_of_them_panics() {
        use crate::http::Collected;

        let response = http::Response::builder()
            .status(404)
            .version(http::Version::HTTP_2)
            .header("content-type", "text/plain")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header(
                "x-bytes",
                http::HeaderValue::from_bytes(b"\xff\x80ok").unwrap(),
            )
            .body(bytes::Bytes::from_static(b"not here"))
            .unwrap();
        let header = Header {
            delta: Duration::from_millis(3),
            stale: Duration::ZERO,
        };
        let bytes = encode(&Collected::<()>::complete(response.clone()), &header);
        let (read, back) = decode::<Collected<()>>(&bytes).unwrap();
        assert_eq!(read, header);
        let back = back.as_complete().unwrap();
        assert_eq!(back.status(), response.status());
        assert_eq!(back.version(), response.version());
        assert_eq!(back.headers(), response.headers());
        assert_eq!(back.body(), response.body());
        // Every cut either reads back as a shorter body or is refused; none panics.
        for cut in 0..bytes.len() {
            if let Some((_, value)) = decode::<Collected<()>>(&bytes[..cut]) {
                assert!(value.as_complete().unwrap().body().len() < response.body().len());
            }
        }
        let mut garbage = bytes.clone();
        garbage[HEADER + 2] = 9; // no such HTTP version
        assert!(decode::<Collected<()>>(&garbage).is_none());
    }

    #[test]
    fn freshness_is_the_ttl_left_minus_the_stale_window() {
        let stale = Duration::from_secs(2);
        let ms = Duration::from_millis;
        assert_eq!(age(5000, stale), Age::Fresh { left: ms(3000) });
        assert_eq!(age(2000, stale), Age::Expired { ago: ms(0) });
        assert_eq!(age(1500, stale), Age::Expired { ago: ms(500) });
        assert_eq!(age(-2, stale), Age::Expired { ago: stale }); // gone meanwhile
        assert_eq!(
            age(-1, stale),
            Age::Fresh {
                left: Duration::MAX
            }
        );
        assert_eq!(age(1, Duration::ZERO), Age::Fresh { left: ms(1) });
    }
}
