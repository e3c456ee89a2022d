//! Human or JSON output, chosen once by `--json`, so every subcommand prints
//! results and errors the same way and scripts never have to parse prose.

use std::io::Write;
use std::process::ExitCode;

/// Print one line to stdout. A closed pipe (`metanode … | head`) ends the
/// process quietly instead of panicking as `println!` would.
pub fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Print a result: `human` on a terminal-style run, `value` as one JSON
    /// line with `--json`.
    pub fn emit(&self, human: &str, value: &serde_json::Value) {
        if self.json {
            print_line(&value.to_string());
        } else if !human.is_empty() {
            print_line(human);
        }
    }

    /// Report an error with its whole cause chain and pick the exit code.
    pub fn fail(&self, err: &anyhow::Error) -> ExitCode {
        let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        if self.json {
            let value = serde_json::json!({ "error": chain.join(": "), "causes": chain });
            eprintln!("{value}");
        } else {
            eprintln!("error: {}", chain.join(": "));
        }
        ExitCode::from(1)
    }
}
