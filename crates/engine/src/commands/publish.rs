//! `download --publish`: serve an export over HTTP(S) instead of writing it.
//!
//! raw is served straight from the volume: one thread owns the plugin and answers map
//! questions, the server's readers read the devices themselves, any range at any time,
//! so a 500 GiB disk is published at once and never copied. Its SHA-256 is computed on
//! the side (a low-priority pass over the disk) and announced when known. raw.zst and
//! qcow2 outputs are not random-access while being produced, so they are exported first
//! into an unlinked spool file (`--spool-dir`), then served from it with their SHA-256.

use crate::address::Address;
use crate::commands::download::FormatArg;
use crate::commands::human;
use crate::Engine;
use crate::{format_err, Context as _, Result};
use sha2::{Digest, Sha256};
use snapport_core::digest::ContentHasher;
use snapport_core::export::{self, ExportOptions, Format, Target};
use snapport_core::output::PendingFile;
use snapport_core::volume_reader::{serve_plans, VolumeReader};
use snapport_publish::content::{FileContent, Item, Sha256State, VolumeContent};
use snapport_publish::server::{Config, Server, Stopped};
use snapport_publish::tls::Identity;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[derive(clap::Args)]
pub struct PublishArgs {
    /// Serve over HTTPS (a token, a self-signed certificate to pin) instead of writing a
    /// file; prints ready-to-paste curl and `snapport fetch` commands.
    #[arg(long)]
    pub publish: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Stop after this many complete downloads.
    #[arg(long, requires = "publish")]
    pub max_downloads: Option<u64>,
    /// Where raw.zst and qcow2 exports are prepared before being served (default: the
    /// system's temporary folder). The file never has a name: nothing stays behind.
    #[arg(long, requires = "publish")]
    pub spool_dir: Option<PathBuf>,
}

/// How a publish server listens and protects itself (download and upload alike).
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where to listen, HOST:PORT (port 0 picks a free one).
    #[arg(
        long = "address",
        id = "listen",
        default_value = "127.0.0.1:0",
        requires = "publish"
    )]
    pub listen: String,
    /// Stop after this long without an access (30s, 10m, 2h, 1d).
    #[arg(long, default_value = "15m", value_parser = parse_duration, requires = "publish")]
    pub ttl: Duration,
    /// TLS certificate chain (PEM) to serve instead of a self-signed one.
    #[arg(long, requires_all = ["publish", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, PKCS#8).
    #[arg(long, requires_all = ["publish", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP: token and bytes travel in clear. Only on a network you trust.
    #[arg(long, requires = "publish", conflicts_with = "tls_cert")]
    pub no_tls: bool,
    /// Clients served at once; more get 503 (try again).
    #[arg(long, default_value_t = 32, requires = "publish")]
    pub max_clients: usize,
    /// Deadline for a TLS handshake, request headers, or a transfer that stalls.
    #[arg(long, default_value = "30s", value_parser = parse_duration, hide = true)]
    pub io_timeout: Duration,
}

/// `30s`, `10m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m, 2h or 1d"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("{s:?} is too long"))?;
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

