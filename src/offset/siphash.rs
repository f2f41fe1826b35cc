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
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::siphash24;

    const REFERENCE_KEY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn message(len: usize) -> Vec<u8> {
        (0..len as u8).collect()
    }

    /// Vectors from the SipHash paper (Aumasson & Bernstein, appendix A / the
    /// reference `vectors.h`): key 00..0f, message 00..len-1, output read as a
    /// little-endian u64.
    #[test]
    fn siphash_reference_vectors() {
        let vectors: [(usize, u64); 5] = [
            (0, 0x726f_db47_dd0e_0e31),
            (1, 0x74f8_39c5_93dc_67fd),
            (2, 0x0d6c_8009_d9a9_4f5a),
            (3, 0x8567_6696_d7fb_7e2d),
            (15, 0xa129_ca61_49be_45e5),
        ];
        for (len, expected) in vectors {
            assert_eq!(
                siphash24(&REFERENCE_KEY, &message(len)),
                expected,
                "length {len}"
            );
        }
    }

    #[test]
    fn siphash_matches_an_independent_implementation() {
        let keys = [REFERENCE_KEY, *b"dephase-offset-1", [0xff; 16], [0; 16]];
        for key in keys {
            let other = siphasher::sip::SipHasher24::new_with_key(&key);
            for len in 0..=130 {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                assert_eq!(
                    siphash24(&key, &data),
                    other.hash(&data),
                    "key {key:?}, length {len}"
                );
            }
        }
    }
}
