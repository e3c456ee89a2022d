//! Argument parsing: `docklock-probe <probe> [positional...] [--flag value | --flag=value | --switch]...`.
//! Each probe declares the flags it accepts; anything else is refused with an error naming it, so a typo in
//! the escape suite can never turn into a probe that silently ran with defaults.

use std::fmt;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// Takes one value; may be given once.
    Value,
    /// Takes one value; may be given many times.
    Repeated,
    /// Takes no value.
    Switch,
}

/// What a probe does with arguments that are not its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positional {
    Refused,
    Allowed,
    /// Every argument is positional, even one starting with `--` (the args probe echoes them all).
    Everything,
}

#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: FlagKind,
}

pub const fn value(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        kind: FlagKind::Value,
    }
}

pub const fn repeated(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        kind: FlagKind::Repeated,
    }
}

pub const fn switch(name: &'static str) -> FlagSpec {
    FlagSpec {
        name,
        kind: FlagKind::Switch,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    UnknownFlag {
        probe: &'static str,
        flag: String,
    },
    MissingValue {
        flag: String,
    },
    SwitchWithValue {
        flag: String,
    },
    DuplicateFlag {
        flag: String,
    },
    UnexpectedPositional {
        probe: &'static str,
        arg: String,
    },
    MissingFlag {
        flag: &'static str,
        why: &'static str,
    },
    NotANumber {
        flag: &'static str,
        value: String,
    },
    OutOfRange {
        flag: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    NotAnAddress {
        flag: &'static str,
        value: String,
    },
    Refused {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::UnknownFlag { probe, flag } => {
                write!(f, "probe {probe} does not take flag {flag}")
            }
            ArgError::MissingValue { flag } => write!(f, "flag {flag} needs a value"),
            ArgError::SwitchWithValue { flag } => write!(f, "flag {flag} takes no value"),
            ArgError::DuplicateFlag { flag } => write!(f, "flag {flag} given more than once"),
            ArgError::UnexpectedPositional { probe, arg } => {
                write!(f, "probe {probe} takes no positional argument, got {arg:?}")
            }
            ArgError::MissingFlag { flag, why } => write!(f, "flag {flag} is required: {why}"),
            ArgError::NotANumber { flag, value } => {
                write!(f, "flag {flag}: {value:?} is not a whole number")
            }
            ArgError::OutOfRange {
                flag,
                value,
                min,
                max,
            } => {
                write!(f, "flag {flag}: {value} is outside {min}..={max}")
            }
            ArgError::NotAnAddress { flag, value } => {
                write!(f, "flag {flag}: {value:?} is not an IP:PORT socket address")
            }
            ArgError::Refused { flag, value, why } => {
                write!(f, "flag {flag}: {value:?} refused: {why}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Flag {
    name: &'static str,
    value: Option<String>,
}

/// The arguments after the probe name, checked against the probe's flag specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeArgs {
    positional: Vec<String>,
    flags: Vec<Flag>,
}

impl ProbeArgs {
    pub fn parse(
        probe: &'static str,
        specs: &[FlagSpec],
        positional_mode: Positional,
        args: &[String],
    ) -> Result<ProbeArgs, ArgError> {
        let mut positional = Vec::new();
        let mut flags: Vec<Flag> = Vec::new();
        let mut rest = args.iter();
        let mut only_positional = positional_mode == Positional::Everything;
        while let Some(arg) = rest.next() {
            if only_positional || !arg.starts_with("--") {
                if positional_mode == Positional::Refused {
                    return Err(ArgError::UnexpectedPositional {
                        probe,
                        arg: arg.clone(),
                    });
                }
                positional.push(arg.clone());
                continue;
            }
            if arg == "--" {
                only_positional = true;
                continue;
            }
            let (name, inline_value) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (arg.as_str(), None),
            };
            let Some(spec) = specs.iter().find(|spec| spec.name == name) else {
                return Err(ArgError::UnknownFlag {
                    probe,
                    flag: name.to_string(),
                });
            };
            let value = match (spec.kind, inline_value) {
                (FlagKind::Switch, Some(_)) => {
                    return Err(ArgError::SwitchWithValue {
                        flag: name.to_string(),
                    });
                }
                (FlagKind::Switch, None) => None,
                (_, Some(value)) => Some(value),
                (_, None) => match rest.next() {
                    Some(value) => Some(value.clone()),
                    None => {
                        return Err(ArgError::MissingValue {
                            flag: name.to_string(),
                        });
                    }
                },
            };
            if spec.kind != FlagKind::Repeated && flags.iter().any(|flag| flag.name == spec.name) {
                return Err(ArgError::DuplicateFlag {
                    flag: name.to_string(),
                });
            }
            flags.push(Flag {
                name: spec.name,
                value,
            });
        }
        Ok(ProbeArgs { positional, flags })
    }

    pub fn positional(&self) -> &[String] {
        &self.positional
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|flag| flag.name == name)
            .and_then(|flag| flag.value.as_deref())
    }

    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|flag| flag.name == name)
            .filter_map(|flag| flag.value.as_deref())
            .collect()
    }

    pub fn switch(&self, name: &str) -> bool {
        self.flags.iter().any(|flag| flag.name == name)
    }

    pub fn required(&self, name: &'static str, why: &'static str) -> Result<&str, ArgError> {
        self.value(name)
            .ok_or(ArgError::MissingFlag { flag: name, why })
    }

    /// A whole number in `min..=max`, or `default` when the flag is absent.
    pub fn u64_in(
        &self,
        name: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ArgError> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => parse_u64_in(name, text, min, max),
        }
    }

    /// Every value of a repeated numeric flag.
    pub fn u64s_in(&self, name: &'static str, min: u64, max: u64) -> Result<Vec<u64>, ArgError> {
        self.values(name)
            .into_iter()
            .map(|text| parse_u64_in(name, text, min, max))
            .collect()
    }

    pub fn socket_addr(
        &self,
        name: &'static str,
        why: &'static str,
    ) -> Result<SocketAddr, ArgError> {
        let text = self.required(name, why)?;
        text.parse().map_err(|_| ArgError::NotAnAddress {
            flag: name,
            value: text.to_string(),
        })
    }
}

