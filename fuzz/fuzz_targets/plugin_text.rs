//! Text a plugin hands the host, on any bytes: printable text holds no control character
//! and stays within its bound. The file is included as is (it needs only snapport-core).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/host/src/untrusted.rs"]
mod untrusted;

fuzz_target!(|data: &[u8]| {
    let Some((&max, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let max = usize::from(max);
    let shown = untrusted::printable(&text, max);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    // One escaped character (`\u{10ffff}`, 10 bytes) past the bound, then the note.
    assert!(shown.len() <= max + 10 + " [ more bytes cut]".len() + 20, "{shown:?}");
    if text.len() <= max && !text.chars().any(char::is_control) {
        assert!(shown == text || shown.contains("\\u{"));
    }
});
