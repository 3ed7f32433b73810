//! Words a plugin hands the host that reach the operator's terminal (errors, log lines,
//! labels): made printable (control characters escaped, so no escape sequence from a
//! plugin ever reaches a terminal) and cut to a length a log line or error line can
//! hold. The names it answers are held to the one name rule, `snapport_core::name`.

use snapport_core::name::changes_the_terminal;

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
        if changes_the_terminal(c) {
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
