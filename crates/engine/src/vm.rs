//! VMs (`vm/NAME`): a config document the user owns (name, disks in pools, network
//! identifiers), kept as `$SNAPPORT_HOME/vms/NAME.json`. snapport reads the fields it
//! needs and keeps every other field as it was written.

use crate::address::check_name;
use crate::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A VM as snapport keeps it (`vms/NAME.json`): its disks and NICs; what else the file holds is kept as it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmConfig {
    /// The VM's name.
    pub name: String,
    /// Its disks, in order.
    pub disks: Vec<VmDisk>,
    /// Its NICs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<Nic>,
    /// The QMP socket of the QEMU running this VM: snapshots of its disks while it runs
    /// are taken by QEMU through it (see the `live` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp: Option<PathBuf>,
    /// Every other key of the file, kept as it is.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One disk of a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmDisk {
    /// The disk, `vd/NAME` of `pool`.
    pub name: String,
    /// The pool the disk is in.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Every other key of the file, kept as it is.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One NIC of a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nic {
    /// Its MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Its IP address.
    #[serde(default)]
    pub ip: Option<String>,
    /// Every other key of the file, kept as it is.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn default_pool() -> String {
    crate::config::DEFAULT_POOL.to_string()
}

/// `vm/NAME` → NAME; `None` when `s` is not a VM address at all.
pub fn parse_vm(s: &str) -> Option<Result<String>> {
    let name = s.strip_prefix("vm/")?;
    Some(
        check_name(&format!("{s:?}: the VM"), name)
            .map(|()| name.to_string())
            .map_err(crate::Error::into_usage),
    )
}

/// A VM config larger than this is not one a person or a tool meant to write.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn dir(home: &Path) -> PathBuf {
    home.join("vms")
}

fn path(home: &Path, name: &str) -> PathBuf {
    dir(home).join(format!("{name}.json"))
}

/// Whether `vms/NAME.json` exists.
pub fn exists(home: &Path, name: &str) -> bool {
    path(home, name).exists()
}

/// Checks what snapport relies on: names, at least one disk, no disk twice.
pub fn validate(cfg: &VmConfig) -> Result<()> {
    check_name("the VM's name", &cfg.name)?;
    if cfg.disks.is_empty() {
        bail!("vm/{} lists no disks", cfg.name);
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in &cfg.disks {
        check_name(&format!("vm/{}: the disk", cfg.name), &d.name)?;
        check_name(
            &format!("vm/{}: the pool of disk {:?}", cfg.name, d.name),
            &d.pool,
        )?;
        if !seen.insert((d.pool.as_str(), d.name.as_str())) {
            bail!(
                "vm/{} lists vd/{} of pool {} twice",
                cfg.name,
                d.name,
                d.pool
            );
        }
    }
    Ok(())
}

/// A VM config from its JSON text; `what` names it in errors.
pub fn parse(text: &[u8], what: &str) -> Result<VmConfig> {
    let cfg: VmConfig = serde_json::from_slice(text)
        .with_context(|| format!("{what} is not a VM config (JSON with name and disks)"))?;
    validate(&cfg)?;
    Ok(cfg)
}

/// The VM config `vm/NAME`, which must exist.
pub fn load(home: &Path, name: &str) -> Result<VmConfig> {
    let p = path(home, name);
    let text = match snapport_core::io::read_regular_file(&p, MAX_CONFIG_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no vm/{name}; create it with snapport create vm/{name} --config FILE")
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    parse(&text, &p.display().to_string())
}

/// Every VM config, by name.
pub fn list(home: &Path) -> Result<Vec<VmConfig>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir(home)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).context("listing VMs"),
    };
    for e in entries {
        let p = e?.path();
        let Some(name) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if !name.starts_with('.') {
            out.push(load(home, name)?);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Saves a new VM's config; refused when the name is taken (checked atomically: the
/// config appears by a hard link, which fails on an existing name).
pub fn save_new(home: &Path, cfg: &VmConfig) -> Result<()> {
    validate(cfg)?;
    std::fs::create_dir_all(dir(home)).context("creating the VM folder")?;
    let tmp = dir(home).join(format!(".{}.{}.tmp", cfg.name, std::process::id()));
    let text = serde_json::to_vec_pretty(cfg).expect("a config serialises");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path(home, &cfg.name));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("vm/{} already exists; choose another name", cfg.name)
        }
        Err(e) => Err(e).context("saving the VM config"),
    }
}

