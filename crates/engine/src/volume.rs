//! Writing a new volume and checking what a volume is: what upload, create, clone,
//! restore, bundle import and delta application share. A volume appears under its name
//! only once it is whole and verified; anything that fails before drops it.

use crate::address::Address;
use crate::{bail, Context as _, Result};
use snapport_core::import::{import, ImportOptions, ImportSummary, Source, VolumeTarget};
use snapport_core::progress::Progress;
use snapport_host::{Instance, VolumeKind, WritableVolume};

/// The kind of volume an address asks to create: `vd/` a disk, `vi/` an image; a
/// snapshot is never created by writing one.
pub fn kind_of(address: &Address) -> Result<VolumeKind> {
    match address {
        Address::Disk(_) => Ok(VolumeKind::Disk),
        Address::Image(_) => Ok(VolumeKind::Image),
        Address::DiskSnapshot { .. } => {
            bail!(
                "{address}: new volumes are vd/NAME or vi/NAME; snapshots are taken, not uploaded"
            )
        }
    }
}

/// `vd/` must name a disk and `vi/` an image: refuses an address whose prefix is not the
/// kind of the volume it names.
pub fn check_kind(address: &Address, kind: VolumeKind) -> Result<()> {
    match (address, kind) {
        (Address::Disk(n), VolumeKind::Image) => bail!("{n} is an image: address it as vi/{n}"),
        (Address::Image(n), VolumeKind::Disk) => bail!("{n} is a disk: address it as vd/{n}"),
        _ => Ok(()),
    }
}

/// Creates the volume, fills it, checks the digests (`verify` returns what it verified),
/// and only then commits. Any error drops the uncommitted volume, which removes it.
pub fn write_volume(
    pool: &mut Instance,
    target: &Address,
    size: u64,
    source: Source<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
) -> Result<(ImportSummary, Vec<String>)> {
    let mut volume = pool.create_volume(target.disk(), size, kind_of(target)?, None)?;
    fill(&mut volume, source, options, progress, verify)
}

/// Imports into `volume`, checks the digests, and only then commits.
fn fill(
    volume: &mut WritableVolume<'_>,
    source: Source<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
) -> Result<(ImportSummary, Vec<String>)> {
    let mut summary = import(source, volume, options, progress)?;
    summary.volume = Some(volume.info.name.clone());
    let verified = verify(&summary)?;
    volume.commit()?;
    Ok((summary, verified))
}

/// Like [`write_volume`], or with `in_place` into the existing disk `target`, which must
/// be `size` bytes: written, checked, committed; a failure after the first write says
/// the disk now holds part of the image (there is no staging to drop).
#[allow(clippy::too_many_arguments)]
pub fn write_into(
    pool: &mut Instance,
    target: &Address,
    size: u64,
    source: Source<'_>,
    options: &ImportOptions,
    progress: &mut dyn Progress,
    verify: impl FnOnce(&ImportSummary) -> Result<Vec<String>>,
    in_place: bool,
) -> Result<(ImportSummary, Vec<String>)> {
    if !in_place {
        return write_volume(pool, target, size, source, options, progress, verify);
    }
    let mut volume = pool.open_volume_for_write(target.disk())?;
    let have = VolumeTarget::size(&volume);
    if have != size {
        bail!("{target} is {have} bytes and the image {size}: --in-place writes into a disk of exactly the image's size; nothing was written");
    }
    fill(&mut volume, source, options, progress, verify).with_context(|| {
        format!("{target} was written in place and now holds part of the image; upload it again")
    })
}

/// A decompressed zstd stream. zstd's own errors are named as what they are, a damaged
/// stream; at its end, whatever follows the last frame is read too, so a SHA-256 of the
/// compressed bytes covers all of them.
pub struct ZstdSource<R: std::io::BufRead>(pub zstd::stream::read::Decoder<'static, R>);

impl<R: std::io::BufRead> std::io::Read for ZstdSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.read(buf) {
            Ok(0) if !buf.is_empty() => {
                std::io::copy(self.0.get_mut(), &mut std::io::sink())?;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Other | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(std::io::Error::new(
                    e.kind(),
                    format!("the zstd stream is damaged or cut short ({e})"),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// The volume a write made: `target`, under the name the pool gave it (a CSI driver
/// picks the volume ID).
pub fn made_address(target: &Address, made: Option<&str>) -> Address {
    match (target, made) {
        (Address::Disk(_), Some(v)) => Address::Disk(v.to_string()),
        (Address::Image(_), Some(v)) => Address::Image(v.to_string()),
        _ => target.clone(),
    }
}
