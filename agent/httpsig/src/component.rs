//! Covered components (RFC 9421 §2) and the signature base (§2.5).
//!
//! Supported: the request-side derived components `@method`, `@target-uri`,
//! `@authority`, `@scheme`, `@request-target`, `@path`, `@query`, and HTTP
//! fields by their lower-cased name (all field lines of that name, each
//! trimmed, joined with `", "`, §2.1). Refused with a clear error, never
//! silently mis-signed: any component parameter (`;sf`, `;key`, `;bs`,
//! `;req`, `;tr`, `;name`), `@query-param` (needs `;name`), and the
//! response-only `@status`.

use http::request::Parts;

/// One covered component of a request signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    /// An HTTP field, by its lower-case name.
    Field(http::HeaderName),
}

/// Why a component identifier cannot be used, or its value not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    #[error("component {name:?} must be lower-case")]
    NotLowercase { name: String },
    #[error("unknown derived component {name:?}")]
    UnknownDerived { name: String },
    #[error("derived component {name:?} is response-only and cannot cover a request")]
    ResponseOnly { name: String },
    #[error("derived component {name:?} is not supported (it needs the ;name parameter)")]
    UnsupportedDerived { name: String },
    #[error(
        "component {name:?} has parameter {param:?}; component parameters (sf, key, bs, req, tr, name) are not supported"
    )]
    UnsupportedParameter { name: String, param: String },
    #[error("component identifier {found} is not a string")]
    NotAString { found: String },
    #[error("component {name:?} is not a valid HTTP field name")]
    InvalidFieldName { name: String },
    #[error("component {name:?} is covered more than once")]
    Duplicate { name: String },
    #[error("covered component {name:?} is not in the request")]
    Absent { name: String },
    #[error("the request carries {count} Host field lines; @authority needs exactly one")]
    AmbiguousHost { count: usize },
    #[error("the Host field is not visible ASCII")]
    HostNotAscii,
    #[error(
        "component {name:?} needs the request scheme, and the request URI has none (sign an absolute URI)"
    )]
    SchemeUnknown { name: String },
    #[error("more than {count_max} covered components")]
    TooMany { count_max: usize },
    #[error("the signature base would exceed {bytes_max} bytes")]
    BaseTooLarge { bytes_max: usize },
}

impl Component {
    /// Parses a component name (no parameters) as written in
    /// `Signature-Input` or in `SignParams::components`.
    pub fn parse(name: &str) -> Result<Self, ComponentError> {
        let owned = || name.to_string();
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ComponentError::NotLowercase { name: owned() });
        }
        if let Some(derived) = name.strip_prefix('@') {
            return match derived {
                "method" => Ok(Component::Method),
                "target-uri" => Ok(Component::TargetUri),
                "authority" => Ok(Component::Authority),
                "scheme" => Ok(Component::Scheme),
                "request-target" => Ok(Component::RequestTarget),
                "path" => Ok(Component::Path),
                "query" => Ok(Component::Query),
                "status" => Err(ComponentError::ResponseOnly { name: owned() }),
                "query-param" => Err(ComponentError::UnsupportedDerived { name: owned() }),
                _ => Err(ComponentError::UnknownDerived { name: owned() }),
            };
        }
        http::HeaderName::from_bytes(name.as_bytes())
            .map(Component::Field)
            .map_err(|_| ComponentError::InvalidFieldName { name: owned() })
    }

    /// The component name as it appears in the signature base.
    pub fn name(&self) -> &str {
        match self {
            Component::Method => "@method",
            Component::TargetUri => "@target-uri",
            Component::Authority => "@authority",
            Component::Scheme => "@scheme",
            Component::RequestTarget => "@request-target",
            Component::Path => "@path",
            Component::Query => "@query",
            Component::Field(name) => name.as_str(),
        }
    }
}

/// Parses an inner-list member of `Signature-Input` as a component.
pub(crate) fn from_sf_item(item: &sfv::Item) -> Result<Component, ComponentError> {
    let Some(name) = item.bare_item.as_string() else {
        return Err(ComponentError::NotAString {
            found: describe_bare_item(&item.bare_item),
        });
    };
    if let Some((param, _)) = item.params.iter().next() {
        return Err(ComponentError::UnsupportedParameter {
            name: name.as_str().to_string(),
            param: param.as_str().to_string(),
        });
    }
    Component::parse(name.as_str())
}

