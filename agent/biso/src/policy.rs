//! The YAML policy: schema, parsing and semantic validation.
//!
//! The file is parsed by serde-saphyr into a span-carrying raw form
//! ([`RawPolicy`], private), then validated into a [`Policy`] whose values are
//! typed and normalised: CIDRs parsed and sorted, name lists turned into sorted
//! sets. Two files that differ only in comments, key order or list order
//! therefore load to equal `Policy` values (and equal digests, see
//! [`Policy::digest`]).
//!
//! Every error names a line and a field: serde-saphyr's own errors (unknown
//! key, wrong type, bad enum value, duplicate key) carry its location, and the
//! semantic checks use [`serde_saphyr::Spanned`] locations of the offending
//! value. All semantic errors are collected, not just the first.
//!
//! See `policy/biso.example.yaml` for a commented example.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use metanode_core::encoding::{Encode, EncodeError, Writer};
use metanode_core::hash::{Hash32, blake3_256};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::limits::{
    POLICY_SOURCE_LEN_BYTES_MAX, PURPOSE_LEN_BYTES_MAX, PURPOSES_COUNT_MAX,
    REGION_ENTRIES_COUNT_MAX, REGION_NAME_LEN_BYTES_MAX, REGION_NAMES_COUNT_MAX,
    RETENTION_DAYS_LIMIT, YELLOW_BURST_MAX, YELLOW_RATE_PER_S_MAX, YELLOW_SAMPLE_ONE_IN_MAX,
};

/// The only policy file format version this build reads (`version:`).
pub const POLICY_FORMAT_VERSION: u32 = 1;

/// Version byte of the canonical encoding hashed by [`Policy::digest`].
pub const POLICY_ENCODING_VERSION: u8 = 1;

/// Bus BIOS mode of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Normal,
    Secure,
    Emergency,
    Maintenance,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Normal,
        Mode::Secure,
        Mode::Emergency,
        Mode::Maintenance,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Secure => "secure",
            Mode::Emergency => "emergency",
            Mode::Maintenance => "maintenance",
        }
    }

    /// Wire byte in the canonical encodings (policy digest, decision log).
    /// Never renumber.
    pub const fn to_u8(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::Secure => 1,
            Mode::Emergency => 2,
            Mode::Maintenance => 3,
        }
    }

    pub const fn from_u8(byte: u8) -> Option<Mode> {
        match byte {
            0 => Some(Mode::Normal),
            1 => Some(Mode::Secure),
            2 => Some(Mode::Emergency),
            3 => Some(Mode::Maintenance),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of data this node serves. Spelled in YAML exactly as the
/// variants are named (`PII`, `PHI`, `PCI`, `General`, `Public`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum DataClass {
    /// Personally identifiable information (GDPR personal data).
    #[allow(clippy::upper_case_acronyms)]
    PII,
    /// Protected health information (HIPAA).
    #[allow(clippy::upper_case_acronyms)]
    PHI,
    /// Payment card data (PCI DSS).
    #[allow(clippy::upper_case_acronyms)]
    PCI,
    /// Internal data about no person and no card.
    General,
    /// Data anyone may read.
    Public,
}

impl DataClass {
    pub const ALL: [DataClass; 5] = [
        DataClass::PII,
        DataClass::PHI,
        DataClass::PCI,
        DataClass::General,
        DataClass::Public,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DataClass::PII => "PII",
            DataClass::PHI => "PHI",
            DataClass::PCI => "PCI",
            DataClass::General => "General",
            DataClass::Public => "Public",
        }
    }

    /// PII, PHI and PCI: data about people or cards, which needs consent,
    /// encryption and a declared purpose.
    pub const fn is_sensitive(self) -> bool {
        matches!(self, DataClass::PII | DataClass::PHI | DataClass::PCI)
    }

    /// The retention this engine treats as the class maximum; longer is a
    /// warning (yellow), not a violation, because the laws set "no longer
    /// than necessary" rather than a hard number. Chosen values:
    /// - PCI: 365 days. PCI DSS 3.2.1 requires a documented retention limit
    ///   and keeps audit trails one year (Req. 10.7); a year is the common cap.
    /// - PII: 1095 days (3 years). GDPR Art. 5(1)(e) gives no number; three
    ///   years is the usual limitation period for claims in the EU states
    ///   that publish one (e.g. German BGB §195).
    /// - PHI: 2190 days (6 years). HIPAA 45 CFR 164.316(b)(2) keeps
    ///   documentation six years; keeping records longer needs a reason.
    /// - General, Public: no maximum.
    pub const fn retention_days_max(self) -> Option<u32> {
        match self {
            DataClass::PCI => Some(365),
            DataClass::PII => Some(1095),
            DataClass::PHI => Some(2190),
            DataClass::General | DataClass::Public => None,
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            DataClass::PII => 0,
            DataClass::PHI => 1,
            DataClass::PCI => 2,
            DataClass::General => 3,
            DataClass::Public => 4,
        }
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Consent state recorded for a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consent {
    Granted,
    Pending,
    Denied,
    Withdrawn,
}

impl Consent {
    pub const ALL: [Consent; 4] = [
        Consent::Granted,
        Consent::Pending,
        Consent::Denied,
        Consent::Withdrawn,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Consent::Granted => "granted",
            Consent::Pending => "pending",
            Consent::Denied => "denied",
            Consent::Withdrawn => "withdrawn",
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            Consent::Granted => 0,
            Consent::Pending => 1,
            Consent::Denied => 2,
            Consent::Withdrawn => 3,
        }
    }
}

impl fmt::Display for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `data.encryption`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    pub in_transit: bool,
    pub at_rest: bool,
}

