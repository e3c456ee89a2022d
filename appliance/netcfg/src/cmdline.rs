//! [`NetConfig`] and its kernel-command-line syntax.
//!
//! ```text
//! metanode.net=dhcp[,if=IFNAME]
//! metanode.net=off
//! metanode.net=static:ADDRESS/PREFIX[,gw=GATEWAY][,dns=SERVER]...[,if=IFNAME]
//! ```
//!
//! `dns=` may repeat (at most [`DNS_SERVERS_COUNT_MAX`] times); every other
//! key at most once. The parameter contains a dot, so the kernel takes it
//! for a module parameter and neither passes it to init nor warns about it:
//! PID 1 reads it from `/proc/cmdline` ([`from_cmdline`]). When it is given
//! more than once, the last one wins, as for kernel parameters.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::limits::DNS_SERVERS_COUNT_MAX;
use crate::netlink::check_interface_name;

/// The kernel command line parameter this module parses.
pub const CMDLINE_PARAMETER: &str = "metanode.net";

/// How to configure the node's network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    /// Ask a DHCPv4 server. `interface: None` means the first Ethernet
    /// interface.
    Dhcp { interface: Option<String> },
    /// A fixed address. The default route is added only with a gateway;
    /// DNS servers are written to resolv.conf only if the caller asks.
    Static {
        interface: Option<String>,
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
    /// Leave every interface but loopback alone.
    Off,
}

impl NetConfig {
    /// The interface named by the config, if any.
    pub fn interface(&self) -> Option<&str> {
        match self {
            NetConfig::Dhcp { interface } | NetConfig::Static { interface, .. } => {
                interface.as_deref()
            }
            NetConfig::Off => None,
        }
    }
}

/// Why a `metanode.net=` value did not parse. Each message quotes the part
/// that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfigParseError {
    #[error("empty network config; expected dhcp, off or static:ADDRESS/PREFIX")]
    Empty,
    #[error("unknown network mode `{mode}`; expected dhcp, off or static:ADDRESS/PREFIX")]
    UnknownMode { mode: String },
    #[error("`off` takes no options, found `{option}`")]
    OptionsWithOff { option: String },
    #[error(
        "static config has no address; expected static:ADDRESS/PREFIX (like static:10.0.2.15/24)"
    )]
    MissingAddress,
    #[error("address `{text}` has no /PREFIX (like 10.0.2.15/24)")]
    MissingPrefix { text: String },
    #[error("`{text}` is not an IPv4 address")]
    BadAddress { text: String },
    #[error("prefix length `{text}` is not an integer in 1..=32")]
    BadPrefix { text: String },
    #[error(
        "{address} cannot be an interface address (unspecified, loopback, multicast or broadcast)"
    )]
    UnusableAddress { address: Ipv4Addr },
    #[error("option `{option}` is not KEY=VALUE")]
    NotKeyValue { option: String },
    #[error("unknown option `{key}`; expected gw, dns or if")]
    UnknownKey { key: String },
    #[error("option `{key}` is not allowed with {mode}")]
    KeyNotAllowed { key: String, mode: &'static str },
    #[error("option `{key}` given twice")]
    DuplicateKey { key: String },
    #[error("gateway `{text}` is not an IPv4 address")]
    BadGateway { text: String },
    #[error("gateway {gateway} cannot be the interface's own address or unspecified")]
    UnusableGateway { gateway: Ipv4Addr },
    #[error("dns server `{text}` is not an IPv4 address")]
    BadDns { text: String },
    #[error("more than {max} dns servers (resolvers read only the first {max})")]
    TooManyDns { max: usize },
    #[error("interface `{text}` is not a valid interface name: {reason}")]
    BadInterface { text: String, reason: String },
}

impl FromStr for NetConfig {
    type Err = NetConfigParseError;

    fn from_str(text: &str) -> Result<NetConfig, NetConfigParseError> {
        if text.is_empty() {
            return Err(NetConfigParseError::Empty);
        }
        let mut options = text.split(',');
        let head = options.next().unwrap_or_default();
        let (mode, argument) = match head.split_once(':') {
            Some((mode, argument)) => (mode, Some(argument)),
            None => (head, None),
        };
        match (mode, argument) {
            ("off", None) => match options.next() {
                None => Ok(NetConfig::Off),
                Some(option) => Err(NetConfigParseError::OptionsWithOff {
                    option: option.to_string(),
                }),
            },
            ("dhcp", None) => {
                let parsed = parse_options(options, "dhcp")?;
                Ok(NetConfig::Dhcp {
                    interface: parsed.interface,
                })
            }
            ("static", Some(cidr)) => {
                let (address, prefix_len) = parse_cidr(cidr)?;
                let parsed = parse_options(options, "static")?;
                if let Some(gateway) = parsed.gateway
                    && (gateway == address || gateway.is_unspecified())
                {
                    return Err(NetConfigParseError::UnusableGateway { gateway });
                }
                Ok(NetConfig::Static {
                    interface: parsed.interface,
                    address,
                    prefix_len,
                    gateway: parsed.gateway,
                    dns: parsed.dns,
                })
            }
            ("static", None) => Err(NetConfigParseError::MissingAddress),
            _ => Err(NetConfigParseError::UnknownMode {
                mode: head.to_string(),
            }),
        }
    }
}

