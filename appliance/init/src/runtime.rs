//! The glue between the pure [`Supervisor`] and the kernel: carrying out effects, and the reaper.

use std::collections::VecDeque;
use std::time::Instant;

use crate::constants::{EFFECTS_PER_BATCH_MAX, REAP_BATCH_MAX};
use crate::supervisor::{Effect, Supervisor};
use crate::sys::{InitSys, SpawnSpec, WaitOutcome, say, say_error};

/// Carry out `effects` (and the effects they lead to: a spawn reports back to the supervisor).
pub fn execute(sys: &mut dyn InitSys, sup: &mut Supervisor, effects: Vec<Effect>, now: Instant) {
    let mut queue: VecDeque<Effect> = effects.into();
    let mut executed = 0usize;
    while let Some(effect) = queue.pop_front() {
        executed += 1;
        if executed > EFFECTS_PER_BATCH_MAX {
            // A spawn only leads to logs, so this means a supervisor bug; do not loop on it.
            say_error(
                sys,
                format!(
                    "more than {EFFECTS_PER_BATCH_MAX} effects in one batch; dropping the rest"
                ),
            );
            return;
        }
        match effect {
            Effect::Log(line) => say(sys, line),
            Effect::Kill { pid, signal } => {
                if let Err(e) = sys.kill(pid, signal) {
                    // ESRCH: it died in between; its exit is reaped as usual.
                    if e.raw_os_error() != Some(nix::errno::Errno::ESRCH as i32) {
                        say_error(sys, format!("kill {pid} {}: {e}", signal.as_str()));
                    }
                }
            }
            Effect::Spawn { name } => {
                let result = match sup.spec(&name) {
                    Some(spec) => sys.spawn(&SpawnSpec {
                        argv: &spec.argv,
                        env: &spec.env,
                    }),
                    None => continue,
                };
                let follow_up = match result {
                    Ok(pid) => sup.spawned(&name, pid, now),
                    Err(e) => sup.spawn_failed(&name, &e.to_string(), now),
                };
                queue.extend(follow_up);
            }
        }
    }
}

/// What one reaper pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReapReport {
    /// Exits of supervised services (routed to the supervisor).
    pub services_count: usize,
    /// Exits of other children: orphans re-parented to PID 1, reaped silently.
    pub orphans_count: usize,
    /// `waitpid` said there are no children left at all.
    pub no_children: bool,
}

/// Reap every exited child (`waitpid(-1, WNOHANG)` until nothing is left to reap), route service
/// exits to the supervisor and carry out what it decides.
pub fn reap(sys: &mut dyn InitSys, sup: &mut Supervisor) -> ReapReport {
    let mut report = ReapReport::default();
    for _ in 0..REAP_BATCH_MAX {
        match sys.wait_any() {
            Ok(WaitOutcome::Exited { pid, status }) => {
                if sup.owns(pid) {
                    report.services_count += 1;
                    let now = sys.now();
                    let effects = sup.exited(pid, status, now);
                    execute(sys, sup, effects, now);
                } else {
                    report.orphans_count += 1;
                }
            }
            Ok(WaitOutcome::Running) => break,
            Ok(WaitOutcome::NoChildren) => {
                report.no_children = true;
                break;
            }
            Err(e) => {
                say_error(sys, format!("waitpid: {e}"));
                break;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nix::errno::Errno;

    use super::*;
    use crate::supervisor::{Restart, ServiceSpec, ServiceState};
    use crate::sys::ExitStatus;
    use crate::sys::fake::{Call, ChildPlan, FakeSys};

    #[test]
    fn reaps_orphans_silently_and_routes_service_exits() {
        let mut fake = FakeSys::new();
        let mut sup = Supervisor::new(vec![ServiceSpec::new(
            "agent",
            vec!["/init".into(), "agent".into()],
            Restart::Always,
        )])
        .expect("valid");
        fake.state()
            .plans
            .push_back(ChildPlan::ExitAfter(Duration::ZERO, ExitStatus::Exited(2)));
        let now = fake.now();
        let effects = sup.start(now);
        execute(&mut fake, &mut sup, effects, now);
        let pid = sup.pid("agent").expect("running");
        fake.add_orphan_exit(4242, ExitStatus::Exited(0));
        fake.add_orphan_exit(
            4243,
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            },
        );
        let lines_before = fake.console_lines().len();
        let report = reap(&mut fake, &mut sup);
        assert_eq!(
            report,
            ReapReport {
                services_count: 1,
                orphans_count: 2,
                no_children: true
            }
        );
        let lines = fake.console_lines();
        assert_eq!(
            lines[lines_before..],
            [
                "metanode: service agent exited (exit status 2) after 0ns; restarting in 200ms"
                    .to_owned()
            ]
        );
        assert!(matches!(
            sup.state("agent"),
            Some(ServiceState::Backoff { .. })
        ));
        assert!(fake.state().children.is_empty(), "no zombie left");
        assert!(!sup.owns(pid));
    }

    #[test]
    fn failed_spawn_is_logged_and_backed_off() {
        let mut fake = FakeSys::new();
        fake.state()
            .spawn_errors
            .insert("/init".into(), Errno::ENOENT);
        let mut sup = Supervisor::new(vec![ServiceSpec::new(
            "agent",
            vec!["/init".into()],
            Restart::Always,
        )])
        .expect("valid");
        let now = fake.now();
        let effects = sup.start(now);
        execute(&mut fake, &mut sup, effects, now);
        assert!(matches!(
            sup.state("agent"),
            Some(ServiceState::Backoff { .. })
        ));
        let lines = fake.console_lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("metanode: service agent failed to start: No such file"),
            "{lines:?}"
        );
        assert!(fake.calls().contains(&Call::Spawn {
            argv: vec!["/init".into()],
            pid: None
        }));
    }
}
