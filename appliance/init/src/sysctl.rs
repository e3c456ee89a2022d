//! The sysctl policy: reviewed data (`key = value  # reason`, one per line), applied through
//! /proc/sys and read back.
//!
//! Some keys are one-way (`kernel.modules_disabled = 1`; `kernel.yama.ptrace_scope = 3`, which we
//! do not set because DockLock's tracer needs ptrace): the
//! kernel refuses to lower them once set, but writing the same value again succeeds, so applying
//! the policy twice is fine.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::constants::{SYSCTL_KEY_BYTES_MAX, SYSCTL_LINES_MAX, SYSCTL_VALUE_BYTES_MAX};
use crate::sys::InitSys;

/// Where sysctls live.
pub const PROC_SYS: &str = "/proc/sys";

/// One policy line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlEntry {
    pub key: String,
    pub value: String,
    pub reason: String,
    /// 1-based line number in the policy text.
    pub line: usize,
}

impl SysctlEntry {
    /// `/proc/sys/<key with '.' replaced by '/'>`.
    pub fn path(&self) -> PathBuf {
        Path::new(PROC_SYS).join(self.key.replace('.', "/"))
    }
}

/// A parsed policy, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlPolicy {
    entries: Vec<SysctlEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlParseError {
    #[error("sysctl policy line {line}: missing `=` (expected `key = value  # reason`)")]
    MissingEquals { line: usize },
    #[error("sysctl policy line {line}: key `{key}` has no `# reason`")]
    MissingReason { line: usize, key: String },
    #[error("sysctl policy line {line}: empty key")]
    EmptyKey { line: usize },
    #[error("sysctl policy line {line}: bad key `{key}`: {problem}")]
    BadKey {
        line: usize,
        key: String,
        problem: String,
    },
    #[error("sysctl policy line {line}: key `{key}` has no value")]
    EmptyValue { line: usize, key: String },
    #[error("sysctl policy line {line}: value of `{key}` is longer than {max} bytes")]
    ValueTooLong {
        line: usize,
        key: String,
        max: usize,
    },
    #[error("sysctl policy line {line}: duplicate key `{key}` (first set on line {first_line})")]
    DuplicateKey {
        line: usize,
        key: String,
        first_line: usize,
    },
    #[error("sysctl policy has more than {max} lines")]
    TooManyLines { max: usize },
}

/// Why a key is not a safe /proc/sys path; `None` if it is fine.
fn key_problem(key: &str) -> Option<String> {
    if key.len() > SYSCTL_KEY_BYTES_MAX {
        return Some(format!("longer than {SYSCTL_KEY_BYTES_MAX} bytes"));
    }
    // '/' and empty components would let a key walk out of /proc/sys.
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!("character {c:?} (allowed: A-Z a-z 0-9 . _ -)"));
    }
    if key.split('.').any(str::is_empty) {
        return Some("empty component (leading, trailing or doubled `.`)".to_owned());
    }
    None
}

impl SysctlPolicy {
    /// Parse the policy text. Blank lines and lines starting with `#` are comments; every other
    /// line is `key = value  # reason` with a non-empty reason. Values cannot contain `#`.
    pub fn parse(text: &str) -> Result<Self, SysctlParseError> {
        let mut entries: Vec<SysctlEntry> = Vec::new();
        let mut first_lines: BTreeMap<String, usize> = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if line > SYSCTL_LINES_MAX {
                return Err(SysctlParseError::TooManyLines {
                    max: SYSCTL_LINES_MAX,
                });
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (setting, reason) = match trimmed.split_once('#') {
                Some((setting, reason)) => (setting, reason.trim()),
                None => (trimmed, ""),
            };
            let Some((key, value)) = setting.split_once('=') else {
                return Err(SysctlParseError::MissingEquals { line });
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(SysctlParseError::EmptyKey { line });
            }
            if let Some(problem) = key_problem(key) {
                return Err(SysctlParseError::BadKey {
                    line,
                    key: key.to_owned(),
                    problem,
                });
            }
            if value.is_empty() {
                return Err(SysctlParseError::EmptyValue {
                    line,
                    key: key.to_owned(),
                });
            }
            if value.len() > SYSCTL_VALUE_BYTES_MAX {
                return Err(SysctlParseError::ValueTooLong {
                    line,
                    key: key.to_owned(),
                    max: SYSCTL_VALUE_BYTES_MAX,
                });
            }
            if reason.is_empty() {
                return Err(SysctlParseError::MissingReason {
                    line,
                    key: key.to_owned(),
                });
            }
            if let Some(first_line) = first_lines.get(key) {
                return Err(SysctlParseError::DuplicateKey {
                    line,
                    key: key.to_owned(),
                    first_line: *first_line,
                });
            }
            first_lines.insert(key.to_owned(), line);
            entries.push(SysctlEntry {
                key: key.to_owned(),
                value: value.to_owned(),
                reason: reason.to_owned(),
                line,
            });
        }
        Ok(Self { entries })
    }

