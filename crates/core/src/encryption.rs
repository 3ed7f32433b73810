//! age encryption of exports, and decryption of age files on import.
//!
//! An encrypted export is an age file (age-encryption.org/v1) whose payload is the image
//! exactly as an unencrypted export would write it (raw, qcow2 or raw.zst), so stock
//! `age -d -i KEY` gives back that image; it is written front to back as a stream, holes
//! included as zeros (the ciphertext of zeros is not sparse). Recipients are age X25519
//! keys (`age1...`, from `age-keygen`), age post-quantum keys (`age1pq1...`) and
//! ssh-ed25519 / ssh-rsa public keys, given on the command line or one per line in
//! recipients files (`#` comments, as `age -R` reads). The `age` crate (the reference
//! Rust implementation) does the cryptography and parses every age file read.
//!
//! Nothing derived from the plaintext is written in clear: the content digest goes
//! beside the export as `OUTPUT.digest.age`, itself an age file to the same recipients,
//! and `OUTPUT.sha256` (when asked for) is the SHA-256 of the encrypted file, which says
//! nothing of the image but lets `sha256sum -c` check a copy. On import the age header
//! is recognised by its first line, the payload decrypted while it streams, and
//! `SOURCE.digest.age` decrypted with the same identities to verify the image.

use crate::error::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The first line of every binary age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The first line of an ASCII-armored age file.
pub const ARMOR_MAGIC: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// The most a recipients or identity file may hold: keys are lines of at most a few KiB.
const KEY_FILE_CAP: u64 = 1 << 20;

/// A refusal of what the user gave (a key, a recipient, a file that is not age).
fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidInput, message)
}

/// Whether `head` (a source's first bytes) starts an age file, binary or armored.
pub fn is_age(head: &[u8]) -> bool {
    head.starts_with(AGE_MAGIC) || head.starts_with(ARMOR_MAGIC)
}

/// The recipients an export is encrypted to.
pub struct Recipients(Vec<Box<dyn age::Recipient + Send>>);

impl Recipients {
    /// Parses recipients given as text (`--encrypt-to`) and read from files
    /// (`--encrypt-to-file`, one per line, blank lines and `#` comments skipped).
    /// `Ok(None)` when none are given: no encryption.
    pub fn parse(given: &[String], files: &[PathBuf]) -> Result<Option<Recipients>> {
        let mut all = Vec::new();
        for r in given {
            all.push(parse_recipient(r.trim(), "--encrypt-to")?);
        }
        for f in files {
            let bytes = crate::io::read_regular_file(f, KEY_FILE_CAP).map_err(|e| {
                Error::io(format!("reading the recipients file {}", f.display()), e)
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                invalid(format!(
                    "{} is not text: a recipients file holds one public key per line",
                    f.display()
                ))
            })?;
            let before = all.len();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = format!("{} line {}", f.display(), n + 1);
                all.push(parse_recipient(line, &at)?);
            }
            if all.len() == before {
                return Err(invalid(format!("{} names no recipient: give one public key per line (age1... or ssh-ed25519/ssh-rsa)", f.display())));
            }
        }
        Ok((!all.is_empty()).then_some(Recipients(all)))
    }

    /// An age writer around `out`: what is written to it is encrypted to every recipient.
    /// Its `finish` must be called ([`finish`]), or the file does not decrypt.
    pub fn encrypt<W: Write>(&self, out: W) -> Result<age::stream::StreamWriter<W>> {
        let encryptor = age::Encryptor::with_recipients(
            self.0.iter().map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| invalid(format!("encrypting: {e}")))?;
        encryptor
            .wrap_output(out)
            .map_err(|e| Error::io("writing the age header", e))
    }

    /// `text` as a whole age file (a sidecar's content).
    pub fn encrypt_bytes(&self, text: &[u8]) -> Result<Vec<u8>> {
        let mut w = self.encrypt(Vec::new())?;
        w.write_all(text).map_err(|e| Error::io("encrypting", e))?;
        w.finish().map_err(|e| Error::io("encrypting", e))
    }
}

