//! Child processes with deadlines. Every child runs in its own process group
//! so a timeout or a stop also ends what it spawned (node workers, agents).

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rustix::process::{Pid, Signal, kill_process_group};

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A child that exited on its own.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub elapsed: Duration,
}

#[derive(Debug)]
pub enum Outcome {
    Finished(Finished),
    TimedOut(Duration),
}

/// Runs `cmd` with stdout captured, stderr appended to `log`, and no stdin;
/// kills its whole process group after `timeout`.
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
    log: &Path,
) -> anyhow::Result<Outcome> {
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log {}", log.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let mut stdout = child.stdout.take().context("child stdout")?;
    // A separate reader so a chatty child cannot block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for child")? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            break None;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    // Leftover grandchildren would hold the stdout pipe open (and the disk).
    kill_group(&child, Signal::KILL);
    let Some(status) = status else {
        child.wait().context("reap timed-out child")?;
        return Ok(Outcome::TimedOut(timeout));
    };
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?
        .context("read child stdout")?;
    Ok(Outcome::Finished(Finished {
        status,
        stdout,
        elapsed: started.elapsed(),
    }))
}

/// Starts a long-running child (e.g. an agent) in its own process group.
pub fn spawn_background(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open log {}", log.display()))?;
    let log_err = log_file.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))
}

/// SIGTERM to the child's group, SIGKILL after `grace`, then reap.
pub fn stop_background(mut child: Child, grace: Duration) -> anyhow::Result<()> {
    kill_group(&child, Signal::TERM);
    let started = Instant::now();
    while started.elapsed() < grace {
        if child.try_wait()?.is_some() {
            kill_group(&child, Signal::KILL);
            return Ok(());
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    kill_group(&child, Signal::KILL);
    child.wait()?;
    Ok(())
}

fn kill_group(child: &Child, signal: Signal) {
    // The group id is the child's pid (process_group(0)); ESRCH just means
    // everything in it has exited already.
    let _ = kill_process_group(Pid::from_child(child), signal);
}

/// Runs `cmd` with inherited output (builds, tests) and returns whether it
/// succeeded.
pub fn run_inherited(cmd: &mut Command) -> anyhow::Result<bool> {
    let status = cmd
        .status()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    Ok(status.success())
}

/// The last lines of a log, for error messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout_and_logs_stderr() {
        let dir = std::env::temp_dir().join(format!("xtask-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("a.log");
        let outcome = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(10),
            &log,
        )
        .expect("runs");
        let Outcome::Finished(f) = outcome else {
            panic!("sh should finish");
        };
        assert!(f.status.success());
        assert_eq!(f.stdout, "out\n");
        assert_eq!(log_tail(&log, 5), "err");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn kills_the_group_on_timeout() {
        let dir = std::env::temp_dir().join(format!("xtask-proc-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // The grandchild `sleep` holds stdout; killing only `sh` would hang.
        let outcome = run_with_timeout(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
            &dir.join("t.log"),
        )
        .expect("runs");
        assert!(matches!(outcome, Outcome::TimedOut(_)));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
