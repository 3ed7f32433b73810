//! d8-style resource addresses: `vd/NAME` (disk), `vi/NAME` (image), `vds/DISK@SNAP`.

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Disk(String),
    Image(String),
    DiskSnapshot { disk: String, snapshot: String },
}

impl Address {
    pub fn parse(s: &str) -> Result<Address> {
        let valid = |n: &str| !n.is_empty() && !n.contains('/') && !n.starts_with('.');
        if let Some(name) = s.strip_prefix("vd/") {
            if valid(name) && !name.contains('@') {
                return Ok(Address::Disk(name.into()));
            }
        } else if let Some(name) = s.strip_prefix("vi/") {
            if valid(name) && !name.contains('@') {
                return Ok(Address::Image(name.into()));
            }
        } else if let Some(rest) = s.strip_prefix("vds/") {
            if let Some((disk, snap)) = rest.split_once('@') {
                if valid(disk) && !snap.is_empty() {
                    return Ok(Address::DiskSnapshot {
                        disk: disk.into(),
                        snapshot: snap.into(),
                    });
                }
            }
            bail!("{s:?}: a disk snapshot is vds/DISK@SNAPSHOT");
        }
        bail!("{s:?} is not vd/NAME, vi/NAME or vds/DISK@SNAPSHOT")
    }

    /// The volume: the disk, the image, or the disk a snapshot belongs to.
    pub fn disk(&self) -> &str {
        match self {
            Address::Disk(d) | Address::Image(d) | Address::DiskSnapshot { disk: d, .. } => d,
        }
    }

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
            "a", "vd/", "vd/../x", "vds/a", "vds/@s", "vm/x", "vd/a@b", "vi/", "vi/a@b",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }
}
