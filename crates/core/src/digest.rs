//! Content digests.
//!
//! The **content digest** identifies the logical disk, whatever the output format, and is
//! cheap on sparse disks. Its rule, precise enough to recompute with any tool:
//!
//! 1. Cut the logical disk (its virtual size, every byte, holes read as zeros) into chunks
//!    of [`CHUNK_SIZE`] = 4 MiB; the last chunk may be shorter. A disk of size 0 has no
//!    chunks.
//! 2. `h_i = SHA-256(chunk_i)` (32 raw bytes).
//! 3. `digest = SHA-256(h_0 || h_1 || ... || h_{n-1})`.
//! 4. Written as `sha256-4m:` followed by the 64 lowercase hex digits of `digest`.
//!
//! In Python: `hashlib.sha256(b"".join(hashlib.sha256(c).digest() for c in chunks))`.
//! An all-zero 4 MiB chunk has a fixed `h_i`, so holes cost nothing, and chunks hash on
//! any number of cores. The plain `sha256sum` of the output stream is offered beside it
//! (`--sha256sum`) for users who check with stock tools.

use sha2::{Digest, Sha256};

/// Chunk size of the content digest.
pub const CHUNK_SIZE: u64 = 4 << 20;
/// The prefix naming the rule above.
pub const CONTENT_DIGEST_PREFIX: &str = "sha256-4m:";

/// SHA-256 of one chunk.
pub fn chunk_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Folds chunk hashes, in order, into the content digest.
#[derive(Default)]
pub struct ContentDigest {
    outer: Sha256,
    /// `h` of an all-zero full chunk, computed once.
    zero_full: Option<[u8; 32]>,
}

impl ContentDigest {
    pub fn new() -> ContentDigest {
        ContentDigest::default()
    }

    pub fn push(&mut self, chunk_hash: &[u8; 32]) {
        self.outer.update(chunk_hash);
    }

    /// Adds an all-zero chunk of `len` bytes without hashing 4 MiB of zeros each time.
    pub fn push_zero(&mut self, len: u64) {
        let h = if len == CHUNK_SIZE {
            *self.zero_full.get_or_insert_with(|| zero_hash(CHUNK_SIZE))
        } else {
            zero_hash(len)
        };
        self.outer.update(h);
    }

    pub fn finish(self) -> String {
        format!(
            "{CONTENT_DIGEST_PREFIX}{}",
            hex::encode(self.outer.finalize())
        )
    }
}

fn zero_hash(len: u64) -> [u8; 32] {
    let zeros = vec![0u8; len as usize];
    chunk_hash(&zeros)
}

/// The plain SHA-256 of a whole byte stream, `sha256sum`-compatible.
#[derive(Default)]
pub struct StreamDigest(Sha256);

impl StreamDigest {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Feeds `len` zero bytes (holes of a raw stream).
    pub fn update_zeros(&mut self, mut len: u64) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while len > 0 {
            let n = len.min(ZEROS.len() as u64) as usize;
            self.0.update(&ZEROS[..n]);
            len -= n as u64;
        }
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_chunks_match_hashing_zeros() {
        let mut fast = ContentDigest::new();
        fast.push_zero(CHUNK_SIZE);
        fast.push_zero(1000);
        let mut slow = ContentDigest::new();
        slow.push(&chunk_hash(&vec![0; CHUNK_SIZE as usize]));
        slow.push(&chunk_hash(&[0; 1000]));
        assert_eq!(fast.finish(), slow.finish());
    }

    #[test]
    fn empty_disk_is_sha256_of_nothing() {
        // SHA-256 of the empty string, as `sha256sum </dev/null` prints it.
        assert_eq!(
            ContentDigest::new().finish(),
            "sha256-4m:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
