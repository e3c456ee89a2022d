//! Service supervision as a pure state machine: inputs are `start`, `spawned`, `spawn_failed`,
//! `exited`, `tick`, `restart` and `stop_all`, each with the current time; outputs are [`Effect`]s the
//! caller carries out ([`crate::runtime::execute`]). No I/O, no clock: tests drive it with fake times.
//!
//! Restart policy: a service that dies is started again after a delay that starts at
//! [`BACKOFF_INITIAL`], doubles with every death up to [`BACKOFF_MAX`], and starts over when the
//! service had stayed up [`BACKOFF_RESET_AFTER_UPTIME`]. A death is only ever logged: it never
//! stops PID 1.

use std::time::{Duration, Instant};

use crate::constants::{
    BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_RESET_AFTER_UPTIME, SERVICES_COUNT_MAX, STOP_TIMEOUT,
};
use crate::sys::{ExitStatus, Pid, Signal};

/// When a service that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Whatever the exit status (with backoff).
    Always,
    /// Unless it exited with status 0.
    OnFailure,
    /// Never (it can still be restarted on request).
    Never,
}

impl Restart {
    fn name(self) -> &'static str {
        match self {
            Restart::Always => "always",
            Restart::OnFailure => "on-failure",
            Restart::Never => "never",
        }
    }
}

/// A supervised service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Unique; used in logs and restart requests.
    pub name: String,
    /// `argv[0]` is an absolute path.
    pub argv: Vec<String>,
    /// The whole environment of the process.
    pub env: Vec<(String, String)>,
    pub restart: Restart,
}

impl ServiceSpec {
    pub fn new(name: impl Into<String>, argv: Vec<String>, restart: Restart) -> Self {
        Self {
            name: name.into(),
            argv,
            env: Vec::new(),
            restart,
        }
    }

    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    #[error("service #{index} has an empty name")]
    EmptyName { index: usize },
    #[error("service `{name}` is listed twice")]
    DuplicateName { name: String },
    #[error("service `{name}` has an empty argv")]
    EmptyArgv { name: String },
    #[error("service `{name}`: argv[0] `{program}` is not an absolute path (PID 1 has no PATH)")]
    RelativeProgram { name: String, program: String },
    #[error("{count} services exceed the limit of {max}")]
    TooManyServices { count: usize, max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no service named `{name}`")]
pub struct UnknownService {
    pub name: String,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start the named service, then report `spawned` or `spawn_failed`.
    Spawn { name: String },
    /// Send a signal.
    Kill { pid: Pid, signal: Signal },
    /// Print on the console (the caller adds `metanode: `).
    Log(String),
}

/// Where a service is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// Not started yet (before `start`).
    Idle,
    /// `Spawn` was emitted; waiting for `spawned`/`spawn_failed`.
    Starting,
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Dead; starts again at `until`.
    Backoff {
        until: Instant,
    },
    /// Ended and not to be restarted (policy, or shutdown).
    Stopped,
}

#[derive(Debug)]
struct Slot {
    spec: ServiceSpec,
    state: ServiceState,
    /// Delay before the next restart after a death.
    next_delay: Duration,
    /// A requested restart is in flight: on exit, start again at once whatever the policy.
    restart_requested: bool,
    /// SIGKILL a service that ignored the SIGTERM of a requested restart at this time.
    kill_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Stopping {
    kill_at: Instant,
    killed: bool,
}

/// The supervisor.
#[derive(Debug)]
pub struct Supervisor {
    slots: Vec<Slot>,
    stopping: Option<Stopping>,
}

impl Supervisor {
    /// Validate the services. Nothing starts until [`Supervisor::start`].
    pub fn new(services: Vec<ServiceSpec>) -> Result<Self, SupervisorError> {
        if services.len() > SERVICES_COUNT_MAX {
            return Err(SupervisorError::TooManyServices {
                count: services.len(),
                max: SERVICES_COUNT_MAX,
            });
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(services.len());
        for (index, spec) in services.into_iter().enumerate() {
            if spec.name.is_empty() {
                return Err(SupervisorError::EmptyName { index });
            }
            if slots.iter().any(|s| s.spec.name == spec.name) {
                return Err(SupervisorError::DuplicateName { name: spec.name });
            }
            let Some(program) = spec.argv.first() else {
                return Err(SupervisorError::EmptyArgv { name: spec.name });
            };
            if !program.starts_with('/') {
                return Err(SupervisorError::RelativeProgram {
                    program: program.clone(),
                    name: spec.name,
                });
            }
            slots.push(Slot {
                spec,
                state: ServiceState::Idle,
                next_delay: BACKOFF_INITIAL,
                restart_requested: false,
                kill_at: None,
            });
        }
        Ok(Self {
            slots,
            stopping: None,
        })
    }

    /// A supervisor with no services.
    pub fn empty() -> Self {
        Self {
            slots: Vec::new(),
            stopping: None,
        }
    }

    pub fn spec(&self, name: &str) -> Option<&ServiceSpec> {
        self.slots
            .iter()
            .find(|s| s.spec.name == name)
            .map(|s| &s.spec)
    }

    pub fn state(&self, name: &str) -> Option<ServiceState> {
        self.slots
            .iter()
            .find(|s| s.spec.name == name)
            .map(|s| s.state)
    }

    /// The pid of a running service.
    pub fn pid(&self, name: &str) -> Option<Pid> {
        match self.state(name)? {
            ServiceState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Whether `pid` is a running service (else it is an orphan for the reaper).
    pub fn owns(&self, pid: Pid) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.state, ServiceState::Running { pid: p, .. } if p == pid))
    }

