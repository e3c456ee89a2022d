//! The ordered shutdown: say why, stop services (SIGTERM, bounded wait, SIGKILL), stop whatever is
//! left (orphans such as DockLock workloads whose parent died, which would keep the data mounts
//! busy), sync, unmount the caller's data mounts in reverse (lazy as a fallback), sync, and
//! `reboot(2)`. Every wait is bounded and keeps the watchdog fed, so a stuck step ends in a
//! watchdog reboot at worst.

use std::path::PathBuf;
use std::time::Instant;

use nix::errno::Errno;

use crate::constants::{KILL_WAIT, ORPHAN_TERM_WAIT, SHUTDOWN_POLL_INTERVAL, STOP_TIMEOUT};
use crate::power::{PowerAction, PowerRequest};
use crate::runtime::{execute, reap};
use crate::supervisor::Supervisor;
use crate::sys::{InitSys, Pid, Signal, say, say_error};
use crate::watchdog::Watchdog;

/// What happened; `run_shutdown` only returns when `reboot(2)` did (always with the fake).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Some service needed SIGKILL.
    pub services_killed: bool,
    /// Services still running when the wait gave up.
    pub services_stuck: bool,
    /// Children still left after the orphan SIGKILL wait.
    pub orphans_stuck: bool,
    pub unmounted: Vec<PathBuf>,
    /// Detached with MNT_DETACH after a plain unmount failed.
    pub lazily_unmounted: Vec<PathBuf>,
    pub unmount_failed: Vec<PathBuf>,
    /// Set when `reboot(2)` returned.
    pub reboot_error: Option<String>,
}

/// Shut the node down. `data_mounts` are in mount order; they are unmounted in reverse.
pub fn run_shutdown(
    sys: &mut dyn InitSys,
    sup: &mut Supervisor,
    watchdog: &mut Watchdog,
    data_mounts: &[PathBuf],
    request: &PowerRequest,
) -> ShutdownReport {
    let mut report = ShutdownReport::default();
    say(sys, format!("shutting down ({})", request.reason));

    let start = sys.now();
    let effects = sup.stop_all(start);
    execute(sys, sup, effects, start);
    let give_up_at = start + STOP_TIMEOUT + KILL_WAIT;
    loop {
        reap(sys, sup);
        if sup.all_stopped() {
            break;
        }
        let now = sys.now();
        let effects = sup.tick(now);
        execute(sys, sup, effects, now);
        if now >= give_up_at {
            report.services_stuck = true;
            say_error(
                sys,
                "services still running after SIGKILL; going on without them",
            );
            break;
        }
        watchdog.pet_if_due(sys);
        sys.sleep(SHUTDOWN_POLL_INTERVAL);
    }
    report.services_killed = sup.stop_escalated();

    // Whatever is left has no supervisor to stop it.
    let everyone = Pid::from_raw(-1);
    match sys.kill(everyone, Signal::SIGTERM) {
        Err(e) if e.raw_os_error() == Some(Errno::ESRCH as i32) => {}
        Err(e) => say_error(sys, format!("kill -1 SIGTERM: {e}")),
        Ok(()) => {
            let deadline = sys.now() + ORPHAN_TERM_WAIT;
            if !wait_for_no_children(sys, sup, watchdog, deadline) {
                let _ = sys.kill(everyone, Signal::SIGKILL);
                let deadline = sys.now() + KILL_WAIT;
                if !wait_for_no_children(sys, sup, watchdog, deadline) {
                    report.orphans_stuck = true;
                    say_error(sys, "processes left after SIGKILL; unmounting anyway");
                }
            }
        }
    }

    sys.sync();
    for target in data_mounts.iter().rev() {
        match sys.umount(target, false) {
            Ok(()) => report.unmounted.push(target.clone()),
            Err(e) => match sys.umount(target, true) {
                Ok(()) => {
                    say(
                        sys,
                        format!("{} busy ({e}); detached lazily", target.display()),
                    );
                    report.lazily_unmounted.push(target.clone());
                }
                Err(lazy) => {
                    say_error(
                        sys,
                        format!("cannot unmount {}: {e}; lazily: {lazy}", target.display()),
                    );
                    report.unmount_failed.push(target.clone());
                }
            },
        }
    }
    sys.sync();

    let verb = match request.action {
        PowerAction::Reboot => "rebooting",
        PowerAction::PowerOff => "powering off",
        PowerAction::Halt => "halting",
    };
    say(sys, verb);
    if let Err(e) = sys.reboot(request.action.reboot_cmd()) {
        say_error(sys, format!("reboot({}): {e}", request.action));
        report.reboot_error = Some(e.to_string());
    }
    report
}

