//! The one JSON line a probe prints, and the bookkeeping that turns many attempts into one outcome.

use std::fmt::Write as _;

use crate::errno::Errno;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    Blocked,
    Escaped,
    Ok,
    /// The probe itself could not run (bad arguments, setup failed); exit 2.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::Escaped => "escaped",
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Blocked | Outcome::Ok => 0,
            Outcome::Escaped => 1,
            Outcome::Error => 2,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Report {
    pub outcome: Outcome,
    pub detail: String,
}

impl Report {
    pub fn ok(detail: String) -> Report {
        Report {
            outcome: Outcome::Ok,
            detail,
        }
    }

    pub fn blocked(detail: String) -> Report {
        Report {
            outcome: Outcome::Blocked,
            detail,
        }
    }

    pub fn escaped(detail: String) -> Report {
        Report {
            outcome: Outcome::Escaped,
            detail,
        }
    }
}

/// `{"probe":...,"outcome":...,"detail":...}` without the trailing newline.
pub fn json_line(probe: &str, outcome: Outcome, detail: &str) -> String {
    let mut line = String::with_capacity(48 + probe.len() + detail.len());
    line.push_str("{\"probe\":");
    push_json_string(&mut line, probe);
    line.push_str(",\"outcome\":");
    push_json_string(&mut line, outcome.as_str());
    line.push_str(",\"detail\":");
    push_json_string(&mut line, detail);
    line.push('}');
    line
}

/// RFC 8259 string: quote, backslash and every control character escaped; the rest is UTF-8 as is
/// (a Rust `str` is always valid UTF-8, so the line is valid JSON whatever the detail holds).
pub fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON array of strings, used as the detail of the args and env probes so values containing any
/// separator stay unambiguous.
pub fn json_string_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_json_string(&mut out, item);
    }
    out.push(']');
    out
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Step {
    /// The kernel (or the cage) refused with this errno.
    Denied(Errno),
    /// The call went through; the text says what it achieved.
    Succeeded(String),
    /// Refused or harmless for a reason other than an errno (marker absent, nothing to try, ...).
    Contained(String),
}

/// Collects the individual attempts of one escape probe. The probe is escaped if any attempt succeeded.
#[derive(Debug, Default)]
pub struct Attempts {
    steps: Vec<(String, Step)>,
    notes: Vec<String>,
}

impl Attempts {
    pub fn new() -> Attempts {
        Attempts::default()
    }

    pub fn denied(&mut self, what: impl Into<String>, errno: Errno) {
        self.steps.push((what.into(), Step::Denied(errno)));
    }

    pub fn succeeded(&mut self, what: impl Into<String>, how: impl Into<String>) {
        self.steps.push((what.into(), Step::Succeeded(how.into())));
    }

    pub fn contained(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.steps.push((what.into(), Step::Contained(why.into())));
    }

    /// Records a result: `Ok(text)` is a success (escape), `Err(errno)` a denial.
    pub fn record(&mut self, what: impl Into<String>, result: Result<String, Errno>) {
        match result {
            Ok(how) => self.succeeded(what, how),
            Err(errno) => self.denied(what, errno),
        }
    }

    /// Context that is neither a success nor a denial (pid counts, skipped attempts and why).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn any_succeeded(&self) -> bool {
        self.steps
            .iter()
            .any(|(_, step)| matches!(step, Step::Succeeded(_)))
    }

    pub fn into_report(self) -> Report {
        let outcome = if self.any_succeeded() {
            Outcome::Escaped
        } else {
            Outcome::Blocked
        };
        let mut parts: Vec<String> = self
            .steps
            .into_iter()
            .map(|(what, step)| match step {
                Step::Denied(errno) => format!("{what}: {errno}"),
                Step::Succeeded(how) => format!("{what}: SUCCEEDED ({how})"),
                Step::Contained(why) => format!("{what}: {why}"),
            })
            .collect();
        parts.extend(self.notes);
        Report {
            outcome,
            detail: parts.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        let mut out = String::new();
        push_json_string(
            &mut out,
            "a\"b\\c\nd\re\tf\u{08}g\u{0c}h\u{01}i\u{1f}j\u{7f}k",
        );
        assert_eq!(out, r#""a\"b\\c\nd\re\tf\bg\fh\u0001i\u001fj\u007fk""#);
    }

    #[test]
    fn keeps_non_ascii_utf8() {
        let mut out = String::new();
        push_json_string(&mut out, "ünïcødé ✓ 𝄞");
        assert_eq!(out, "\"ünïcødé ✓ 𝄞\"");
    }

    #[test]
    fn serde_json_reads_back_what_we_escape() {
        let awkward: String = (0u32..0x300).filter_map(char::from_u32).collect();
        for detail in [
            "",
            "plain",
            "EPERM; /etc: EROFS",
            "quote \" and \\ and \u{0}",
            awkward.as_str(),
        ] {
            let line = json_line("read-host-file", Outcome::Blocked, detail);
            let value: serde_json::Value =
                serde_json::from_str(&line).expect("our line is valid JSON");
            assert_eq!(value["probe"], "read-host-file");
            assert_eq!(value["outcome"], "blocked");
            assert_eq!(value["detail"], detail);
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }

    #[test]
    fn string_array_round_trips() {
        let items = ["a", "b=c d", "x\"y", "new\nline"];
        let text = json_string_array(items);
        let value: Vec<String> = serde_json::from_str(&text).expect("valid JSON array");
        assert_eq!(value, items);
        assert_eq!(json_string_array([]), "[]");
    }

    #[test]
    fn outcome_follows_any_success_and_exit_codes_follow_outcome() {
        let mut attempts = Attempts::new();
        attempts.denied("open /etc/x", Errno(libc::EROFS));
        attempts.contained("read /h", "marker absent");
        attempts.note("3 pids visible");
        let report = attempts.into_report();
        assert_eq!(report.outcome, Outcome::Blocked);
        assert_eq!(
            report.detail,
            "open /etc/x: EROFS; read /h: marker absent; 3 pids visible"
        );
        assert_eq!(report.outcome.exit_code(), 0);

        let mut attempts = Attempts::new();
        attempts.denied("a", Errno(libc::EPERM));
        attempts.record("b", Ok("fd 5".to_string()));
        let report = attempts.into_report();
        assert_eq!(report.outcome, Outcome::Escaped);
        assert_eq!(report.detail, "a: EPERM; b: SUCCEEDED (fd 5)");
        assert_eq!(report.outcome.exit_code(), 1);
        assert_eq!(Outcome::Ok.exit_code(), 0);
        assert_eq!(Outcome::Error.exit_code(), 2);
    }
}
