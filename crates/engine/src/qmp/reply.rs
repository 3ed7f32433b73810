//! One line QEMU's monitor sent (QMP, docs/interop/qmp-spec.rst): the greeting, a
//! command's `return` or `error`, or an asynchronous `event`. The peer is another
//! process, so a line is untrusted input: parsed here, apart from the socket, and
//! fuzzed (fuzz/fuzz_targets/qmp_reply.rs).

use serde_json::Value;

/// The longest line accepted from the monitor. `query-named-block-nodes` answers a few
/// KiB per node; a VM with hundreds of nodes stays far below this.
pub const MAX_LINE: usize = 4 << 20;

/// What one line of QMP says.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// `{"QMP": {...}}`, first on every connection.
    Greeting,
    /// `{"return": ...}`: a command succeeded.
    Return(Value),
    /// `{"error": {"class", "desc"}}`: a command failed.
    Error {
        /// QEMU's error class (`GenericError`, `DeviceNotFound`...).
        class: String,
        /// QEMU's description of it.
        desc: String,
    },
    /// `{"event": ...}`: asynchronous, not an answer to anything.
    Event,
}

/// Parses one line. An error is a sentence about the line, never the whole line (it may
/// be megabytes of garbage).
pub fn parse(line: &[u8]) -> Result<Reply, String> {
    if line.len() > MAX_LINE {
        return Err(format!("a line of more than {MAX_LINE} bytes"));
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("a JSON value that is not an object".into());
    };
    if map.contains_key("QMP") {
        return Ok(Reply::Greeting);
    }
    if map.contains_key("event") {
        return Ok(Reply::Event);
    }
    if let Some(e) = map.get("error") {
        let text = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .map(|s| short(s, 512))
                .unwrap_or_else(|| "(none)".into())
        };
        return Ok(Reply::Error {
            class: text("class"),
            desc: text("desc"),
        });
    }
    if let Some(r) = map.get("return") {
        return Ok(Reply::Return(r.clone()));
    }
    Err("an object with neither return, error, event nor QMP".into())
}

/// `s` cut to `max` characters, control characters escaped: safe to print on one line.
fn short(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).flat_map(char::escape_default).collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(
            parse(br#"{"QMP": {"version": {}, "capabilities": []}}"#),
            Ok(Reply::Greeting)
        );
        assert_eq!(
            parse(br#"{"return": {}}"#),
            Ok(Reply::Return(serde_json::json!({})))
        );
        assert_eq!(
            parse(br#"{"event": "JOB_STATUS_CHANGE", "data": {}}"#),
            Ok(Reply::Event)
        );
        assert_eq!(
            parse(br#"{"error": {"class": "GenericError", "desc": "no\nsuch"}}"#),
            Ok(Reply::Error {
                class: "GenericError".into(),
                desc: "no\\nsuch".into()
            })
        );
        assert!(parse(b"[1]").is_err());
        assert!(parse(b"{}").is_err());
        assert!(parse(b"\xff").is_err());
    }
}
