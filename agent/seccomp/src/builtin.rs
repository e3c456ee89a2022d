//! The builtin policy, compiled once at build time.
//!
//! build.rs parses `policy/seccomp.yaml` and compiles it with this crate's own `policy.rs` and
//! `compile.rs` (included into the build script with `#[path]`), then writes the BPF programs and
//! their digest into `$OUT_DIR/builtin_seccomp.rs` as a static. A spawn then pays nothing for the
//! policy: parsing the YAML and running seccompiler took ~1.6 ms per `docklock run`, on the
//! critical path, and hashing the programs for the digest another ~0.09 ms. The tests check that
//! the static equals a fresh runtime compile of the same YAML, instruction for instruction,
//! digest included.

use std::borrow::Cow;

use seccompiler::sock_filter;

use crate::compile::{CompiledSeccomp, Program};
use crate::policy::PolicyError;

/// One instruction; keeps the generated table short.
const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

// Defines `static BUILTIN: Option<CompiledSeccomp>` (None when the build target is not x86_64,
// the only architecture policies compile for).
include!(concat!(env!("OUT_DIR"), "/builtin_seccomp.rs"));

impl CompiledSeccomp {
    /// The reviewed builtin policy (`policy/seccomp.yaml`), compiled at build time: the same
    /// programs and digest as `SeccompPolicy::builtin()?.compile()?`, without parsing or compiling
    /// anything at run time. Errors only on a build target other than x86_64.
    pub fn builtin() -> Result<&'static CompiledSeccomp, PolicyError> {
        BUILTIN.as_ref().ok_or(PolicyError::UnsupportedHost {
            host: std::env::consts::ARCH,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SeccompPolicy;

    #[test]
    fn prebuilt_builtin_equals_a_fresh_runtime_compile() {
        let prebuilt = CompiledSeccomp::builtin().expect("x86_64 build");
        let fresh = SeccompPolicy::builtin()
            .expect("builtin policy parses")
            .compile()
            .expect("builtin policy compiles");
        assert_eq!(prebuilt.programs.len(), fresh.programs.len());
        for (index, (a, b)) in prebuilt
            .programs
            .iter()
            .zip(fresh.programs.iter())
            .enumerate()
        {
            assert_eq!(a.notifies, b.notifies, "program {index}");
            assert_eq!(
                a.instructions.len(),
                b.instructions.len(),
                "program {index} length"
            );
            for (at, (x, y)) in a.instructions.iter().zip(b.instructions.iter()).enumerate() {
                assert_eq!(x, y, "program {index}, instruction {at}");
            }
        }
        assert_eq!(prebuilt, &fresh);
        assert_eq!(prebuilt.digest(), fresh.digest());
        // The stored digest is the digest of the stored programs, not just a copied constant.
        assert_eq!(
            prebuilt.digest(),
            crate::compile::programs_digest(&prebuilt.programs)
        );
        // The static borrows; nothing is allocated per call.
        assert!(matches!(prebuilt.programs, Cow::Borrowed(_)));
        assert!(
            prebuilt
                .programs
                .iter()
                .all(|p| matches!(p.instructions, Cow::Borrowed(_)))
        );
        assert!(std::ptr::eq(
            prebuilt,
            CompiledSeccomp::builtin().expect("x86_64 build")
        ));
    }

    #[test]
    fn insn_builds_the_instruction_it_names() {
        assert_eq!(
            insn(0x15, 1, 2, 0xc000_003e),
            sock_filter {
                code: 0x15,
                jt: 1,
                jf: 2,
                k: 0xc000_003e
            }
        );
    }
}