/// Reap until no child is left (true) or `deadline` passes (false).
fn wait_for_no_children(
    sys: &mut dyn InitSys,
    sup: &mut Supervisor,
    watchdog: &mut Watchdog,
    deadline: Instant,
) -> bool {
    loop {
        if reap(sys, sup).no_children {
            return true;
        }
        if sys.now() >= deadline {
            return false;
        }
        watchdog.pet_if_due(sys);
        sys.sleep(SHUTDOWN_POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::supervisor::{Restart, ServiceSpec};
    use crate::sys::fake::{Call, ChildPlan, FakeSys};
    use crate::sys::{MountRequest, MsFlags, RebootCmd};

    fn started(fake: &mut FakeSys, plans: &[ChildPlan]) -> Supervisor {
        let services = (0..plans.len())
            .map(|i| ServiceSpec::new(format!("s{i}"), vec![format!("/bin/s{i}")], Restart::Always))
            .collect();
        let mut sup = Supervisor::new(services).expect("valid");
        fake.state().plans.extend(plans.iter().copied());
        let now = fake.now();
        let effects = sup.start(now);
        execute(fake, &mut sup, effects, now);
        sup
    }

    fn mount(fake: &mut FakeSys, target: &str) -> PathBuf {
        fake.add_dir(target);
        let request = MountRequest {
            source: "/dev/vda3",
            target: target.as_ref(),
            fstype: "ext4",
            flags: MsFlags::empty(),
            data: None,
        };
        fake.mount(&request).expect("mount");
        PathBuf::from(target)
    }

    /// Calls that matter for ordering (no reads, console lines kept).
    fn significant(calls: Vec<Call>) -> Vec<Call> {
        calls
            .into_iter()
            .filter(|c| {
                !matches!(
                    c,
                    Call::Read(_) | Call::Spawn { .. } | Call::Mount { .. } | Call::Mkdir(_)
                )
            })
            .collect()
    }

    #[test]
    fn ordered_shutdown() {
        let mut fake = FakeSys::new();
        let mut sup = started(
            &mut fake,
            &[ChildPlan::RunUntilSignal { ignore_term: false }],
        );
        let data = mount(&mut fake, "/var/lib/metanode");
        let logs = mount(&mut fake, "/var/log");
        fake.state()
            .umount_errors
            .insert(logs.clone(), Errno::EBUSY);
        fake.state().calls.clear();
        let request = PowerRequest {
            action: PowerAction::PowerOff,
            reason: "power button".into(),
        };
        let report = run_shutdown(
            &mut fake,
            &mut sup,
            &mut Watchdog::off(),
            &[data.clone(), logs.clone()],
            &request,
        );
        assert_eq!(
            significant(fake.calls()),
            vec![
                Call::Console("metanode: shutting down (power button)".into()),
                Call::Console("metanode: stopping service s0 (pid 100)".into()),
                Call::Kill { pid: 100, signal: Signal::SIGTERM },
                Call::Console("metanode: service s0 stopped (signal 15 (SIGTERM))".into()),
                Call::Kill { pid: -1, signal: Signal::SIGTERM },
                Call::Sync,
                Call::Umount { target: logs.clone(), lazy: false },
                Call::Umount { target: logs.clone(), lazy: true },
                Call::Console("metanode: /var/log busy (Device or resource busy (os error 16)); detached lazily".into()),
                Call::Umount { target: data.clone(), lazy: false },
                Call::Sync,
                Call::Console("metanode: powering off".into()),
                Call::Reboot(RebootCmd::PowerOff),
            ]
        );
        assert_eq!(
            report,
            ShutdownReport {
                unmounted: vec![data],
                lazily_unmounted: vec![logs],
                ..ShutdownReport::default()
            }
        );
    }

    #[test]
    fn service_ignoring_sigterm_gets_sigkill_after_the_bound() {
        let mut fake = FakeSys::new();
        let mut sup = started(
            &mut fake,
            &[
                ChildPlan::RunUntilSignal { ignore_term: true },
                ChildPlan::ExitAfter(Duration::from_secs(3600), crate::sys::ExitStatus::Exited(0)),
            ],
        );
        fake.state().watchdog_device = Some("/dev/watchdog".into());
        fake.state().watchdog_timeout_s = Some(30);
        let mut watchdog = Watchdog::start(&mut fake, &crate::watchdog::WatchdogOptions::default());
        let start = fake.now();
        let request = PowerRequest {
            action: PowerAction::Reboot,
            reason: "SIGTERM".into(),
        };
        let report = run_shutdown(&mut fake, &mut sup, &mut watchdog, &[], &request);
        assert!(report.services_killed);
        assert!(!report.services_stuck);
        let calls = fake.calls();
        let sigkill_index = calls
            .iter()
            .position(|c| {
                *c == Call::Kill {
                    pid: 100,
                    signal: Signal::SIGKILL,
                }
            })
            .expect("SIGKILL sent to the service that ignored SIGTERM");
        assert!(calls[..sigkill_index].contains(&Call::Kill {
            pid: 100,
            signal: Signal::SIGTERM
        }));
        assert!(
            !calls.contains(&Call::Kill {
                pid: 101,
                signal: Signal::SIGKILL
            }),
            "s1 stopped on SIGTERM"
        );
        // The wait lasted STOP_TIMEOUT (plus at most one poll), and the watchdog was fed meanwhile.
        let elapsed = fake.now() - start;
        assert!(
            elapsed >= STOP_TIMEOUT && elapsed <= STOP_TIMEOUT + SHUTDOWN_POLL_INTERVAL,
            "{elapsed:?}"
        );
        let keepalives = fake.state().watchdog_keepalives.len();
        assert_eq!(keepalives, 2, "at 0 s and 10 s");
        assert_eq!(calls.last(), Some(&Call::Reboot(RebootCmd::Restart)));
    }

    #[test]
    fn orphans_get_sigterm_then_sigkill_before_unmounting() {
        let mut fake = FakeSys::new();
        let mut sup = started(&mut fake, &[]);
        // An orphan (say a cage whose agent died) that ignores SIGTERM.
        fake.state().children.insert(
            7,
            crate::sys::fake::FakeChild {
                argv: vec!["cage".into()],
                exit: None,
                ignore_term: true,
            },
        );
        let data = mount(&mut fake, "/var/lib/metanode");
        let start = fake.now();
        let request = PowerRequest {
            action: PowerAction::Halt,
            reason: "SIGUSR1".into(),
        };
        let report = run_shutdown(
            &mut fake,
            &mut sup,
            &mut Watchdog::off(),
            std::slice::from_ref(&data),
            &request,
        );
        assert!(!report.orphans_stuck);
        assert_eq!(report.unmounted, vec![data.clone()]);
        let calls = significant(fake.calls());
        let position = |call: &Call| calls.iter().position(|c| c == call).expect("call made");
        let term = position(&Call::Kill {
            pid: -1,
            signal: Signal::SIGTERM,
        });
        let kill = position(&Call::Kill {
            pid: -1,
            signal: Signal::SIGKILL,
        });
        let umount = position(&Call::Umount {
            target: data,
            lazy: false,
        });
        assert!(term < kill && kill < umount, "{calls:?}");
        // The orphan had ORPHAN_TERM_WAIT to go on its own.
        let elapsed = fake.now() - start;
        assert!(
            elapsed >= ORPHAN_TERM_WAIT && elapsed <= ORPHAN_TERM_WAIT + SHUTDOWN_POLL_INTERVAL,
            "{elapsed:?}"
        );
        assert_eq!(calls.last(), Some(&Call::Reboot(RebootCmd::Halt)));
        assert!(fake.state().children.is_empty());
    }
}
