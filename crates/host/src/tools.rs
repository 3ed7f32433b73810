//! The `tools` capability: programs a pool's operator lets its plugin have run (LVM's
//! `lvcreate`/`lvremove`). The plugin proposes arguments; the host decides. Nothing goes
//! through a shell; the command and its fixed arguments come from the operator; every
//! option the plugin adds must be on the operator's list for that tool, and every other
//! argument must be a plain word, so a plugin cannot smuggle in `--config`, a file name
//! the operator did not think of, or a second command. The environment is cleared but
//! for a fixed `PATH`; output is capped; a tool that runs too long is killed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One tool a pool grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolGrant {
    /// The program and the operator's fixed arguments, e.g. `["lvcreate"]`.
    pub command: Vec<String>,
    /// Options (`-s`, `--name`, ...) the plugin may add; anything else starting with `-`
    /// is refused.
    pub options: Vec<String>,
}

/// What a tool printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRun {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Arguments a plugin may add at most, and bytes per argument.
const MAX_ARGS: usize = 64;
const MAX_ARG_BYTES: usize = 1024;
/// Bytes of stdout and of stderr kept.
const MAX_OUTPUT: usize = 64 << 10;
/// How long a tool may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(20);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn plain_word(a: &str) -> bool {
    !a.is_empty()
        && !a.starts_with('-')
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+/:@=-".contains(&b))
}

/// Why the host refuses `args` for `grant`, if it does.
pub fn check_args(tool: &str, grant: &ToolGrant, args: &[String]) -> Result<(), String> {
    if grant.command.is_empty() {
        return Err(format!("{tool}: the pool grants it with an empty command"));
    }
    if args.len() > MAX_ARGS {
        return Err(format!(
            "{tool}: {} arguments, more than {MAX_ARGS}",
            args.len()
        ));
    }
    for a in args {
        if a.len() > MAX_ARG_BYTES {
            return Err(format!("{tool}: an argument of {} bytes", a.len()));
        }
        if a.starts_with('-') {
            if !grant.options.iter().any(|o| o == a) {
                return Err(format!(
                    "{tool}: option {a:?} is not among the options the pool allows ({})",
                    grant.options.join(" ")
                ));
            }
        } else if !plain_word(a) {
            return Err(format!(
                "{tool}: argument {a:?} is not a plain word (letters, digits and ._+/:@=-)"
            ));
        }
    }
    Ok(())
}

/// The command line, for logs and messages.
pub fn command_line(grant: &ToolGrant, args: &[String]) -> String {
    grant
        .command
        .iter()
        .chain(args)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads up to `MAX_OUTPUT` bytes, then drains the rest so the tool never blocks.
fn capped(mut r: impl Read) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs the granted tool with the plugin's `args` (already checked).
pub fn run(tool: &str, grant: &ToolGrant, args: &[String]) -> Result<ToolRun, String> {
    let mut child = Command::new(&grant.command[0])
        .args(&grant.command[1..])
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{tool}: starting {}: {e}", grant.command[0]))?;
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || capped(out));
    let err = std::thread::spawn(move || capped(err));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > TOOL_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{tool}: still running after {} s, killed",
                    TOOL_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{tool}: waiting for it: {e}")),
        }
    };
    Ok(ToolRun {
        status: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> ToolGrant {
        ToolGrant {
            command: vec!["lvcreate".into(), "--yes".into()],
            options: vec!["--name".into(), "-s".into()],
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_must_be_listed_and_words_plain() {
        let g = grant();
        assert!(check_args("lvcreate", &g, &args(&["-s", "--name", "snap1", "vg0/vol"])).is_ok());
        for bad in [
            &["--config", "x"][..],
            &["--name=evil"],
            &["vg0/vol;rm"],
            &["a b"],
            &[""],
            &["$(id)"],
            &["\u{e9}"],
        ] {
            assert!(check_args("lvcreate", &g, &args(bad)).is_err(), "{bad:?}");
        }
        assert!(check_args("lvcreate", &g, &vec!["x".to_string(); 65]).is_err());
        let empty = ToolGrant::default();
        assert!(check_args("lvcreate", &empty, &[]).is_err());
    }

    #[test]
    fn runs_without_a_shell_and_reports_status_and_output() {
        let g = ToolGrant {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo out $0 $1; echo err >&2; exit 3".into(),
            ],
            options: vec![],
        };
        // `;` reaches sh as a plain argument of the script, not as shell syntax.
        let r = run("t", &g, &args(&["a;b", "c"])).unwrap();
        assert_eq!(r.status, 3);
        assert_eq!(r.stdout, "out a;b c\n");
        assert_eq!(r.stderr, "err\n");
        let missing = ToolGrant {
            command: vec!["/nonexistent/tool".into()],
            options: vec![],
        };
        assert!(run("t", &missing, &[]).unwrap_err().contains("starting"));
    }
}
