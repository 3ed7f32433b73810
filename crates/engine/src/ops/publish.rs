//! `download --publish`: serve an export over HTTP(S) instead of writing it.
//!
//! raw is served straight from the volume: one thread owns the plugin and answers map
//! questions, the server's readers read the devices themselves, any range at any time,
//! so a 500 GiB disk is published at once and never copied. Its SHA-256 is computed on
//! the side (a low-priority pass over the disk) and announced when known. raw.zst and
//! qcow2 outputs are not random-access while being produced, so they are exported first
//! into an unlinked spool file, then served from it with their SHA-256. A VM bundle is
//! made in the spool folder too (a tar needs its members' sizes).
//!
//! Encrypted (`--encrypt-to`), every item is prepared whole in the spool folder as an age
//! file, served as NAME.age with the SHA-256 and content digest of its encrypted bytes:
//! nothing derived from the plaintext is served.
//!
//! [`prepare`] makes the item and binds the server, [`Publication::serve`] serves it until
//! the TTL, the download limit or a signal ends it.

use crate::address::Address;
use crate::format::ImageFormat;
use crate::serve::{sh, ServeOptions, Started};
use crate::Engine;
use crate::{format_err, Context as _, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use snapport_core::digest::ContentHasher;
use snapport_core::encryption::{Recipients, Sealed};
use snapport_core::export::{self, ExportOptions, Target};
use snapport_core::output::PendingFile;
use snapport_core::progress::Progress;
use snapport_core::volume_reader::{serve_plans, VolumeReader};
use snapport_host::Instance;
use snapport_publish::content::{FileContent, Item, Sha256State, VolumeContent};
use snapport_publish::server::{Server, StatusHandle, Stopped};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

/// What to publish.
#[derive(Clone, Debug)]
pub enum PublishSource {
    /// A disk (vd/), image (vi/) or disk snapshot (vds/) of a pool, in a format.
    Volume {
        /// What to export.
        address: Address,
        /// The pool holding it.
        pool: String,
        /// The image format served.
        format: ImageFormat,
    },
    /// A VM (or VM snapshot) as a bundle.
    Vm {
        /// The VM's name.
        vm: String,
        /// The VM snapshot, for vms/VM@SNAPSHOT.
        snapshot: Option<String>,
        /// The disks' format inside the bundle: raw.zst or qcow2.
        payload: ImageFormat,
    },
}

/// An export to serve, and how.
#[derive(Clone, Debug)]
pub struct PublishRequest {
    /// What to serve.
    pub source: PublishSource,
    /// zstd level for raw.zst.
    pub zstd_level: i32,
    /// How the server listens.
    pub serve: ServeOptions,
    /// Stop after this many complete downloads.
    pub max_downloads: Option<u64>,
    /// Where raw.zst, qcow2 and bundles are prepared (default: the system's temporary
    /// folder). The file never has a name.
    pub spool_dir: Option<PathBuf>,
    /// Serve the export encrypted to these age recipients (`age1...`, ssh-ed25519,
    /// ssh-rsa): always spooled, served as NAME.age.
    pub encrypt_to: Vec<String>,
    /// Encrypt to the recipients in these files.
    pub encrypt_to_files: Vec<PathBuf>,
}

/// A publish ready to serve: the JSON document `download --publish` prints first.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    /// What is served: vd/…, vds/…, vm/… or vms/….
    pub source: String,
    /// Its pool (none for a VM).
    pub pool: Option<String>,
    /// The file name it is served under.
    pub name: String,
    /// `raw`, `qcow2`, `raw.zst` or `bundle`.
    pub format: String,
    /// Bytes served.
    pub size: u64,
    /// The item's URL (without the token).
    pub url: String,
    /// The index page, token included.
    pub index: String,
    /// The bearer token.
    pub token: String,
    /// The item's strong ETag.
    pub etag: String,
    /// The certificate's SHA-256 fingerprint (TLS only).
    pub fingerprint: Option<String>,
    /// The key pin curl takes (TLS only).
    pub pinned_pubkey: Option<String>,
    /// Seconds without access before the server stops.
    pub ttl_seconds: u64,
    /// Complete downloads before the server stops.
    pub max_downloads: Option<u64>,
    /// A ready-to-paste curl command.
    pub curl: String,
    /// A ready-to-paste `snapport fetch` command.
    pub fetch: String,
}