// The age crate marks X25519 and ssh recipients deprecated in favour of its post-quantum
// `age1pq1...` ones, which Debian's age 1.1 cannot decrypt: both kinds are taken, a key
// says which.
#[allow(deprecated)]
fn parse_recipient(s: &str, at: &str) -> Result<Box<dyn age::Recipient + Send>> {
    if s.starts_with("age1pq1") {
        if let Ok(r) = s.parse::<age::pq::Recipient>() {
            return Ok(Box::new(r));
        }
        return Err(invalid(format!(
            "{at}: {s:?} is not a valid age post-quantum recipient (age1pq1...)"
        )));
    }
    if s.starts_with("age1") {
        if let Ok(r) = s.parse::<age::x25519::Recipient>() {
            return Ok(Box::new(r));
        }
        return Err(invalid(format!(
            "{at}: {s:?} is not a valid age X25519 recipient (age1..., as age-keygen prints it)"
        )));
    }
    if s.starts_with("ssh-") {
        return match s.parse::<age::ssh::Recipient>() {
            Ok(r) => Ok(Box::new(r)),
            Err(_) => return Err(invalid(format!(
                "{at}: {s:?} is not an ssh-ed25519 or ssh-rsa public key age can encrypt to (a line of ~/.ssh/id_ed25519.pub)"
            ))),
        };
    }
    Err(invalid(format!("{at}: {s:?} is not a recipient: give an age public key (age1..., from age-keygen) or an ssh-ed25519/ssh-rsa public key")))
}

/// The identities that decrypt an import (`--identity`): an age identity file
/// (`AGE-SECRET-KEY-1...` lines, as age-keygen writes it) or an unencrypted ssh-ed25519 /
/// ssh-rsa private key.
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>, PathBuf);

impl Identities {
    /// Reads `path` (a regular file of at most 1 MiB).
    pub fn read(path: &Path) -> Result<Identities> {
        let bytes = crate::io::read_regular_file(path, KEY_FILE_CAP)
            .map_err(|e| Error::io(format!("reading the identity file {}", path.display()), e))?;
        Identities::parse(&bytes, path)
    }

    /// The identities in `bytes`, the content of the key file `path`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Identities> {
        let name = path.display().to_string();
        if let Ok(file) = age::IdentityFile::from_buffer(bytes) {
            if let Ok(ids) = file.into_identities() {
                if !ids.is_empty() {
                    return Ok(Identities(ids, path.to_path_buf()));
                }
            }
        }
        match age::ssh::Identity::from_buffer(bytes, Some(name.clone())) {
            Ok(age::ssh::Identity::Unencrypted(key)) => Ok(Identities(
                vec![Box::new(age::ssh::Identity::Unencrypted(key))],
                path.to_path_buf(),
            )),
            Ok(age::ssh::Identity::Encrypted(_)) => Err(invalid(format!(
                "{name} is a passphrase-protected ssh key, which snapport cannot unlock: decrypt with `age -d -i {name}` and upload the result, or use an age identity (age-keygen)"
            ))),
            Ok(age::ssh::Identity::Unsupported(_)) => {
                Err(invalid(format!("{name} is an ssh key of a kind age does not support: use ssh-ed25519, ssh-rsa or an age identity (age-keygen)")))
            }
            Err(_) => Err(invalid(format!(
                "{name} holds no identity: give an age identity file (AGE-SECRET-KEY-1..., from age-keygen) or an unencrypted ssh-ed25519/ssh-rsa private key"
            ))),
        }
    }

    /// The plaintext of the age file read from `input`, decrypted as it is read. A wrong
    /// identity, a damaged header or a file that is not age fails here; damage further in
    /// fails the read that meets it (age authenticates every 64 KiB).
    pub fn decrypt<R: BufRead + Send + 'static>(
        &self,
        input: R,
        what: &str,
    ) -> Result<Box<dyn Read + Send>> {
        let ids = || self.0.iter().map(|i| i.as_ref() as &dyn age::Identity);
        let fail = |e: age::DecryptError| match e {
            age::DecryptError::NoMatchingKeys => invalid(format!(
                "{what} is encrypted to other keys than those in {}; nothing was imported",
                self.1.display()
            )),
            e => invalid(format!("decrypting {what}: {e}; nothing was imported")),
        };
        let mut input = input;
        let armored = input
            .fill_buf()
            .map(|b| b.starts_with(ARMOR_MAGIC))
            .map_err(|e| Error::io(format!("reading {what}"), e))?;
        let plain: Box<dyn Read + Send> = if armored {
            let d = age::Decryptor::new(age::armor::ArmoredReader::new(input)).map_err(fail)?;
            Box::new(d.decrypt(ids()).map_err(fail)?)
        } else {
            let d = age::Decryptor::new_buffered(input).map_err(fail)?;
            Box::new(d.decrypt(ids()).map_err(fail)?)
        };
        Ok(Box::new(Plaintext {
            inner: plain,
            what: what.to_string(),
        }))
    }

    /// A small age file (a sidecar, at most 1 MiB of plaintext) decrypted whole, as text.
    pub fn decrypt_bytes(&self, bytes: &[u8], what: &str) -> Result<String> {
        let mut r = self.decrypt(std::io::Cursor::new(bytes.to_vec()), what)?;
        let mut text = Vec::new();
        r.by_ref()
            .take(KEY_FILE_CAP)
            .read_to_end(&mut text)
            .map_err(|e| Error::io(format!("decrypting {what}"), e))?;
        String::from_utf8(text).map_err(|_| invalid(format!("{what} does not decrypt to text")))
    }
}