/// A duration as `parse_duration` reads it: `15m`, `2h`, `90s`.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// The file name an export is served under: `web.raw`, `web@snap1.raw.zst`.
fn item_name(address: &Address, format: FormatArg) -> String {
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
fn map_thread(pool: String, address: Address, opened: mpsc::Sender<Opened>) {
    let setup = || -> Result<(Engine, String)> {
        let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
        Ok((ctx, pool.clone()))
    };
    let (ctx, pool) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let mut instance = match ctx.pool(&pool) {
        Ok(i) => i,
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    let backend =
        crate::snapshots::backend_address(&ctx.config.home, &pool, &mut instance, &address);
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
    let checked = crate::commands::create::check_kind(&address, volume.info.kind)
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

fn raw_item(pool: &str, address: &Address, name: &str) -> Result<Item> {
    let (tx, rx) = mpsc::channel();
    let (p, a) = (pool.to_string(), address.clone());
    std::thread::Builder::new()
        .name("volume-map".into())
        .spawn(move || map_thread(p, a, tx))
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
fn digest_pass(item: &Item, known: Option<String>) -> Result<()> {
    let content = Arc::clone(&item.content);
    let (sha, chunked) = (Arc::clone(&item.sha256), Arc::clone(&item.content_digest));
    std::thread::Builder::new()
        .name("digests".into())
        .spawn(move || {
            background_priority();
            let mut h = Sha256::new();
            let mut c = ContentHasher::new();
            let r = content.read_range(0, content.size(), &mut |b| {
                if known.is_none() {
                    h.update(&b);
                }
                c.update(&b);
                Ok(())
            });
            *chunked.lock().unwrap_or_else(|p| p.into_inner()) = r.is_ok().then(|| c.finish());
            let state = match r {
                Ok(()) => Sha256State::Known(known.unwrap_or_else(|| hex::encode(h.finalize()))),
                Err(e) => Sha256State::Failed(e.to_string()),
            };
            *sha.lock().unwrap_or_else(|p| p.into_inner()) = state;
        })
        .context("starting the digest thread")?;
    Ok(())
}

/// Exports into an unlinked spool file and serves that.
fn spooled_item(
    pool: &str,
    address: &Address,
    name: &str,
    format: Format,
    args: &PublishArgs,
    quiet: bool,
) -> Result<Item> {
    let dir = args.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    let mut instance = ctx.pool(pool)?;
    let backend =
        crate::snapshots::backend_address(&ctx.config.home, pool, &mut instance, address)?;
    let mut volume = instance
        .open_volume(backend.disk(), backend.snapshot())
        .with_context(|| format!("opening {address}"))?;
    crate::commands::create::check_kind(address, volume.info.kind)?;
    let options = ExportOptions {
        format,
        content_digest: false,
        stream_sha256: true,
        workers: 0,
        sync: false,
    };
    if !quiet {
        eprintln!("preparing {name} in {} ...", dir.display());
    }
    let mut progress = crate::commands::new_progress(quiet);
    let spool = PendingFile::spool(&dir, &format!("publish-{name}"))?;
    let summary = export::export(
        &mut volume,
        Target::Pending(&spool),
        &options,
        progress.as_mut(),
    )
    .with_context(|| format!("exporting {address} to {}", dir.display()))?;
    let sha = summary
        .stream_sha256
        .ok_or_else(|| format_err!("the export computed no SHA-256"))?;
    // Served from the descriptor of a file that never has a name: its space goes when
    // the server ends, however it ends.
    let content = FileContent::new(spool.into_file()).context("reading the spool file's size")?;
    let item = Item::new(name, Arc::new(content), format!("\"sha256-{sha}\""));
    digest_pass(&item, Some(sha))?;
    Ok(item)
}

/// The host part of a URL for a bound address: an unspecified address is shown as the
/// machine's name.
fn url_host(addr: std::net::SocketAddr) -> String {
    let ip = addr.ip();
    if ip.is_unspecified() {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = name.trim();
        return if name.is_empty() {
            "localhost".into()
        } else {
            name.into()
        };
    }
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The TLS identity: the given certificate, or a fresh self-signed one.
fn identity(args: &ServeArgs, host: &str) -> Result<Option<Identity>> {
    if args.no_tls {
        return Ok(None);
    }
    Ok(Some(match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Identity::from_pem_files(c, k)?,
        _ => {
            let mut names = vec![
                "localhost".to_string(),
                host.trim_matches(['[', ']']).to_string(),
            ];
            names.dedup();
            Identity::self_signed(&names)?
        }
    }))
}

/// A bound server and what clients need to reach it.
pub struct Started {
    pub server: Server,
    pub base: String,
    pub token: String,
    pub tls: Option<Identity>,
}

impl Started {
    /// The client options that trust this server: a pinned fingerprint, if TLS.
    pub fn fingerprint_arg(&self) -> String {
        match &self.tls {
            Some(t) => format!("--fingerprint {} ", t.fingerprint),
            None => String::new(),
        }
    }
}

/// Binds, makes the TLS identity and the token, and builds the server.
pub fn start(
    serve: &ServeArgs,
    items: Vec<Item>,
    uploads: Vec<Arc<snapport_publish::upload::UploadSlot>>,
    max_downloads: Option<u64>,
) -> Result<Started> {
    let token = snapport_publish::new_token()?;
    // Bind first: the certificate names the address actually bound.
    let listener = std::net::TcpListener::bind(&serve.listen)
        .with_context(|| format!("listening on {}", serve.listen))?;
    let bound = listener
        .local_addr()
        .context("reading the listening address")?;
    let host = url_host(bound);
    let tls = identity(serve, &host)?;
    let config = Config {
        token: token.clone(),
        tls: tls.as_ref().map(|t| Arc::clone(&t.config)),
        ttl: Some(serve.ttl),
        max_downloads,
        max_clients: serve.max_clients,
        io_timeout: serve.io_timeout,
    };
    let server = Server::new(listener, items, uploads, config)
        .with_context(|| format!("publishing on {bound}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(Started {
        server,
        base: format!("{scheme}://{host}:{}", bound.port()),
        token,
        tls,
    })
}

/// Shell-quotes `s` for a printed command line.
pub fn sh(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:@%+=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn serve_export(
    address: &Address,
    pool: &str,
    format: FormatArg,
    zstd_level: i32,
    args: &PublishArgs,
    quiet: bool,
    json: bool,
) -> Result<()> {
    let name = item_name(address, format);
    let item = match format {
        FormatArg::Raw => raw_item(pool, address, &name)?,
        FormatArg::Qcow2 => spooled_item(pool, address, &name, Format::Qcow2, args, quiet)?,
        FormatArg::RawZst => spooled_item(
            pool,
            address,
            &name,
            Format::RawZst { level: zstd_level },
            args,
            quiet,
        )?,
    };
    serve_item(
        &address.to_string(),
        Some(pool),
        &name,
        format.name(),
        item,
        args,
        quiet,
        json,
    )
}

/// `download vm/NAME|vms/VM@SNAP --publish`: the bundle is made in the spool folder
/// (a tar needs its members' sizes), then served like any export.
#[allow(clippy::too_many_arguments)]
pub fn serve_bundle(
    vm: &str,
    snapshot: Option<&str>,
    payload: FormatArg,
    zstd_level: i32,
    args: &PublishArgs,
    quiet: bool,
    json: bool,
) -> Result<()> {
    let source = match snapshot {
        Some(s) => format!("vms/{vm}@{s}"),
        None => format!("vm/{vm}"),
    };
    let name = match snapshot {
        Some(s) => format!("{}.tar", url_safe(&format!("{vm}@{s}"))),
        None => format!("{}.tar", url_safe(vm)),
    };
    let dir = args.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
    let ctx = Engine::new(Some(crate::engine::stderr_logger()))?;
    if !quiet {
        eprintln!("preparing {name} in {} ...", dir.display());
    }
    let spool = PendingFile::spool(&dir, &format!("publish-{name}"))?;
    let done = crate::bundle::export_vm(
        &ctx,
        vm,
        snapshot,
        crate::bundle::BundleTarget::File(&spool),
        crate::commands::bundle_format(payload, zstd_level),
        crate::commands::new_progress(quiet).as_mut(),
    )
    .with_context(|| format!("exporting {source} to {}", dir.display()))?;
    // Served from the descriptor of a file that never has a name.
    let content = FileContent::new(spool.into_file()).context("reading the spool file's size")?;
    let item = Item::new(
        &name,
        Arc::new(content),
        format!("\"sha256-{}\"", done.sha256),
    );
    digest_pass(&item, Some(done.sha256))?;
    serve_item(&source, None, &name, "bundle", item, args, quiet, json)
}

/// Serves one prepared item until the TTL, the download limit or a signal ends it.
#[allow(clippy::too_many_arguments)]
fn serve_item(
    source: &str,
    pool: Option<&str>,
    name: &str,
    format_name: &str,
    item: Item,
    args: &PublishArgs,
    quiet: bool,
    json: bool,
) -> Result<()> {
    let size = item.content.size();
    let etag = item.etag.clone();
    let Started {
        server,
        base,
        token,
        tls,
    } = start(&args.serve, vec![item], Vec::new(), args.max_downloads)?;
    let url = format!("{base}/{name}");
    let index = format!("{base}/?token={token}");
    let (curl, fetch) = match &tls {
        Some(t) => (
            format!(
                "curl --fail -k --pinnedpubkey {} -H {} -o {} {}",
                sh(&t.pinned_pubkey),
                sh(&format!("Authorization: Bearer {token}")),
                sh(name),
                sh(&url)
            ),
            format!(
                "snapport fetch --fingerprint {} {} -o {}",
                t.fingerprint,
                sh(&format!("{url}?token={token}")),
                sh(name)
            ),
        ),
        None => (
            format!(
                "curl --fail -H {} -o {} {}",
                sh(&format!("Authorization: Bearer {token}")),
                sh(name),
                sh(&url)
            ),
            format!(
                "snapport fetch {} -o {}",
                sh(&format!("{url}?token={token}")),
                sh(name)
            ),
        ),
    };
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "source": source,
            "pool": pool,
            "name": name,
            "format": format_name,
            "size": size,
            "url": url,
            "index": index,
            "token": token,
            "etag": etag,
            "fingerprint": tls.as_ref().map(|t| &t.fingerprint),
            "pinned_pubkey": tls.as_ref().map(|t| &t.pinned_pubkey),
            "ttl_seconds": args.serve.ttl.as_secs(),
            "max_downloads": args.max_downloads,
            "curl": curl,
            "fetch": fetch,
        });
        writeln!(out, "{doc}")?;
    } else {
        writeln!(
            out,
            "publishing {source} ({}) as {name} at {url}",
            human(size)
        )?;
        if let Some(t) = &tls {
            writeln!(out, "certificate SHA-256 fingerprint: {}", t.fingerprint)?;
        }
        writeln!(out, "token: {token}")?;
        writeln!(out, "download with curl:\n  {curl}")?;
        writeln!(
            out,
            "or with snapport (resumable, parallel, verified):\n  {fetch}"
        )?;
        writeln!(out, "index page: {index}")?;
        let mut stop = format!(
            "stops after {} without access",
            show_duration(args.serve.ttl)
        );
        if let Some(n) = args.max_downloads {
            stop.push_str(&format!(" or after {n} download(s)"));
        }
        writeln!(out, "{stop}")?;
    }
    out.flush()?;
    drop(out);

    let status = server.status_handle();
    let live = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        let s = status.clone();
        let b = bar.clone();
        std::thread::spawn(move || loop {
            let st = s.status();
            let i = &st.items[0];
            b.set_message(format!(
                "sent {} · {} download(s) · {} client(s) · sha256 {}",
                human(i.bytes_sent),
                i.downloads,
                st.clients,
                if i.sha256.is_some() {
                    "known"
                } else {
                    "computing"
                }
            ));
            std::thread::sleep(Duration::from_millis(500));
        });
        bar
    });
    let stopped = server.run()?;
    if let Some(bar) = live {
        bar.finish_and_clear();
    }
    let st = status.status();
    let reason = match &stopped {
        Stopped::Expired(ttl) => format!("no access for {}", show_duration(*ttl)),
        Stopped::Downloaded(n) => format!("{n} download(s) done"),
        Stopped::Uploaded => "upload done".into(),
    };
    if json {
        let doc = serde_json::json!({
            "stopped": match stopped { Stopped::Expired(_) => "ttl", _ => "downloads" },
            "downloads": st.items[0].downloads,
            "bytes_sent": st.items[0].bytes_sent,
        });
        // A reader that took the first line and went away does not make this fail:
        // the publish is over either way.
        let _ = writeln!(std::io::stdout(), "{doc}");
    } else if !quiet {
        eprintln!(
            "publish stopped: {reason} ({} sent)",
            human(st.items[0].bytes_sent)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "0", "m", "5x", "-1s", "1.5h", "999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(Duration::from_secs(900)), "15m");
    }

    #[test]
    fn names_and_quoting() {
        let a = Address::parse("vds/web@before upgrade").unwrap();
        assert_eq!(
            item_name(&a, FormatArg::RawZst),
            "web@before_upgrade.raw.zst"
        );
        assert_eq!(sh("a b'c"), "'a b'\\''c'");
        assert_eq!(sh("https://h:1/x.raw"), "https://h:1/x.raw");
    }
}