impl fmt::Display for NetConfig {
    /// The command-line syntax: `value.parse::<NetConfig>()` gives it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetConfig::Off => f.write_str("off"),
            NetConfig::Dhcp { interface } => {
                f.write_str("dhcp")?;
                if let Some(interface) = interface {
                    write!(f, ",if={interface}")?;
                }
                Ok(())
            }
            NetConfig::Static {
                interface,
                address,
                prefix_len,
                gateway,
                dns,
            } => {
                write!(f, "static:{address}/{prefix_len}")?;
                if let Some(gateway) = gateway {
                    write!(f, ",gw={gateway}")?;
                }
                for server in dns {
                    write!(f, ",dns={server}")?;
                }
                if let Some(interface) = interface {
                    write!(f, ",if={interface}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why [`from_cmdline`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel command line: invalid `{CMDLINE_PARAMETER}={value}`: {source}")]
pub struct CmdlineError {
    pub value: String,
    #[source]
    pub source: NetConfigParseError,
}

/// The network config given on a kernel command line (the text of
/// `/proc/cmdline`), or `None` when it has no `metanode.net=`.
pub fn from_cmdline(cmdline: &str) -> Result<Option<NetConfig>, CmdlineError> {
    let prefix = format!("{CMDLINE_PARAMETER}=");
    let value = cmdline
        .split_ascii_whitespace()
        // The kernel lets a parameter be quoted whole: "metanode.net=dhcp".
        .map(|word| word.trim_matches('"'))
        .filter_map(|word| word.strip_prefix(prefix.as_str()))
        .next_back();
    match value {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|source| CmdlineError {
            value: value.to_string(),
            source,
        }),
    }
}

/// Parse `ADDRESS/PREFIX` as an interface address.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), NetConfigParseError> {
    let Some((address_text, prefix_text)) = text.split_once('/') else {
        return Err(if text.is_empty() {
            NetConfigParseError::MissingAddress
        } else {
            NetConfigParseError::MissingPrefix {
                text: text.to_string(),
            }
        });
    };
    let address: Ipv4Addr = address_text
        .parse()
        .map_err(|_| NetConfigParseError::BadAddress {
            text: address_text.to_string(),
        })?;
    let prefix_len = prefix_text
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| NetConfigParseError::BadPrefix {
            text: prefix_text.to_string(),
        })?;
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
    {
        return Err(NetConfigParseError::UnusableAddress { address });
    }
    Ok((address, prefix_len))
}

#[derive(Default)]
struct Options {
    interface: Option<String>,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
}

