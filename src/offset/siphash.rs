//! SipHash-2-4, written out so that offsets never change under us.
//!
//! `std`'s `DefaultHasher` is explicitly allowed to change between Rust
//! releases, and `Hash` implementations differ across platforms (`usize`),
//! so neither can back an offset that must be the same on every machine of
//! a fleet and in every release of this crate. SipHash-2-4 (Aumasson and
//! Bernstein, 2012) is fixed by its paper and its reference test vectors,
//! which the tests pin.

/// SipHash-2-4 of `data` under the 128-bit `key` (read as two little-endian
/// 64-bit words), as specified by Aumasson and Bernstein.
///
/// ```
/// // The first test vector of the SipHash paper: key 00..0f, empty message.
/// let key: [u8; 16] = core::array::from_fn(|i| i as u8);
/// assert_eq!(dephase::offset::siphash24(&key, b""), 0x726f_db47_dd0e_0e31);
/// ```
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];

    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let m = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = (data.len() as u64 & 0xff) << 56;
    for (i, byte) in chunks.remainder().iter().enumerate() {
        last |= u64::from(*byte) << (8 * i);
    }
    v[3] ^= last;
    round(&mut v);
    round(&mut v);
    v[0] ^= last;

    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}
