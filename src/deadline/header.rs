//! The `grpc-timeout` header format: up to eight ASCII digits and a unit
//! (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 protocol
//! defines it.

use std::time::Duration;

use http::HeaderValue;
use http::header::HeaderName;

/// `grpc-timeout`: the header [`PropagateDeadline`](super::PropagateDeadline)
/// writes and [`ServerDeadline`](super::ServerDeadline) reads unless told
/// another name.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest value the format allows: eight digits.
const MAX_VALUE: u64 = 99_999_999;

/// The units, finest first, with their length in nanoseconds.
const UNITS: [(u8, u64); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// Parses a `grpc-timeout` value (`"250m"`, `"3S"`, `"1H"`...).
///
/// `None` for anything the gRPC protocol does not allow: empty, more than
/// eight digits, a sign, a space, a fraction, a missing or unknown unit.
/// The server layer ignores such a header (with a DEBUG event) rather than
/// failing the request.
///
/// ```
/// use std::time::Duration;
/// use dephase::deadline::parse_timeout;
/// use http::HeaderValue;
///
/// assert_eq!(parse_timeout(&HeaderValue::from_static("250m")), Some(Duration::from_millis(250)));
/// assert_eq!(parse_timeout(&HeaderValue::from_static("1H")), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_timeout(&HeaderValue::from_static("-5m")), None);
/// assert_eq!(parse_timeout(&HeaderValue::from_static("123456789S")), None);
/// ```
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let nanos_per = UNITS.iter().find(|(u, _)| *u == unit)?.1;
    let value = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    // At most 99 999 999 hours: about 3.6 × 10²⁰ ns, past u64; saturate.
    let nanos = u128::from(value) * u128::from(nanos_per);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats `timeout` as a `grpc-timeout` value: the finest unit in which
/// it fits eight digits, rounded up to that unit (as grpc-go does: the
/// error is below one part in a hundred thousand); a timeout past 99 999 999
/// hours is sent as that.
///
/// ```
/// use std::time::Duration;
/// use dephase::deadline::format_timeout;
///
/// assert_eq!(format_timeout(Duration::from_millis(250)), "250000u");
/// assert_eq!(format_timeout(Duration::from_micros(1500)), "1500000n");
/// assert_eq!(format_timeout(Duration::from_secs(1)), "1000000u");
/// assert_eq!(format_timeout(Duration::from_nanos(1_500_000_001)), "1500001u");
/// assert_eq!(format_timeout(Duration::ZERO), "0n");
/// ```
pub fn format_timeout(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    for (unit, nanos_per) in UNITS {
        let value = nanos.div_ceil(u128::from(nanos_per));
        if value <= u128::from(MAX_VALUE) {
            let mut text = value.to_string();
            text.push(char::from(unit));
            return HeaderValue::try_from(text).expect("digits and a letter");
        }
    }
    HeaderValue::from_static("99999999H")
}