    /// Start every service that has not started yet.
    pub fn start(&mut self, _now: Instant) -> Vec<Effect> {
        if self.stopping.is_some() {
            return Vec::new();
        }
        let mut effects = Vec::new();
        for slot in &mut self.slots {
            if slot.state == ServiceState::Idle {
                slot.state = ServiceState::Starting;
                effects.push(Effect::Spawn {
                    name: slot.spec.name.clone(),
                });
            }
        }
        effects
    }

    /// The spawn of `name` succeeded.
    pub fn spawned(&mut self, name: &str, pid: Pid, now: Instant) -> Vec<Effect> {
        let stopping = self.stopping.is_some();
        let Some(slot) = self.slots.iter_mut().find(|s| s.spec.name == name) else {
            return vec![Effect::Log(format!(
                "spawned unknown service `{name}` (pid {pid})"
            ))];
        };
        slot.state = ServiceState::Running { pid, since: now };
        let mut effects = vec![Effect::Log(format!("service {name} started (pid {pid})"))];
        if stopping {
            // Raced with stop_all: it must go too.
            effects.push(Effect::Kill {
                pid,
                signal: Signal::SIGTERM,
            });
        }
        effects
    }

    /// The spawn of `name` failed (exec error): treated like a death right after start.
    pub fn spawn_failed(&mut self, name: &str, error: &str, now: Instant) -> Vec<Effect> {
        let stopping = self.stopping.is_some();
        let Some(slot) = self.slots.iter_mut().find(|s| s.spec.name == name) else {
            return Vec::new();
        };
        slot.restart_requested = false;
        slot.kill_at = None;
        let what = format!("service {name} failed to start: {error}");
        if stopping || slot.spec.restart == Restart::Never {
            slot.state = ServiceState::Stopped;
            return vec![Effect::Log(format!("{what}; not restarted"))];
        }
        let delay = schedule_backoff(slot, now, Duration::ZERO);
        vec![Effect::Log(format!("{what}; retrying in {delay:?}"))]
    }

