//! [`SystemControl`] for an agent started by the appliance's PID 1: system
//! information read live from the kernel, updates into the inactive slot,
//! power requests to PID 1, and config trials through the shared files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metanode_api::wire::{self, PowerAction};
use metanode_api::{SystemControl, SystemError};
use metanode_core::config::NodeConfig;
use metanode_slots::config_try::{self, TrialState};
use metanode_slots::esp::{Esp, SlotState};

use crate::boot::{booted, now_unix_s};
use crate::paths::*;

/// PID 1 acts on these (metanode-init's power::signal_request).
const REBOOT_SIGNAL: libc::c_int = libc::SIGTERM;
const POWEROFF_SIGNAL: libc::c_int = libc::SIGUSR2;
/// The HTTP answer goes out before PID 1 starts stopping the agent.
const POWER_DELAY: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub struct ApplianceControl {
    version: String,
}

impl ApplianceControl {
    pub fn new(version: impl Into<String>) -> Self {
        Self {
            version: version.into(),
        }
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn failed(what: &str, e: impl std::fmt::Display) -> SystemError {
    SystemError::Failed(format!("{what}: {e}"))
}

fn esp() -> Result<Esp, SystemError> {
    Esp::open(Path::new(ESP_MOUNT)).map_err(|e| {
        SystemError::Conflict(format!(
            "no EFI system partition on {ESP_MOUNT} (booted without the boot loader?): {e}"
        ))
    })
}

/// Every key of the sysctl policy with its live value. The policy is parsed
/// by the same code PID 1 applies it with (metanode_init::sysctl).
pub fn live_sysctls(policy: &str, proc_sys: &Path) -> BTreeMap<String, String> {
    let Ok(policy) = metanode_init::sysctl::SysctlPolicy::parse(policy) else {
        return BTreeMap::new();
    };
    policy
        .entries()
        .iter()
        .map(|entry| {
            let path = proc_sys.join(entry.key.replace('.', "/"));
            let value = std::fs::read_to_string(&path)
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|e| format!("<unreadable: {e}>"));
            (entry.key.clone(), value)
        })
        .collect()
}

fn state_name(state: &SlotState) -> (&'static str, Option<u32>) {
    match state {
        SlotState::Empty => ("empty", None),
        SlotState::Good => ("good", None),
        SlotState::Trial { left, .. } => ("trial", Some(*left)),
        SlotState::Bad { .. } => ("bad", Some(0)),
    }
}

fn trial_report(
    state: &str,
    deadline: Option<u64>,
    message: impl Into<String>,
) -> wire::ConfigTryReport {
    wire::ConfigTryReport {
        state: state.to_owned(),
        deadline_unix_s: deadline,
        message: message.into(),
    }
}

impl SystemControl for ApplianceControl {
    fn info(&self) -> Result<wire::SystemInfo, SystemError> {
        let (slot, entry) = booted();
        let mut slots = Vec::new();
        let mut update_note = None;
        if let Ok(esp) = esp() {
            let status = esp
                .status(entry.as_deref())
                .map_err(|e| failed("reading the slots", e))?;
            for s in &status.slots {
                let (state, tries_left) = state_name(&s.state);
                slots.push(wire::SlotInfo {
                    slot: s.slot.letter().to_string(),
                    file: s.file.clone(),
                    state: state.to_owned(),
                    tries_left,
                    booted: s.booted,
                });
            }
            update_note = metanode_slots::update::rollback_report(&status).map(|r| r.to_string());
        }
        let mut addresses = Vec::new();
        for iface in metanode_netcfg::ethernet_interfaces().unwrap_or_default() {
            for (ip, prefix) in metanode_netcfg::addresses(&iface).unwrap_or_default() {
                addresses.push(format!("{ip}/{prefix}"));
            }
        }
        let uptime_s = read_trim("/proc/uptime")
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(wire::SystemInfo {
            version: self.version.clone(),
            hostname: read_trim("/proc/sys/kernel/hostname"),
            slot,
            boot_entry: entry,
            slots,
            update_note,
            kernel_release: read_trim("/proc/sys/kernel/osrelease"),
            kernel_cmdline: read_trim("/proc/cmdline"),
            sysctl: live_sysctls(SYSCTL_POLICY, Path::new("/proc/sys")),
            addresses,
            uptime_s,
        })
    }

    fn apply_update(&self, image: &Path) -> Result<wire::UpdateReport, SystemError> {
        let esp = esp()?;
        let (_, entry) = booted();
        let entry = entry.ok_or_else(|| {
            SystemError::Conflict(
                "the running system was not started by systemd-boot, so there is no slot to update"
                    .to_owned(),
            )
        })?;
        let cert = std::fs::read(DB_CERT).map_err(|e| failed(DB_CERT, e))?;
        let size = std::fs::metadata(image).map(|m| m.len()).unwrap_or(0);
        let report = metanode_slots::update::apply_update(&esp, &entry, image, &cert, UPDATE_TRIES)
            .map_err(|e| {
                use metanode_slots::update::UpdateError as U;
                match e {
                    U::Verify { .. } | U::TooLarge { .. } | U::Install(_) => {
                        SystemError::Invalid(e.to_string())
                    }
                    U::BootedInTrial { .. } | U::BootedUnknown { .. } => {
                        SystemError::Conflict(e.to_string())
                    }
                    other => SystemError::Failed(other.to_string()),
                }
            })?;
        Ok(wire::UpdateReport {
            slot: report.slot.letter().to_string(),
            file: report.entry.clone(),
            tries: report.tries,
            signer: report.signer_subject.clone(),
            size,
            next: format!(
                "reboot to try it (POST /api/v1/system/reboot); it gets {} boot attempts to reach ready, \
                 then the node falls back to the current slot by itself",
                report.tries
            ),
        })
    }

