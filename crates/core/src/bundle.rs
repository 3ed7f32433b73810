//! Whole-VM bundles: one tar that stock tools can check (`tar -x`, then
//! `sha256sum -c SHA256SUMS`) and snapport can import in one pass, from a file or a pipe.
//!
//! Members, in this order:
//!
//! ```text
//! SHA256SUMS        sha256sum lines for every other member
//! manifest.json     format, version, the VM, its disks (size, payload file, content
//!                   digest, SHA-256 of the payload), the snapshot it was taken from
//! vm.json           the VM's config as its owner wrote it
//! disks/NAME.EXT    one payload per disk, in the manifest's order (raw.zst or qcow2)
//! ```
//!
//! The sums come first so a reader checks every member as it streams past, before it
//! acts on it; the payloads' hashes are known when the tar is written because each
//! payload is made before the archive is.

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

pub const FORMAT: &str = "snapport-bundle";
pub const VERSION: u32 = 1;
pub const SUMS: &str = "SHA256SUMS";
pub const MANIFEST: &str = "manifest.json";
pub const CONFIG: &str = "vm.json";
/// SHA256SUMS, the manifest and the config are small; more is a damaged or hostile file.
pub const MAX_SMALL_MEMBER: u64 = 1 << 20;
const BLOCK: u64 = 512;
/// The longest member name a GNU long-name record may give.
const MAX_NAME: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The VM's name when the bundle was made.
    pub vm: String,
    pub created_unix_ms: u64,
    /// The VM snapshot the disks come from (`vms/VM@SNAP`), or none for the live disks.
    pub snapshot: Option<String>,
    /// Whether the disks were captured consistently (see `snapshot create`).
    pub consistent: bool,
    /// `raw.zst` or `qcow2`.
    pub payload: String,
    pub disks: Vec<BundleDisk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDisk {
    pub name: String,
    pub pool: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// The payload's member name (`disks/NAME.raw.zst`).
    pub file: String,
    /// The disk's content digest (`sha256-64k-4m:...`), checked again on import.
    pub content_digest: String,
    /// SHA-256 of the payload's bytes, as SHA256SUMS has it.
    pub sha256: String,
}

fn bad(what: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("not a valid snapport bundle: {}", what.into()),
    )
}

/// A member name a bundle may use: relative, plain components, nothing that climbs out.
pub fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 255
        && !p.starts_with('/')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// Parses `sha256sum` output: `HEX  NAME` (or `HEX *NAME`) per line.
pub fn parse_sums(text: &str) -> Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let (hash, rest) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("{SUMS} line {} has no file name", n + 1)))?;
        let name = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'));
        let ok_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        match name {
            Some(name) if ok_hash && safe_path(name) => {
                if sums
                    .insert(name.to_string(), hash.to_ascii_lowercase())
                    .is_some()
                {
                    return Err(bad(format!("{SUMS} lists {name} twice")));
                }
            }
            _ => return Err(bad(format!("{SUMS} line {} is not `SHA256  NAME`", n + 1))),
        }
    }
    Ok(sums)
}

/// Formats [`parse_sums`]'s input.
pub fn format_sums(sums: &[(String, String)]) -> String {
    sums.iter()
        .map(|(name, h)| format!("{h}  {name}\n"))
        .collect()
}

/// Writes a bundle's members as a ustar archive (GNU long names past 100 bytes).
pub struct BundleWriter<W: Write> {
    tar: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(out: W, mtime_unix: u64) -> BundleWriter<W> {
        BundleWriter {
            tar: tar::Builder::new(out),
            mtime: mtime_unix,
        }
    }

    /// Adds a member of `len` bytes read from `data`.
    pub fn add(&mut self, path: &str, len: u64, data: &mut dyn Read) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(self.mtime);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, path, data.take(len))
            .map_err(|e| Error::io(format!("writing {path} into the bundle"), e))
    }

    /// Closes the archive (its two zero blocks) and returns the output.
    pub fn finish(self) -> Result<W> {
        self.tar
            .into_inner()
            .map_err(|e| Error::io("closing the bundle", e))
    }
}

/// A member's name and size; its bytes are read from the [`MemberReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    pub size: u64,
}