    /// Process `pid` ended. Unknown pids (orphans) produce no effects.
    pub fn exited(&mut self, pid: Pid, status: ExitStatus, now: Instant) -> Vec<Effect> {
        let stopping = self.stopping.is_some();
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| matches!(s.state, ServiceState::Running { pid: p, .. } if p == pid))
        else {
            return Vec::new();
        };
        let ServiceState::Running { since, .. } = slot.state else {
            return Vec::new();
        };
        let uptime = now.saturating_duration_since(since);
        // Whole milliseconds read better on a serial console than nanoseconds.
        let uptime_shown = Duration::from_millis(uptime.as_millis() as u64);
        let name = slot.spec.name.clone();
        slot.kill_at = None;
        if stopping {
            slot.state = ServiceState::Stopped;
            return vec![Effect::Log(format!("service {name} stopped ({status})"))];
        }
        if slot.restart_requested {
            slot.restart_requested = false;
            slot.state = ServiceState::Starting;
            return vec![
                Effect::Log(format!(
                    "service {name} exited ({status}); restarting as requested"
                )),
                Effect::Spawn { name },
            ];
        }
        let policy = slot.spec.restart;
        let restart = match policy {
            Restart::Always => true,
            Restart::OnFailure => !status.success(),
            Restart::Never => false,
        };
        if !restart {
            slot.state = ServiceState::Stopped;
            return vec![Effect::Log(format!(
                "service {name} exited ({status}) after {uptime_shown:?}; not restarted (restart={})",
                policy.name()
            ))];
        }
        let delay = schedule_backoff(slot, now, uptime);
        vec![Effect::Log(format!(
            "service {name} exited ({status}) after {uptime_shown:?}; restarting in {delay:?}"
        ))]
    }

    /// Time passed: restarts whose delay is over, SIGKILL for services that ignored SIGTERM.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(stopping) = &mut self.stopping {
            if !stopping.killed && now >= stopping.kill_at {
                stopping.killed = true;
                for slot in &self.slots {
                    if let ServiceState::Running { pid, .. } = slot.state {
                        effects.push(Effect::Log(format!(
                            "service {} did not stop within {STOP_TIMEOUT:?}; sending SIGKILL",
                            slot.spec.name
                        )));
                        effects.push(Effect::Kill {
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                }
            }
            return effects;
        }
        for slot in &mut self.slots {
            match slot.state {
                ServiceState::Backoff { until } if until <= now => {
                    slot.state = ServiceState::Starting;
                    effects.push(Effect::Spawn {
                        name: slot.spec.name.clone(),
                    });
                }
                ServiceState::Running { pid, .. } if slot.kill_at.is_some_and(|at| at <= now) => {
                    slot.kill_at = None;
                    effects.push(Effect::Log(format!(
                        "service {} ignored SIGTERM for {STOP_TIMEOUT:?}; sending SIGKILL",
                        slot.spec.name
                    )));
                    effects.push(Effect::Kill {
                        pid,
                        signal: Signal::SIGKILL,
                    });
                }
                _ => {}
            }
        }
        effects
    }

    /// Restart `name` now: a running service gets SIGTERM (SIGKILL after [`STOP_TIMEOUT`]) and is
    /// started again as soon as it exits; a dead or finished one starts at once with the backoff
    /// reset (someone asked for it).
    pub fn restart(&mut self, name: &str, now: Instant) -> Result<Vec<Effect>, UnknownService> {
        let stopping = self.stopping.is_some();
        let Some(slot) = self.slots.iter_mut().find(|s| s.spec.name == name) else {
            return Err(UnknownService {
                name: name.to_owned(),
            });
        };
        if stopping {
            return Ok(vec![Effect::Log(format!(
                "restart of {name} ignored: shutting down"
            ))]);
        }
        Ok(match slot.state {
            ServiceState::Running { pid, .. } => {
                if slot.restart_requested {
                    Vec::new()
                } else {
                    slot.restart_requested = true;
                    slot.kill_at = Some(now + STOP_TIMEOUT);
                    vec![
                        Effect::Log(format!("restarting service {name} (pid {pid}) on request")),
                        Effect::Kill {
                            pid,
                            signal: Signal::SIGTERM,
                        },
                    ]
                }
            }
            ServiceState::Starting => Vec::new(),
            ServiceState::Idle | ServiceState::Backoff { .. } | ServiceState::Stopped => {
                slot.next_delay = BACKOFF_INITIAL;
                slot.state = ServiceState::Starting;
                vec![
                    Effect::Log(format!("starting service {name} on request")),
                    Effect::Spawn {
                        name: name.to_owned(),
                    },
                ]
            }
        })
    }

    /// Shutdown: SIGTERM to every running service, SIGKILL from `tick` after [`STOP_TIMEOUT`];
    /// nothing restarts any more.
    pub fn stop_all(&mut self, now: Instant) -> Vec<Effect> {
        if self.stopping.is_some() {
            return Vec::new();
        }
        self.stopping = Some(Stopping {
            kill_at: now + STOP_TIMEOUT,
            killed: false,
        });
        let mut effects = Vec::new();
        for slot in &mut self.slots {
            slot.restart_requested = false;
            slot.kill_at = None;
            match slot.state {
                ServiceState::Running { pid, .. } => {
                    effects.push(Effect::Log(format!(
                        "stopping service {} (pid {pid})",
                        slot.spec.name
                    )));
                    effects.push(Effect::Kill {
                        pid,
                        signal: Signal::SIGTERM,
                    });
                }
                ServiceState::Idle | ServiceState::Backoff { .. } => {
                    slot.state = ServiceState::Stopped
                }
                // `spawned` will send SIGTERM.
                ServiceState::Starting | ServiceState::Stopped => {}
            }
        }
        effects
    }

    /// `stop_all` ran and no service is running or starting.
    pub fn all_stopped(&self) -> bool {
        self.stopping.is_some()
            && self.slots.iter().all(|s| {
                !matches!(
                    s.state,
                    ServiceState::Running { .. } | ServiceState::Starting
                )
            })
    }

    /// Whether the SIGKILL escalation of `stop_all` has happened.
    pub fn stop_escalated(&self) -> bool {
        self.stopping.is_some_and(|s| s.killed)
    }

    /// The earliest time `tick` has something to do, for the main loop's timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(stopping) = self.stopping {
            return (!stopping.killed).then_some(stopping.kill_at);
        }
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                ServiceState::Backoff { until } => Some(until),
                ServiceState::Running { .. } => s.kill_at,
                _ => None,
            })
            .min()
    }
}