/// The plaintext of an age file, with a damaged or cut ciphertext said in words (age's
/// own error is "decryption error").
struct Plaintext {
    inner: Box<dyn Read + Send>,
    what: String,
}

impl Read for Plaintext {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is damaged or cut short: its encrypted data fails age's authentication ({e})",
                        self.what
                    ),
                )
            }
            _ => e,
        })
    }
}

/// A writer whose bytes are also hashed (SHA-256) when a hash is given, shared so it
/// can be read once the writer has been handed on: the encrypted file's `.sha256`.
pub struct HashingWriter<W> {
    /// Where the bytes go.
    pub inner: W,
    /// What has passed, if anyone asked.
    pub hash: Option<Arc<Mutex<Sha256>>>,
    /// Bytes that have passed.
    pub written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if let Some(h) = &self.hash {
            h.lock().unwrap().update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An age stream writer handed to the export as its output stream, and taken back
/// afterwards to be finished (the export only writes and flushes).
pub struct SharedWriter<W: Write>(pub Arc<Mutex<Option<age::stream::StreamWriter<W>>>>);

impl<W: Write> Write for SharedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock().unwrap().as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other(
                "the encrypted output was already finished",
            )),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock().unwrap().as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

/// Writes the last chunk and its tag: without it the file does not decrypt.
pub fn finish<W: Write>(shared: &Arc<Mutex<Option<age::stream::StreamWriter<W>>>>) -> Result<W> {
    let w = shared
        .lock()
        .unwrap()
        .take()
        .ok_or_else(|| Error::new(ErrorKind::Io, "the encrypted output was finished twice"))?;
    let mut inner = w
        .finish()
        .map_err(|e| Error::io("finishing the encrypted output", e))?;
    inner
        .flush()
        .map_err(|e| Error::io("writing the encrypted output", e))?;
    Ok(inner)
}

/// Where a [`Sealed`] stream's ciphertext goes: buffered, hashed on the way.
pub type SealedOut<W> = HashingWriter<std::io::BufWriter<W>>;

/// An output stream encrypted to recipients: [`Sealed::writer`] goes to whatever writes
/// the plaintext (an export, a bundle, a delta), and [`Sealed::finish`] ends the age
/// stream afterwards and gives the SHA-256 of the ciphertext, if asked for.
pub struct Sealed<W: Write> {
    shared: Arc<Mutex<Option<age::stream::StreamWriter<SealedOut<W>>>>>,
    hash: Option<Arc<Mutex<Sha256>>>,
}

impl<W: Write> Sealed<W> {
    /// Encrypts to `recipients` into `out` (buffered), hashing the ciphertext if `hash`.
    pub fn new(recipients: &Recipients, out: W, hash: bool) -> Result<Sealed<W>> {
        let hash = hash.then(|| Arc::new(Mutex::new(Sha256::new())));
        let hashing = HashingWriter {
            inner: std::io::BufWriter::with_capacity(1 << 20, out),
            hash: hash.clone(),
            written: 0,
        };
        Ok(Sealed {
            shared: Arc::new(Mutex::new(Some(recipients.encrypt(hashing)?))),
            hash,
        })
    }

    /// The plaintext's way in.
    pub fn writer(&self) -> SharedWriter<SealedOut<W>> {
        SharedWriter(Arc::clone(&self.shared))
    }

    /// Writes the last chunk and flushes: the ciphertext's SHA-256 (hex), if hashed, and
    /// its size.
    pub fn finish(&self) -> Result<(Option<String>, u64)> {
        let out = finish(&self.shared)?;
        let sha = self
            .hash
            .as_ref()
            .map(|h| hex::encode(h.lock().unwrap().clone().finalize()));
        Ok((sha, out.written))
    }
}
