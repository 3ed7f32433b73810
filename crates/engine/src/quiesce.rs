//! Making a snapshot consistent: freezing the guest's file systems through the QEMU guest
//! agent, and the operator's hook commands, around the moment the backend takes it.
//!
//! The agent speaks JSON lines over a Unix socket (QEMU's `qga` protocol):
//! `guest-sync` first (a fresh id, so that a stale answer left in the channel by an
//! earlier client is never taken for this one's), then `guest-fsfreeze-freeze`, and
//! `guest-fsfreeze-thaw` afterwards. Pre hooks run in order before the freeze, post hooks
//! in order after the thaw, each as `sh -c CMD` with `SNAPPORT_*` variables saying what
//! is being snapshotted. Once anything started, the thaw and the post hooks run on every
//! path: success, failure, or a signal (held back meanwhile, see [`crate::interrupt`]).

use crate::{bail, format_err, Context as _, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// What the operator configured for one snapshot.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// The QEMU guest agent's socket.
    pub agent: Option<PathBuf>,
    /// Commands before the freeze, in order.
    pub pre: Vec<String>,
    /// Commands after the thaw, in order.
    pub post: Vec<String>,
    /// `SNAPPORT_*` variables for the hooks.
    pub env: Vec<(String, String)>,
}

impl Plan {
    /// Whether anything will try to quiesce the guest.
    pub fn quiesces(&self) -> bool {
        self.agent.is_some() || !self.pre.is_empty()
    }
}

/// How long the agent may take to answer: a freeze waits for the guest's file systems to
/// flush, which takes a while on a busy guest.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
const FREEZE_TIMEOUT: Duration = Duration::from_secs(60);

/// A guest between freeze and thaw. Dropping it thaws (and runs the post hooks) if
/// [`Frozen::thaw`] was not called.
pub struct Frozen {
    plan: Plan,
    agent: Option<Agent>,
    /// Whether every step of the plan succeeded: the guest is quiesced.
    pub quiesced: bool,
    /// What went wrong on the way, for the record.
    pub problems: Vec<String>,
    thawed: bool,
}

/// Runs the pre hooks and freezes the guest. Every failure is collected in `problems`
/// (and `quiesced` is false); none is returned as an error, so that the caller decides
/// between `required` and `best-effort` with the thaw guaranteed either way.
pub fn freeze(plan: &Plan) -> Frozen {
    let mut frozen = Frozen {
        plan: plan.clone(),
        agent: None,
        quiesced: plan.quiesces(),
        problems: Vec::new(),
        thawed: false,
    };
    for cmd in &plan.pre {
        if let Err(e) = run_hook(cmd, "pre", &plan.env) {
            frozen.problems.push(format!("{e:#}"));
            frozen.quiesced = false;
            return frozen;
        }
    }
    if let Some(socket) = &plan.agent {
        match Agent::connect(socket) {
            Ok(mut agent) => {
                let r = agent.execute("guest-fsfreeze-freeze", FREEZE_TIMEOUT);
                // Kept even when the freeze failed: a partial freeze must be thawed.
                frozen.agent = Some(agent);
                if let Err(e) = r {
                    frozen.problems.push(format!(
                        "freezing the guest's file systems through {}: {e:#}",
                        socket.display()
                    ));
                    frozen.quiesced = false;
                }
            }
            Err(e) => {
                frozen.problems.push(format!(
                    "reaching the guest agent at {}: {e:#}",
                    socket.display()
                ));
                frozen.quiesced = false;
            }
        }
    }
    frozen
}

impl Frozen {
    /// Thaws the guest and runs the post hooks, all of them whatever fails. Returns what
    /// failed.
    pub fn thaw(&mut self) -> Vec<String> {
        if self.thawed {
            return Vec::new();
        }
        self.thawed = true;
        let mut failed = Vec::new();
        if let Some(agent) = &mut self.agent {
            if let Err(e) = agent.execute("guest-fsfreeze-thaw", FREEZE_TIMEOUT) {
                failed.push(format!("thawing the guest's file systems: {e:#}"));
            }
        }
        let mut env = self.plan.env.clone();
        env.push((
            "SNAPPORT_CONSISTENT".into(),
            if self.quiesced { "true" } else { "false" }.into(),
        ));
        for cmd in &self.plan.post {
            if let Err(e) = run_hook(cmd, "post", &env) {
                failed.push(format!("{e:#}"));
            }
        }
        failed
    }
}

impl Drop for Frozen {
    /// The guest is thawed on every path; callers call [`Frozen::thaw`] to learn what
    /// went wrong (here, after a panic, nobody is left to tell: nothing here prints).
    fn drop(&mut self) {
        let _ = self.thaw();
    }
}

fn run_hook(cmd: &str, stage: &str, env: &[(String, String)]) -> Result<()> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SNAPPORT_HOOK", stage)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("{stage} hook `{cmd}` could not start"))?;
    if !status.success() {
        bail!("{stage} hook `{cmd}` failed ({status})");
    }
    Ok(())
}

/// A connection to a QEMU guest agent.
struct Agent {
    stream: BufReader<UnixStream>,
}

impl Agent {
    fn connect(socket: &std::path::Path) -> Result<Agent> {
        let stream = UnixStream::connect(socket).context("connecting")?;
        let mut agent = Agent {
            stream: BufReader::new(stream),
        };
        // A fresh id each time: answers left over from an earlier client are skipped.
        let id = u64::from(std::process::id()) << 20 ^ crate::clock::now_ms() & 0xfffff;
        agent.send(&serde_json::json!({ "execute": "guest-sync", "arguments": { "id": id } }))?;
        loop {
            let answer = agent.receive(SYNC_TIMEOUT)?;
            if answer.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(agent);
            }
        }
    }

    fn send(&mut self, command: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&line)
            .context("sending to the agent")
    }

    fn receive(&mut self, timeout: Duration) -> Result<Value> {
        self.stream
            .get_ref()
            .set_read_timeout(Some(timeout))
            .context("setting a timeout")?;
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .with_context(|| format!("no answer from the agent within {timeout:?}"))?;
        if n == 0 {
            bail!("the agent closed the connection");
        }
        serde_json::from_str(&line)
            .with_context(|| format!("the agent answered {line:?}, not JSON"))
    }

    /// Runs `command`; an `error` answer is an error carrying the agent's description.
    fn execute(&mut self, command: &str, timeout: Duration) -> Result<Value> {
        self.send(&serde_json::json!({ "execute": command }))?;
        let answer = self.receive(timeout)?;
        if let Some(e) = answer.get("error") {
            let desc = e
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("no description");
            let class = e.get("class").and_then(Value::as_str).unwrap_or("error");
            return Err(format_err!("{command}: {class}: {desc}"));
        }
        answer
            .get("return")
            .cloned()
            .ok_or_else(|| format_err!("{command}: the agent answered {answer}, with no return"))
    }
}
