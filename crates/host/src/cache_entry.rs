//! One entry of the compiled-component cache as it lies on disk: a fixed header naming
//! the key the artifact was compiled for and the artifact's own SHA-256, then the
//! artifact wasmtime serialized. Deserializing unchecked bytes runs whatever they hold,
//! so an entry is accepted only when every header field matches and the artifact hashes
//! to the recorded digest. Depends on `sha2` alone, so the fuzz target `cache_entry`
//! includes this file as is.

use sha2::{Digest, Sha256};

/// What an artifact was compiled from and by: the SHA-256 of the component's bytes and
/// the identity of the engine (its version and code-affecting configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub component: [u8; 32],
    pub engine: [u8; 32],
}

/// "snapport-cwasm", a NUL, then the layout version (1). Frozen: another layout takes
/// another version byte, and an entry of any other version is simply recompiled.
pub const MAGIC: [u8; 16] = *b"snapport-cwasm\x00\x01";

/// The header: [`MAGIC`], `key.component`, `key.engine`, the artifact's length (u64,
/// little-endian) and the artifact's SHA-256.
pub const HEADER_LEN: usize = 16 + 32 + 32 + 8 + 32;
const _: () = assert!(HEADER_LEN == 120);

/// The entry for `artifact`, compiled for `key`.
pub fn seal(key: &Key, artifact: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(HEADER_LEN + artifact.len());
    entry.extend_from_slice(&MAGIC);
    entry.extend_from_slice(&key.component);
    entry.extend_from_slice(&key.engine);
    entry.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    entry.extend_from_slice(&Sha256::digest(artifact));
    entry.extend_from_slice(artifact);
    entry
}

/// The artifact inside `entry`, when the entry was sealed for `key` and is intact;
/// otherwise why not, in words for a debug line.
pub fn unseal<'a>(key: &Key, entry: &'a [u8]) -> Result<&'a [u8], String> {
    if entry.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            entry.len()
        ));
    }
    let (header, artifact) = entry.split_at(HEADER_LEN);
    if header[..16] != MAGIC {
        return Err("not a cache entry of this snapport (its magic differs)".into());
    }
    if header[16..48] != key.component {
        return Err("compiled from another component".into());
    }
    if header[48..80] != key.engine {
        return Err("compiled by another wasmtime version or configuration".into());
    }
    let len = u64::from_le_bytes(header[80..88].try_into().expect("8 bytes"));
    if len != artifact.len() as u64 {
        return Err(format!(
            "holds {} bytes of code where its header says {len}",
            artifact.len()
        ));
    }
    if Sha256::digest(artifact)[..] != header[88..120] {
        return Err("its code does not match its recorded SHA-256 (damaged)".into());
    }
    Ok(artifact)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key {
        component: [1; 32],
        engine: [2; 32],
    };

    #[test]
    fn an_intact_entry_gives_back_its_artifact() {
        let entry = seal(&KEY, b"code");
        assert_eq!(entry.len(), HEADER_LEN + 4);
        assert_eq!(unseal(&KEY, &entry), Ok(&b"code"[..]));
        assert_eq!(unseal(&KEY, &seal(&KEY, b"")), Ok(&b""[..]));
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let entry = seal(&KEY, b"some compiled code");
        for at in 0..entry.len() {
            let mut bad = entry.clone();
            bad[at] ^= 0x10;
            let why = unseal(&KEY, &bad).expect_err("a flipped byte must be refused");
            let expect = match at {
                0..16 => "magic",
                16..48 => "another component",
                48..80 => "another wasmtime",
                80..88 => "header says",
                _ => "recorded SHA-256",
            };
            assert!(why.contains(expect), "byte {at}: {why}");
        }
    }

    #[test]
    fn an_entry_of_another_key_or_cut_short_is_refused() {
        let entry = seal(&KEY, b"code");
        let other_plugin = Key {
            component: [3; 32],
            ..KEY
        };
        let other_engine = Key {
            engine: [3; 32],
            ..KEY
        };
        assert!(unseal(&other_plugin, &entry)
            .unwrap_err()
            .contains("another component"));
        assert!(unseal(&other_engine, &entry)
            .unwrap_err()
            .contains("another wasmtime"));
        for len in [0, 1, HEADER_LEN - 1, HEADER_LEN, entry.len() - 1] {
            assert!(unseal(&KEY, &entry[..len]).is_err(), "cut to {len}");
        }
        let mut longer = entry.clone();
        longer.push(0);
        assert!(unseal(&KEY, &longer).unwrap_err().contains("header says"));
    }
}
