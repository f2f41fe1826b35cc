//! Body chunks as `Bytes`, for the layers that keep them.

/// A body chunk as `Bytes` (free when it already is `Bytes`).
pub(crate) fn into_bytes<D: bytes::Buf>(mut data: D) -> bytes::Bytes {
    data.copy_to_bytes(data.remaining())
}
