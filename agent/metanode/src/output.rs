//! Human or JSON output, chosen once by `--json`, so every subcommand prints
//! results and errors the same way and scripts never have to parse prose.
//!
//! One definition serves both binaries: it lives in `metanode_docklock::cli`
//! because the thin `metanode-docklock` launcher must not depend on this
//! crate (its start-up cost is the reason it exists).

pub use metanode_docklock::cli::{Output, cause_chain, print_line};
