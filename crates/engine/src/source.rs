//! Where an upload's bytes come from (a file, stdin or an http(s) URL), what they are
//! (detected from content, never from the name), and what digests came with them.

use crate::{bail, Context as _, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// Bytes looked at to detect the format.
const HEAD: usize = snapport_core::detect::HEAD_BYTES;
/// A `.digest` or `.sha256` sidecar is a line (or a short `sha256sum` listing).
const MAX_SIDECAR_BYTES: u64 = 1 << 20;

/// What an image is, by its content; serialized as its [`name`](InputFormat::name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum InputFormat {
    /// The disk byte for byte.
    #[serde(rename = "raw")]
    Raw,
    /// qcow2 (needs random access: a file).
    #[serde(rename = "qcow2")]
    Qcow2,
    /// zstd-compressed raw (one or many frames).
    #[serde(rename = "raw.zst")]
    RawZst,
}

impl InputFormat {
    /// The name `--format` takes and reports show: `raw`, `qcow2`, `raw.zst`.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Raw => "raw",
            InputFormat::Qcow2 => "qcow2",
            InputFormat::RawZst => "raw.zst",
        }
    }
}

/// The format of an image from its first bytes; foreign formats (VMDK, VHD(X), VDI,
/// QED, Parallels, LUKS, gzip, xz, bzip2) are named and refused.
pub fn detect(head: &[u8], what: &str) -> Result<InputFormat> {
    use snapport_core::detect::ImageFormat;
    Ok(match snapport_core::detect::detect(head, what)? {
        ImageFormat::Raw => InputFormat::Raw,
        ImageFormat::Qcow2 => InputFormat::Qcow2,
        ImageFormat::RawZst => InputFormat::RawZst,
    })
}

/// An opened source.
pub enum Input {
    /// A regular file or a block device: random access, size known.
    File(PathBuf),
    /// stdin, a pipe, a character device or a response body, with its first bytes
    /// already read (and put back).
    Stream {
        /// The rest of the stream.
        reader: Box<dyn Read + Send>,
        /// The first bytes, read for format detection.
        head: Vec<u8>,
        /// The length the sender declared (Content-Length, a file's size on stdin), if any.
        length: Option<u64>,
        /// A character device that is not a pipe (/dev/zero, /dev/urandom, a tty): it may
        /// never end, so its length must be given.
        endless: bool,
    },
}

/// What came with the source to verify it by.
#[derive(Default)]
pub struct Expected {
    /// Content digest (`sha256-64k-4m:...`) and where it came from.
    pub content: Option<(String, String)>,
    /// SHA-256 of the source's bytes as given and where it came from.
    pub sha256: Option<(String, String)>,
    /// For an encrypted source: the SHA-256 its encrypted bytes must have (SOURCE.sha256
    /// of an encrypted export), with the hash taken as they are read.
    pub cipher: Option<CipherCheck>,
}

/// The SHA-256 an encrypted source's bytes must have, and the hash of those read.
pub struct CipherCheck {
    /// 64 lowercase hex digits.
    pub want: String,
    /// Where `want` came from.
    pub from: String,
    /// The hash of the encrypted bytes read so far.
    pub hash: std::sync::Arc<std::sync::Mutex<Sha256>>,
}

/// Whether a source names an http(s) URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Opens a source: `-` for stdin, an http(s) URL, or a path (a file or block device for
/// random access; a pipe, socket or character device read in order).
pub fn open(source: &str) -> Result<Input> {
    if source == "-" {
        let stdin = std::io::stdin();
        let (length, endless) = stream_kind(&File::from(stdin.as_fd().try_clone_to_owned()?))
            .context("reading stdin")?;
        let mut stdin: Box<dyn Read + Send> = Box::new(stdin);
        let head = read_head(&mut stdin).context("reading stdin")?;
        return Ok(Input::Stream {
            reader: stdin,
            head,
            length,
            endless,
        });
    }
    if crate::s3::is_s3(source) {
        let (mut reader, size) = crate::s3::open_source(source)?;
        let head = read_head(&mut reader).with_context(|| format!("reading {source}"))?;
        return Ok(Input::Stream {
            reader: Box::new(reader),
            head,
            length: Some(size),
            endless: false,
        });
    }
    if is_url(source) {
        let response = http_get(source)?;
        let length = response.content_length();
        let mut reader: Box<dyn Read + Send> = Box::new(response);
        let head = read_head(&mut reader).with_context(|| format!("reading {source}"))?;
        return Ok(Input::Stream {
            reader,
            head,
            length,
            endless: false,
        });
    }
    let path = PathBuf::from(source);
    let meta = std::fs::metadata(&path).with_context(|| format!("opening {source}"))?;
    let kind = meta.file_type();
    if kind.is_dir() {
        bail!("{source} is a folder; name an image file");
    }
    if kind.is_file() || kind.is_block_device() {
        return Ok(Input::File(path));
    }
    // A pipe, socket or character device: read in order, its length unknown.
    let file = File::open(&path).with_context(|| format!("opening {source}"))?;
    let mut reader: Box<dyn Read + Send> = Box::new(file);
    let head = read_head(&mut reader).with_context(|| format!("reading {source}"))?;
    Ok(Input::Stream {
        reader,
        head,
        length: None,
        endless: kind.is_char_device(),
    })
}

