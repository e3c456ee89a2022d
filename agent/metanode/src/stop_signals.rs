//! SIGTERM and SIGINT for the long-running commands (`agent`, `cage
//! serve`): installed before the command announces itself, so a signal sent
//! right after the announcement is a graceful stop, not the default action
//! (the process killed outright).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The installed handlers; one that could not be installed never fires.
#[derive(Debug)]
pub struct StopSignals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl StopSignals {
    /// Installs both handlers now (from here on, neither signal kills the
    /// process); a failure is logged and leaves the other one working.
    pub fn install() -> StopSignals {
        let installed = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, signal = name, "cannot install a stop signal handler; that signal no longer stops this process gracefully");
                None
            }
        };
        let term = installed(SignalKind::terminate(), "SIGTERM");
        let int = installed(SignalKind::interrupt(), "SIGINT");
        if term.is_none() && int.is_none() {
            tracing::error!("no stop signal handler: stop this process with SIGKILL");
        }
        StopSignals { term, int }
    }

    /// The next delivery, by name ("SIGTERM" or "SIGINT"); never, without
    /// handlers.
    pub async fn next(&mut self) -> &'static str {
        async fn one(signal: &mut Option<Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => "SIGTERM",
            _ = one(&mut self.int) => "SIGINT",
        }
    }
}