/// Reads a tar's members in order from any reader (a pipe included): every header's
/// checksum is checked, only regular files and GNU long names are accepted, and a member
/// reads as exactly its own bytes (it implements `Read` for the current member).
pub struct MemberReader<R> {
    inner: R,
    /// Bytes of the current member not yet read, and the padding after them.
    left: u64,
    padding: u64,
}

impl<R: Read> MemberReader<R> {
    pub fn new(inner: R) -> MemberReader<R> {
        MemberReader {
            inner,
            left: 0,
            padding: 0,
        }
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink())
            .map_err(|e| Error::io("reading the bundle", e))?;
        if copied != n {
            return Err(bad("it ends inside a member"));
        }
        Ok(())
    }

    fn block(&mut self, buf: &mut [u8; BLOCK as usize], what: &str) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the bundle", e)),
            }
        }
        match got {
            0 => Ok(false),
            n if n == buf.len() => Ok(true),
            _ => Err(bad(format!("it ends inside {what}"))),
        }
    }

    /// The next member, after skipping what is left of the current one; `None` at the
    /// archive's end (a zero block, or the end of the input after the last member).
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        let rest = self.left + self.padding;
        self.skip(rest)?;
        self.left = 0;
        self.padding = 0;
        let mut long_name: Option<String> = None;
        loop {
            let mut raw = [0u8; BLOCK as usize];
            if !self.block(&mut raw, "a header")? {
                return match long_name {
                    Some(_) => Err(bad("it ends after a long name")),
                    None => Ok(None),
                };
            }
            if raw.iter().all(|&b| b == 0) {
                return match long_name {
                    Some(_) => Err(bad("it ends after a long name")),
                    None => Ok(None),
                };
            }
            let header = tar::Header::from_byte_slice(&raw);
            let stored = header
                .cksum()
                .map_err(|_| bad("a header's checksum field is not a number"))?;
            let mut check = header.clone();
            check.set_cksum();
            if check.cksum().ok() != Some(stored) {
                return Err(bad("a header's checksum is wrong (damaged archive)"));
            }
            let size = header
                .entry_size()
                .map_err(|_| bad("a header's size field is not a number"))?;
            let padding = (BLOCK - size % BLOCK) % BLOCK;
            match header.entry_type() {
                tar::EntryType::GNULongName => {
                    if size > MAX_NAME || long_name.is_some() {
                        return Err(bad("a long name record out of place or too long"));
                    }
                    let mut name = vec![0u8; size as usize];
                    self.inner
                        .read_exact(&mut name)
                        .map_err(|_| bad("it ends inside a long name"))?;
                    self.skip(padding)?;
                    while name.last() == Some(&0) {
                        name.pop();
                    }
                    let name =
                        String::from_utf8(name).map_err(|_| bad("a member name is not UTF-8"))?;
                    long_name = Some(name);
                }
                tar::EntryType::Regular => {
                    let path = match long_name.take() {
                        Some(n) => n,
                        None => {
                            let p = header.path_bytes().into_owned();
                            String::from_utf8(p).map_err(|_| bad("a member name is not UTF-8"))?
                        }
                    };
                    if !safe_path(&path) {
                        return Err(bad(format!(
                            "member name {path:?} is not a plain relative path"
                        )));
                    }
                    self.left = size;
                    self.padding = padding;
                    return Ok(Some(Member { path, size }));
                }
                other => {
                    return Err(bad(format!(
                        "a member of type {:?}: a bundle holds regular files only",
                        other.as_byte() as char
                    )))
                }
            }
        }
    }

    /// The current member's bytes, whole, when it is small (names, manifests, sums).
    pub fn read_small(&mut self, member: &Member) -> Result<Vec<u8>> {
        if member.size > MAX_SMALL_MEMBER {
            return Err(bad(format!(
                "{} claims {} bytes (at most {MAX_SMALL_MEMBER})",
                member.path, member.size
            )));
        }
        let mut v = Vec::with_capacity(member.size as usize);
        self.read_to_end(&mut v)
            .map_err(|e| Error::io(format!("reading {} from the bundle", member.path), e))?;
        if v.len() as u64 != member.size {
            return Err(bad(format!("it ends inside {}", member.path)));
        }
        Ok(v)
    }
}

