//! Content digests.
//!
//! The **content digest** identifies the logical disk, whatever the output format, and
//! costs nothing for holes. Its rule, precise enough to recompute with any tool:
//!
//! 1. Read the logical disk (its virtual size, every byte, holes as zeros) in *groups* of
//!    [`GROUP_SIZE`] = 4 MiB, and each group in *leaves* of [`LEAF_SIZE`] = 64 KiB. The
//!    last group and the last leaf may be shorter. A disk of size 0 has no groups.
//! 2. `leaf_hash = SHA-256(leaf bytes)`.
//! 3. `group_hash = SHA-256(leaf_hash_0 || leaf_hash_1 || ...)` over the group's leaves.
//! 4. `digest = SHA-256(group_hash_0 || group_hash_1 || ...)`, written as `sha256-64k-4m:`
//!    followed by 64 lowercase hex digits.
//!
//! In Python:
//! ```text
//! H = lambda b: hashlib.sha256(b).digest()
//! digest = H(b"".join(H(b"".join(H(g[i:i+65536]) for i in range(0, len(g), 65536)))
//!                     for g in groups))
//! ```
//! A leaf or group that is a hole has a fixed hash, so sparse disks hash only their data
//! (at 64 KiB granularity, qcow2's default cluster size), and groups hash on any number of
//! cores. The plain `sha256sum` of the output stream is offered beside it (`--sha256sum`)
//! for users who check with stock tools.

use sha2::{Digest, Sha256};

/// Group size of the content digest (also the export's unit of work).
pub const GROUP_SIZE: u64 = 4 << 20;
/// Leaf size of the content digest.
pub const LEAF_SIZE: u64 = 64 << 10;
/// The prefix naming the rule above.
pub const CONTENT_DIGEST_PREFIX: &str = "sha256-64k-4m:";

/// SHA-256 of a full all-zero leaf, computed once.
fn zero_leaf() -> [u8; 32] {
    static ZERO_LEAF: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *ZERO_LEAF.get_or_init(|| Sha256::digest(vec![0u8; LEAF_SIZE as usize]).into())
}

/// The hash of one group. `is_hole(i)` says that leaf `i` is known to be all zeros
/// (a hole in the extent map), so it is not read or hashed.
pub fn group_hash(bytes: &[u8], is_hole: impl Fn(usize) -> bool) -> [u8; 32] {
    let mut group = Sha256::new();
    for (i, leaf) in bytes.chunks(LEAF_SIZE as usize).enumerate() {
        if is_hole(i) && leaf.len() == LEAF_SIZE as usize {
            group.update(zero_leaf());
        } else {
            group.update(Sha256::digest(leaf));
        }
    }
    group.finalize().into()
}

/// The hash of one group whose holes are not known: all-zero leaves are found by
/// scanning, which is several times faster than hashing them.
pub fn scanned_group_hash(bytes: &[u8]) -> [u8; 32] {
    group_hash(bytes, |i| {
        let leaf = LEAF_SIZE as usize;
        crate::zeros::is_zero(&bytes[i * leaf..((i + 1) * leaf).min(bytes.len())])
    })
}

/// The content digest of bytes that arrive in order, in pieces of any size (a stream
/// read once, such as the publish server's background pass).
#[derive(Default)]
pub struct ContentHasher {
    digest: ContentDigest,
    /// The current group's bytes, up to [`GROUP_SIZE`].
    group: Vec<u8>,
}

impl ContentHasher {
    pub fn new() -> ContentHasher {
        ContentHasher::default()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (GROUP_SIZE as usize - self.group.len()).min(bytes.len());
            self.group.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.group.len() == GROUP_SIZE as usize {
                self.digest.push(&scanned_group_hash(&self.group));
                self.group.clear();
            }
        }
    }

    pub fn finish(mut self) -> String {
        if !self.group.is_empty() {
            self.digest.push(&scanned_group_hash(&self.group));
        }
        self.digest.finish()
    }
}