/// Replaces a VM's config (a restore); written beside and renamed into place.
pub fn save(home: &Path, cfg: &VmConfig) -> Result<()> {
    validate(cfg)?;
    std::fs::create_dir_all(dir(home)).context("creating the VM folder")?;
    let tmp = dir(home).join(format!(".{}.{}.tmp", cfg.name, std::process::id()));
    let text = serde_json::to_vec_pretty(cfg).expect("a config serialises");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path(home, &cfg.name)).context("saving the VM config")
}

/// How a clone names what it creates, as Deckhouse's VirtualMachineOperation clone does:
/// replacements first, then the prefix and suffix.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// Put before each name.
    pub prefix: String,
    /// Put after each name.
    pub suffix: String,
    /// (old, new) pairs, applied to every name in turn.
    pub replacements: Vec<(String, String)>,
}

impl Naming {
    /// From `--name-prefix`, `--name-suffix` and `--name-replace OLD=NEW` flags, each
    /// checked against the name rule as the part of a name it becomes (a prefix starts a
    /// name; a suffix or a replacement may start with '.' or '-'). The names they make
    /// are checked whole by [`clone_config`].
    pub fn new(prefix: &str, suffix: &str, replace: &[String]) -> Result<Naming> {
        if !prefix.is_empty() {
            check_name("--name-prefix", prefix)?;
        }
        snapport_core::name::check_fragment("--name-suffix", suffix)?;
        Ok(Naming {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
            replacements: Self::parse_replacements(replace)?,
        })
    }

    /// From `--name-replace OLD=NEW` flags.
    fn parse_replacements(flags: &[String]) -> Result<Vec<(String, String)>> {
        flags
            .iter()
            .map(|f| match f.split_once('=') {
                Some((a, b)) if !a.is_empty() => {
                    snapport_core::name::check_fragment(&format!("--name-replace {f:?}: NEW"), b)?;
                    Ok((a.to_string(), b.to_string()))
                }
                _ => bail!("--name-replace {f:?}: give OLD=NEW"),
            })
            .collect()
    }

    /// Whether it changes no name.
    pub fn is_empty(&self) -> bool {
        self.prefix.is_empty() && self.suffix.is_empty() && self.replacements.is_empty()
    }

    /// `name`, renamed.
    pub fn apply(&self, name: &str) -> String {
        let mut n = name.to_string();
        for (a, b) in &self.replacements {
            n = n.replace(a, b);
        }
        format!("{}{n}{}", self.prefix, self.suffix)
    }
}

/// A locally administered, unicast MAC address (02:xx:xx:xx:xx:xx), from the kernel's
/// random source.
pub fn new_mac() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 5];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for a new MAC address")?;
    Ok(format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    ))
}