/// What stdin is: a file's remaining length, or whether it is a character device that
/// may never end (a pipe has neither).
fn stream_kind(stdin: &File) -> Result<(Option<u64>, bool)> {
    let meta = stdin.metadata()?;
    let kind = meta.file_type();
    if kind.is_file() {
        let at = (&*stdin).stream_position()?;
        return Ok((Some(meta.len().saturating_sub(at)), false));
    }
    Ok((None, kind.is_char_device()))
}

impl Input {
    /// The first bytes, for format detection.
    pub fn head(&self) -> Result<Vec<u8>> {
        match self {
            Input::File(p) => {
                let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
                let mut head = vec![0u8; HEAD];
                let mut n = 0;
                while n < HEAD {
                    let k = f
                        .read_at(&mut head[n..], n as u64)
                        .with_context(|| format!("reading {}", p.display()))?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                head.truncate(n);
                Ok(head)
            }
            Input::Stream { head, .. } => Ok(head.clone()),
        }
    }

    /// The whole stream from its first byte (the head put back in front).
    pub fn into_reader(self) -> Result<Box<dyn Read + Send>> {
        match self {
            Input::File(p) => Ok(Box::new(
                File::open(&p).with_context(|| format!("opening {}", p.display()))?,
            )),
            Input::Stream { reader, head, .. } => Ok(Box::new(Cursor::new(head).chain(reader))),
        }
    }
}

/// The first bytes of a stream (up to what format detection looks at).
pub fn read_head(r: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD);
    r.take(HEAD as u64).read_to_end(&mut head)?;
    Ok(head)
}

fn client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        // A disk image can take hours: no overall timeout, but a stalled connection ends.
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .context("starting the HTTP client")
}

fn http_get(url: &str) -> Result<reqwest::blocking::Response> {
    let response = client()?
        .get(url)
        .send()
        .with_context(|| format!("fetching {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("fetching {url}: the server answered {status}");
    }
    Ok(response)
}

/// The first word of a sidecar file (`HEX  NAME` or `sha256-64k-4m:HEX  NAME`).
fn first_word(text: &str) -> Option<String> {
    text.split_whitespace().next().map(str::to_owned)
}

/// Digests given on the command line, else the sidecars `download` writes beside its
/// output (SOURCE.digest and SOURCE.sha256; fetched from SOURCE.digest and
/// SOURCE.sha256 for a URL, where a missing one is no error).
pub fn expected(
    source: &str,
    digest: Option<String>,
    sha256: Option<String>,
    sidecars: bool,
) -> Result<Expected> {
    let mut e = Expected {
        content: digest.map(|d| (d, "--digest".into())),
        sha256: sha256.map(|h| (h.to_ascii_lowercase(), "--sha256".into())),
        cipher: None,
    };
    if let Some((d, _)) = &e.content {
        if !d.starts_with(snapport_core::digest::CONTENT_DIGEST_PREFIX) {
            bail!(
                "--digest {d}: a content digest starts with {}",
                snapport_core::digest::CONTENT_DIGEST_PREFIX
            );
        }
    }
    if let Some((h, _)) = &e.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--sha256 {h}: give 64 hex digits");
        }
    }
    if !sidecars || source == "-" {
        return Ok(e);
    }
    let fetch = |ext: &str| -> Result<Option<(String, String)>> {
        let text = read_sidecar(source, ext)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(text
            .and_then(|t| first_word(&t))
            .map(|w| (w, format!("{source}{ext}"))))
    };
    if e.content.is_none() {
        e.content = fetch(".digest")?;
    }
    if e.sha256.is_none() {
        e.sha256 = fetch(".sha256")?.map(|(h, n)| (h.to_ascii_lowercase(), n));
    }
    Ok(e)
}

