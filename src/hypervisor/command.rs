//! Runs host commands as argument vectors (never through a shell), killing them when the
//! caller gives up (a timeout drops the future): each runs in a process group of its own,
//! killed whole, so that what it started (virsh's ssh for a `qemu+ssh` host) goes too.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::DriverError;

/// What a finished command said.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A command's process group, killed when dropped before the command has ended.
struct Group(Option<u32>);

impl Group {
    fn of(child: &tokio::process::Child) -> Self {
        Self(child.id())
    }

    /// The command ended by itself: nothing to kill.
    fn ended(mut self) {
        self.0 = None;
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

/// Runs `program` with `args`, feeding `stdin` when given.
pub async fn run<I, S>(program: &Path, args: I, stdin: Option<&str>) -> Result<Output, DriverError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| DriverError::Permanent(format!("cannot run {}: {e}", program.display())))?;
    let group = Group::of(&child);
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.map_err(|e| {
            DriverError::Transient(format!("cannot write to {}: {e}", program.display()))
        })?;
        // Closing stdin tells the reader the script is complete.
        drop(pipe);
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| DriverError::Transient(format!("{} failed: {e}", program.display())))?;
    group.ended();
    Ok(Output {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Like [`run`], handing each stdout line to `on_line` as it arrives (progress reports).
pub async fn stream<I, S>(
    program: &Path,
    args: I,
    stdin: &str,
    mut on_line: impl FnMut(&str),
) -> Result<Output, DriverError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DriverError::Permanent(format!("cannot run {}: {e}", program.display())))?;
    let group = Group::of(&child);
    let broken =
        |e: std::io::Error| DriverError::Transient(format!("{} failed: {e}", program.display()));
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.as_bytes()).await.map_err(broken)?;
    drop(pipe);
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut stdout = String::new();
    while let Some(line) = lines.next_line().await.map_err(broken)? {
        on_line(&line);
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let status = child.wait().await.map_err(broken)?;
    group.ended();
    Ok(Output {
        success: status.success(),
        stdout,
        stderr: stderr_task.await.unwrap_or_default(),
    })
}