/// How a publish ended: the JSON document `download --publish` prints last.
#[derive(Clone, Debug, Serialize)]
pub struct PublishEnd {
    /// `ttl` or `downloads`.
    pub stopped: &'static str,
    /// Complete downloads served.
    pub downloads: u64,
    /// Bytes sent in all.
    pub bytes_sent: u64,
    /// Why the server stopped.
    #[serde(skip)]
    pub reason: Stopped,
}

/// A bound server with its one item, not serving yet.
pub struct Publication {
    server: Server,
    report: PublishReport,
}

impl Publication {
    /// What clients need to download it.
    pub fn report(&self) -> &PublishReport {
        &self.report
    }

    /// The live counters (bytes sent, downloads, clients, whether the SHA-256 is known).
    pub fn status(&self) -> StatusHandle {
        self.server.status_handle()
    }

    /// Serves until the TTL, the download limit or a signal ends it.
    pub fn serve(self) -> Result<PublishEnd> {
        let status = self.server.status_handle();
        let reason = self.server.run()?;
        let st = status.status();
        Ok(PublishEnd {
            stopped: match reason {
                Stopped::Expired(_) => "ttl",
                _ => "downloads",
            },
            downloads: st.items[0].downloads,
            bytes_sent: st.items[0].bytes_sent,
            reason,
        })
    }
}

/// Prepares what `req` publishes (spooling it first unless it is raw) and binds the
/// server; stages go to `progress`.
pub fn prepare(
    engine: &Engine,
    req: &PublishRequest,
    progress: &mut dyn Progress,
) -> Result<Publication> {
    let spool_dir = || req.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let recipients = Recipients::parse(&req.encrypt_to, &req.encrypt_to_files)?;
    // Encrypted, the item is an age file (served as NAME.age), prepared whole first.
    let suffix = if recipients.is_some() { ".age" } else { "" };
    let (source, pool, name, format, item) = match &req.source {
        PublishSource::Volume {
            address,
            pool,
            format,
        } => {
            let name = format!("{}{suffix}", item_name(address, *format));
            let item = match (format, &recipients) {
                (ImageFormat::Raw, None) => raw_item(engine, pool, address, &name)?,
                _ => spooled_item(
                    engine,
                    pool,
                    address,
                    &name,
                    format.export_format(req.zstd_level),
                    (&spool_dir(), recipients.as_ref()),
                    progress,
                )?,
            };
            let (source, pool) = (address.to_string(), Some(pool.clone()));
            (source, pool, name, format.name(), item)
        }
        PublishSource::Vm {
            vm,
            snapshot,
            payload,
        } => {
            let (source, name) = match snapshot {
                Some(s) => (format!("vms/{vm}@{s}"), url_safe(&format!("{vm}@{s}"))),
                None => (format!("vm/{vm}"), url_safe(vm)),
            };
            let name = format!("{name}.tar{suffix}");
            let item = bundle_item(
                engine,
                (vm, snapshot.as_deref()),
                (&source, &name),
                payload.export_format(req.zstd_level),
                (&spool_dir(), recipients.as_ref()),
                progress,
            )?;
            (source, None, name, "bundle", item)
        }
    };
    let size = item.content.size();
    let etag = item.etag.clone();
    let started = crate::serve::start(&req.serve, vec![item], Vec::new(), req.max_downloads)?;
    let report = describe(
        started.base.clone(),
        &started,
        source,
        pool,
        name,
        format,
        size,
        etag,
        req,
    );
    Ok(Publication {
        server: started.server,
        report,
    })
}