fn parse_u64_in(flag: &'static str, text: &str, min: u64, max: u64) -> Result<u64, ArgError> {
    let digits = text.replace('_', "");
    let value: u64 = digits.parse().map_err(|_| ArgError::NotANumber {
        flag,
        value: text.to_string(),
    })?;
    if value < min || value > max {
        return Err(ArgError::OutOfRange {
            flag,
            value,
            min,
            max,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[FlagSpec] = &[
        value("--max"),
        repeated("--allow"),
        switch("--sweep-visible"),
        value("--addr"),
    ];

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    fn parse(args: &[&str]) -> Result<ProbeArgs, ArgError> {
        ProbeArgs::parse("test-probe", SPECS, Positional::Allowed, &strings(args))
    }

    #[test]
    fn parses_values_both_spellings_repeats_switches_and_positionals() {
        let args = parse(&[
            "/a",
            "--max",
            "10_000",
            "--allow=5",
            "--allow",
            "7",
            "--sweep-visible",
            "/b",
        ])
        .unwrap();
        assert_eq!(args.positional(), ["/a", "/b"]);
        assert_eq!(args.u64_in("--max", 1, 1, 1_000_000), Ok(10_000));
        assert_eq!(args.u64s_in("--allow", 3, 1 << 20), Ok(vec![5, 7]));
        assert!(args.switch("--sweep-visible"));
        assert_eq!(args.value("--addr"), None);
        assert_eq!(args.u64_in("--missing-is-default", 42, 0, 100), Ok(42));
    }

    #[test]
    fn everything_mode_takes_flags_as_positionals() {
        let args = ProbeArgs::parse(
            "args",
            &[],
            Positional::Everything,
            &strings(&["a", "--max", "--", "-x"]),
        )
        .unwrap();
        assert_eq!(args.positional(), ["a", "--max", "--", "-x"]);
    }

    #[test]
    fn double_dash_ends_flags() {
        let args = parse(&["--", "--max", "-x"]).unwrap();
        assert_eq!(args.positional(), ["--max", "-x"]);
        assert_eq!(args.value("--max"), None);
    }

    #[test]
    fn refuses_unknown_missing_duplicate_and_misused_flags() {
        assert_eq!(
            parse(&["--maks", "3"]),
            Err(ArgError::UnknownFlag {
                probe: "test-probe",
                flag: "--maks".to_string()
            })
        );
        assert_eq!(
            parse(&["--max"]),
            Err(ArgError::MissingValue {
                flag: "--max".to_string()
            })
        );
        assert_eq!(
            parse(&["--max", "1", "--max=2"]),
            Err(ArgError::DuplicateFlag {
                flag: "--max".to_string()
            })
        );
        assert_eq!(
            parse(&["--sweep-visible=yes"]),
            Err(ArgError::SwitchWithValue {
                flag: "--sweep-visible".to_string()
            })
        );
        assert_eq!(
            ProbeArgs::parse(
                "fork-bomb",
                SPECS,
                Positional::Refused,
                &strings(&["stray"])
            ),
            Err(ArgError::UnexpectedPositional {
                probe: "fork-bomb",
                arg: "stray".to_string()
            })
        );
    }

    #[test]
    fn checks_numbers_ranges_and_addresses() {
        let args = parse(&["--max", "12x", "--addr", "10.0.0.1"]).unwrap();
        assert_eq!(
            args.u64_in("--max", 1, 0, 10),
            Err(ArgError::NotANumber {
                flag: "--max",
                value: "12x".to_string()
            })
        );
        assert_eq!(
            args.socket_addr("--addr", "the test's listener"),
            Err(ArgError::NotAnAddress {
                flag: "--addr",
                value: "10.0.0.1".to_string()
            })
        );
        let args = parse(&["--max", "11", "--addr", "[::1]:8080"]).unwrap();
        assert_eq!(
            args.u64_in("--max", 1, 0, 10),
            Err(ArgError::OutOfRange {
                flag: "--max",
                value: 11,
                min: 0,
                max: 10
            })
        );
        assert_eq!(
            args.socket_addr("--addr", "x"),
            Ok("[::1]:8080".parse().unwrap())
        );
        let args = parse(&[]).unwrap();
        assert_eq!(
            args.required("--addr", "the listener to reach"),
            Err(ArgError::MissingFlag {
                flag: "--addr",
                why: "the listener to reach"
            })
        );
        assert_eq!(
            ArgError::MissingFlag {
                flag: "--addr",
                why: "the listener to reach"
            }
            .to_string(),
            "flag --addr is required: the listener to reach"
        );
    }
}
