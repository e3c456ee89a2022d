//! Which cgroup version each controller of a cage used, as recorded in DockLock receipts.

/// A cgroup hierarchy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Per controller, the version a cage used (`None`: the controller was not used, which only
/// happens for a controller that is neither limited nor available for accounting).
/// `cpu` covers both CPU limits and CPU accounting (v1: `cpu` for limits, `cpuacct` for usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CgroupMode {
    pub memory: Option<CgroupVersion>,
    pub pids: Option<CgroupVersion>,
    pub cpu: Option<CgroupVersion>,
    pub io: Option<CgroupVersion>,
}

/// The one-word summary of a [`CgroupMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupModeKind {
    /// Every used controller is on cgroup v2.
    V2,
    /// Every used controller is on cgroup v1.
    V1,
    /// Some on v1, some on v2 (a hybrid host).
    Hybrid,
    /// No controller was used.
    Unused,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cgroup mode code {code:#04x}: the {controller} bits are 0b11, which no version uses")]
pub struct ModeCodeError {
    pub code: u8,
    pub controller: &'static str,
}

/// Bit position of each controller's 2-bit field in the code, low bits first.
const FIELDS: [(&str, u32); 4] = [("memory", 0), ("pids", 2), ("cpu", 4), ("io", 6)];

impl CgroupMode {
    /// Compact receipt code: 2 bits per controller (memory bits 0-1, pids 2-3, cpu 4-5, io 6-7),
    /// each 0 = unused, 1 = v1, 2 = v2. Pure v2 with all four is 0xAA; this CI host's hybrid
    /// layout without io is 0x15.
    pub fn code(&self) -> u8 {
        self.fields()
            .iter()
            .zip(FIELDS)
            .fold(0u8, |code, (version, (_, shift))| {
                code | (version_bits(*version) << shift)
            })
    }

    /// Decodes [`CgroupMode::code`]; the unused bit pattern 0b11 is an error.
    pub fn from_code(code: u8) -> Result<CgroupMode, ModeCodeError> {
        let field = |(controller, shift): (&'static str, u32)| match (code >> shift) & 0b11 {
            0 => Ok(None),
            1 => Ok(Some(CgroupVersion::V1)),
            2 => Ok(Some(CgroupVersion::V2)),
            _ => Err(ModeCodeError { code, controller }),
        };
        let [memory, pids, cpu, io] = FIELDS;
        Ok(CgroupMode {
            memory: field(memory)?,
            pids: field(pids)?,
            cpu: field(cpu)?,
            io: field(io)?,
        })
    }

    pub fn kind(&self) -> CgroupModeKind {
        let used = self.fields();
        let has = |version| used.contains(&Some(version));
        match (has(CgroupVersion::V1), has(CgroupVersion::V2)) {
            (true, true) => CgroupModeKind::Hybrid,
            (true, false) => CgroupModeKind::V1,
            (false, true) => CgroupModeKind::V2,
            (false, false) => CgroupModeKind::Unused,
        }
    }

    fn fields(&self) -> [Option<CgroupVersion>; 4] {
        [self.memory, self.pids, self.cpu, self.io]
    }
}

fn version_bits(version: Option<CgroupVersion>) -> u8 {
    match version {
        None => 0,
        Some(CgroupVersion::V1) => 1,
        Some(CgroupVersion::V2) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CgroupVersion::{V1, V2};

    #[test]
    fn codes_are_the_documented_bits() {
        let pure_v2 = CgroupMode {
            memory: Some(V2),
            pids: Some(V2),
            cpu: Some(V2),
            io: Some(V2),
        };
        assert_eq!(pure_v2.code(), 0xAA);
        assert_eq!(pure_v2.kind(), CgroupModeKind::V2);
        let ci_host = CgroupMode {
            memory: Some(V1),
            pids: Some(V1),
            cpu: Some(V1),
            io: None,
        };
        assert_eq!(ci_host.code(), 0x15);
        assert_eq!(ci_host.kind(), CgroupModeKind::V1);
        let hybrid = CgroupMode {
            memory: Some(V1),
            pids: Some(V2),
            cpu: None,
            io: None,
        };
        assert_eq!(hybrid.code(), 0b0000_1001);
        assert_eq!(hybrid.kind(), CgroupModeKind::Hybrid);
        assert_eq!(CgroupMode::default().code(), 0);
        assert_eq!(CgroupMode::default().kind(), CgroupModeKind::Unused);
    }

    #[test]
    fn every_valid_code_round_trips_and_reserved_patterns_are_refused() {
        let mut valid = 0;
        for code in 0..=u8::MAX {
            match CgroupMode::from_code(code) {
                Ok(mode) => {
                    assert_eq!(mode.code(), code);
                    valid += 1;
                }
                Err(error) => assert_eq!(error.code, code),
            }
        }
        assert_eq!(valid, 81, "3 states per controller, 4 controllers");
        assert_eq!(
            CgroupMode::from_code(0b0011_0000),
            Err(ModeCodeError {
                code: 0x30,
                controller: "cpu"
            })
        );
    }
}
