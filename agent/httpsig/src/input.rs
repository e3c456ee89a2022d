//! `Signature-Input` and `Signature` fields (RFC 9421 §4), parsed as RFC
//! 8941 dictionaries with `sfv`.
//!
//! Field lines of one name are combined with `", "` before parsing (RFC 9110
//! §5.3), so a signature split over two lines parses like one line. As RFC
//! 8941 says, a label repeated in one dictionary keeps its last value.

use http::HeaderMap;

use crate::component::{self, Component, ComponentError};
use crate::limits::{KEY_ID_BYTES_MAX, LABEL_BYTES_MAX, NONCE_BYTES_MAX, SIGNATURES_COUNT_MAX};
use crate::verify::VerifyError;

pub(crate) const SIGNATURE_INPUT: &str = "signature-input";
pub(crate) const SIGNATURE: &str = "signature";

/// One member of `Signature-Input`: the covered components and parameters
/// of the signature named `label`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureInput {
    pub label: String,
    /// Component names in signed order, as written (not yet validated; see
    /// [`SignatureInput::components`]).
    pub covered: Vec<String>,
    pub created_unix_s: Option<u64>,
    pub expires_unix_s: Option<u64>,
    pub nonce: Option<String>,
    pub alg: Option<String>,
    pub key_id: Option<String>,
    pub tag: Option<String>,
    /// The `@signature-params` value: this member's inner list re-serialized
    /// per RFC 8941 §4.1.1.1, which is what §2.3 signs (so optional
    /// whitespace in the field does not change the base).
    pub signature_params: String,
    items: Vec<sfv::Item>,
}

impl SignatureInput {
    /// The covered components, validated (names, no unsupported
    /// parameters, no duplicates).
    pub fn components(&self) -> Result<Vec<Component>, ComponentError> {
        let components = self
            .items
            .iter()
            .map(component::from_sf_item)
            .collect::<Result<Vec<_>, _>>()?;
        component::check_unique(&components)?;
        Ok(components)
    }
}

/// All field lines of `name` joined with ", ", bounded in size; `None` if
/// the request has none.
pub(crate) fn combined_field(
    headers: &HeaderMap,
    name: &'static str,
    bytes_max: usize,
) -> Result<Option<Vec<u8>>, VerifyError> {
    let mut lines = headers.get_all(name).iter().peekable();
    if lines.peek().is_none() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(line.as_bytes());
        if out.len() > bytes_max {
            return Err(VerifyError::Malformed {
                header: name,
                reason: format!("longer than {bytes_max} bytes"),
            });
        }
    }
    Ok(Some(out))
}

fn parse_dictionary(header: &'static str, value: &[u8]) -> Result<sfv::Dictionary, VerifyError> {
    let dict: sfv::Dictionary = sfv::Parser::new(value)
        .with_version(sfv::Version::Rfc8941)
        .parse()
        .map_err(|e| VerifyError::Malformed {
            header,
            reason: format!("not a structured-field dictionary: {e}"),
        })?;
    if dict.len() > SIGNATURES_COUNT_MAX {
        return Err(VerifyError::Malformed {
            header,
            reason: format!(
                "{} signatures; at most {SIGNATURES_COUNT_MAX} are accepted",
                dict.len()
            ),
        });
    }
    for label in dict.keys() {
        if label.as_str().len() > LABEL_BYTES_MAX {
            return Err(VerifyError::Malformed {
                header,
                reason: format!("a label is longer than {LABEL_BYTES_MAX} bytes"),
            });
        }
    }
    Ok(dict)
}

fn malformed(label: &str, reason: impl std::fmt::Display) -> VerifyError {
    VerifyError::Malformed {
        header: SIGNATURE_INPUT,
        reason: format!("signature {label:?}: {reason}"),
    }
}

fn string_param(
    label: &str,
    key: &str,
    value: &sfv::BareItem,
    bytes_max: usize,
) -> Result<String, VerifyError> {
    let Some(s) = value.as_string() else {
        return Err(malformed(
            label,
            format!(
                "parameter {key} must be a string, not {}",
                component::describe_bare_item(value)
            ),
        ));
    };
    if s.as_str().len() > bytes_max {
        return Err(malformed(
            label,
            format!("parameter {key} is longer than {bytes_max} bytes"),
        ));
    }
    Ok(s.as_str().to_string())
}

fn time_param(label: &str, key: &str, value: &sfv::BareItem) -> Result<u64, VerifyError> {
    let Some(i) = value.as_integer() else {
        return Err(malformed(
            label,
            format!(
                "parameter {key} must be an integer, not {}",
                component::describe_bare_item(value)
            ),
        ));
    };
    u64::try_from(i64::from(i))
        .map_err(|_| malformed(label, format!("parameter {key} is negative ({i})")))
}

