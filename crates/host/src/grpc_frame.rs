//! gRPC's message framing (a flag byte, a big-endian u32 length, the message), as a
//! server sends it. Free of dependencies, so the fuzz target `grpc_frames` includes this
//! file as is.

/// The largest message either way.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The length of the whole message at the start of `buf` (its bytes are
/// `buf[5..5 + len]`), or `None` while more bytes are needed. A compressed message (never
/// asked for) or one over [`MAX_MESSAGE`] is an error.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, String> {
    let Some(head) = buf.get(..5) else {
        return Ok(None);
    };
    if head[0] != 0 {
        return Err(format!(
            "the server sent a compressed message (flag {}), which was not asked for",
            head[0]
        ));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(format!(
            "the server sent a {len}-byte message, over the {MAX_MESSAGE}-byte limit"
        ));
    }
    Ok((buf.len() >= 5 + len).then_some(len))
}