/// The content digest in `SOURCE.digest.age` (an encrypted export's, beside a file or a
/// URL), decrypted with `identities`; `None` when there is none.
pub fn sealed_digest(
    source: &str,
    identities: &snapport_core::encryption::Identities,
) -> Result<Option<(String, String)>> {
    if source == "-" {
        return Ok(None);
    }
    let name = format!("{source}.digest.age");
    let Some(bytes) = read_sidecar(source, ".digest.age")? else {
        return Ok(None);
    };
    let text = identities.decrypt_bytes(&bytes, &name)?;
    Ok(first_word(&text).map(|w| (w, name)))
}

/// The sidecar `SOURCE` + `ext` beside a file, a URL or an object, at most
/// [`MAX_SIDECAR_BYTES`]; `None` if there is none (for a URL, also if it cannot be
/// fetched: a web server need not serve sidecars).
fn read_sidecar(source: &str, ext: &str) -> Result<Option<Vec<u8>>> {
    let name = format!("{source}{ext}");
    if crate::s3::is_s3(source) {
        return crate::s3::read_sidecar(source, ext, MAX_SIDECAR_BYTES);
    }
    if is_url(source) {
        return match client()?.get(&name).send() {
            Ok(r) if r.status().is_success() => {
                let mut b = Vec::new();
                r.take(MAX_SIDECAR_BYTES + 1)
                    .read_to_end(&mut b)
                    .with_context(|| format!("fetching {name}"))?;
                if b.len() as u64 > MAX_SIDECAR_BYTES {
                    bail!("{name} is larger than a digest sidecar can be");
                }
                Ok(Some(b))
            }
            _ => Ok(None),
        };
    }
    if !Path::new(&name).is_file() {
        return Ok(None);
    }
    snapport_core::io::read_regular_file(Path::new(&name), MAX_SIDECAR_BYTES)
        .map(Some)
        .with_context(|| format!("reading {name}"))
}

/// SHA-256 of a whole file (a qcow2 source's bytes as given).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// A reader that hashes what passes through it (the compressed bytes of a zstd source).
pub struct HashingReader<R> {
    /// What is read.
    pub inner: R,
    /// The hash of what has passed, shared with whoever reads it at the end.
    pub hash: std::sync::Arc<std::sync::Mutex<Sha256>>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.lock().unwrap().update(&buf[..n]);
        Ok(n)
    }
}

/// Parses a size: bytes, or with a binary suffix K, M, G, T, P (also KiB, ..., and the
/// lower-case forms).
///
/// A size that does not parse is a usage error ([`crate::ErrorKind::Usage`]).
pub fn parse_size(s: &str) -> Result<u64> {
    parse_size_inner(s).map_err(crate::Error::into_usage)
}

fn parse_size_inner(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a size (e.g. 10G, 512M, 1048576)"))?;
    let shift = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => bail!("{s:?}: unknown size unit {unit:?} (use K, M, G, T or P)"),
    };
    n.checked_mul(1 << shift)
        .with_context(|| format!("{s:?} is too large"))
}

/// A source stored under a name in a private temporary folder, for what reads a file by
/// name or at random: a qcow2 object or decrypted qcow2 (through the qcow2 plugin), a
/// delta from an object or decrypted (applied with `--onto`). The folder goes when this
/// is dropped, or on interruption.
pub struct LocalCopy {
    dir: PathBuf,
    file: PathBuf,
    _on_signal: crate::interrupt::RemoveTree,
}

impl LocalCopy {
    /// Stores what `reader` gives (`what`, for messages).
    pub fn new(mut reader: impl std::io::Read, what: &str) -> Result<LocalCopy> {
        use std::os::unix::fs::DirBuilderExt;
        sweep_local_copies();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("snapport-object-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("making {}", dir.display()))?;
        let copy = LocalCopy {
            file: dir.join("object"),
            _on_signal: crate::interrupt::remove_tree_on_signal(&dir),
            dir,
        };
        let mut out = std::fs::File::create_new(&copy.file)
            .with_context(|| format!("making {}", copy.file.display()))?;
        std::io::copy(&mut reader, &mut out).with_context(|| {
            format!(
                "storing {what} in {} to read it as a file",
                copy.dir.display()
            )
        })?;
        Ok(copy)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// Removes the folders of local copies whose process is gone (killed before it could:
/// they may hold decrypted data). A folder whose PID is alive, or was reused, stays.
fn sweep_local_copies() {
    let Ok(list) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for item in list.flatten() {
        let name = item.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("snapport-object-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(item.path());
        }
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999P").is_err());
    }
}