fn parse_options<'a>(
    options: impl Iterator<Item = &'a str>,
    mode: &'static str,
) -> Result<Options, NetConfigParseError> {
    let mut out = Options::default();
    for option in options {
        let Some((key, value)) = option.split_once('=') else {
            return Err(NetConfigParseError::NotKeyValue {
                option: option.to_string(),
            });
        };
        let duplicate = || NetConfigParseError::DuplicateKey {
            key: key.to_string(),
        };
        match key {
            "if" => {
                if out.interface.is_some() {
                    return Err(duplicate());
                }
                check_interface_name(value).map_err(|err| NetConfigParseError::BadInterface {
                    text: value.to_string(),
                    reason: match err {
                        crate::NetError::InvalidInterfaceName { reason, .. } => reason.to_string(),
                        other => other.to_string(),
                    },
                })?;
                out.interface = Some(value.to_string());
            }
            "gw" | "dns" if mode != "static" => {
                return Err(NetConfigParseError::KeyNotAllowed {
                    key: key.to_string(),
                    mode,
                });
            }
            "gw" => {
                if out.gateway.is_some() {
                    return Err(duplicate());
                }
                out.gateway = Some(value.parse().map_err(|_| NetConfigParseError::BadGateway {
                    text: value.to_string(),
                })?);
            }
            "dns" => {
                if out.dns.len() == DNS_SERVERS_COUNT_MAX {
                    return Err(NetConfigParseError::TooManyDns {
                        max: DNS_SERVERS_COUNT_MAX,
                    });
                }
                out.dns
                    .push(value.parse().map_err(|_| NetConfigParseError::BadDns {
                        text: value.to_string(),
                    })?);
            }
            _ => {
                return Err(NetConfigParseError::UnknownKey {
                    key: key.to_string(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetConfig, NetConfigParseError> {
        text.parse()
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse("dhcp"), Ok(NetConfig::Dhcp { interface: None }));
        assert_eq!(
            parse("dhcp,if=eth1"),
            Ok(NetConfig::Dhcp {
                interface: Some("eth1".to_string())
            })
        );
        assert_eq!(parse("off"), Ok(NetConfig::Off));
        assert_eq!(
            parse("static:10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3"),
            Ok(NetConfig::Static {
                interface: None,
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            })
        );
        assert_eq!(
            parse("static:192.0.2.7/32,if=eth0,dns=192.0.2.53,dns=192.0.2.54"),
            Ok(NetConfig::Static {
                interface: Some("eth0".to_string()),
                address: Ipv4Addr::new(192, 0, 2, 7),
                prefix_len: 32,
                gateway: None,
                dns: vec![Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(192, 0, 2, 54)],
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "dhcp",
            "dhcp,if=eth1",
            "off",
            "static:10.0.2.15/24",
            "static:10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3,dns=1.1.1.1,if=eth0",
        ] {
            let config = parse(text).expect(text);
            assert_eq!(config.to_string(), text);
            assert_eq!(parse(&config.to_string()), Ok(config));
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        use NetConfigParseError as E;
        let cases: [(&str, NetConfigParseError); 18] = [
            ("", E::Empty),
            (
                "dchp",
                E::UnknownMode {
                    mode: "dchp".into(),
                },
            ),
            (
                "dhcp:eth0",
                E::UnknownMode {
                    mode: "dhcp:eth0".into(),
                },
            ),
            (
                "off,if=eth0",
                E::OptionsWithOff {
                    option: "if=eth0".into(),
                },
            ),
            ("static", E::MissingAddress),
            ("static:", E::MissingAddress),
            (
                "static:10.0.2.15",
                E::MissingPrefix {
                    text: "10.0.2.15".into(),
                },
            ),
            (
                "static:10.0.2/24",
                E::BadAddress {
                    text: "10.0.2".into(),
                },
            ),
            ("static:10.0.2.15/33", E::BadPrefix { text: "33".into() }),
            ("static:10.0.2.15/0", E::BadPrefix { text: "0".into() }),
            (
                "static:0.0.0.0/8",
                E::UnusableAddress {
                    address: Ipv4Addr::UNSPECIFIED,
                },
            ),
            (
                "static:10.0.2.15/24,gw",
                E::NotKeyValue {
                    option: "gw".into(),
                },
            ),
            (
                "static:10.0.2.15/24,gateway=1.2.3.4",
                E::UnknownKey {
                    key: "gateway".into(),
                },
            ),
            (
                "dhcp,gw=10.0.2.2",
                E::KeyNotAllowed {
                    key: "gw".into(),
                    mode: "dhcp",
                },
            ),
            (
                "static:10.0.2.15/24,gw=10.0.2.x",
                E::BadGateway {
                    text: "10.0.2.x".into(),
                },
            ),
            (
                "static:10.0.2.15/24,gw=10.0.2.15",
                E::UnusableGateway {
                    gateway: Ipv4Addr::new(10, 0, 2, 15),
                },
            ),
            (
                "static:10.0.2.15/24,dns=dns.example",
                E::BadDns {
                    text: "dns.example".into(),
                },
            ),
            (
                "static:10.0.2.15/24,if=eth0,if=eth1",
                E::DuplicateKey { key: "if".into() },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Err(expected), "{text:?}");
        }
        assert_eq!(
            parse("static:10.0.2.15/24,dns=1.1.1.1,dns=1.1.1.2,dns=1.1.1.3,dns=1.1.1.4"),
            Err(E::TooManyDns { max: 3 })
        );
        let err = parse("dhcp,if=a/b").expect_err("slash in a name");
        assert!(err.to_string().contains("`a/b`"), "{err}");
        let err = parse("static:10.0.2.15/24,gw=10.0.2.x").expect_err("bad gateway");
        assert_eq!(err.to_string(), "gateway `10.0.2.x` is not an IPv4 address");
    }

    #[test]
    fn cmdline_finds_the_parameter() {
        let cmdline = "console=ttyS0,115200 slab_nomerge metanode.net=static:10.0.2.15/24,gw=10.0.2.2 panic=-1\n";
        assert_eq!(
            from_cmdline(cmdline),
            Ok(Some(NetConfig::Static {
                interface: None,
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                dns: vec![],
            }))
        );
        assert_eq!(from_cmdline("console=ttyS0 quiet"), Ok(None));
        assert_eq!(from_cmdline(""), Ok(None));
        // Similar names are not the parameter.
        assert_eq!(
            from_cmdline("xmetanode.net=off metanode.netx=off"),
            Ok(None)
        );
        // The last one wins, like kernel parameters.
        assert_eq!(
            from_cmdline("metanode.net=off metanode.net=dhcp"),
            Ok(Some(NetConfig::Dhcp { interface: None }))
        );
        assert_eq!(
            from_cmdline("\"metanode.net=dhcp,if=eth1\""),
            Ok(Some(NetConfig::Dhcp {
                interface: Some("eth1".to_string())
            }))
        );
        let err = from_cmdline("quiet metanode.net=static:10.0.2.15 ro").expect_err("no prefix");
        assert_eq!(
            err.to_string(),
            "kernel command line: invalid `metanode.net=static:10.0.2.15`: address `10.0.2.15` has no /PREFIX (like 10.0.2.15/24)"
        );
    }
}