impl<R: Read> Read for MemberReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the bundle ends inside a member",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Checks a manifest against what this snapport reads and what SHA256SUMS lists.
pub fn check_manifest(m: &Manifest, sums: &BTreeMap<String, String>) -> Result<()> {
    if m.format != FORMAT || m.version != VERSION {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "a bundle of format {:?} version {}; this snapport reads {FORMAT} version {VERSION}",
                m.format, m.version
            ),
        ));
    }
    if m.payload != "raw.zst" && m.payload != "qcow2" {
        return Err(bad(format!("payload format {:?}", m.payload)));
    }
    let named = |what: String, name: &str| {
        crate::name::check(
            &format!("not a valid snapport bundle: its manifest's {what}"),
            name,
        )
    };
    named("VM".into(), &m.vm)?;
    let mut files = std::collections::BTreeSet::new();
    for d in &m.disks {
        named("disk".into(), &d.name)?;
        named(format!("pool of disk {:?}", d.name), &d.pool)?;
        let fine = safe_path(&d.file)
            && d.file.starts_with("disks/")
            && files.insert(d.file.as_str())
            && sums.get(&d.file) == Some(&d.sha256);
        if !fine {
            return Err(bad(format!(
                "disk {:?}: its payload {:?} is not a distinct disks/ member listed in {SUMS} with its SHA-256",
                d.name, d.file
            )));
        }
    }
    for name in sums.keys() {
        if name != MANIFEST && name != CONFIG && !files.contains(name.as_str()) {
            return Err(bad(format!(
                "{SUMS} lists {name}, which the manifest does not name"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_and_damage_is_named() {
        let mut w = BundleWriter::new(Vec::new(), 1_700_000_000);
        w.add("a", 3, &mut &b"abc"[..]).unwrap();
        let long = format!("disks/{}.raw.zst", "x".repeat(150));
        w.add(&long, 600, &mut &[7u8; 600][..]).unwrap();
        let bytes = w.finish().unwrap();

        let mut r = MemberReader::new(&bytes[..]);
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.path.as_str(), m.size), ("a", 3));
        assert_eq!(r.read_small(&m).unwrap(), b"abc");
        // The second member's data is skipped, not read.
        let m = r.next_member().unwrap().unwrap();
        assert_eq!((m.path.as_str(), m.size), (long.as_str(), 600));
        assert_eq!(r.next_member().unwrap(), None);

        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        let e = MemberReader::new(&flipped[..]).next_member().unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        let e = {
            let mut r = MemberReader::new(&bytes[..700]);
            r.next_member().unwrap();
            r.next_member().and_then(|_| r.next_member()).unwrap_err()
        };
        assert!(e.to_string().contains("ends inside"), "{e}");
    }

    #[test]
    fn sums_parse_strictly() {
        let h = "a".repeat(64);
        let s = parse_sums(&format!("{h}  disks/x.raw.zst\n{h} *vm.json\n")).unwrap();
        assert_eq!(s.len(), 2);
        for bad in [
            format!("{h}  ../etc/passwd"),
            format!("{h}  /abs"),
            format!("{}  x", "g".repeat(64)),
            "abc  x".to_string(),
            format!("{h}  x\n{h}  x"),
        ] {
            assert!(parse_sums(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn manifest_names_follow_the_name_rule() {
        let h = "a".repeat(64);
        let disk = |name: &str, pool: &str| BundleDisk {
            name: name.into(),
            pool: pool.into(),
            size: 512,
            file: "disks/0.raw.zst".into(),
            content_digest: String::new(),
            sha256: h.clone(),
        };
        let manifest = |vm: &str, d: BundleDisk| Manifest {
            format: FORMAT.into(),
            version: VERSION,
            vm: vm.into(),
            created_unix_ms: 0,
            snapshot: None,
            consistent: false,
            payload: "raw.zst".into(),
            disks: vec![d],
        };
        let sums = parse_sums(&format!("{h}  disks/0.raw.zst\n")).unwrap();
        check_manifest(&manifest("web", disk("root", "default")), &sums).unwrap();
        for (m, what) in [
            (manifest("../web", disk("root", "default")), "VM \"../web\""),
            (manifest("web", disk("a/b", "default")), "disk \"a/b\""),
            (
                manifest("web", disk("root", "..")),
                "pool of disk \"root\" \"..\"",
            ),
            (manifest("web", disk("r\u{1b}[0m", "default")), "control"),
        ] {
            let e = check_manifest(&m, &sums).unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("not a valid name"), "{e}");
        }
    }
}
