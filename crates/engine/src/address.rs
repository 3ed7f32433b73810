//! d8-style resource addresses: `vd/NAME` (disk), `vi/NAME` (image), `vds/DISK@SNAP`.

use crate::{bail, Result};

/// The project's one name rule ([`snapport_core::name`]) for pools, disks, images,
/// snapshots and VMs, as this crate's error; `what` names the argument or key.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    Ok(snapport_core::name::check(what, name)?)
}

/// What an operation acts on, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `vd/NAME`: a writable disk.
    Disk(String),
    /// `vi/NAME`: a read-only image.
    Image(String),
    /// `vds/DISK@SNAPSHOT`: a disk snapshot, by the user's name (or its backend ID).
    DiskSnapshot {
        /// The disk it belongs to.
        disk: String,
        /// Its name.
        snapshot: String,
    },
}

impl Address {
    /// Parses an address; each name in it must follow the name rule
    /// ([`snapport_core::name`]), which the error states.
    /// A malformed address is a usage error ([`crate::ErrorKind::Usage`]).
    pub fn parse(s: &str) -> Result<Address> {
        Address::parse_inner(s).map_err(crate::Error::into_usage)
    }

    fn parse_inner(s: &str) -> Result<Address> {
        let check = |what: &str, name: &str| check_name(&format!("{s:?}: {what}"), name);
        if let Some(name) = s.strip_prefix("vd/") {
            check("the disk", name)?;
            return Ok(Address::Disk(name.into()));
        } else if let Some(name) = s.strip_prefix("vi/") {
            check("the image", name)?;
            return Ok(Address::Image(name.into()));
        } else if let Some(rest) = s.strip_prefix("vds/") {
            let Some((disk, snap)) = rest.split_once('@') else {
                bail!("{s:?}: a disk snapshot is vds/DISK@SNAPSHOT");
            };
            check("the disk", disk)?;
            check("the snapshot", snap)?;
            return Ok(Address::DiskSnapshot {
                disk: disk.into(),
                snapshot: snap.into(),
            });
        }
        bail!("{s:?} is not vd/NAME, vi/NAME or vds/DISK@SNAPSHOT")
    }

    /// The volume: the disk, the image, or the disk a snapshot belongs to.
    pub fn disk(&self) -> &str {
        match self {
            Address::Disk(d) | Address::Image(d) | Address::DiskSnapshot { disk: d, .. } => d,
        }
    }

    /// The snapshot's name, for a disk snapshot.
    pub fn snapshot(&self) -> Option<&str> {
        match self {
            Address::Disk(_) | Address::Image(_) => None,
            Address::DiskSnapshot { snapshot, .. } => Some(snapshot),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Disk(d) => write!(f, "vd/{d}"),
            Address::Image(d) => write!(f, "vi/{d}"),
            Address::DiskSnapshot { disk, snapshot } => write!(f, "vds/{disk}@{snapshot}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Address::parse("vd/a").unwrap(), Address::Disk("a".into()));
        assert_eq!(Address::parse("vi/a").unwrap(), Address::Image("a".into()));
        assert_eq!(
            Address::parse("vds/a@s1").unwrap(),
            Address::DiskSnapshot {
                disk: "a".into(),
                snapshot: "s1".into()
            }
        );
        for bad in [
            "a",
            "vd/",
            "vd/../x",
            "vds/a",
            "vds/@s",
            "vm/x",
            "vd/a@b",
            "vi/",
            "vi/a@b",
            "vd/.x",
            "vd/a/b",
            "vd/a\0",
            "vd/a\nb",
            "vi/..",
            "vds/../a@s",
            "vds/a@../s",
            "vds/a@s/t",
            "vds/a@.s",
            "vds/a@s\x1b",
            "vds/a@",
            "vds/a@s@t",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
        let e = Address::parse("vds/a@../s").unwrap_err().to_string();
        assert!(
            e.contains("the snapshot \"../s\" is not a valid name: it starts with '.'"),
            "{e}"
        );
    }
}
