//! A client of QEMU's monitor protocol (QMP) over a Unix socket: what lets snapport
//! snapshot a disk that a running QEMU holds, by asking QEMU to do it
//! (`blockdev-snapshot-internal-sync`) instead of writing behind its back.
//!
//! The connection reads the greeting, negotiates (`qmp_capabilities`), then runs one
//! command at a time and skips asynchronous events. Every read has a timeout and every
//! line a length cap ([`reply::MAX_LINE`]): the peer is another process.

/// QMP answers, sorted.
pub mod reply;

use crate::{bail, format_err, Context as _, Result};
use reply::Reply;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long QEMU may take to answer one command. An internal snapshot drains the disk's
/// in-flight requests and writes metadata: seconds on a busy disk, not minutes.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The most events skipped while waiting for one answer.
const MAX_EVENTS: usize = 10_000;

/// A connection to a QEMU monitor (QMP).
pub struct Qmp {
    socket: PathBuf,
    stream: BufReader<UnixStream>,
    /// A read failed or timed out: an answer may still come, and would be taken for the
    /// next command's. Such a connection runs nothing more.
    broken: bool,
}

/// QEMU answered a command with an error: it did not do it.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether `e` is QEMU's refusal (nothing done), not a failure whose outcome is unknown.
pub fn refused(e: &crate::Error) -> bool {
    e.downcast_ref::<Refused>().is_some()
}

impl Qmp {
    /// Connects to the monitor at `socket` and leaves it ready for commands.
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(socket).with_context(|| {
            format!("connecting to QEMU's monitor (QMP) at {}", socket.display())
        })?;
        let mut qmp = Qmp {
            socket: socket.to_path_buf(),
            stream: BufReader::new(stream),
            broken: false,
        };
        match qmp.receive()? {
            Reply::Greeting => {}
            other => bail!(
                "{} did not greet as QEMU's monitor does (first line: {other:?})",
                socket.display()
            ),
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The connection's descriptor: QEMU serves one monitor client at a time, so what
    /// must reach QEMU from a signal handler goes through this connection.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.get_ref().as_raw_fd()
    }

    /// Runs `command` with `arguments`; QEMU's error is the error, in one line.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        if self.broken {
            bail!(
                "the connection to QEMU's monitor at {} is out of step since an earlier command got no answer: {command} not sent",
                self.socket.display()
            );
        }
        let answer = self.run(command, arguments);
        if answer.as_ref().is_err_and(|e| !refused(e)) {
            self.broken = true;
        }
        answer
    }

    /// Whether a command failed without an answer (see `broken`).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    fn run(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = serde_json::to_vec(&msg)?;
        line.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&line)
            .with_context(|| format!("sending {command} to {}", self.socket.display()))?;
        for _ in 0..MAX_EVENTS {
            match self.receive()? {
                Reply::Event => continue,
                Reply::Return(v) => return Ok(v),
                Reply::Error { class, desc } => {
                    return Err(Refused(format!("QEMU refused {command}: {desc} ({class})")).into())
                }
                Reply::Greeting => bail!("{} greeted again", self.socket.display()),
            }
        }
        bail!(
            "{} sent {MAX_EVENTS} events and no answer to {command}",
            self.socket.display()
        )
    }

    /// One line, within [`TIMEOUT`] and [`reply::MAX_LINE`].
    fn receive(&mut self) -> Result<Reply> {
        let deadline = Instant::now() + TIMEOUT;
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no answer from QEMU's monitor at {} within {TIMEOUT:?} (QEMU serves one monitor client at a time: another may hold it)",
                    self.socket.display()
                );
            }
            self.stream.get_ref().set_read_timeout(Some(left))?;
            let room = (reply::MAX_LINE + 1 - line.len()) as u64;
            let n = match (&mut self.stream).take(room).read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!(
                        "no answer from QEMU's monitor at {} within {TIMEOUT:?} (QEMU serves one monitor client at a time: another may hold it)",
                        self.socket.display()
                    )
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading from {}", self.socket.display()))
                }
            };
            if line.last() == Some(&b'\n') {
                break;
            }
            if line.len() > reply::MAX_LINE {
                bail!(
                    "{} sent a line longer than {} bytes",
                    self.socket.display(),
                    reply::MAX_LINE
                );
            }
            if n == 0 {
                bail!(
                    "QEMU's monitor at {} closed the connection",
                    self.socket.display()
                );
            }
        }
        reply::parse(&line)
            .map_err(|e| format_err!("QEMU's monitor at {} sent {e}", self.socket.display()))
    }
}