/// The report for a bound server: URLs and ready-to-paste commands.
#[allow(clippy::too_many_arguments)]
fn describe(
    base: String,
    started: &Started,
    source: String,
    pool: Option<String>,
    name: String,
    format: &str,
    size: u64,
    etag: String,
    req: &PublishRequest,
) -> PublishReport {
    let token = &started.token;
    let url = format!("{base}/{name}");
    let index = format!("{base}/?token={token}");
    let bearer = sh(&format!("Authorization: Bearer {token}"));
    let with_token = sh(&format!("{url}?token={token}"));
    let tls = started.tls.as_ref();
    let (curl, fetch) = match tls {
        Some(t) => (
            format!(
                "curl --fail -k --pinnedpubkey {} -H {bearer} -o {} {}",
                sh(&t.pinned_pubkey),
                sh(&name),
                sh(&url)
            ),
            format!(
                "snapport fetch --fingerprint {} {with_token} -o {}",
                t.fingerprint,
                sh(&name)
            ),
        ),
        None => (
            format!("curl --fail -H {bearer} -o {} {}", sh(&name), sh(&url)),
            format!("snapport fetch {with_token} -o {}", sh(&name)),
        ),
    };
    PublishReport {
        source,
        pool,
        name,
        format: format.to_string(),
        size,
        url,
        index,
        token: token.clone(),
        etag,
        fingerprint: tls.map(|t| t.fingerprint.clone()),
        pinned_pubkey: tls.map(|t| t.pinned_pubkey.clone()),
        ttl_seconds: req.serve.ttl.as_secs(),
        max_downloads: req.max_downloads,
        curl,
        fetch,
    }
}

/// The file name an export is served under: `web.raw`, `web@snap1.raw.zst`.
fn item_name(address: &Address, format: ImageFormat) -> String {
    let base = match address.snapshot() {
        Some(s) => format!("{}@{s}", address.disk()),
        None => address.disk().to_string(),
    };
    format!("{}.{}", url_safe(&base), format.name())
}

/// `name` with anything but letters, digits, `._-@` replaced, and no leading dot: a
/// path segment that needs no escaping.
fn url_safe(name: &str) -> String {
    let base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    base.trim_start_matches('.').to_string()
}

/// A strong ETag for bytes read from a volume: the same for the same devices, unchanged
/// (device, inode, size, modification and change times), so a client can resume against
/// a later publish of the same disk; any write to a device changes it.
fn identity_etag(
    pool: &str,
    address: &Address,
    size: u64,
    devices: &[Arc<snapport_core::extent::Device>],
) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!(
        "snapport-publish-1\0{pool}\0{address}\0raw\0{size}\0"
    ));
    for d in devices {
        let m = d
            .file
            .metadata()
            .with_context(|| format!("reading the metadata of {}", d.name))?;
        h.update(format!(
            "{}:{}:{}:{}.{}:{}.{}\0",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ));
    }
    Ok(format!("\"raw-{}\"", &hex::encode(h.finalize())[..40]))
}

/// What the map thread reports once the volume is open.
type Opened = Result<(VolumeReader, String)>;