/// `data`: what the node serves and how it treats it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPolicy {
    pub class: DataClass,
    /// Purposes the data may be used for (sorted, unique).
    pub purposes: BTreeSet<String>,
    pub encryption: Encryption,
    pub retention_days_max: u32,
}

/// `yellow`: the token bucket and sampling every yellow rule gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct YellowLimits {
    pub rate_per_s: u32,
    pub burst: u32,
    /// One in this many yellow packets is sampled; 0 = off.
    pub sample_one_in: u32,
}

/// A validated policy. Build it with [`load_policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub data: DataPolicy,
    /// IPv4 region table, sorted by network; no duplicates, no host bits.
    pub regions_v4: Vec<(Ipv4Net, String)>,
    /// IPv6 region table, sorted by network; none inside `::ffff:0:0/96`
    /// (lookups treat IPv4-mapped addresses as IPv4).
    pub regions_v6: Vec<(Ipv6Net, String)>,
    /// Region of addresses no table entry covers.
    pub unknown_region: String,
    /// Empty = every region allowed.
    pub allowed_regions: BTreeSet<String>,
    pub blocked_regions: BTreeSet<String>,
    /// Absent region = the class default (see [`crate::eval`]).
    pub consent: BTreeMap<String, Consent>,
    pub yellow: YellowLimits,
}

impl Policy {
    /// Every region name the table or `unknown_region` defines, sorted.
    pub fn region_names(&self) -> BTreeSet<&str> {
        self.regions_v4
            .iter()
            .map(|(_, r)| r.as_str())
            .chain(self.regions_v6.iter().map(|(_, r)| r.as_str()))
            .chain(std::iter::once(self.unknown_region.as_str()))
            .collect()
    }

    /// BLAKE3 of the canonical encoding of the policy (see the `Encode`
    /// impl). Decision: the digest is over a canonical re-encoding of the
    /// validated policy, not the raw YAML bytes, because the compiled policy
    /// (and every receipt naming it) must identify what decides traffic;
    /// comments, key order, list order and quoting do not decide anything,
    /// and a policy built in code (tests, the agent's mode switch) has no
    /// YAML at all. The encoding is versioned ([`POLICY_ENCODING_VERSION`]).
    ///
    /// Fails only for a policy built in code with strings or lists beyond
    /// the encoding's bounds; [`load_policy`] never returns one.
    pub fn digest(&self) -> Result<Hash32, EncodeError> {
        Ok(blake3_256(&self.to_canonical_bytes()?))
    }
}

