//! An encrypted source, as `upload --identity` reads it: any bytes as an age file
//! (binary or armored) decrypted with a fixed identity, and (mode 1) a real age file of
//! the input, cut short or with one byte changed. No panic; a whole, unchanged file
//! decrypts to exactly its plaintext; a changed or cut one never yields other bytes
//! without an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapport_core::encryption::{Identities, Recipients};
use std::io::Read;
use std::path::Path;

/// A key made for this target only (age-keygen), never used for anything else.
const KEY: &str = "AGE-SECRET-KEY-1LFRCAZSVHT5QRC9AJLL4CG3J2N7XVMXL24STPWWPFTP29M54WASSMJUE3Q";
const RECIPIENT: &str = "age1ajztl7guvgj9de8aqj9tr4khp9crej56acjujtjzdrrqxmwfdafs9jrss9";

fn read_all(ids: &Identities, file: Vec<u8>) -> Result<Vec<u8>, String> {
    let mut r = ids
        .decrypt(std::io::Cursor::new(file), "the source")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let ids = Identities::parse(KEY.as_bytes(), Path::new("key.txt")).unwrap();
    match data.split_first() {
        Some((1, rest)) if rest.len() >= 4 => {
            let (cut, flip, plain) = (rest[0], rest[1], &rest[4..]);
            let r = Recipients::parse(&[RECIPIENT.to_string()], &[]).unwrap().unwrap();
            let mut file = r.encrypt_bytes(plain).unwrap();
            let whole = file.len();
            let keep = if cut == 0 { whole } else { whole * cut as usize / 256 };
            file.truncate(keep);
            if flip != 0 && !file.is_empty() {
                let at = usize::from(rest[2]) * 256 + usize::from(rest[3]);
                let at = at % file.len();
                file[at] ^= flip;
            }
            match read_all(&ids, file) {
                Ok(out) => {
                    assert_eq!(keep, whole, "a cut file decrypted");
                    assert_eq!(flip, 0, "a changed file decrypted");
                    assert_eq!(out, plain);
                }
                Err(e) => assert!(!e.is_empty()),
            }
        }
        _ => {
            let _ = read_all(&ids, data.to_vec());
        }
    }
});