/// Put a dead service in backoff; returns the delay used.
fn schedule_backoff(slot: &mut Slot, now: Instant, uptime: Duration) -> Duration {
    if uptime >= BACKOFF_RESET_AFTER_UPTIME {
        slot.next_delay = BACKOFF_INITIAL;
    }
    let delay = slot.next_delay;
    slot.next_delay = (delay * 2).min(BACKOFF_MAX);
    slot.state = ServiceState::Backoff { until: now + delay };
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "agent";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn spec(name: &str, restart: Restart) -> ServiceSpec {
        ServiceSpec::new(name, vec!["/init".into(), "agent".into()], restart)
    }

    fn spawns(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Spawn { name } => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn logs(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Log(line) => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// Runs one service through the machine with a fake clock and records restart delays.
    struct Harness {
        sup: Supervisor,
        now: Instant,
        next_pid: i32,
    }

    impl Harness {
        fn new(restart: Restart) -> Self {
            let mut sup = Supervisor::new(vec![spec(AGENT, restart)]).expect("valid");
            let now = Instant::now();
            assert_eq!(spawns(&sup.start(now)), vec![AGENT]);
            let mut harness = Self {
                sup,
                now,
                next_pid: 10,
            };
            harness.confirm_spawn();
            harness
        }

        fn confirm_spawn(&mut self) -> Pid {
            let pid = Pid::from_raw(self.next_pid);
            self.next_pid += 1;
            self.sup.spawned(AGENT, pid, self.now);
            pid
        }

        /// Let the running service live for `uptime`, die with `status`, and return the delay until
        /// `tick` spawned it again (`None` if it was not restarted within 60 s).
        fn die_after(&mut self, uptime: Duration, status: ExitStatus) -> Option<Duration> {
            let pid = self.sup.pid(AGENT).expect("running");
            self.now += uptime;
            let died_at = self.now;
            let effects = self.sup.exited(pid, status, self.now);
            assert!(spawns(&effects).is_empty(), "never restarted synchronously");
            // Step the fake clock in 1 ms ticks and find when the spawn happens.
            for _ in 0..60_000 {
                self.now += ms(1);
                if spawns(&self.sup.tick(self.now)) == vec![AGENT] {
                    let delay = self.now - died_at;
                    self.confirm_spawn();
                    return Some(delay);
                }
            }
            None
        }
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut h = Harness::new(Restart::Always);
        let delays: Vec<u64> = (0..12)
            .map(|_| {
                h.die_after(ms(10), ExitStatus::Exited(1))
                    .expect("restarted")
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(
            delays,
            vec![
                200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn backoff_resets_after_a_long_uptime() {
        let mut h = Harness::new(Restart::OnFailure);
        let crash = ExitStatus::Signaled {
            signal: 11,
            core_dumped: false,
        };
        let short: Vec<Duration> = (0..4)
            .map(|_| h.die_after(ms(50), crash).expect("restart"))
            .collect();
        assert_eq!(short, vec![ms(200), ms(400), ms(800), ms(1600)]);
        // Up just under the reset threshold: keeps doubling.
        assert_eq!(
            h.die_after(BACKOFF_RESET_AFTER_UPTIME - ms(1), crash),
            Some(ms(3200))
        );
        // Up for the threshold: starts over, then doubles again.
        assert_eq!(
            h.die_after(BACKOFF_RESET_AFTER_UPTIME, crash),
            Some(ms(200))
        );
        assert_eq!(h.die_after(ms(5), crash), Some(ms(400)));
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let mut h = Harness::new(Restart::OnFailure);
        assert_eq!(h.die_after(ms(5), ExitStatus::Exited(3)), Some(ms(200)));
        let pid = h.sup.pid(AGENT).expect("running");
        h.now += ms(5);
        let effects = h.sup.exited(pid, ExitStatus::Exited(0), h.now);
        assert_eq!(
            logs(&effects),
            vec![
                "service agent exited (exit status 0) after 5ms; not restarted (restart=on-failure)"
            ]
        );
        assert_eq!(h.sup.state(AGENT), Some(ServiceState::Stopped));
        h.now += Duration::from_secs(3600);
        assert!(h.sup.tick(h.now).is_empty());
        assert_eq!(h.sup.next_deadline(), None);
    }

    #[test]
    fn never_is_not_restarted_even_after_a_crash() {
        let mut h = Harness::new(Restart::Never);
        assert_eq!(
            h.die_after(
                ms(5),
                ExitStatus::Signaled {
                    signal: 9,
                    core_dumped: false
                }
            ),
            None
        );
        assert_eq!(h.sup.state(AGENT), Some(ServiceState::Stopped));
    }

    #[test]
    fn always_restarts_a_clean_exit() {
        let mut h = Harness::new(Restart::Always);
        assert_eq!(h.die_after(ms(5), ExitStatus::Exited(0)), Some(ms(200)));
    }

    #[test]
    fn crash_log_names_the_signal() {
        let mut h = Harness::new(Restart::Always);
        let pid = h.sup.pid(AGENT).expect("running");
        h.now += ms(1500);
        let effects = h.sup.exited(
            pid,
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: true,
            },
            h.now,
        );
        assert_eq!(
            logs(&effects),
            vec![
                "service agent exited (signal 11 (SIGSEGV, core dumped)) after 1.5s; restarting in 200ms"
            ]
        );
    }

    #[test]
    fn spawn_failure_backs_off_like_a_crash() {
        let mut sup = Supervisor::new(vec![spec(AGENT, Restart::Always)]).expect("valid");
        let mut now = Instant::now();
        sup.start(now);
        let effects = sup.spawn_failed(AGENT, "No such file or directory", now);
        assert_eq!(
            logs(&effects),
            vec!["service agent failed to start: No such file or directory; retrying in 200ms"]
        );
        assert_eq!(sup.next_deadline(), Some(now + ms(200)));
        now += ms(199);
        assert!(spawns(&sup.tick(now)).is_empty());
        now += ms(1);
        assert_eq!(spawns(&sup.tick(now)), vec![AGENT]);
        sup.spawn_failed(AGENT, "again", now);
        assert_eq!(sup.next_deadline(), Some(now + ms(400)));
    }

    #[test]
    fn orphans_are_not_routed() {
        let mut h = Harness::new(Restart::Always);
        assert!(!h.sup.owns(Pid::from_raw(999)));
        assert!(
            h.sup
                .exited(Pid::from_raw(999), ExitStatus::Exited(0), h.now)
                .is_empty()
        );
        assert!(h.sup.owns(h.sup.pid(AGENT).expect("running")));
    }

    #[test]
    fn requested_restart_terms_then_respawns_at_once() {
        let mut h = Harness::new(Restart::Never);
        let pid = h.sup.pid(AGENT).expect("running");
        let effects = h.sup.restart(AGENT, h.now).expect("known");
        assert!(effects.contains(&Effect::Kill {
            pid,
            signal: Signal::SIGTERM
        }));
        // Ignored SIGTERM: SIGKILL after STOP_TIMEOUT.
        assert_eq!(h.sup.next_deadline(), Some(h.now + STOP_TIMEOUT));
        h.now += STOP_TIMEOUT;
        assert!(h.sup.tick(h.now).contains(&Effect::Kill {
            pid,
            signal: Signal::SIGKILL
        }));
        let effects = h.sup.exited(
            pid,
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            },
            h.now,
        );
        assert_eq!(
            spawns(&effects),
            vec![AGENT],
            "respawned despite restart=never"
        );
        assert_eq!(
            h.sup.restart("nope", h.now),
            Err(UnknownService {
                name: "nope".into()
            })
        );
    }

    #[test]
    fn restart_of_a_stopped_service_starts_it() {
        let mut h = Harness::new(Restart::Never);
        h.die_after(ms(1), ExitStatus::Exited(1));
        let effects = h.sup.restart(AGENT, h.now).expect("known");
        assert_eq!(spawns(&effects), vec![AGENT]);
        assert_eq!(h.sup.state(AGENT), Some(ServiceState::Starting));
    }

    #[test]
    fn stop_all_terms_then_kills_after_the_bound() {
        let mut sup = Supervisor::new(vec![
            spec("a", Restart::Always),
            spec("b", Restart::Always),
            spec("c", Restart::Always),
        ])
        .expect("valid");
        let mut now = Instant::now();
        sup.start(now);
        let (a, b) = (Pid::from_raw(1), Pid::from_raw(2));
        sup.spawned("a", a, now);
        sup.spawned("b", b, now);
        sup.spawn_failed("c", "boom", now);
        let effects = sup.stop_all(now);
        let kills: Vec<&Effect> = effects
            .iter()
            .filter(|e| matches!(e, Effect::Kill { .. }))
            .collect();
        assert_eq!(
            kills,
            vec![
                &Effect::Kill {
                    pid: a,
                    signal: Signal::SIGTERM
                },
                &Effect::Kill {
                    pid: b,
                    signal: Signal::SIGTERM
                }
            ]
        );
        assert_eq!(
            sup.state("c"),
            Some(ServiceState::Stopped),
            "backoff cancelled"
        );
        assert!(!sup.all_stopped());
        now += ms(10);
        sup.exited(
            a,
            ExitStatus::Signaled {
                signal: 15,
                core_dumped: false,
            },
            now,
        );
        assert_eq!(
            sup.state("a"),
            Some(ServiceState::Stopped),
            "no restart while stopping"
        );
        now = now - ms(10) + STOP_TIMEOUT - ms(1);
        assert!(sup.tick(now).is_empty());
        now += ms(1);
        let effects = sup.tick(now);
        assert!(effects.contains(&Effect::Kill {
            pid: b,
            signal: Signal::SIGKILL
        }));
        assert!(
            !effects
                .iter()
                .any(|e| matches!(e, Effect::Kill { pid, .. } if *pid == a))
        );
        assert!(sup.stop_escalated());
        assert!(sup.tick(now + ms(1)).is_empty(), "SIGKILL only once");
        sup.exited(
            b,
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            },
            now,
        );
        assert!(sup.all_stopped());
        assert!(
            sup.restart("a", now)
                .expect("known")
                .iter()
                .all(|e| matches!(e, Effect::Log(_)))
        );
    }

    #[test]
    fn invalid_service_lists_are_rejected() {
        let dup = Supervisor::new(vec![spec("a", Restart::Always), spec("a", Restart::Never)]);
        assert_eq!(
            dup.err(),
            Some(SupervisorError::DuplicateName { name: "a".into() })
        );
        let relative = Supervisor::new(vec![ServiceSpec::new(
            "a",
            vec!["init".into()],
            Restart::Always,
        )]);
        assert_eq!(
            relative.err(),
            Some(SupervisorError::RelativeProgram {
                name: "a".into(),
                program: "init".into()
            })
        );
        let empty = Supervisor::new(vec![ServiceSpec::new("a", vec![], Restart::Always)]);
        assert_eq!(
            empty.err(),
            Some(SupervisorError::EmptyArgv { name: "a".into() })
        );
    }
}