/// Canonical encoding hashed by [`Policy::digest`]:
///
/// ```text
/// Policy = version:u8(=1) mode:u8 class:u8 purposes:u32 count str*
///          in_transit:bool at_rest:bool retention_days_max:u32
///          v4:u32 count (addr[4] prefix:u8 region:str)*
///          v6:u32 count (addr[16] prefix:u8 region:str)*
///          unknown_region:str allowed:u32 count str* blocked:u32 count str*
///          consent:u32 count (region:str state:u8)*
///          rate_per_s:u32 burst:u32 sample_one_in:u32
/// ```
/// Lists are in their sorted order, so equal policies encode equally.
impl Encode for Policy {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(POLICY_ENCODING_VERSION);
        w.put_u8(self.mode.to_u8());
        w.put_u8(self.data.class.to_u8());
        put_strs(w, self.data.purposes.iter());
        w.put_bool(self.data.encryption.in_transit);
        w.put_bool(self.data.encryption.at_rest);
        w.put_u32(self.data.retention_days_max);
        w.put_u32(self.regions_v4.len() as u32);
        for (net, region) in &self.regions_v4 {
            w.put_raw(&net.network().octets());
            w.put_u8(net.prefix_len());
            w.put_str(region);
        }
        w.put_u32(self.regions_v6.len() as u32);
        for (net, region) in &self.regions_v6 {
            w.put_raw(&net.network().octets());
            w.put_u8(net.prefix_len());
            w.put_str(region);
        }
        w.put_str(&self.unknown_region);
        put_strs(w, self.allowed_regions.iter());
        put_strs(w, self.blocked_regions.iter());
        w.put_u32(self.consent.len() as u32);
        for (region, state) in &self.consent {
            w.put_str(region);
            w.put_u8(state.to_u8());
        }
        w.put_u32(self.yellow.rate_per_s);
        w.put_u32(self.yellow.burst);
        w.put_u32(self.yellow.sample_one_in);
    }
}

fn put_strs<'a>(w: &mut Writer, items: impl ExactSizeIterator<Item = &'a String>) {
    w.put_u32(items.len() as u32);
    for item in items {
        w.put_str(item);
    }
}

// ---------------------------------------------------------------- errors

/// One problem in a policy file, placed on the line that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// 1-based; 0 when the parser could not place the error.
    pub line: u64,
    /// 1-based; 0 when unknown.
    pub column: u64,
    /// Dotted field path (`regions[2].cidr`, `consent.eu-west`); empty for
    /// a problem with the document as a whole (a YAML syntax error).
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} column {}: ", self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why [`load_policy`] refused a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is {len_bytes} bytes, more than the {max_bytes}-byte limit")]
    TooLarge { len_bytes: usize, max_bytes: usize },
    /// The YAML did not match the schema (syntax, unknown or duplicate key,
    /// wrong type, bad enum value, missing field).
    #[error("invalid policy: {0}")]
    Parse(FieldError),
    /// The YAML matched the schema but broke semantic rules; every broken
    /// rule is listed, sorted by line.
    #[error("invalid policy ({} error{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

impl PolicyError {
    /// The errors, one per problem, whatever the variant.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            PolicyError::TooLarge { .. } => vec![FieldError {
                line: 0,
                column: 0,
                field: String::new(),
                message: self.to_string(),
            }],
            PolicyError::Parse(e) => vec![e.clone()],
            PolicyError::Invalid(errors) => errors.clone(),
        }
    }
}

// ---------------------------------------------------------------- raw form

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    mode: Mode,
    data: RawData,
    #[serde(default)]
    regions: Vec<RawRegion>,
    unknown_region: Spanned<String>,
    #[serde(default)]
    allowed_regions: Vec<Spanned<String>>,
    #[serde(default)]
    blocked_regions: Vec<Spanned<String>>,
    #[serde(default)]
    consent: BTreeMap<String, Spanned<Consent>>,
    yellow: RawYellow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    class: DataClass,
    #[serde(default)]
    purposes: Vec<Spanned<String>>,
    encryption: Encryption,
    retention_days_max: Spanned<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    cidr: Spanned<String>,
    region: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawYellow {
    rate_per_s: Spanned<u32>,
    burst: Spanned<u32>,
    #[serde(default = "sampling_off")]
    sample_one_in: Spanned<u32>,
}

