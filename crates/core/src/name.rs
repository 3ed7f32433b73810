//! The one rule for the names of pools, disks, images, snapshots and VMs.
//!
//! These names become file names and path components (`state/POOL/`, `vms/VM.json`, a
//! folder pool's `DISK.qcow2`, a bundle's `disks/DISK.raw.zst`), keys of the form
//! `DISK@SNAPSHOT`, and arguments of the programs a pool runs (`lvcreate --name`). So a
//! name is one plain path component that cannot climb out (`/`, `..`), hide (a leading
//! `.`, which also marks snapport's temporary files), pass for an option (a leading `-`),
//! split an address (`@`) or put control characters on an operator's terminal. Spaces and
//! other printable characters are allowed: a qcow2 snapshot made by `qemu-img` may have
//! them, and it must stay addressable.
//!
//! Every place that takes a name from outside (the configuration, command-line addresses
//! and options, VM configs, bundle manifests) checks it with [`check`] when it parses it.

use crate::error::{Error, ErrorKind, Result};

/// The longest name, in bytes: with a file extension and a temporary file's decoration
/// (`.NAME.qcow2.snapport-PID-N`) it still fits a 255-byte file name.
pub const MAX_NAME: usize = 200;

/// The rule, as error messages state it.
pub const RULE: &str = "a name is 1 to 200 bytes with no '/', '@', '..' or control \
                        characters, and does not start with '.' or '-'";

/// What is wrong with `name` as a whole name, if anything: for callers that word their
/// own error (the host, about names a plugin answers).
pub fn problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.starts_with('.') {
        return Some("it starts with '.'");
    }
    if name.starts_with('-') {
        return Some("it starts with '-'");
    }
    fragment_problem(name)
}

/// What is wrong with `part`, a piece of a name (a suffix or a replacement), if anything.
fn fragment_problem(part: &str) -> Option<&'static str> {
    if part.len() > MAX_NAME {
        Some("it is longer than 200 bytes")
    } else if part.contains('/') {
        Some("it contains '/'")
    } else if part.contains("..") {
        Some("it contains '..'")
    } else if part.contains('@') {
        Some("it contains '@'")
    } else if part.contains('\0') {
        Some("it contains a NUL character")
    } else if part.chars().any(changes_the_terminal) {
        Some("it contains a control character")
    } else {
        None
    }
}

/// Characters that change what a terminal shows rather than show themselves: C0 and C1
/// controls (ESC, CR, BEL, NUL...), DEL, and the bidirectional overrides and isolates
/// (which can make a name read as another).
pub fn changes_the_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn refuse(what: &str, name: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        format!("{what} {name:?} is not a valid name: {why} ({RULE})"),
    )
}

/// Checks a whole name; `what` says what it names and where it came from (`pool` with the
/// configuration file, `--name`, the address), for the message.
pub fn check(what: &str, name: &str) -> Result<()> {
    match problem(name) {
        Some(why) => Err(refuse(what, name, why)),
        None => Ok(()),
    }
}

/// Checks a piece that will be put inside or at the end of names (a clone's
/// `--name-suffix`, a `--name-replace` replacement): it may be empty or start with '.' or
/// '-', the other rules hold. The names it makes are checked whole as well.
pub fn check_fragment(what: &str, part: &str) -> Result<()> {
    match fragment_problem(part) {
        Some(why) => Err(refuse(what, part, why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        for good in [
            "a",
            "web-root",
            "disk_1.qcow2",
            "before upgrade",
            "20261124-064012",
            "a.b",
            "é",
            &"x".repeat(MAX_NAME),
        ] {
            check("disk", good).unwrap();
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_are_refused() {
        let long = "x".repeat(MAX_NAME + 1);
        for (bad, why) in [
            ("", "empty"),
            ("../x", "'.'"),
            ("a/b", "'/'"),
            ("/abs", "'/'"),
            ("..", "'.'"),
            ("a..b", "'..'"),
            (".hidden", "'.'"),
            ("-rf", "'-'"),
            ("a@b", "'@'"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
            ("a\x1b[2Jb", "control"),
            ("a\u{7f}", "control"),
            ("a\u{9b}b", "control"),
            ("a\u{202e}b", "control"),
            (long.as_str(), "longer than 200"),
        ] {
            let e = check("the disk", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            let msg = e.to_string();
            assert!(msg.starts_with("the disk "), "{msg}");
            assert!(msg.contains(why) && msg.contains(RULE), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn fragments_may_start_with_a_dot_or_dash_but_not_climb() {
        for good in ["", "-copy", ".bak", "x"] {
            check_fragment("--name-suffix", good).unwrap();
        }
        for bad in ["/x", "..", "a@", "\n"] {
            assert!(check_fragment("--name-suffix", bad).is_err(), "{bad:?}");
        }
    }
}