/// Owns the plugin instance for a raw publish: opens the volume, reports, then answers
/// map requests until the server's readers are gone.
fn map_thread(
    mut instance: Instance,
    home: PathBuf,
    pool: String,
    address: Address,
    opened: mpsc::Sender<Opened>,
) {
    let backend = crate::snapshots::backend_address(&home, &pool, &mut instance, &address);
    let mut volume = match backend.and_then(|backend| {
        instance
            .open_volume(backend.disk(), backend.snapshot())
            .with_context(|| format!("opening {address}"))
    }) {
        Ok(v) => v,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let checked = crate::volume::check_kind(&address, volume.info.kind)
        .and_then(|()| identity_etag(&pool, &address, volume.info.size, &volume.devices()));
    let etag = match checked {
        Ok(e) => e,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let (reader, requests) = VolumeReader::new(volume.info.size);
    if opened.send(Ok((reader, etag))).is_ok() {
        serve_plans(&mut volume, requests);
    }
}

/// Lowers the calling thread's CPU priority: the digest pass yields to serving.
fn background_priority() {
    // SAFETY: plain syscalls on the calling thread; failure only leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// A raw item read from the volume as clients ask.
fn raw_item(engine: &Engine, pool: &str, address: &Address, name: &str) -> Result<Item> {
    let instance = engine.pool(pool)?;
    let (tx, rx) = mpsc::channel();
    let (home, p, a) = (
        engine.config.home.clone(),
        pool.to_string(),
        address.clone(),
    );
    std::thread::Builder::new()
        .name("volume-map".into())
        .spawn(move || map_thread(instance, home, p, a, tx))
        .context("starting the map thread")?;
    let (reader, etag) = rx
        .recv()
        .map_err(|_| format_err!("the map thread stopped while opening {address}"))??;
    let item = Item::new(name, Arc::new(VolumeContent(reader)), etag);
    digest_pass(&item, None)?;
    Ok(item)
}

/// Computes the item's digests in one background pass at low priority: the content
/// digest, and the SHA-256 unless it is `known` already (a spooled export's). Both are
/// published together, content digest first, so a client that sees the SHA-256 has both.
/// The bytes are read once; with both digests to take, the content digest is taken on a
/// second thread from the same blocks, so the two hashes run on two cores instead of one
/// after the other on one (`cargo xtask bench --only publish` times it against one
/// `openssl dgst -sha256` pass).
fn digest_pass(item: &Item, known: Option<String>) -> Result<()> {
    let content = Arc::clone(&item.content);
    let (sha, chunked) = (Arc::clone(&item.sha256), Arc::clone(&item.content_digest));
    std::thread::Builder::new()
        .name("digests".into())
        .spawn(move || {
            background_priority();
            let mut h = Sha256::new();
            let hash_content = |blocks: mpsc::Receiver<Arc<Vec<u8>>>| {
                let mut c = ContentHasher::new();
                for b in blocks {
                    c.update(&b);
                }
                c.finish()
            };
            let (r, digest) = std::thread::scope(|scope| {
                // Blocks are at most a few MiB: eight in flight bound the memory.
                let (tx, rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(8);
                let hasher = std::thread::Builder::new()
                    .name("content-digest".into())
                    .spawn_scoped(scope, move || {
                        background_priority();
                        hash_content(rx)
                    });
                let hasher = match hasher {
                    Ok(t) => t,
                    Err(e) => return (Err(std::io::Error::other(e)), None),
                };
                let r = content.read_range(0, content.size(), &mut |b| {
                    let b = Arc::new(b);
                    tx.send(Arc::clone(&b))
                        .map_err(|_| std::io::Error::other("the content-digest thread stopped"))?;
                    if known.is_none() {
                        h.update(&*b);
                    }
                    Ok(())
                });
                drop(tx);
                let digest = hasher.join().ok();
                (r, digest)
            });
            let r = r.and_then(|()| {
                digest.ok_or_else(|| std::io::Error::other("the content-digest thread panicked"))
            });
            let state = match r {
                Ok(d) => {
                    *chunked.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
                    Sha256State::Known(known.unwrap_or_else(|| hex::encode(h.finalize())))
                }
                Err(e) => Sha256State::Failed(e.to_string()),
            };
            *sha.lock().unwrap_or_else(|p| p.into_inner()) = state;
        })
        .context("starting the digest thread")?;
    Ok(())
}

/// Exports into an unlinked spool file and serves that.
fn spooled_item(
    engine: &Engine,
    pool: &str,
    address: &Address,
    name: &str,
    format: export::Format,
    (dir, recipients): (&Path, Option<&Recipients>),
    progress: &mut dyn Progress,
) -> Result<Item> {
    let mut instance = engine.pool(pool)?;
    let backend =
        crate::snapshots::backend_address(&engine.config.home, pool, &mut instance, address)?;
    let mut volume = instance
        .open_volume(backend.disk(), backend.snapshot())
        .with_context(|| format!("opening {address}"))?;
    crate::volume::check_kind(address, volume.info.kind)?;
    let options = ExportOptions {
        format,
        content_digest: false,
        // Encrypted, the SHA-256 served is the ciphertext's, taken by the age writer.
        stream_sha256: recipients.is_none(),
        workers: 0,
        sync: false,
    };
    progress.stage(&format!("preparing {name} in {} ...", dir.display()));
    let spool = PendingFile::spool(dir, &format!("publish-{name}"))?;
    let sealed = seal(&spool, recipients)?;
    let target = match &sealed {
        Some(s) => Target::Stream(Box::new(s.writer())),
        None => Target::Pending(&spool),
    };
    let summary = export::export(&mut volume, target, &options, progress)
        .with_context(|| format!("exporting {address} to {}", dir.display()))?;
    let sha = match &sealed {
        Some(s) => s.finish()?.0,
        None => summary.stream_sha256,
    }
    .ok_or_else(|| format_err!("the export computed no SHA-256"))?;
    // Served from the descriptor of a file that never has a name: its space goes when
    // the server ends, however it ends.
    let content = FileContent::new(spool.into_file()).context("reading the spool file's size")?;
    let item = Item::new(name, Arc::new(content), format!("\"sha256-{sha}\""));
    digest_pass(&item, Some(sha))?;
    Ok(item)
}

/// The age writer into `spool`, hashing what it writes, when there are `recipients`.
fn seal(spool: &PendingFile, recipients: Option<&Recipients>) -> Result<Option<Sealed<File>>> {
    recipients
        .map(|r| {
            let out = spool.file().try_clone().context("opening the spool file")?;
            Ok(Sealed::new(r, out, true)?)
        })
        .transpose()
}

/// Makes the bundle of `vm` (at a VM snapshot, if any) in an unlinked spool file and
/// serves that; `source` names it in errors, `name` is what it is served under.
fn bundle_item(
    engine: &Engine,
    (vm, snapshot): (&str, Option<&str>),
    (source, name): (&str, &str),
    payload: export::Format,
    (dir, recipients): (&Path, Option<&Recipients>),
    progress: &mut dyn Progress,
) -> Result<Item> {
    progress.stage(&format!("preparing {name} in {} ...", dir.display()));
    let spool = PendingFile::spool(dir, &format!("publish-{name}"))?;
    let sealed = seal(&spool, recipients)?;
    let target = match &sealed {
        Some(s) => crate::bundle::BundleTarget::Stream(Box::new(s.writer()), dir.to_path_buf()),
        None => crate::bundle::BundleTarget::File(&spool),
    };
    let done = crate::bundle::export_vm(engine, vm, snapshot, target, payload, progress)
        .with_context(|| format!("exporting {source} to {}", dir.display()))?;
    let sha = match &sealed {
        Some(s) => s
            .finish()?
            .0
            .ok_or_else(|| format_err!("the bundle's SHA-256 was not taken"))?,
        None => done.sha256,
    };
    // Served from the descriptor of a file that never has a name.
    let content = FileContent::new(spool.into_file()).context("reading the spool file's size")?;
    let item = Item::new(name, Arc::new(content), format!("\"sha256-{sha}\""));
    digest_pass(&item, Some(sha))?;
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let a = Address::parse("vds/web@before upgrade").unwrap();
        assert_eq!(
            item_name(&a, ImageFormat::RawZst),
            "web@before_upgrade.raw.zst"
        );
        assert_eq!(url_safe(".hidden vm"), "hidden_vm");
    }
}
