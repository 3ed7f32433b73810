//! Telling zeros from data: what keeps holes holes on every path (import, digest,
//! delta, spool, fetch).

/// Whether `bytes` are all zeros. OR-folding 64-byte blocks lets the compiler use vector
/// instructions; an early non-zero block ends the scan.
pub fn is_zero(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    blocks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
        && blocks.remainder().iter().all(|&b| b == 0)
}