    fn upload_dir(&self) -> PathBuf {
        let _ = std::fs::create_dir_all(UPLOAD_DIR);
        PathBuf::from(UPLOAD_DIR)
    }

    fn power(&self, action: PowerAction) -> Result<(), SystemError> {
        let signal = match action {
            PowerAction::Reboot => REBOOT_SIGNAL,
            PowerAction::Poweroff => POWEROFF_SIGNAL,
        };
        // Only the appliance's PID 1 understands these signals; refuse to
        // signal some other init (a container, a workstation).
        let init =
            std::fs::read_link("/proc/1/exe").map_err(|e| failed("reading /proc/1/exe", e))?;
        if init != Path::new(INIT) {
            return Err(SystemError::Conflict(format!(
                "PID 1 is {}, not the appliance's {INIT}",
                init.display()
            )));
        }
        // Check we may signal PID 1 now (kill with signal 0), so a refusal
        // is an error answer rather than a silent no-op later.
        // SAFETY: kill(2) with a valid pid and signal 0 only checks permission.
        if unsafe { libc::kill(1, 0) } != 0 {
            return Err(failed("signalling PID 1", std::io::Error::last_os_error()));
        }
        std::thread::spawn(move || {
            std::thread::sleep(POWER_DELAY);
            // SAFETY: kill(2) with a valid pid and signal number has no memory effects.
            unsafe {
                libc::kill(1, signal);
            }
        });
        Ok(())
    }

    fn config_try(
        &self,
        yaml: &[u8],
        timeout_s: u64,
    ) -> Result<wire::ConfigTryReport, SystemError> {
        NodeConfig::from_yaml_bytes(yaml, "the new config")
            .map_err(|e| SystemError::Invalid(e.to_string()))?;
        let dir = Path::new(CONFIG_DIR);
        let trial = config_try::try_apply(
            dir,
            yaml,
            Duration::from_secs(timeout_s),
            now_unix_s(),
            "api",
        )
        .map_err(|e| match e {
            config_try::TryError::TrialInProgress { .. } => SystemError::Conflict(e.to_string()),
            config_try::TryError::TooLarge { .. } => SystemError::Invalid(e.to_string()),
            other => SystemError::Failed(other.to_string()),
        })?;
        Ok(trial_report(
            "pending",
            Some(trial.deadline_unix_s),
            format!(
                "the node restarts on the new config within a second; POST /api/v1/config/commit \
                 within {timeout_s} s to keep it, or it reverts by itself"
            ),
        ))
    }

    fn config_commit(&self) -> Result<wire::ConfigTryReport, SystemError> {
        let dir = Path::new(CONFIG_DIR);
        config_try::commit(dir, now_unix_s()).map_err(|e| SystemError::Conflict(e.to_string()))?;
        std::fs::write(dir.join(CONFIG_OUTCOME_FILE), "committed\n")
            .map_err(|e| failed("recording the commit", e))?;
        Ok(trial_report("committed", None, "the new config stays"))
    }

    fn config_status(&self) -> Result<wire::ConfigTryReport, SystemError> {
        let dir = Path::new(CONFIG_DIR);
        match config_try::check(dir, now_unix_s()).map_err(|e| failed("reading the trial", e))? {
            TrialState::Pending { deadline_unix_s } => Ok(trial_report(
                "pending",
                Some(deadline_unix_s),
                "waiting for POST /api/v1/config/commit",
            )),
            TrialState::Expired { deadline_unix_s } => Ok(trial_report(
                "expired",
                Some(deadline_unix_s),
                "PID 1 is reverting it",
            )),
            TrialState::None => {
                let outcome = read_trim(&dir.join(CONFIG_OUTCOME_FILE).to_string_lossy());
                let state = if outcome.is_empty() {
                    "none"
                } else {
                    outcome.as_str()
                };
                Ok(trial_report(state, None, "no trial pending"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sysctls_reads_every_policy_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("kernel")).unwrap();
        std::fs::write(dir.path().join("kernel/kptr_restrict"), "2\n").unwrap();
        std::fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        std::fs::write(
            dir.path().join("net/ipv4/tcp_rmem"),
            "4096\t131072\t6291456\n",
        )
        .unwrap();
        let got = live_sysctls(
            "# c\nkernel.kptr_restrict = 2  # r\nnet.ipv4.tcp_rmem = 4096 131072 6291456  # r\nkernel.missing = 1  # r\n",
            dir.path(),
        );
        assert_eq!(got["kernel.kptr_restrict"], "2");
        assert_eq!(got["net.ipv4.tcp_rmem"], "4096 131072 6291456");
        assert!(got["kernel.missing"].starts_with("<unreadable"));
        // The shipped policy names only real keys with reasons.
        assert!(live_sysctls(SYSCTL_POLICY, dir.path()).len() > 20);
    }
}