pub(crate) fn describe_bare_item(item: &sfv::BareItem) -> String {
    let kind = match item {
        sfv::BareItem::Decimal(_) => "a decimal",
        sfv::BareItem::Integer(_) => "an integer",
        sfv::BareItem::String(_) => "a string",
        sfv::BareItem::ByteSequence(_) => "a byte sequence",
        sfv::BareItem::Boolean(_) => "a boolean",
        sfv::BareItem::Token(_) => "a token",
        sfv::BareItem::Date(_) => "a date",
        sfv::BareItem::DisplayString(_) => "a display string",
    };
    kind.to_string()
}

/// Rejects a covered list that names a component twice (§2.5: the base
/// MUST NOT be created then).
pub(crate) fn check_unique(components: &[Component]) -> Result<(), ComponentError> {
    for (i, c) in components.iter().enumerate() {
        if components.iter().take(i).any(|earlier| earlier == c) {
            return Err(ComponentError::Duplicate {
                name: c.name().to_string(),
            });
        }
    }
    Ok(())
}

/// The request as the signature base sees it: its parts plus the scheme,
/// which an origin-form request (what a server receives) does not carry.
pub(crate) struct RequestView<'a> {
    pub parts: &'a Parts,
    /// Lower-case scheme: the URI's if it has one, else what the caller
    /// knows (the verifier's listener); `None` if nobody knows it.
    pub scheme: Option<String>,
}

impl<'a> RequestView<'a> {
    pub fn new(parts: &'a Parts, fallback_scheme: Option<&str>) -> Self {
        let scheme = parts
            .uri
            .scheme_str()
            .or(fallback_scheme)
            .map(str::to_ascii_lowercase);
        RequestView { parts, scheme }
    }

    fn scheme_for(&self, c: &Component) -> Result<&str, ComponentError> {
        self.scheme
            .as_deref()
            .ok_or_else(|| ComponentError::SchemeUnknown {
                name: c.name().to_string(),
            })
    }

    /// `@authority` (§2.2.3): from the URI when it has one (absolute form,
    /// HTTP/2 `:authority`), else the single Host field; lower-cased, with
    /// the scheme's default port removed (HTTP §4.2.3). An unknown scheme
    /// is treated as http for the port, matching what a plain-HTTP
    /// verifier derives.
    fn authority(&self) -> Result<String, ComponentError> {
        let raw = match self.parts.uri.authority() {
            Some(a) => a.as_str().to_string(),
            None => {
                let mut hosts = self.parts.headers.get_all(http::header::HOST).iter();
                let (Some(host), None) = (hosts.next(), hosts.next()) else {
                    let count = self
                        .parts
                        .headers
                        .get_all(http::header::HOST)
                        .iter()
                        .count();
                    if count == 0 {
                        return Err(ComponentError::Absent {
                            name: "@authority".to_string(),
                        });
                    }
                    return Err(ComponentError::AmbiguousHost { count });
                };
                host.to_str()
                    .map_err(|_| ComponentError::HostNotAscii)?
                    .trim_matches([' ', '\t'])
                    .to_string()
            }
        };
        let mut authority = raw.to_ascii_lowercase();
        let default_port = match self.scheme.as_deref() {
            Some("https") => ":443",
            _ => ":80",
        };
        if authority.ends_with(default_port) && !authority.ends_with(']') {
            authority.truncate(authority.len() - default_port.len());
        }
        Ok(authority)
    }

