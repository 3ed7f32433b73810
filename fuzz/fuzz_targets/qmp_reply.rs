//! A line from QEMU's monitor (QMP) on any bytes: no panic, and an error's class and
//! description come out on one line, bounded. The parser's file is included as is, so
//! this target builds without the CLI's dependencies.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/engine/src/qmp/reply.rs"]
mod reply;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply::Reply::Error { class, desc }) = reply::parse(data) {
        for text in [class, desc] {
            assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
            assert!(text.len() <= 512 * 10 + 3, "{} bytes", text.len());
        }
    }
});