    pub fn entries(&self) -> &[SysctlEntry] {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&SysctlEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Write every key. A failed key does not stop the others; all failures are in the error.
    pub fn apply(&self, sys: &mut dyn InitSys) -> Result<ApplyReport, SysctlApplyError> {
        let mut failures = Vec::new();
        let mut written_count = 0;
        for entry in &self.entries {
            let path = entry.path();
            match sys.write_file(&path, &entry.value) {
                Ok(()) => written_count += 1,
                Err(error) => failures.push(SysctlWriteFailure {
                    key: entry.key.clone(),
                    wanted: entry.value.clone(),
                    missing: error.kind() == std::io::ErrorKind::NotFound,
                    error: error.to_string(),
                }),
            }
        }
        if failures.is_empty() {
            Ok(ApplyReport { written_count })
        } else {
            Err(SysctlApplyError { failures })
        }
    }

    /// Read every key back and compare with whitespace-normalised equality (the kernel prints
    /// multi-value sysctls tab-separated and ends with a newline).
    pub fn verify(&self, sys: &mut dyn InitSys) -> Result<VerifyReport, SysctlVerifyError> {
        let mut mismatches = Vec::new();
        for entry in &self.entries {
            let got = match sys.read_file(&entry.path()) {
                Ok(text) if normalise(&text) == normalise(&entry.value) => continue,
                Ok(text) => Got::Value(normalise(&text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Got::Missing,
                Err(e) => Got::Unreadable(e.to_string()),
            };
            mismatches.push(SysctlMismatch {
                key: entry.key.clone(),
                wanted: entry.value.clone(),
                got,
            });
        }
        if mismatches.is_empty() {
            Ok(VerifyReport {
                verified_count: self.entries.len(),
            })
        } else {
            Err(SysctlVerifyError { mismatches })
        }
    }
}

fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyReport {
    pub written_count: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub verified_count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlWriteFailure {
    pub key: String,
    pub wanted: String,
    /// The kernel has no such key (no /proc/sys file).
    pub missing: bool,
    pub error: String,
}

impl fmt::Display for SysctlWriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.missing {
            write!(
                f,
                "{}: missing in the kernel (wanted `{}`)",
                self.key, self.wanted
            )
        } else {
            write!(
                f,
                "{}: writing `{}` failed: {}",
                self.key, self.wanted, self.error
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sysctl apply failed for {} key(s): {}", .failures.len(), join(.failures))]
pub struct SysctlApplyError {
    pub failures: Vec<SysctlWriteFailure>,
}

/// What a verify read found instead of the wanted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Value(String),
    Missing,
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlMismatch {
    pub key: String,
    pub wanted: String,
    pub got: Got,
}

impl fmt::Display for SysctlMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.got {
            Got::Value(got) => write!(f, "{}: wanted `{}`, got `{got}`", self.key, self.wanted),
            Got::Missing => write!(
                f,
                "{}: wanted `{}`, got: missing in the kernel",
                self.key, self.wanted
            ),
            Got::Unreadable(e) => write!(
                f,
                "{}: wanted `{}`, got: unreadable ({e})",
                self.key, self.wanted
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sysctl verify failed for {} key(s): {}", .mismatches.len(), join(.mismatches))]
pub struct SysctlVerifyError {
    pub mismatches: Vec<SysctlMismatch>,
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;
    use crate::sys::fake::FakeSys;

    const REAL_POLICY: &str = include_str!("../../sysctl.conf");

    #[test]
    fn real_policy_parses_with_a_reason_on_every_key() {
        let policy = SysctlPolicy::parse(REAL_POLICY).expect("appliance/sysctl.conf parses");
        let setting_lines: Vec<(usize, &str)> = REAL_POLICY
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            policy.entries().len(),
            setting_lines.len(),
            "every setting line is an entry"
        );
        for ((line, text), entry) in setting_lines.iter().zip(policy.entries()) {
            assert_eq!(entry.line, *line);
            assert!(text.starts_with(&entry.key), "line {line}: {text}");
            assert!(!entry.reason.is_empty(), "{} has no reason", entry.key);
        }
        let modules = policy
            .get("kernel.modules_disabled")
            .expect("modules_disabled");
        assert_eq!(modules.value, "1");
        assert_eq!(
            modules.path(),
            Path::new("/proc/sys/kernel/modules_disabled")
        );
        let rp = policy
            .get("net.ipv4.conf.all.rp_filter")
            .expect("rp_filter");
        assert_eq!(
            rp.path(),
            Path::new("/proc/sys/net/ipv4/conf/all/rp_filter")
        );
        assert_eq!(
            policy.get("kernel.panic").map(|e| e.value.as_str()),
            Some("-1")
        );
        assert_eq!(
            policy
                .get("kernel.yama.ptrace_scope")
                .map(|e| e.value.as_str()),
            Some("2")
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: &[(&str, SysctlParseError)] = &[
            (
                "# header\n\nkernel.a = 1  # ok\nkernel.b 1  # no equals\n",
                SysctlParseError::MissingEquals { line: 4 },
            ),
            (
                "kernel.a = 1  # ok\nkernel.b = 2\n",
                SysctlParseError::MissingReason {
                    line: 2,
                    key: "kernel.b".into(),
                },
            ),
            (
                "kernel.b = 2  #   \n",
                SysctlParseError::MissingReason {
                    line: 1,
                    key: "kernel.b".into(),
                },
            ),
            (
                "kernel.a = 1  # one\n\nkernel.a = 2  # two\n",
                SysctlParseError::DuplicateKey {
                    line: 3,
                    key: "kernel.a".into(),
                    first_line: 1,
                },
            ),
            (" = 1  # x\n", SysctlParseError::EmptyKey { line: 1 }),
            (
                "kernel.a =   # x\n",
                SysctlParseError::EmptyValue {
                    line: 1,
                    key: "kernel.a".into(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                SysctlPolicy::parse(text).as_ref(),
                Err(expected),
                "{text:?}"
            );
        }
        let message = SysctlPolicy::parse("kernel.a = 1  # ok\nkernel.b 1  # x\n")
            .expect_err("missing =")
            .to_string();
        assert_eq!(
            message,
            "sysctl policy line 2: missing `=` (expected `key = value  # reason`)"
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        for (key, fragment) in [
            ("kernel/../../etc", "'/'"),
            ("kernel..x", "empty component"),
            (".kernel.x", "empty component"),
            ("kernel.x.", "empty component"),
            ("kernel x", "' '"),
            ("kernel.x*", "'*'"),
        ] {
            let text = format!("# c\n{key} = 1  # r\n");
            match SysctlPolicy::parse(&text) {
                Err(SysctlParseError::BadKey {
                    line,
                    key: got,
                    problem,
                }) => {
                    assert_eq!(line, 2);
                    assert_eq!(got, key);
                    assert!(problem.contains(fragment), "{key}: {problem}");
                }
                other => panic!("{key}: expected BadKey, got {other:?}"),
            }
        }
    }

    #[test]
    fn value_may_hold_spaces_and_equals() {
        let policy = SysctlPolicy::parse(
            "net.ipv4.tcp_rmem = 4096 87380   6291456  # three values\nx.y = a=b  # eq\n",
        )
        .expect("parse");
        assert_eq!(policy.entries()[0].value, "4096 87380   6291456");
        assert_eq!(policy.entries()[1].value, "a=b");
        assert_eq!(policy.entries()[1].reason, "eq");
    }

    fn fake_with(keys: &[(&str, &str)]) -> FakeSys {
        let fake = FakeSys::new();
        for (path, value) in keys {
            fake.add_file(path, value);
        }
        fake
    }

    #[test]
    fn apply_writes_proc_sys_and_verify_accepts_tab_separated_readback() {
        let policy = SysctlPolicy::parse(
            "kernel.kptr_restrict = 2  # a\nnet.ipv4.tcp_rmem = 4096 87380 6291456  # b\n",
        )
        .expect("parse");
        let mut fake = fake_with(&[
            ("/proc/sys/kernel/kptr_restrict", "0\n"),
            ("/proc/sys/net/ipv4/tcp_rmem", "0\n"),
        ]);
        assert_eq!(
            policy.apply(&mut fake),
            Ok(ApplyReport { written_count: 2 })
        );
        assert_eq!(
            fake.file("/proc/sys/kernel/kptr_restrict").as_deref(),
            Some("2")
        );
        // The kernel prints it tab-separated with a newline.
        fake.state().sticky_files.insert(
            "/proc/sys/net/ipv4/tcp_rmem".into(),
            "4096\t87380\t6291456\n".into(),
        );
        assert_eq!(
            policy.verify(&mut fake),
            Ok(VerifyReport { verified_count: 2 })
        );
        // Applying twice (one-way keys) is fine.
        assert_eq!(
            policy.apply(&mut fake),
            Ok(ApplyReport { written_count: 2 })
        );
    }

    #[test]
    fn apply_reports_every_missing_or_refused_key() {
        let policy = SysctlPolicy::parse(
            "kernel.gone = 1  # a\nkernel.sysrq = 0  # b\nkernel.modules_disabled = 0  # c\n",
        )
        .expect("parse");
        let mut fake = fake_with(&[
            ("/proc/sys/kernel/sysrq", "1\n"),
            ("/proc/sys/kernel/modules_disabled", "1\n"),
        ]);
        fake.state()
            .write_errors
            .insert("/proc/sys/kernel/modules_disabled".into(), Errno::EINVAL);
        let error = policy.apply(&mut fake).expect_err("two failures");
        assert_eq!(error.failures.len(), 2);
        assert_eq!(error.failures[0].key, "kernel.gone");
        assert!(error.failures[0].missing);
        assert_eq!(error.failures[1].key, "kernel.modules_disabled");
        assert!(!error.failures[1].missing);
        // The key in between was still written.
        assert_eq!(fake.file("/proc/sys/kernel/sysrq").as_deref(), Some("0"));
        let message = error.to_string();
        assert!(
            message.contains("kernel.gone: missing in the kernel (wanted `1`)"),
            "{message}"
        );
        assert!(
            message.contains("kernel.modules_disabled: writing `0` failed"),
            "{message}"
        );
    }

    #[test]
    fn verify_names_key_wanted_and_got() {
        let policy =
            SysctlPolicy::parse("kernel.sysrq = 0  # a\nkernel.gone = 1  # b\nvm.ok = 5  # c\n")
                .expect("parse");
        let mut fake = fake_with(&[
            ("/proc/sys/kernel/sysrq", "0\n"),
            ("/proc/sys/vm/ok", "5\n"),
        ]);
        policy.apply(&mut fake).expect_err("kernel.gone is missing");
        // The kernel ignored the sysrq write.
        fake.state()
            .sticky_files
            .insert("/proc/sys/kernel/sysrq".into(), "176\n".into());
        let error = policy.verify(&mut fake).expect_err("mismatch");
        assert_eq!(
            error.mismatches,
            vec![
                SysctlMismatch {
                    key: "kernel.sysrq".into(),
                    wanted: "0".into(),
                    got: Got::Value("176".into())
                },
                SysctlMismatch {
                    key: "kernel.gone".into(),
                    wanted: "1".into(),
                    got: Got::Missing
                },
            ]
        );
        let message = error.to_string();
        assert!(
            message.contains("kernel.sysrq: wanted `0`, got `176`"),
            "{message}"
        );
        assert!(
            message.contains("kernel.gone: wanted `1`, got: missing in the kernel"),
            "{message}"
        );
    }
}
