#![cfg_attr(
    not(all(target_arch = "wasm32", feature = "panic-handler")),
    allow(dead_code)
)]
//! What a `no_std` WebAssembly plugin needs besides its code: an allocator and a panic
//! handler. Both only on wasm32, and each behind a default feature, so a plugin that
//! brings its own turns it off.

use core::fmt::{self, Write};

/// dlmalloc over the module's linear memory, grown on demand up to the host's cap.
#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The most bytes of a panic message the host keeps (`host.panicked`).
pub(crate) const PANIC_MESSAGE_MAX: usize = 4096;

/// A panic's message and where it happened, formatted without allocating (a panic may be
/// an allocation failure), handed to the host, then the trap the host reports with it.
#[cfg(all(target_arch = "wasm32", feature = "panic-handler", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut text = FixedText::new();
    write_panic(&mut text, info.message(), info.location());
    crate::host::panicked(text.as_str());
    core::arch::wasm32::unreachable()
}

/// `MESSAGE at FILE:LINE:COLUMN`.
pub(crate) fn write_panic(
    out: &mut FixedText,
    message: impl fmt::Display,
    location: Option<&core::panic::Location>,
) {
    let _ = write!(out, "{message}");
    if let Some(l) = location {
        let _ = write!(out, " at {}:{}:{}", l.file(), l.line(), l.column());
    }
}

/// Text in a fixed buffer: what does not fit is cut off at a character boundary.
pub(crate) struct FixedText {
    buf: [u8; PANIC_MESSAGE_MAX],
    len: usize,
}

impl FixedText {
    pub(crate) fn new() -> FixedText {
        FixedText {
            buf: [0; PANIC_MESSAGE_MAX],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for FixedText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn message_and_location() {
        let mut t = FixedText::new();
        write_panic(
            &mut t,
            format_args!("bad table {}", 3),
            Some(core::panic::Location::caller()),
        );
        let s = t.as_str();
        assert!(s.starts_with("bad table 3 at "), "{s}");
        assert!(s.contains("rt.rs:"), "{s}");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let mut t = FixedText::new();
        // 4095 ASCII bytes, then a two-byte character that does not fit.
        let long: String = core::iter::repeat('a')
            .take(PANIC_MESSAGE_MAX - 1)
            .chain(['é', 'z'])
            .collect();
        write_panic(&mut t, &long, None);
        assert_eq!(t.as_str().len(), PANIC_MESSAGE_MAX - 1);
        assert!(t.as_str().bytes().all(|b| b == b'a'));
    }
}
