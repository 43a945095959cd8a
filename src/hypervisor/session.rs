//! Lasting host sessions: one child process per host (virsh's shell, or PowerShell at the
//! end of one SSH connection), fed one request at a time and read up to a marker, instead
//! of a new process, and a new connection, per call.
//!
//! A session is lent for one call at a time and given back only after a complete answer.
//! A call that fails on the connection, or is dropped (a timeout, a cancel), drops the
//! session with it, which kills its process group; the next call opens a new one. So a
//! hung call never leaves a half-read session for the next, and a broken one is
//! replaced by itself.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, MutexGuard};

use super::DriverError;

/// The most output one answer may have before the session is given up: a host that
/// never stops talking must not fill the robot's memory.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// How much of what a session said last is kept for the error when it ends unasked.
const TAIL_CHARS: usize = 600;

/// A session's process group, killed when the session is dropped: what it started
/// (virsh's ssh for a `qemu+ssh` host) goes with it.
struct Group(Option<u32>);

impl Group {
    fn of(child: &tokio::process::Child) -> Self {
        Self(child.id())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) only sends a signal. A negative pid names the child's own
            // process group (process_group(0)); Linux does not hand out an id again
            // while a process still has it as its group, so only what the command
            // started can be hit.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// A running session: its process, its input, and its output and errors, merged into
/// one stream in the order it wrote them.
pub struct Session {
    /// Kills what the session started (virsh's ssh) with it.
    _group: Group,
    /// Killed when dropped, if still running.
    _child: Child,
    /// The process's standard input, where requests are written.
    stdin: ChildStdin,
    /// The reading end of the one pipe the process's stdout and stderr both write to.
    output: pipe::Receiver,
    /// Read but not yet part of an answer.
    buffer: Vec<u8>,
    /// Answers given so far: numbers each request's markers apart.
    pub answered: u32,
    /// What the process is, for errors.
    program: String,
}

impl Session {
    /// Starts `program args`, its stdout and stderr into one pipe.
    pub fn open(
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Self, DriverError> {
        let name = program.display().to_string();
        let broken = |e: std::io::Error| DriverError::Transient(format!("cannot run {name}: {e}"));
        let (reader, writer) = std::io::pipe().map_err(broken)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(writer.try_clone().map_err(broken)?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| DriverError::Permanent(format!("cannot run {name}: {e}")))?;
        // The command's copies of the pipe's writing end go with it: the pipe ends when
        // the child's do.
        drop(command);
        let group = Group::of(&child);
        let stdin = child.stdin.take().expect("stdin is piped");
        let output = pipe::Receiver::from_owned_fd(reader.into()).map_err(broken)?;
        Ok(Self {
            _group: group,
            _child: child,
            stdin,
            output,
            buffer: Vec::new(),
            answered: 0,
            program: name,
        })
    }

    /// Sends `text` as it is.
    pub async fn send(&mut self, text: &str) -> Result<(), DriverError> {
        let sent = async {
            self.stdin.write_all(text.as_bytes()).await?;
            self.stdin.flush().await
        };
        sent.await
            .map_err(|e| self.ended(&format!("cannot write to it ({e})")))
    }

    /// Reads up to `marker`: what came before it, each complete line also handed to
    /// `on_line` as it arrives (progress reports).
    pub async fn read_to(
        &mut self,
        marker: &str,
        mut on_line: impl FnMut(&str),
    ) -> Result<String, DriverError> {
        let marker = marker.as_bytes();
        // Bytes already handed to `on_line`, line by line.
        let mut seen = 0;
        let mut chunk = [0u8; 8192];
        loop {
            let found = find(&self.buffer, marker);
            let complete = found.unwrap_or(self.buffer.len());
            while let Some(end) = self.buffer[seen..complete].iter().position(|&b| b == b'\n') {
                on_line(String::from_utf8_lossy(&self.buffer[seen..seen + end]).trim_end());
                seen += end + 1;
            }
            if let Some(at) = found {
                let answer = String::from_utf8_lossy(&self.buffer[..at]).into_owned();
                self.buffer.drain(..at + marker.len());
                self.answered += 1;
                return Ok(answer);
            }
            if self.buffer.len() > MAX_ANSWER_BYTES {
                return Err(DriverError::Permanent(format!(
                    "{} answered with more than {} MiB; the session was closed",
                    self.program,
                    MAX_ANSWER_BYTES >> 20
                )));
            }
            match self.output.read(&mut chunk).await {
                Ok(0) => return Err(self.ended("it ended")),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(self.ended(&format!("cannot read from it ({e})"))),
            }
        }
    }

    /// The session is over: the host is unreachable, by the last thing it said.
    fn ended(&self, how: &str) -> DriverError {
        let said = String::from_utf8_lossy(&self.buffer);
        let said = said.trim();
        let tail: String = {
            let skip = said.chars().count().saturating_sub(TAIL_CHARS);
            said.chars().skip(skip).collect()
        };
        let tail = tail.split_whitespace().collect::<Vec<_>>().join(" ");
        DriverError::Unreachable(if tail.is_empty() {
            format!("the session with {} was lost: {how}", self.program)
        } else {
            format!("the session with {} was lost: {how}: {tail}", self.program)
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One host's session, lent to one call at a time: the calls of every task and query on
/// the host take turns on it, in order.
pub struct Lasting {
    /// The session kept between calls (`None`: none yet, or the last was dropped); the
    /// lock is held for a whole call, so calls take turns.
    slot: Mutex<Option<Session>>,
    /// Sessions opened so far (reuse shows as this staying low).
    opened: AtomicU64,
    /// Most answers one session gives before a new one replaces it.
    max_answers: u32,
}

/// A session lent for one call. Unless [`Loan::keep`] gives it back, it is closed when the
/// loan is dropped.
pub struct Loan<'a> {
    /// The host's slot, locked for the call; `keep` puts the session back in it.
    slot: MutexGuard<'a, Option<Session>>,
    /// The session lent; `None` only once `keep` has taken it.
    session: Option<Session>,
    /// Opened for this call: a failure on it is the host's, not a session gone stale.
    pub fresh: bool,
}

impl Lasting {
    pub fn new(max_answers: u32) -> Self {
        Self {
            slot: Mutex::new(None),
            opened: AtomicU64::new(0),
            max_answers: max_answers.max(1),
        }
    }

    /// Sessions opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The session, once the calls before have ended: the one kept, or a new one from
    /// `open`.
    pub async fn lend(
        &self,
        open: impl FnOnce() -> Result<Session, DriverError>,
    ) -> Result<Loan<'_>, DriverError> {
        let mut slot = self.slot.lock().await;
        let (session, fresh) = match slot.take() {
            Some(session) => (session, false),
            None => {
                let session = open()?;
                self.opened.fetch_add(1, Ordering::Relaxed);
                (session, true)
            }
        };
        Ok(Loan {
            slot,
            session: Some(session),
            fresh,
        })
    }
}

impl Loan<'_> {
    pub fn session(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .expect("a loan holds its session until kept")
    }

    /// Gives the session back for the next call, unless it has answered its share.
    pub fn keep(mut self, lasting: &Lasting) {
        if let Some(session) = self.session.take()
            && session.answered < lasting.max_answers
        {
            *self.slot = Some(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Session {
        Session::open(Path::new("sh"), &["-c".into(), script.into()], &[]).unwrap()
    }

    #[tokio::test]
    async fn answers_are_read_up_to_their_markers_in_order() {
        let mut s = shell(
            "while read -r line; do echo \"out $line\"; echo \"err $line\" >&2; echo END; done",
        );
        s.send("a\nb\n").await.unwrap();
        let mut lines = Vec::new();
        let first = s
            .read_to("END", |l| lines.push(l.to_owned()))
            .await
            .unwrap();
        assert_eq!(first, "out a\nerr a\n");
        assert_eq!(lines, ["out a", "err a"]);
        assert_eq!(s.read_to("END", |_| {}).await.unwrap(), "\nout b\nerr b\n");
        assert_eq!(s.answered, 2);
    }

    #[tokio::test]
    async fn a_session_that_ends_leaves_the_host_unreachable_with_its_last_words() {
        let mut s =
            shell("echo 'ssh: connect to host h port 22: Connection refused' >&2; exit 255");
        let err = s.read_to("END", |_| {}).await.unwrap_err();
        assert!(matches!(err, DriverError::Unreachable(_)), "{err:?}");
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[tokio::test]
    async fn a_loan_not_kept_closes_the_session() {
        let lasting = Lasting::new(2);
        let open = || Ok(shell("cat"));
        let loan = lasting.lend(open).await.unwrap();
        assert!(loan.fresh);
        drop(loan);
        let mut loan = lasting.lend(open).await.unwrap();
        assert!(loan.fresh, "a dropped loan closes its session");
        loan.session().send("x END\n").await.unwrap();
        loan.session().read_to("END", |_| {}).await.unwrap();
        loan.keep(&lasting);
        let mut loan = lasting.lend(open).await.unwrap();
        assert!(!loan.fresh, "a kept session is lent again");
        loan.session().send("y END\n").await.unwrap();
        loan.session().read_to("END", |_| {}).await.unwrap();
        loan.keep(&lasting);
        // Two answers: its share; the next call gets a new one.
        assert!(lasting.lend(open).await.unwrap().fresh);
        assert_eq!(lasting.opened(), 3);
    }
}