    /// Appends the component value to `out` (§2.1, §2.2).
    pub fn value(&self, c: &Component, out: &mut Vec<u8>) -> Result<(), ComponentError> {
        let uri = &self.parts.uri;
        match c {
            Component::Method => out.extend_from_slice(self.parts.method.as_str().as_bytes()),
            Component::Scheme => out.extend_from_slice(self.scheme_for(c)?.as_bytes()),
            Component::Authority => out.extend_from_slice(self.authority()?.as_bytes()),
            Component::Path => {
                // An empty path is "/" (§2.2.6); `Uri::path` already says so.
                out.extend_from_slice(uri.path().as_bytes());
            }
            Component::Query => {
                // No query at all is the lone "?" (§2.2.7).
                out.push(b'?');
                out.extend_from_slice(uri.query().unwrap_or("").as_bytes());
            }
            Component::TargetUri => {
                let scheme = self.scheme_for(c)?;
                out.extend_from_slice(scheme.as_bytes());
                out.extend_from_slice(b"://");
                out.extend_from_slice(self.authority()?.as_bytes());
                out.extend_from_slice(uri.path().as_bytes());
                if let Some(q) = uri.query() {
                    out.push(b'?');
                    out.extend_from_slice(q.as_bytes());
                }
            }
            Component::RequestTarget => {
                // The request-target as on the request line (§2.2.5).
                if self.parts.method == http::Method::CONNECT {
                    out.extend_from_slice(self.authority()?.as_bytes());
                } else if uri.scheme().is_some() {
                    out.extend_from_slice(uri.to_string().as_bytes());
                } else {
                    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
                    out.extend_from_slice(target.as_bytes());
                }
            }
            Component::Field(name) => {
                let mut lines = self.parts.headers.get_all(name).iter().peekable();
                if lines.peek().is_none() {
                    return Err(ComponentError::Absent {
                        name: name.as_str().to_string(),
                    });
                }
                for (i, line) in lines.enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(trim_ows(line.as_bytes()));
                }
            }
        }
        Ok(())
    }
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The signature base (§2.5): one `"name": value` line per covered
/// component, then `"@signature-params": <serialized inner list>` with no
/// trailing newline.
pub(crate) fn signature_base(
    view: &RequestView<'_>,
    components: &[Component],
    signature_params: &str,
) -> Result<Vec<u8>, ComponentError> {
    use crate::limits::{COMPONENTS_COUNT_MAX, SIGNATURE_BASE_BYTES_MAX};
    if components.len() > COMPONENTS_COUNT_MAX {
        return Err(ComponentError::TooMany {
            count_max: COMPONENTS_COUNT_MAX,
        });
    }
    check_unique(components)?;
    let mut base = Vec::with_capacity(256 + signature_params.len());
    for c in components {
        base.push(b'"');
        base.extend_from_slice(c.name().as_bytes());
        base.extend_from_slice(b"\": ");
        view.value(c, &mut base)?;
        base.push(b'\n');
        if base.len() > SIGNATURE_BASE_BYTES_MAX {
            return Err(ComponentError::BaseTooLarge {
                bytes_max: SIGNATURE_BASE_BYTES_MAX,
            });
        }
    }
    base.extend_from_slice(b"\"@signature-params\": ");
    base.extend_from_slice(signature_params.as_bytes());
    if base.len() > SIGNATURE_BASE_BYTES_MAX {
        return Err(ComponentError::BaseTooLarge {
            bytes_max: SIGNATURE_BASE_BYTES_MAX,
        });
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn value(p: &Parts, scheme: Option<&str>, name: &str) -> Result<String, ComponentError> {
        let mut out = Vec::new();
        RequestView::new(p, scheme).value(&Component::parse(name)?, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn derived_components_match_rfc_9421_section_2_2() {
        // The §2.2 examples: POST /path?param=value on www.example.com.
        let p = parts(
            "https://www.example.com/path?param=value",
            &[("host", "www.example.com")],
        );
        assert_eq!(value(&p, None, "@method").unwrap(), "POST");
        assert_eq!(
            value(&p, None, "@target-uri").unwrap(),
            "https://www.example.com/path?param=value"
        );
        assert_eq!(value(&p, None, "@authority").unwrap(), "www.example.com");
        assert_eq!(value(&p, None, "@scheme").unwrap(), "https");
        assert_eq!(
            value(&p, None, "@request-target").unwrap(),
            "https://www.example.com/path?param=value"
        );
        assert_eq!(value(&p, None, "@path").unwrap(), "/path");
        assert_eq!(value(&p, None, "@query").unwrap(), "?param=value");

        // Origin form, as a server receives it: authority from Host,
        // scheme from the caller.
        let p = parts("/path?param=value", &[("host", "WWW.Example.com:443")]);
        assert_eq!(
            value(&p, Some("https"), "@authority").unwrap(),
            "www.example.com"
        );
        assert_eq!(
            value(&p, Some("https"), "@target-uri").unwrap(),
            "https://www.example.com/path?param=value"
        );
        assert_eq!(
            value(&p, Some("https"), "@request-target").unwrap(),
            "/path?param=value"
        );
        assert_eq!(
            value(&p, None, "@scheme"),
            Err(ComponentError::SchemeUnknown {
                name: "@scheme".into()
            })
        );
        // A non-default port stays.
        let p = parts("/", &[("host", "example.com:8080")]);
        assert_eq!(
            value(&p, Some("http"), "@authority").unwrap(),
            "example.com:8080"
        );
        let p = parts("/", &[("host", "example.com:80")]);
        assert_eq!(
            value(&p, Some("http"), "@authority").unwrap(),
            "example.com"
        );
        // No query: the lone "?"; empty query likewise (§2.2.7).
        let p = parts("/a", &[]);
        assert_eq!(value(&p, None, "@query").unwrap(), "?");
        let p = parts("/a?", &[]);
        assert_eq!(value(&p, None, "@query").unwrap(), "?");
        // §2.2.7 example: percent-encoding is kept as sent.
        let p = parts("/path?queryString=%20another%20", &[]);
        assert_eq!(
            value(&p, None, "@query").unwrap(),
            "?queryString=%20another%20"
        );
    }

    #[test]
    fn fields_combine_lines_and_trim() {
        // §2.1: multiple field lines joined with ", ", each trimmed.
        let mut p = parts("/", &[("x-list", "  a  "), ("x-list", "b\t")]);
        p.headers
            .append("x-empty", http::HeaderValue::from_static(""));
        assert_eq!(value(&p, None, "x-list").unwrap(), "a, b");
        assert_eq!(value(&p, None, "x-empty").unwrap(), "");
        assert_eq!(
            value(&p, None, "x-missing"),
            Err(ComponentError::Absent {
                name: "x-missing".into()
            })
        );
    }

    #[test]
    fn unsupported_identifiers_are_refused_by_name() {
        assert_eq!(
            Component::parse("@status"),
            Err(ComponentError::ResponseOnly {
                name: "@status".into()
            })
        );
        assert_eq!(
            Component::parse("@query-param"),
            Err(ComponentError::UnsupportedDerived {
                name: "@query-param".into()
            })
        );
        assert_eq!(
            Component::parse("@nope"),
            Err(ComponentError::UnknownDerived {
                name: "@nope".into()
            })
        );
        assert_eq!(
            Component::parse("Date"),
            Err(ComponentError::NotLowercase {
                name: "Date".into()
            })
        );
        assert_eq!(
            Component::parse("bad field"),
            Err(ComponentError::InvalidFieldName {
                name: "bad field".into()
            })
        );
        for param in ["sf", "key", "bs", "req", "tr", "name"] {
            let input = format!("x=(\"example-dict\";{param})");
            let dict: sfv::Dictionary = sfv::Parser::new(&input).parse().unwrap();
            let Some(sfv::ListEntry::InnerList(list)) = dict.get("x") else {
                panic!("inner list");
            };
            assert_eq!(
                from_sf_item(&list.items[0]),
                Err(ComponentError::UnsupportedParameter {
                    name: "example-dict".into(),
                    param: param.into()
                })
            );
        }
        let p = parts("/", &[]);
        let view = RequestView::new(&p, None);
        let twice = [Component::Method, Component::Path, Component::Method];
        assert_eq!(
            signature_base(&view, &twice, "()"),
            Err(ComponentError::Duplicate {
                name: "@method".into()
            })
        );
    }

    #[test]
    fn ambiguous_or_missing_host_is_refused() {
        let p = parts("/", &[("host", "a"), ("host", "b")]);
        assert_eq!(
            value(&p, None, "@authority"),
            Err(ComponentError::AmbiguousHost { count: 2 })
        );
        let p = parts("/", &[]);
        assert_eq!(
            value(&p, None, "@authority"),
            Err(ComponentError::Absent {
                name: "@authority".into()
            })
        );
    }
}
