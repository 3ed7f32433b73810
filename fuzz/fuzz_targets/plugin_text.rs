//! Text a plugin hands the host, on any bytes: a name that passes is a plain name, and
//! printable text holds no control character and stays within its bound. The file is
//! included as is (no host dependencies).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/host/src/untrusted.rs"]
mod untrusted;

fuzz_target!(|data: &[u8]| {
    let Some((&max, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    if untrusted::check_name(&text).is_ok() {
        assert!(!text.is_empty() && text.len() <= untrusted::MAX_NAME);
        assert!(!text.contains('/') && !text.starts_with('.') && !text.contains(".."));
        assert!(!text.chars().any(char::is_control));
    }
    let max = usize::from(max);
    let shown = untrusted::printable(&text, max);
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    // One escaped character (`\u{10ffff}`, 10 bytes) past the bound, then the note.
    assert!(shown.len() <= max + 10 + " [ more bytes cut]".len() + 20, "{shown:?}");
    if text.len() <= max && !text.chars().any(char::is_control) {
        assert!(shown == text || shown.contains("\\u{"));
    }
});
