//! Text a plugin hands the host: names that may become paths and words that reach the
//! operator's terminal. A name must be a plain name; any other text is made printable
//! (control characters escaped, so no escape sequence from a plugin ever reaches a
//! terminal) and cut to a length a log line or error line can hold.

/// The longest name a plugin may give a volume or snapshot (a file name's limit).
pub const MAX_NAME: usize = 255;

/// Why `name` is not a plain name, or `Ok`. Names of volumes and snapshots become file
/// names and parts of addresses (`vd/NAME`, `vds/DISK@SNAP`): the same rule as the CLI
/// applies to names an operator types. Not empty, at most [`MAX_NAME`] bytes, no `/`,
/// no leading `.` (so neither `.` nor `..`), no `..` anywhere, no control characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("a name must not be empty")
    } else if name.len() > MAX_NAME {
        Err("a name must be at most 255 bytes")
    } else if name.contains('/') {
        Err("a name must not contain '/'")
    } else if name.starts_with('.') {
        Err("a name must not start with '.'")
    } else if name.contains("..") {
        Err("a name must not contain '..'")
    } else if name.chars().any(hidden) {
        Err("a name must not contain control characters")
    } else {
        Ok(())
    }
}

/// Characters that change what a terminal shows rather than show themselves: C0 and C1
/// controls (ESC, CR, BEL, NUL...), DEL, and the bidirectional overrides and isolates.
fn hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` made printable and at most about `max` bytes long: hidden characters are
/// written as escapes (`\u{1b}`), and a longer text is cut at a character boundary with
/// a note saying how many bytes were left out.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (at, c) in text.char_indices() {
        if out.len() >= max {
            out.push_str(&format!(" [{} more bytes cut]", text.len() - at));
            return out;
        }
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_path_like_names_do_not() {
        for ok in ["disk", "web-01", "a.b", "vm_1.qcow2", "ü", &"x".repeat(255)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            ".hidden",
            "a..b",
            "a\0b",
            "a\u{1b}[2Jb",
            "a\nb",
            "\u{9b}31m",
            "a\u{202e}b",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn printable_escapes_controls_and_cuts() {
        assert_eq!(printable("ok: fine", 100), "ok: fine");
        let p = printable("\u{1b}]0;x\u{7}\u{1b}[2J\r\nnext\0", 100);
        assert_eq!(p, "\\u{1b}]0;x\\u{7}\\u{1b}[2J\\r\\nnext\\u{0}");
        assert!(!p.chars().any(|c| c.is_control()));
        let long = "é".repeat(1000);
        let cut = printable(&long, 100);
        assert!(cut.starts_with(&"é".repeat(50)), "{cut}");
        assert!(cut.ends_with(" [1900 more bytes cut]"), "{cut}");
    }
}
