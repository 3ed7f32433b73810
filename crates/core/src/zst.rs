//! zstd output (`raw.zst`): the logical disk as a series of zstd frames that `zstd -d`
//! turns back into the raw disk.
//!
//! Data goes through libzstd's multi-threaded encoder. Holes are never read or compressed:
//! a hole becomes a frame of RLE blocks written by hand (4 bytes per 128 KiB of zeros,
//! the zstd format's own minimum), so a 1 TiB disk with little data compresses in
//! moments. Frame layout per RFC 8878 (Zstandard), section 3.1.1.

use std::io::Write;

/// RFC 8878 3.1.1: frame magic number, little-endian.
const FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Block_Maximum_Size for our hole frames: their window is 128 KiB.
const RLE_BLOCK: u64 = 128 << 10;
/// Frame_Header_Descriptor: Frame_Content_Size_flag = 3 (8-byte size), no single segment
/// (a window descriptor follows, so decoders need only a 128 KiB window), no checksum,
/// no dictionary.
const HOLE_FHD: u8 = 0b1100_0000;
/// Window_Descriptor: Exponent 7, Mantissa 0 -> window of 2^(10+7) = 128 KiB.
const HOLE_WINDOW: u8 = 7 << 3;
/// Block_Type RLE (bits 1-2 of the block header).
const BLOCK_RLE: u32 = 1 << 1;

/// RFC 8878 3.1.2: skippable frames (magic 0x184D2A50..5F) are ignored by decoders.
/// snapport's raw.zst starts with one (magic ...53) recording the disk size, so an import
/// knows the size before it decompresses anything: "snapport" then the size, u64 LE.
const SIZE_FRAME_MAGIC: u32 = 0x184D_2A53;
const SIZE_FRAME_TAG: &[u8; 8] = b"snapport";

/// Writes the skippable frame that records the disk's size.
pub fn write_size_frame(w: &mut dyn Write, size: u64) -> std::io::Result<()> {
    let mut f = Vec::with_capacity(24);
    f.extend_from_slice(&SIZE_FRAME_MAGIC.to_le_bytes());
    f.extend_from_slice(&16u32.to_le_bytes());
    f.extend_from_slice(SIZE_FRAME_TAG);
    f.extend_from_slice(&size.to_le_bytes());
    w.write_all(&f)
}

/// The disk size recorded by [`write_size_frame`] at the start of `head`, if any.
pub fn read_size_frame(head: &[u8]) -> Option<u64> {
    if head.len() < 24
        || head[0..4] != SIZE_FRAME_MAGIC.to_le_bytes()
        || head[4..8] != 16u32.to_le_bytes()
        || &head[8..16] != SIZE_FRAME_TAG
    {
        return None;
    }
    Some(u64::from_le_bytes(head[16..24].try_into().ok()?))
}

/// Whether `head` starts like a zstd stream: a frame or a skippable frame.
pub fn is_zstd(head: &[u8]) -> bool {
    head.len() >= 4 && {
        let magic = u32::from_le_bytes(head[0..4].try_into().unwrap());
        magic == FRAME_MAGIC || magic & 0xFFFF_FFF0 == 0x184D_2A50
    }
}

/// Writes a zstd frame that decodes to `len` zero bytes.
pub fn write_zero_frame(w: &mut dyn Write, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let mut head = Vec::with_capacity(14);
    head.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    head.push(HOLE_FHD);
    head.push(HOLE_WINDOW);
    head.extend_from_slice(&len.to_le_bytes());
    w.write_all(&head)?;
    // Blocks: 3-byte header (Last_Block, Block_Type, Block_Size) + the repeated byte.
    let mut buf = Vec::with_capacity(64 << 10);
    let mut left = len;
    while left > 0 {
        let n = left.min(RLE_BLOCK);
        left -= n;
        let header = ((n as u32) << 3) | BLOCK_RLE | u32::from(left == 0);
        buf.extend_from_slice(&header.to_le_bytes()[..3]);
        buf.push(0);
        if buf.len() >= (64 << 10) - 4 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)
}

/// A raw disk written as zstd frames: data through a multi-threaded encoder, holes as
/// RLE frames.
pub struct ZstdOut<W: Write> {
    level: i32,
    threads: u32,
    state: State<W>,
}

enum State<W: Write> {
    /// Between frames.
    Idle(W),
    /// Inside a data frame.
    Data(zstd::stream::write::Encoder<'static, W>),
    /// Only while switching states.
    Poisoned,
}

impl<W: Write> ZstdOut<W> {
    pub fn new(inner: W, level: i32, threads: u32) -> ZstdOut<W> {
        ZstdOut {
            level,
            threads,
            state: State::Idle(inner),
        }
    }

    /// Logical bytes that hold data.
    pub fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let State::Idle(_) = self.state {
            let State::Idle(inner) = std::mem::replace(&mut self.state, State::Poisoned) else {
                unreachable!()
            };
            let mut enc = zstd::stream::write::Encoder::new(inner, self.level)?;
            enc.include_checksum(true)?;
            if self.threads > 1 {
                enc.multithread(self.threads)?;
            }
            self.state = State::Data(enc);
        }
        match &mut self.state {
            State::Data(enc) => enc.write_all(bytes),
            _ => unreachable!("a data frame was just opened"),
        }
    }

    /// `len` logical zero bytes, never compressed.
    pub fn zeros(&mut self, len: u64) -> std::io::Result<()> {
        write_zero_frame(self.close_frame()?, len)
    }

    fn close_frame(&mut self) -> std::io::Result<&mut W> {
        if let State::Data(_) = self.state {
            let State::Data(enc) = std::mem::replace(&mut self.state, State::Poisoned) else {
                unreachable!()
            };
            self.state = State::Idle(enc.finish()?);
        }
        match &mut self.state {
            State::Idle(w) => Ok(w),
            _ => Err(std::io::Error::other(
                "zstd output is unusable after an earlier error",
            )),
        }
    }

    /// Ends the last frame and returns the inner writer, flushed.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.close_frame()?.flush()?;
        match self.state {
            State::Idle(w) => Ok(w),
            _ => unreachable!("close_frame leaves the output idle"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_the_logical_bytes() {
        let mut out = ZstdOut::new(Vec::new(), 3, 2);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        out.zeros(5).unwrap();
        out.data(&data).unwrap();
        out.zeros(3 * RLE_BLOCK + 17).unwrap();
        out.data(b"tail").unwrap();
        let bytes = out.finish().unwrap();
        let decoded = zstd::stream::decode_all(&bytes[..]).unwrap();
        let mut want = vec![0u8; 5];
        want.extend_from_slice(&data);
        want.extend(std::iter::repeat_n(0u8, (3 * RLE_BLOCK + 17) as usize));
        want.extend_from_slice(b"tail");
        assert_eq!(decoded, want);
    }
}