/// Folds group hashes, in order, into the content digest.
#[derive(Default)]
pub struct ContentDigest {
    outer: Sha256,
    /// Hash of an all-zero full group, computed once.
    zero_full: Option<[u8; 32]>,
}

impl ContentDigest {
    pub fn new() -> ContentDigest {
        ContentDigest::default()
    }

    pub fn push(&mut self, group_hash: &[u8; 32]) {
        self.outer.update(group_hash);
    }

    /// Adds an all-zero group of `len` bytes without hashing its zeros.
    pub fn push_zero(&mut self, len: u64) {
        let h = if len == GROUP_SIZE {
            *self.zero_full.get_or_insert_with(|| zero_group(GROUP_SIZE))
        } else {
            zero_group(len)
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

fn zero_group(len: u64) -> [u8; 32] {
    // Only the last leaf may be short; hash just that one for real.
    let full = (len / LEAF_SIZE) as usize;
    let tail = vec![0u8; (len % LEAF_SIZE) as usize];
    let mut group = Sha256::new();
    for _ in 0..full {
        group.update(zero_leaf());
    }
    if !tail.is_empty() {
        group.update(Sha256::digest(&tail));
    }
    group.finalize().into()
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

    /// The rule written out the slow way: every byte hashed.
    fn reference(disk: &[u8]) -> String {
        let mut outer = Sha256::new();
        for g in disk.chunks(GROUP_SIZE as usize) {
            let mut inner = Vec::new();
            for leaf in g.chunks(LEAF_SIZE as usize) {
                inner.extend_from_slice(&Sha256::digest(leaf));
            }
            outer.update(Sha256::digest(&inner));
        }
        format!("{CONTENT_DIGEST_PREFIX}{}", hex::encode(outer.finalize()))
    }

    #[test]
    fn shortcuts_match_the_rule() {
        // Group 0: data with a hole leaf; group 1: all zero; group 2: short, odd tail.
        let size = 2 * GROUP_SIZE as usize + 3 * LEAF_SIZE as usize + 1234;
        let mut disk = vec![0u8; size];
        disk[..LEAF_SIZE as usize].fill(7);
        disk[5 * LEAF_SIZE as usize + 3] = 1;
        disk[size - 1] = 9;
        let mut fast = ContentDigest::new();
        fast.push(&group_hash(&disk[..GROUP_SIZE as usize], |i| {
            i != 0 && i != 5
        }));
        fast.push_zero(GROUP_SIZE);
        fast.push(&group_hash(&disk[2 * GROUP_SIZE as usize..], |_| false));
        assert_eq!(fast.finish(), reference(&disk));

        let mut zeros = ContentDigest::new();
        zeros.push_zero(GROUP_SIZE);
        zeros.push_zero(1000);
        assert_eq!(
            zeros.finish(),
            reference(&vec![0u8; GROUP_SIZE as usize + 1000])
        );
    }

    #[test]
    fn streamed_pieces_of_any_size_give_the_rule() {
        let size = GROUP_SIZE as usize + 5 * LEAF_SIZE as usize + 77;
        let mut disk = vec![0u8; size];
        for (i, b) in disk.iter_mut().enumerate().skip(3 * LEAF_SIZE as usize) {
            *b = (i % 251) as u8;
        }
        disk[GROUP_SIZE as usize..GROUP_SIZE as usize + LEAF_SIZE as usize].fill(0);
        for piece in [1, 4096, 1 << 20, 3 << 20, size] {
            let mut h = ContentHasher::new();
            for p in disk.chunks(piece) {
                h.update(p);
            }
            assert_eq!(h.finish(), reference(&disk), "pieces of {piece}");
        }
        assert_eq!(ContentHasher::new().finish(), ContentDigest::new().finish());
    }

    #[test]
    fn empty_disk_is_sha256_of_nothing() {
        // SHA-256 of the empty string, as `sha256sum </dev/null` prints it.
        assert_eq!(
            ContentDigest::new().finish(),
            "sha256-64k-4m:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