/// Parses every member of the request's `Signature-Input`; `Ok(None)` if
/// the field is absent.
pub fn parse_signature_inputs(
    headers: &HeaderMap,
) -> Result<Option<Vec<SignatureInput>>, VerifyError> {
    let Some(raw) = combined_field(
        headers,
        SIGNATURE_INPUT,
        crate::limits::SIGNATURE_INPUT_BYTES_MAX,
    )?
    else {
        return Ok(None);
    };
    let dict = parse_dictionary(SIGNATURE_INPUT, &raw)?;
    let mut out = Vec::with_capacity(dict.len());
    for (label, entry) in &dict {
        out.push(parse_member(label.as_str(), entry)?);
    }
    Ok(Some(out))
}

fn parse_member(label: &str, entry: &sfv::ListEntry) -> Result<SignatureInput, VerifyError> {
    let sfv::ListEntry::InnerList(list) = entry else {
        return Err(malformed(label, "must be an inner list of component names"));
    };
    if list.items.len() > crate::limits::COMPONENTS_COUNT_MAX {
        return Err(malformed(
            label,
            format!(
                "covers {} components; at most {} are accepted",
                list.items.len(),
                crate::limits::COMPONENTS_COUNT_MAX
            ),
        ));
    }
    let mut covered = Vec::with_capacity(list.items.len());
    for item in &list.items {
        match item.bare_item.as_string() {
            Some(s) => covered.push(s.as_str().to_string()),
            None => {
                return Err(malformed(
                    label,
                    format!(
                        "a component identifier must be a string, not {}",
                        component::describe_bare_item(&item.bare_item)
                    ),
                ));
            }
        }
    }
    let mut input = SignatureInput {
        label: label.to_string(),
        covered,
        created_unix_s: None,
        expires_unix_s: None,
        nonce: None,
        alg: None,
        key_id: None,
        tag: None,
        signature_params: serialize_inner_list(list),
        items: list.items.clone(),
    };
    // Unknown parameters are allowed (RFC 9421 §2.3 registry may grow) and
    // are signed as part of @signature-params; known ones must be typed.
    for (key, value) in &list.params {
        match key.as_str() {
            "created" => input.created_unix_s = Some(time_param(label, "created", value)?),
            "expires" => input.expires_unix_s = Some(time_param(label, "expires", value)?),
            "nonce" => input.nonce = Some(string_param(label, "nonce", value, NONCE_BYTES_MAX)?),
            "alg" => input.alg = Some(string_param(label, "alg", value, KEY_ID_BYTES_MAX)?),
            "keyid" => input.key_id = Some(string_param(label, "keyid", value, KEY_ID_BYTES_MAX)?),
            "tag" => input.tag = Some(string_param(label, "tag", value, KEY_ID_BYTES_MAX)?),
            _ => {}
        }
    }
    if let (Some(created), Some(expires)) = (input.created_unix_s, input.expires_unix_s)
        && expires < created
    {
        return Err(malformed(
            label,
            format!("expires ({expires}) is before created ({created})"),
        ));
    }
    Ok(input)
}

/// RFC 8941 §4.1.1.1 serialization of an inner list with its parameters.
pub(crate) fn serialize_inner_list(list: &sfv::InnerList) -> String {
    let mut out = String::with_capacity(128);
    let mut ser = sfv::ListSerializer::with_buffer(&mut out);
    {
        let mut inner = ser.inner_list();
        inner.items(&list.items);
        let _ = inner.finish().parameters(&list.params);
    }
    let _ = ser.finish();
    out
}

/// A `Signature` member: (label, signature bytes).
pub type LabelledSignature = (String, Vec<u8>);

/// Parses the request's `Signature` field into (label, signature bytes);
/// `Ok(None)` if the field is absent.
pub fn parse_signatures(
    headers: &HeaderMap,
) -> Result<Option<Vec<LabelledSignature>>, VerifyError> {
    let Some(raw) = combined_field(headers, SIGNATURE, crate::limits::SIGNATURE_BYTES_MAX)? else {
        return Ok(None);
    };
    let dict = parse_dictionary(SIGNATURE, &raw)?;
    let mut out = Vec::with_capacity(dict.len());
    for (label, entry) in &dict {
        let bytes = match entry {
            sfv::ListEntry::Item(item) => item.bare_item.as_byte_sequence(),
            sfv::ListEntry::InnerList(_) => None,
        };
        let Some(bytes) = bytes else {
            return Err(VerifyError::Malformed {
                header: SIGNATURE,
                reason: format!(
                    "signature {:?} must be a byte sequence (:base64:)",
                    label.as_str()
                ),
            });
        };
        out.push((label.as_str().to_string(), bytes.to_vec()));
    }
    Ok(Some(out))
}
