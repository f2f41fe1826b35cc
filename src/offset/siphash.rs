//! SipHash-2-4, written out so that offsets never change under us.
//!
//! `std`'s `DefaultHasher` is explicitly allowed to change between Rust
//! releases, and `Hash` implementations differ across platforms (`usize`),
//! so neither can back an offset that must be the same on every machine of
//! a fleet and in every release of this crate. SipHash-2-4 (Aumasson and
//! Bernstein, 2012) is fixed by its paper and its reference test vectors,
//! which the tests pin.

use std::hash::Hasher;

/// SipHash-2-4 of `data` under the 128-bit `key` (read as two little-endian
/// 64-bit words), as specified by Aumasson and Bernstein.
pub(crate) fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new(key);
    hasher.write(data);
    hasher.finish()
}

/// SipHash-2-4 as a [`Hasher`]: the hash of every byte written, in order,
/// whatever the pieces they were written in (so `Hash` implementations can
/// be hashed without gathering their bytes first).
#[derive(Debug, Clone)]
pub(crate) struct SipHasher24 {
    v: [u64; 4],
    /// Bytes written that do not fill a word yet (the low `tail_len` bytes).
    tail: u64,
    tail_len: usize,
    /// Bytes written in all.
    len: u64,
}

impl SipHasher24 {
    pub(crate) fn new(key: &[u8; 16]) -> SipHasher24 {
        let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
        let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
        SipHasher24 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            tail_len: 0,
            len: 0,
        }
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        round(&mut self.v);
        round(&mut self.v);
        self.v[0] ^= m;
    }
}

impl Hasher for SipHasher24 {
    fn write(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        // Fill the pending word first.
        if self.tail_len > 0 {
            let take = (8 - self.tail_len).min(data.len());
            for (i, byte) in data[..take].iter().enumerate() {
                self.tail |= u64::from(*byte) << (8 * (self.tail_len + i));
            }
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < 8 {
                return;
            }
            let m = self.tail;
            self.compress(m);
            (self.tail, self.tail_len) = (0, 0);
        }
        let mut words = data.chunks_exact(8);
        for word in &mut words {
            self.compress(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        for (i, byte) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(*byte) << (8 * i);
        }
        self.tail_len = words.remainder().len();
    }

    fn finish(&self) -> u64 {
        let mut v = self.v;
        let last = ((self.len & 0xff) << 56) | self.tail;
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
    use super::{SipHasher24, siphash24};
    use std::hash::Hasher;

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

    #[test]
    fn written_in_pieces_it_is_the_hash_of_the_whole() {
        let data: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(31)).collect();
        for cut in [[0, 0], [1, 2], [3, 11], [7, 8], [8, 16], [9, 40], [50, 99]] {
            let mut hasher = SipHasher24::new(&REFERENCE_KEY);
            hasher.write(&data[..cut[0]]);
            hasher.write(&data[cut[0]..cut[1]]);
            for byte in &data[cut[1]..] {
                hasher.write(std::slice::from_ref(byte));
            }
            assert_eq!(hasher.finish(), siphash24(&REFERENCE_KEY, &data), "{cut:?}");
        }
    }
}