/// The config of a clone of `cfg` named `new_name`, its disks renamed by `naming` (or,
/// with no naming given, the old VM name replaced by the new one in each disk name, and
/// `NEW-` in front where the old name does not occur), each in `pool` when one is given
/// (else in its own pool). Network
/// identifiers are new: fresh MAC addresses, IP addresses cleared for the network to
/// assign. Returns the config and what changed, for the report.
pub fn clone_config(
    cfg: &VmConfig,
    new_name: &str,
    naming: &Naming,
    pool: Option<&str>,
) -> Result<(VmConfig, Vec<String>)> {
    let mut out = cfg.clone();
    let mut notes = Vec::new();
    out.name = new_name.to_string();
    for d in &mut out.disks {
        let renamed = if naming.is_empty() {
            let r = d.name.replace(&cfg.name, new_name);
            if r == d.name {
                format!("{new_name}-{r}")
            } else {
                r
            }
        } else {
            naming.apply(&d.name)
        };
        if let Some(pool) = pool {
            d.pool = pool.to_string();
        }
        notes.push(format!("vd/{} -> vd/{renamed} (pool {})", d.name, d.pool));
        d.name = renamed;
    }
    for nic in &mut out.network {
        let mac = new_mac()?;
        notes.push(format!(
            "MAC {} -> {mac}{}",
            nic.mac.as_deref().unwrap_or("(none)"),
            match &nic.ip {
                Some(ip) => format!(", IP {ip} cleared"),
                None => String::new(),
            }
        ));
        nic.mac = Some(mac);
        nic.ip = None;
    }
    validate(&out)?;
    Ok((out, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        parse(
            br#"{"name":"web","cpu":2,"disks":[{"name":"web-root"},{"name":"data","bus":"virtio"}],
                "network":[{"mac":"52:54:00:00:00:01","ip":"10.0.0.5","bridge":"br0"}]}"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn clones_rename_and_renew_identifiers() {
        let (c, _) = clone_config(&cfg(), "web2", &Naming::default(), Some("p")).unwrap();
        let names: Vec<_> = c.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["web2-root", "web2-data"]);
        assert!(c.disks.iter().all(|d| d.pool == "p"));
        let nic = &c.network[0];
        assert!(nic.ip.is_none() && nic.mac.as_deref() != Some("52:54:00:00:00:01"));
        assert_eq!(nic.mac.as_deref().unwrap().len(), 17);
        // Fields snapport does not know are kept.
        assert_eq!(c.other["cpu"], 2);
        assert_eq!(c.disks[1].other["bus"], "virtio");
        assert_eq!(nic.other["bridge"], "br0");

        let naming = Naming::new("x-", "-y", &["web=app".into()]).unwrap();
        let (c, _) = clone_config(&cfg(), "n", &naming, None).unwrap();
        assert_eq!(c.disks[0].name, "x-app-root-y");
        assert_eq!(c.disks[0].pool, "default");
        assert!(Naming::new("", "", &["=a".into()]).is_err());
    }

    #[test]
    fn naming_flags_that_would_make_paths_are_refused() {
        for (prefix, suffix, replace) in [
            ("../", "", ""),
            (".x", "", ""),
            ("-x", "", ""),
            ("a/", "", ""),
            ("", "/..", ""),
            ("", "@s", ""),
            ("", "\u{1b}[2J", ""),
            ("", "", "root=../root"),
            ("", "", "root=a/b"),
        ] {
            let replace: Vec<String> = [replace]
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| r.to_string())
                .collect();
            let e = Naming::new(prefix, suffix, &replace)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--name-") && e.contains("not a valid name"),
                "{e}"
            );
        }
        // A suffix may start with '.' or '-'; the names made are checked whole.
        let naming = Naming::new("", ".old", &[]).unwrap();
        assert_eq!(
            clone_config(&cfg(), "n", &naming, None).unwrap().0.disks[0].name,
            "web-root.old"
        );
        let naming = Naming::new("", "", &["web-root=.hidden".into()]).unwrap();
        let e = clone_config(&cfg(), "n", &naming, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\".hidden\"") && e.contains("starts with '.'"),
            "{e}"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"name":"x","disks":[]}"#,
            r#"{"name":"../x","disks":[{"name":"a"}]}"#,
            r#"{"name":"x","disks":[{"name":"a/b"}]}"#,
            r#"{"name":"x","disks":[{"name":"a","pool":"../p"}]}"#,
            r#"{"name":"x\u0000","disks":[{"name":"a"}]}"#,
            r#"{"name":"x","disks":[{"name":"a"},{"name":"a"}]}"#,
            r#"{"name":"x"}"#,
        ] {
            assert!(parse(bad.as_bytes(), "t").is_err(), "{bad}");
        }
        assert!(parse_vm("vm/a").unwrap().is_ok());
        assert!(parse_vm("vm/../a").unwrap().is_err());
        assert!(parse_vm("vd/a").is_none());
    }
}
