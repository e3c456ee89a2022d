//! `sign_request`: the client side (the benchmark, tests, other nodes).

use http::HeaderValue;
use http::request::Parts;
use metanode_core::keys::SigningKey;

use crate::component::{self, Component, ComponentError, RequestView};
use crate::input::{SIGNATURE, SIGNATURE_INPUT};
use crate::limits::{KEY_ID_BYTES_MAX, LABEL_BYTES_MAX, NONCE_BYTES_MAX};

/// What to sign. Parameters are written in the order created, expires,
/// keyid, nonce (RFC 9421's own examples use created;keyid first); `alg`
/// is not written, as in the RFC's ed25519 example: the verifier knows the
/// algorithm from its key directory.
#[derive(Debug, Clone, Copy)]
pub struct SignParams<'a> {
    pub key_id: &'a str,
    pub label: &'a str,
    /// Component names, e.g. `["@method", "@authority", "@path",
    /// "content-digest"]`. `@scheme` and `@target-uri` need an absolute
    /// request URI.
    pub components: &'a [&'a str],
    pub created_unix_s: u64,
    pub expires_unix_s: Option<u64>,
    pub nonce: Option<&'a str>,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error(
        "label {label:?} is not a structured-field key (lower-case letters, digits, _-.*) of at most {LABEL_BYTES_MAX} bytes"
    )]
    Label { label: String },
    #[error(
        "{param} {value:?} is not a structured-field string (printable ASCII) of at most {bytes_max} bytes"
    )]
    StringParam {
        param: &'static str,
        value: String,
        bytes_max: usize,
    },
    #[error("{param} {value} is outside the structured-field integer range")]
    IntegerParam { param: &'static str, value: u64 },
    #[error("expires ({expires_unix_s}) is before created ({created_unix_s})")]
    ExpiresBeforeCreated {
        created_unix_s: u64,
        expires_unix_s: u64,
    },
    #[error("the request already carries a signature labelled {label:?}")]
    DuplicateLabel { label: String },
    #[error("the {header} value is not a valid header value")]
    HeaderValue { header: &'static str },
    #[error(transparent)]
    Component(#[from] ComponentError),
}

fn sf_string<'v>(
    param: &'static str,
    value: &'v str,
    bytes_max: usize,
) -> Result<&'v sfv::StringRef, SignError> {
    let bad = || SignError::StringParam {
        param,
        value: value.to_string(),
        bytes_max,
    };
    if value.len() > bytes_max {
        return Err(bad());
    }
    sfv::StringRef::from_str(value).map_err(|_| bad())
}

fn sf_integer(param: &'static str, value: u64) -> Result<sfv::Integer, SignError> {
    i64::try_from(value)
        .ok()
        .and_then(|v| sfv::Integer::try_from(v).ok())
        .ok_or(SignError::IntegerParam { param, value })
}

/// Signs the request with Ed25519 and appends `Signature-Input` and
/// `Signature` members named `params.label` (existing signatures under
/// other labels are kept). Components must be present in `parts`; sign
/// after adding `Content-Digest` and any other covered field.
pub fn sign_request(
    parts: &mut Parts,
    key: &SigningKey,
    params: &SignParams<'_>,
) -> Result<(), SignError> {
    let label = sfv::KeyRef::from_str(params.label)
        .ok()
        .filter(|_| params.label.len() <= LABEL_BYTES_MAX)
        .ok_or_else(|| SignError::Label {
            label: params.label.to_string(),
        })?;
    if let Some(expires_unix_s) = params.expires_unix_s
        && expires_unix_s < params.created_unix_s
    {
        return Err(SignError::ExpiresBeforeCreated {
            created_unix_s: params.created_unix_s,
            expires_unix_s,
        });
    }
    if let Ok(Some(existing)) = crate::input::parse_signature_inputs(&parts.headers)
        && existing.iter().any(|i| i.label == params.label)
    {
        return Err(SignError::DuplicateLabel {
            label: params.label.to_string(),
        });
    }

    let components = params
        .components
        .iter()
        .map(|name| Component::parse(name))
        .collect::<Result<Vec<_>, _>>()?;

    // @signature-params, serialized once and used for both the base and
    // the Signature-Input member so the two cannot disagree.
    let mut signature_params = String::with_capacity(160);
    {
        let mut list = sfv::ListSerializer::with_buffer(&mut signature_params);
        let mut inner = list.inner_list();
        for c in &components {
            // Component names are field names or fixed "@..." words: valid strings.
            let name = sf_string("component", c.name(), usize::MAX)?;
            let _ = inner.bare_item(name);
        }
        let mut p = inner.finish();
        p = p.parameter(
            sfv::key_ref("created"),
            sf_integer("created", params.created_unix_s)?,
        );
        if let Some(expires) = params.expires_unix_s {
            p = p.parameter(sfv::key_ref("expires"), sf_integer("expires", expires)?);
        }
        p = p.parameter(
            sfv::key_ref("keyid"),
            sf_string("keyid", params.key_id, KEY_ID_BYTES_MAX)?,
        );
        if let Some(nonce) = params.nonce {
            p = p.parameter(
                sfv::key_ref("nonce"),
                sf_string("nonce", nonce, NONCE_BYTES_MAX)?,
            );
        }
        let _ = p;
        let _ = list.finish();
    }

    let view = RequestView::new(parts, None);
    let base = component::signature_base(&view, &components, &signature_params)?;
    let signature = key.sign(&base);

    let input_value = format!("{}={signature_params}", label.as_str());
    let mut sig_value = String::with_capacity(100);
    {
        let mut dict = sfv::DictSerializer::with_buffer(&mut sig_value);
        let _ = dict.bare_item(label, &signature.0[..]);
        let _ = dict.finish();
    }
    // Both are visible ASCII by construction (sf serialization, base64).
    let input_header = HeaderValue::try_from(input_value).map_err(|_| SignError::HeaderValue {
        header: SIGNATURE_INPUT,
    })?;
    let sig_header = HeaderValue::try_from(sig_value)
        .map_err(|_| SignError::HeaderValue { header: SIGNATURE })?;
    parts.headers.append(SIGNATURE_INPUT, input_header);
    parts.headers.append(SIGNATURE, sig_header);
    Ok(())
}
