//! `docklock-probe`: run inside a DockLock cage by the escape suite and the spawn bench. Each subcommand
//! makes one real escape attempt (or reads one determinism input) and prints exactly one JSON line:
//! `{"probe":"<name>","outcome":"blocked"|"escaped"|"ok","detail":"..."}`; exit 0 = blocked/ok,
//! 1 = escaped, 2 = the probe could not run (then the outcome is "error" and stderr says why).
//! Exceptions: `noop` prints nothing; `memory-bomb` is normally SIGKILLed by the OOM killer first;
//! a seccomp filter that kills instead of answering EPERM ends a probe with SIGSYS and no line.

mod args;
mod errno;
mod limits;
mod probes;
mod report;
mod sys;

use std::ffi::OsString;
use std::io::Write as _;

use args::{Positional, ProbeArgs};
use probes::{PROBES, Probe, ProbeError, Run};
use report::{Outcome, json_line};

const USAGE: &str =
    "usage: docklock-probe <probe> [args]   |   docklock-probe list   |   docklock-probe --help";

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    // The spawn bench runs this thousands of times: decide before doing anything else.
    if argv.get(1).is_some_and(|arg| arg == "noop") {
        std::process::exit(0);
    }
    std::process::exit(run(&argv));
}

fn run(argv: &[OsString]) -> i32 {
    let mut args: Vec<String> = Vec::with_capacity(argv.len());
    for (index, arg) in argv.iter().enumerate().skip(1) {
        match arg.to_str() {
            Some(arg) => args.push(arg.to_string()),
            None => {
                return emit_error(
                    "",
                    &format!(
                        "argument {index} is not valid UTF-8: {}",
                        arg.to_string_lossy()
                    ),
                );
            }
        }
    }
    let Some((name, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return emit_error("", "no probe named (docklock-probe list shows them)");
    };
    match name.as_str() {
        "--help" | "-h" | "help" => print_and_exit_code(&help_text()),
        "list" => print_and_exit_code(&list_text()),
        _ => match probes::find(name) {
            None => emit_error(
                name,
                &format!("unknown probe {name:?} (docklock-probe list shows them)"),
            ),
            Some(probe)
                if probe.positional != Positional::Everything
                    && rest.iter().any(|arg| arg == "--help" || arg == "-h") =>
            {
                print_and_exit_code(&probe_help(probe))
            }
            Some(probe) => run_probe(probe, rest),
        },
    }
}

fn run_probe(probe: &'static Probe, rest: &[String]) -> i32 {
    let run = match probe.run {
        Run::Silent => return 0,
        Run::Report(run) => run,
    };
    let result = ProbeArgs::parse(probe.name, probe.flags, probe.positional, rest)
        .map_err(ProbeError::from)
        .and_then(|args| run(&args));
    match result {
        Ok(report) => emit(probe.name, report.outcome, &report.detail),
        Err(error) => emit_error(probe.name, &error.to_string()),
    }
}

fn emit_error(probe: &str, message: &str) -> i32 {
    eprintln!("docklock-probe {probe}: {message}");
    emit(probe, Outcome::Error, message)
}

/// Prints the line and returns the exit code; if stdout is gone the result cannot be reported, so exit 2.
fn emit(probe: &str, outcome: Outcome, detail: &str) -> i32 {
    let line = json_line(probe, outcome, detail);
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => outcome.exit_code(),
        Err(_) => Outcome::Error.exit_code(),
    }
}

fn print_and_exit_code(text: &str) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

fn list_text() -> String {
    PROBES
        .iter()
        .map(|probe| format!("{}\n", probe.name))
        .collect()
}

fn probe_help(probe: &Probe) -> String {
    format!("docklock-probe {}\n    {}\n", probe.synopsis, probe.help)
}

fn help_text() -> String {
    let mut text = format!(
        "docklock-probe: escape and determinism probes run inside a DockLock cage.\n{USAGE}\n\n\
         Each probe makes its real attempt and prints ONE JSON line on stdout:\n  \
         {{\"probe\":\"<name>\",\"outcome\":\"blocked\"|\"escaped\"|\"ok\",\"detail\":\"<what happened, errno names>\"}}\n\
         Exit 0 = blocked or ok, 1 = escaped, 2 = the probe could not run (outcome \"error\", reason on stderr).\n\
         No line: noop (by design), memory-bomb when the OOM killer ends it (the usual case), and any probe a\n\
         seccomp filter kills (SIGSYS) instead of answering EPERM; callers check the exit signal.\n\nProbes:\n"
    );
    for probe in PROBES {
        text.push_str(&probe_help(probe));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_documents_every_probe_and_list_names_them_all() {
        let help = help_text();
        let list = list_text();
        let listed: Vec<&str> = list.lines().collect();
        assert_eq!(listed.len(), PROBES.len());
        for probe in PROBES {
            assert!(listed.contains(&probe.name), "{} not listed", probe.name);
            assert!(
                help.contains(&format!("docklock-probe {}", probe.synopsis)),
                "{} not in help",
                probe.name
            );
        }
        assert!(help.contains("noop"));
        assert!(help.contains("OOM killer"));
    }
}