fn sampling_off() -> Spanned<u32> {
    Spanned::new(
        0,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

// ---------------------------------------------------------------- loading

/// Parse and validate a YAML policy.
pub fn load_policy(yaml: &str) -> Result<Policy, PolicyError> {
    if yaml.len() > POLICY_SOURCE_LEN_BYTES_MAX {
        return Err(PolicyError::TooLarge {
            len_bytes: yaml.len(),
            max_bytes: POLICY_SOURCE_LEN_BYTES_MAX,
        });
    }
    // serde-saphyr places the error; serde_path_to_error names the field,
    // which serde's own messages leave out for type errors ("invalid u32").
    let mut field = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(yaml, |de| {
        serde_path_to_error::deserialize::<_, RawPolicy>(de).map_err(|err| {
            field = field_path(err.path());
            err.into_inner()
        })
    });
    let raw = parsed.map_err(|err| {
        let (line, column) = err
            .location()
            .map_or((0, 0), |loc| (loc.line(), loc.column()));
        // The location is reported in our own fields; drop serde-saphyr's
        // trailing copy of it.
        let message = err.without_snippet().to_string();
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_string(),
            None => message,
        };
        PolicyError::Parse(FieldError {
            line,
            column,
            field,
            message,
        })
    })?;
    validate(raw)
}

/// `data.purposes[2]` from serde_path_to_error's path, without the
/// `value` segment [`Spanned`] adds and without the `.` root.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let segments: Vec<&Segment> = path.iter().collect();
    let segments = match segments.split_last() {
        Some((Segment::Map { key }, rest)) if key == "value" => rest,
        _ => &segments[..],
    };
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push<T>(&mut self, at: &Spanned<T>, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            line: at.referenced.line(),
            column: at.referenced.column(),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn check_name(
    errors: &mut Errors,
    name: &Spanned<String>,
    field: &str,
    what: &str,
    len_max: usize,
) -> bool {
    let value = &name.value;
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if value.is_empty() || value.len() > len_max || !ok_chars {
        errors.push(
            name,
            field,
            format!("{what} {value:?} must be 1 to {len_max} bytes of a-z, 0-9, '-', '_' or '.'"),
        );
        return false;
    }
    true
}

fn validate(raw: RawPolicy) -> Result<Policy, PolicyError> {
    let mut errors = Errors(Vec::new());

    if raw.version.value != POLICY_FORMAT_VERSION {
        errors.push(
            &raw.version,
            "version",
            format!(
                "unsupported policy format version {} (this build reads {POLICY_FORMAT_VERSION})",
                raw.version.value
            ),
        );
    }

    // data
    let mut purposes = BTreeSet::new();
    if raw.data.purposes.len() > PURPOSES_COUNT_MAX {
        errors.0.push(FieldError {
            line: raw.data.purposes[PURPOSES_COUNT_MAX].referenced.line(),
            column: raw.data.purposes[PURPOSES_COUNT_MAX].referenced.column(),
            field: "data.purposes".into(),
            message: format!("more than {PURPOSES_COUNT_MAX} purposes"),
        });
    }
    for (i, purpose) in raw.data.purposes.iter().enumerate() {
        let field = format!("data.purposes[{i}]");
        if check_name(
            &mut errors,
            purpose,
            &field,
            "purpose",
            PURPOSE_LEN_BYTES_MAX,
        ) && !purposes.insert(purpose.value.clone())
        {
            errors.push(
                purpose,
                field,
                format!("purpose {:?} is listed twice", purpose.value),
            );
        }
    }
    if raw.data.retention_days_max.value > RETENTION_DAYS_LIMIT {
        errors.push(
            &raw.data.retention_days_max,
            "data.retention_days_max",
            format!(
                "{} days is more than the {RETENTION_DAYS_LIMIT}-day limit",
                raw.data.retention_days_max.value
            ),
        );
    }

    // region table
    if raw.regions.len() > REGION_ENTRIES_COUNT_MAX {
        errors.push(
            &raw.regions[REGION_ENTRIES_COUNT_MAX].cidr,
            "regions",
            format!("more than {REGION_ENTRIES_COUNT_MAX} region entries"),
        );
    }
    let mut seen_nets: HashMap<IpNet, (usize, u64)> = HashMap::new();
    let mut regions_v4 = Vec::new();
    let mut regions_v6 = Vec::new();
    let mut defined: BTreeSet<String> = BTreeSet::new();
    for (i, entry) in raw.regions.iter().enumerate() {
        let name_ok = check_name(
            &mut errors,
            &entry.region,
            &format!("regions[{i}].region"),
            "region name",
            REGION_NAME_LEN_BYTES_MAX,
        );
        let field = format!("regions[{i}].cidr");
        let text = entry.cidr.value.trim();
        let net: IpNet = match text.parse() {
            Ok(net) => net,
            Err(_) => {
                errors.push(
                    &entry.cidr,
                    field,
                    format!(
                        "{text:?} is not a CIDR (address/prefix, e.g. 10.1.0.0/16 or 2001:db8::/32)"
                    ),
                );
                continue;
            }
        };
        if net.trunc() != net {
            errors.push(
                &entry.cidr,
                field,
                format!(
                    "{net} has host bits set below the /{} prefix; did you mean {}?",
                    net.prefix_len(),
                    net.trunc()
                ),
            );
            continue;
        }
        if let IpNet::V6(v6) = net
            && v6.network().to_ipv4_mapped().is_some()
            && v6.prefix_len() >= 96
        {
            errors.push(
                &entry.cidr,
                field,
                format!(
                    "{net} is inside ::ffff:0:0/96; IPv4-mapped addresses are looked up as IPv4, so write the IPv4 CIDR"
                ),
            );
            continue;
        }
        if let Some((first, first_line)) = seen_nets.get(&net) {
            errors.push(
                &entry.cidr,
                field,
                format!("duplicate CIDR {net}: already regions[{first}] on line {first_line}"),
            );
            continue;
        }
        seen_nets.insert(net, (i, entry.cidr.referenced.line()));
        if !name_ok {
            continue;
        }
        defined.insert(entry.region.value.clone());
        match net {
            IpNet::V4(v4) => regions_v4.push((v4, entry.region.value.clone())),
            IpNet::V6(v6) => regions_v6.push((v6, entry.region.value.clone())),
        }
    }
    regions_v4.sort();
    regions_v6.sort();

    if check_name(
        &mut errors,
        &raw.unknown_region,
        "unknown_region",
        "region name",
        REGION_NAME_LEN_BYTES_MAX,
    ) {
        defined.insert(raw.unknown_region.value.clone());
    }
    if defined.len() > REGION_NAMES_COUNT_MAX {
        errors.push(
            &raw.unknown_region,
            "regions",
            format!(
                "{} distinct region names, more than {REGION_NAMES_COUNT_MAX}",
                defined.len()
            ),
        );
    }

    // Names in allowed/blocked/consent must be defined: a typo there would
    // otherwise silently never match any address.
    let undefined = |name: &str| {
        format!("region {name:?} is not named by any regions[].region or unknown_region (typo?)")
    };
    let region_list = |list: &[Spanned<String>], key: &str, errors: &mut Errors| {
        let mut set = BTreeSet::new();
        for (i, name) in list.iter().enumerate() {
            let field = format!("{key}[{i}]");
            if !check_name(
                errors,
                name,
                &field,
                "region name",
                REGION_NAME_LEN_BYTES_MAX,
            ) {
                continue;
            }
            if !defined.contains(&name.value) {
                errors.push(name, field, undefined(&name.value));
            } else if !set.insert(name.value.clone()) {
                errors.push(
                    name,
                    field,
                    format!("region {:?} is listed twice", name.value),
                );
            }
        }
        set
    };
    let allowed_regions = region_list(&raw.allowed_regions, "allowed_regions", &mut errors);
    let blocked_regions = region_list(&raw.blocked_regions, "blocked_regions", &mut errors);
    for (i, name) in raw.blocked_regions.iter().enumerate() {
        if allowed_regions.contains(&name.value) {
            errors.push(
                name,
                format!("blocked_regions[{i}]"),
                format!(
                    "region {:?} is in both allowed_regions and blocked_regions",
                    name.value
                ),
            );
        }
    }

    let mut consent = BTreeMap::new();
    for (region, state) in &raw.consent {
        let field = format!("consent.{region}");
        if !defined.contains(region) {
            errors.push(state, field, undefined(region));
            continue;
        }
        consent.insert(region.clone(), state.value);
    }

    // yellow
    let y = &raw.yellow;
    for (value, field, max) in [
        (&y.rate_per_s, "yellow.rate_per_s", YELLOW_RATE_PER_S_MAX),
        (&y.burst, "yellow.burst", YELLOW_BURST_MAX),
    ] {
        if value.value == 0 {
            errors.push(
                value,
                field,
                "must be at least 1: a zero bucket drops all yellow traffic; use blocked_regions for that",
            );
        } else if value.value > max {
            errors.push(
                value,
                field,
                format!("{} is more than the limit {max}", value.value),
            );
        }
    }
    if y.sample_one_in.value > YELLOW_SAMPLE_ONE_IN_MAX {
        errors.push(
            &y.sample_one_in,
            "yellow.sample_one_in",
            format!(
                "{} is more than the limit {YELLOW_SAMPLE_ONE_IN_MAX} (0 turns sampling off)",
                y.sample_one_in.value
            ),
        );
    }

    if !errors.0.is_empty() {
        let mut list = errors.0;
        list.sort_by_key(|e| (e.line, e.column));
        return Err(PolicyError::Invalid(list));
    }
    Ok(Policy {
        mode: raw.mode,
        data: DataPolicy {
            class: raw.data.class,
            purposes,
            encryption: raw.data.encryption,
            retention_days_max: raw.data.retention_days_max.value,
        },
        regions_v4,
        regions_v6,
        unknown_region: raw.unknown_region.value,
        allowed_regions,
        blocked_regions,
        consent,
        yellow: YellowLimits {
            rate_per_s: y.rate_per_s.value,
            burst: y.burst.value,
            sample_one_in: y.sample_one_in.value,
        },
    })
}

/// The region of `addr` by longest-prefix match over the policy's table
/// (IPv4-mapped IPv6 as IPv4, like [`crate::CompiledPolicy::lookup`]), and
/// whether the table covered it at all.
pub fn region_of(policy: &Policy, addr: IpAddr) -> (&str, bool) {
    let found = match addr {
        IpAddr::V4(v4) => longest(&policy.regions_v4, |n| n.contains(&v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => longest(&policy.regions_v4, |n| n.contains(&v4)),
            None => longest(&policy.regions_v6, |n| n.contains(&v6)),
        },
    };
    match found {
        Some(region) => (region, true),
        None => (policy.unknown_region.as_str(), false),
    }
}

trait PrefixLen {
    fn prefix_len_bits(&self) -> u8;
}
impl PrefixLen for Ipv4Net {
    fn prefix_len_bits(&self) -> u8 {
        self.prefix_len()
    }
}
impl PrefixLen for Ipv6Net {
    fn prefix_len_bits(&self) -> u8 {
        self.prefix_len()
    }
}

fn longest<N: PrefixLen>(table: &[(N, String)], contains: impl Fn(&N) -> bool) -> Option<&str> {
    table
        .iter()
        .filter(|(net, _)| contains(net))
        .max_by_key(|(net, _)| net.prefix_len_bits())
        .map(|(_, region)| region.as_str())
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
