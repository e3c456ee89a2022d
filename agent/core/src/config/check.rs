//! `config check`: find every error in a config file, each with its line.
//!
//! serde stops at the first error, so checking runs in three passes over one
//! span-aware parse of the text ([`yaml_tree`]):
//!
//! 1. Structure: walk the tree against the JSON Schema and report every
//!    unknown or duplicate key, wrong type, bad enum value, missing required
//!    field, and YAML feature the config does not allow (tags, anchors,
//!    aliases). Each leaf is typed by serde-saphyr itself (the scalar is
//!    deserialized into the field's Rust primitive), so "is `0x10` an
//!    integer?" has the same answer here as when the agent loads the file.
//! 2. Types: if the structure is clean, serde-saphyr deserializes the text
//!    into [`NodeConfig`]; that is the value the agent runs with. If it is
//!    not, the walk's cleaned values (bad fields dropped so defaults apply,
//!    missing required fields stood in for) are deserialized instead, so the
//!    semantic pass still runs and the operator sees every error at once.
//! 3. Semantics: [`NodeConfig::validate`] (ranges, paths, cross-field rules),
//!    each error placed on the line of its field via the tree. An error that
//!    touches a field already reported in pass 1 is dropped: it would be
//!    judging a stand-in value, not what the file says.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::schema::{enum_values, resolve, schema_ref};
use super::yaml_tree::{self, Kind, Node, Pos};
use super::{Diagnostic, NodeConfig};
use crate::limits;

/// Parse, structurally check, deserialize and validate `text`.
pub(super) fn check(text: &str) -> Result<NodeConfig, Vec<Diagnostic>> {
    let document = match yaml_tree::parse(text) {
        Ok(document) => document,
        Err(err) => {
            return Err(vec![diagnostic(
                err.pos,
                "",
                format!("invalid yaml: {}", err.message),
            )]);
        }
    };
    let Some(root) = document.root else {
        return Err(vec![diagnostic(
            Pos::START,
            "",
            "the config is empty; it needs at least `node:` with a `name:`".to_string(),
        )]);
    };

    let schema = schema_ref();
    let mut walker = Walker {
        root_schema: schema,
        diagnostics: Vec::new(),
        bad_paths: Vec::new(),
    };
    let cleaned = walker.walk(&root, schema, "", root.pos);
    let Walker {
        mut diagnostics,
        bad_paths,
        ..
    } = walker;

    let config = if diagnostics.is_empty() {
        match serde_saphyr::from_str::<NodeConfig>(text) {
            Ok(config) => Some(config),
            Err(err) => {
                // The walk accepted what serde-saphyr refused: report serde's
                // own words rather than nothing.
                let pos = err.location().map_or(Pos::START, |loc| Pos {
                    line: usize::try_from(loc.line()).unwrap_or(usize::MAX).max(1),
                    column: usize::try_from(loc.column()).unwrap_or(usize::MAX).max(1),
                });
                diagnostics.push(diagnostic(pos, "", err.without_snippet().to_string()));
                None
            }
        }
    } else {
        cleaned.and_then(|value| serde_json::from_value::<NodeConfig>(value).ok())
    };

    if let Some(config) = &config
        && let Err(err) = config.validate()
    {
        for error in err.errors {
            let touches_bad_field = std::iter::once(&error.path)
                .chain(&error.related_paths)
                .any(|path| {
                    let path = without_indices(path);
                    bad_paths.iter().any(|bad| paths_overlap(bad, &path))
                });
            if !touches_bad_field {
                diagnostics.push(diagnostic(
                    root.locate(&error.path),
                    &error.path,
                    error.message,
                ));
            }
        }
    }

    match config {
        Some(config) if diagnostics.is_empty() => Ok(config),
        _ => Err(finish(diagnostics)),
    }
}

/// Sort by position and cap the count.
fn finish(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by(|a, b| {
        (a.line, a.column, &a.path, &a.message).cmp(&(b.line, b.column, &b.path, &b.message))
    });
    diagnostics.dedup();
    if diagnostics.len() > limits::CONFIG_DIAGNOSTICS_COUNT_MAX {
        let hidden = diagnostics.len() - limits::CONFIG_DIAGNOSTICS_COUNT_MAX + 1;
        diagnostics.truncate(limits::CONFIG_DIAGNOSTICS_COUNT_MAX - 1);
        let last = diagnostics.last().map_or(Pos::START, |d| Pos {
            line: d.line,
            column: d.column,
        });
        diagnostics.push(diagnostic(
            last,
            "",
            format!("{hidden} more errors not shown"),
        ));
    }
    if diagnostics.is_empty() {
        // Unreachable by construction (a config that failed to build always
        // produced a diagnostic), but an empty error list must never reach
        // an operator as "invalid config (0 errors)".
        diagnostics.push(diagnostic(
            Pos::START,
            "",
            "the config could not be loaded".to_string(),
        ));
    }
    diagnostics
}

fn diagnostic(pos: Pos, path: &str, message: String) -> Diagnostic {
    Diagnostic {
        line: pos.line,
        column: pos.column,
        path: path.to_string(),
        message,
    }
}

/// `a` and `b` name the same field or one contains the other.
fn paths_overlap(a: &str, b: &str) -> bool {
    let contains = |outer: &str, inner: &str| {
        outer.is_empty()
            || inner == outer
            || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'.'))
    };
    contains(a, b) || contains(b, a)
}

/// `path` without its list indices: the structural pass reports a list
/// item's fields under the list's path (`chain.peers.address`), validation
/// under the item's (`chain.peers.1.address`). Comparing without indices
/// drops every item's semantic error once any item had a structural one,
/// which errs on the side of not judging stand-in values.
fn without_indices(path: &str) -> String {
    path.split('.')
        .filter(|segment| segment.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(".")
}

/// The dotted path of `key` under `parent`. An unknown key is user text, so
/// it is shortened and stripped of control characters to keep every
/// diagnostic on one line; known field names pass through unchanged.
fn child_path(parent: &str, key: &str) -> String {
    let key = yaml_tree::abbreviate(key);
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

struct Walker<'s> {
    root_schema: &'s Value,
    diagnostics: Vec<Diagnostic>,
    /// Fields reported in the structural pass.
    bad_paths: Vec<String>,
}

impl Walker<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: String) {
        self.bad_paths.push(path.to_string());
        self.diagnostics.push(diagnostic(pos, path, message));
    }

    /// Check `node` against `schema`. Returns the value as JSON if it is
    /// well-formed (objects keep their well-formed fields), `None` if not.
    /// `at` is where the field's key was written; errors point there.
    fn walk(&mut self, node: &Node, schema: &Value, path: &str, at: Pos) -> Option<Value> {
        if !self.yaml_features_allowed(node, path, at) {
            return None;
        }
        let schema = resolve(self.root_schema, schema);
        if is_object(schema) {
            return self.walk_object(node, schema, path, at);
        }
        if let Some(allowed) = enum_values(schema) {
            return self.walk_enum(node, &allowed, path, at);
        }
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
            // schemars writes `Option<Struct>` as anyOf [$ref, null].
            if node.is_null() && branches.iter().any(|b| type_names(b).contains(&"null")) {
                return Some(Value::Null);
            }
            let non_null = branches.iter().find(|b| !type_names(b).contains(&"null"))?;
            return self.walk(node, non_null, path, at);
        }
        if type_names(schema).contains(&"array") {
            return self.walk_array(node, schema, path, at);
        }
        self.walk_leaf(node, schema, path, at)
    }

    /// A list: every item is checked against `items` and reported at its
    /// own position under the list's path, so `config check` names the
    /// field and the line of the bad entry.
    fn walk_array(&mut self, node: &Node, schema: &Value, path: &str, at: Pos) -> Option<Value> {
        if node.is_null() && type_names(schema).contains(&"null") {
            return Some(Value::Null);
        }
        let Kind::Sequence(items) = &node.kind else {
            self.error(
                at,
                path,
                format!("expected a list, found {}", node.describe()),
            );
            return None;
        };
        let item_schema = schema.get("items").unwrap_or(&Value::Bool(true));
        let mut out = Vec::with_capacity(items.len());
        let mut all_good = true;
        for item in items {
            match self.walk(item, item_schema, path, item.pos) {
                Some(value) => out.push(value),
                None => all_good = false,
            }
        }
        all_good.then_some(Value::Array(out))
    }

    fn yaml_features_allowed(&mut self, node: &Node, path: &str, at: Pos) -> bool {
        if let Some(tag) = &node.tag {
            self.error(
                at,
                path,
                format!("yaml tags (`{tag}`) are not supported in a node config; remove the tag"),
            );
            return false;
        }
        if node.anchored {
            self.error(
                at,
                path,
                "yaml anchors (`&name`) are not supported in a node config; write the value out"
                    .to_string(),
            );
            return false;
        }
        if node.kind == Kind::Alias {
            self.error(
                at,
                path,
                "yaml aliases (`*name`) are not supported in a node config; write the value out"
                    .to_string(),
            );
            return false;
        }
        true
    }

    fn walk_object(&mut self, node: &Node, schema: &Value, path: &str, at: Pos) -> Option<Value> {
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let Kind::Mapping(entries) = &node.kind else {
            let hint = if node.is_null() && !path.is_empty() {
                "; remove the key to use the defaults"
            } else {
                ""
            };
            self.error(
                at,
                path,
                format!("expected a mapping, found {}{hint}", node.describe()),
            );
            return None;
        };
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        let mut out = Map::new();
        // A hash map: a hostile file may hold one mapping with 100k keys.
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        let mut invalid: Vec<&str> = Vec::new();

        for (key, value) in entries {
            let name = match &key.kind {
                Kind::Scalar { value, .. }
                    if !key.is_null() && key.tag.is_none() && !key.anchored =>
                {
                    value.as_str()
                }
                _ => {
                    // Not added to `bad_paths`: a stray key spoils no value,
                    // and `path` is the whole enclosing section.
                    self.diagnostics.push(diagnostic(
                        key.pos,
                        path,
                        format!("expected a field name as key, found {}", key.describe()),
                    ));
                    continue;
                }
            };
            let field_path = child_path(path, name);
            if let Some(first) = seen.get(name) {
                let first_line = first.line;
                self.error(
                    key.pos,
                    &field_path,
                    format!("duplicate field `{name}` (first set on line {first_line})"),
                );
                continue;
            }
            seen.insert(name, key.pos);
            let Some(property) = properties.get(name) else {
                if closed {
                    let message = if name == "<<" {
                        "yaml merge keys (`<<`) are not supported in a node config; write the fields out"
                            .to_string()
                    } else {
                        unknown_field_message(name, properties.keys().map(String::as_str))
                    };
                    self.error(key.pos, &field_path, message);
                } else {
                    out.insert(name.to_string(), scalar_or_null(value));
                }
                continue;
            };
            match self.walk(value, property, &field_path, key.pos) {
                Some(parsed) => {
                    out.insert(name.to_string(), parsed);
                }
                None => invalid.push(name),
            }
        }

        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in required {
            if out.contains_key(name) {
                continue;
            }
            if !invalid.contains(&name) && !seen.contains_key(name) {
                self.error(
                    at,
                    &child_path(path, name),
                    format!("missing required field `{name}`"),
                );
            }
            // Stand in for the missing or malformed value so the rest of the
            // config can still be deserialized and validated.
            if let Some(property) = properties.get(name) {
                out.insert(name.to_string(), placeholder(self.root_schema, property, 0));
            }
        }
        Some(Value::Object(out))
    }

    fn walk_enum(
        &mut self,
        node: &Node,
        allowed: &[(String, Option<String>)],
        path: &str,
        at: Pos,
    ) -> Option<Value> {
        let names: Vec<&str> = allowed.iter().map(|(v, _)| v.as_str()).collect();
        let text = match &node.kind {
            Kind::Scalar { value, plain } if !node.is_null() => {
                typed_scalar::<String>(value, *plain).and_then(|v| v.as_str().map(str::to_string))
            }
            _ => None,
        };
        match text {
            Some(text) if names.contains(&text.as_str()) => Some(Value::String(text)),
            Some(text) => {
                let mut message = format!(
                    "`{}` is not one of: {}",
                    yaml_tree::abbreviate(&text),
                    names.join(", ")
                );
                if let Some(suggestion) = closest(&text, names.iter().copied()) {
                    message.push_str(&format!(" (did you mean `{suggestion}`?)"));
                }
                self.error(at, path, message);
                None
            }
            None => {
                self.error(
                    at,
                    path,
                    format!(
                        "expected one of: {}; found {}",
                        names.join(", "),
                        node.describe()
                    ),
                );
                None
            }
        }
    }

    fn walk_leaf(&mut self, node: &Node, schema: &Value, path: &str, at: Pos) -> Option<Value> {
        let types = type_names(schema);
        let nullable = types.contains(&"null");
        let Some(main_type) = types.iter().copied().find(|t| *t != "null") else {
            // An unconstrained schema (`{}`): any scalar will do.
            return Some(scalar_or_null(node));
        };
        let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
        let leaf = LeafType::of(main_type, format);

        if nullable && node.is_null() {
            return Some(Value::Null);
        }
        let parsed = match &node.kind {
            Kind::Scalar { value, plain } => leaf.parse(value, *plain),
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                at,
                path,
                format!("expected {}, found {}", leaf.expected(), node.describe()),
            );
        }
        parsed
    }
}

fn is_object(schema: &Value) -> bool {
    schema.get("properties").is_some() || type_names(schema) == ["object"]
}

fn type_names(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A value of the right shape for `schema`, used in place of a missing or
/// malformed required field. Its own validation errors are suppressed.
fn placeholder(root_schema: &Value, schema: &Value, depth: usize) -> Value {
    const DEPTH_MAX: usize = 16;
    let schema = resolve(root_schema, schema);
    if depth > DEPTH_MAX {
        return Value::Null;
    }
    if let Some(first) = enum_values(schema).and_then(|v| v.into_iter().next()) {
        return Value::String(first.0);
    }
    if is_object(schema) {
        let mut out = Map::new();
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Some(property) = properties.and_then(|p| p.get(name)) {
                out.insert(
                    name.to_string(),
                    placeholder(root_schema, property, depth + 1),
                );
            }
        }
        return Value::Object(out);
    }
    let types = type_names(schema);
    if types.contains(&"null") {
        return Value::Null;
    }
    match types.first().copied() {
        Some("integer" | "number") => schema.get("minimum").cloned().unwrap_or(Value::from(0)),
        Some("boolean") => Value::Bool(false),
        Some("array") => Value::Array(Vec::new()),
        Some("string")
            if schema.get("format").and_then(Value::as_str) == Some("socket-address") =>
        {
            Value::String("127.0.0.1:1".to_string())
        }
        Some("string") => Value::String(String::new()),
        _ => Value::Null,
    }
}

fn scalar_or_null(node: &Node) -> Value {
    match &node.kind {
        Kind::Scalar { value, .. } if !node.is_null() => Value::String(value.clone()),
        _ => Value::Null,
    }
}

/// The Rust type a leaf of the schema deserializes into.
#[derive(Debug, Clone, Copy)]
enum LeafType {
    U8,
    U16,
    U32,
    U64,
    I32,
    I64,
    F64,
    Bool,
    SocketAddr,
    Ipv4,
    String,
}

impl LeafType {
    fn of(json_type: &str, format: &str) -> LeafType {
        match (json_type, format) {
            ("integer", "uint8") => LeafType::U8,
            ("integer", "uint16") => LeafType::U16,
            ("integer", "uint32") => LeafType::U32,
            ("integer", "uint64" | "uint") => LeafType::U64,
            ("integer", "int32") => LeafType::I32,
            ("integer", _) => LeafType::I64,
            ("number", _) => LeafType::F64,
            ("boolean", _) => LeafType::Bool,
            ("string", "socket-address") => LeafType::SocketAddr,
            ("string", "ipv4") => LeafType::Ipv4,
            _ => LeafType::String,
        }
    }

    fn parse(self, value: &str, plain: bool) -> Option<Value> {
        match self {
            LeafType::U8 => typed_scalar::<u8>(value, plain),
            LeafType::U16 => typed_scalar::<u16>(value, plain),
            LeafType::U32 => typed_scalar::<u32>(value, plain),
            LeafType::U64 => typed_scalar::<u64>(value, plain),
            LeafType::I32 => typed_scalar::<i32>(value, plain),
            LeafType::I64 => typed_scalar::<i64>(value, plain),
            LeafType::F64 => typed_scalar::<f64>(value, plain),
            LeafType::Bool => typed_scalar::<bool>(value, plain),
            LeafType::SocketAddr => typed_scalar::<SocketAddr>(value, plain),
            LeafType::Ipv4 => typed_scalar::<Ipv4Addr>(value, plain),
            LeafType::String => typed_scalar::<String>(value, plain),
        }
    }

    fn expected(self) -> String {
        match self {
            LeafType::U8 => format!("an integer in 0..={}", u8::MAX),
            LeafType::U16 => format!("an integer in 0..={}", u16::MAX),
            LeafType::U32 => format!("an integer in 0..={}", u32::MAX),
            LeafType::U64 => "a non-negative integer".to_string(),
            LeafType::I32 => format!("an integer in {}..={}", i32::MIN, i32::MAX),
            LeafType::I64 => "an integer".to_string(),
            LeafType::F64 => "a number".to_string(),
            LeafType::Bool => "true or false".to_string(),
            LeafType::SocketAddr => "an ip:port socket address such as 127.0.0.1:7878".to_string(),
            LeafType::Ipv4 => "an IPv4 address such as 10.0.2.2".to_string(),
            LeafType::String => "a string".to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneField<T> {
    v: T,
}

/// Deserialize one scalar as `T` exactly as serde-saphyr would in place:
/// the scalar is re-emitted in a one-field document, plain if it was plain
/// (so YAML's type resolution applies) and double-quoted otherwise (JSON
/// string syntax is valid YAML double-quoted syntax).
fn typed_scalar<T: DeserializeOwned + Serialize>(value: &str, plain: bool) -> Option<Value> {
    let document = if plain {
        format!("v: {value}\n")
    } else {
        format!("v: {}\n", serde_json::to_string(value).ok()?)
    };
    let parsed: OneField<T> = serde_saphyr::from_str(&document).ok()?;
    serde_json::to_value(parsed.v).ok()
}

fn unknown_field_message<'a>(name: &str, known: impl Iterator<Item = &'a str> + Clone) -> String {
    match closest(name, known.clone()) {
        Some(suggestion) => format!(
            "unknown field `{}`; did you mean `{suggestion}`?",
            yaml_tree::abbreviate(name)
        ),
        None => format!(
            "unknown field `{}`; expected one of: {}",
            yaml_tree::abbreviate(name),
            known.collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The candidate closest to `input` by edit distance (case-insensitive), if
/// it is close enough to be a likely typo.
fn closest<'a>(input: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    // Typos are short; comparing a pasted paragraph against field names
    // would cost O(n*m) for nothing.
    const INPUT_CHARS_MAX: usize = 64;
    if input.chars().count() > INPUT_CHARS_MAX {
        return None;
    }
    let input = input.to_lowercase();
    let threshold = (input.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(&input, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= threshold)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_typed_like_serde_saphyr_does() {
        assert_eq!(typed_scalar::<u32>("0x10", true), Some(Value::from(16)));
        assert_eq!(typed_scalar::<u32>("10", false), Some(Value::from(10)));
        assert_eq!(typed_scalar::<u32>("99999999999", true), None);
        assert_eq!(typed_scalar::<u32>("ten", true), None);
        assert_eq!(typed_scalar::<i32>("-3", true), Some(Value::from(-3)));
        assert_eq!(typed_scalar::<String>("12", true), Some(Value::from("12")));
        assert_eq!(
            typed_scalar::<String>("a \"b\" \\ c", false),
            Some(Value::from("a \"b\" \\ c"))
        );
        assert_eq!(typed_scalar::<String>("~", false), Some(Value::from("~")));
        assert_eq!(typed_scalar::<String>("~", true), None);
        assert_eq!(
            typed_scalar::<SocketAddr>("[::1]:80", false),
            Some(Value::from("[::1]:80"))
        );
        assert_eq!(typed_scalar::<SocketAddr>("80", true), None);
    }

    #[test]
    fn typos_get_suggestions() {
        let fields = ["zstd_level", "compression", "io"];
        assert_eq!(closest("zstd_levl", fields.into_iter()), Some("zstd_level"));
        assert_eq!(
            closest("Compression", fields.into_iter()),
            Some("compression")
        );
        assert_eq!(closest("banana", fields.into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn list_indices_are_ignored_when_matching_bad_fields() {
        assert_eq!(
            without_indices("chain.peers.12.public_key"),
            "chain.peers.public_key"
        );
        assert_eq!(without_indices("store.io"), "store.io");
    }

    #[test]
    fn paths_overlap_on_whole_segments_only() {
        assert!(paths_overlap("store", "store.io"));
        assert!(paths_overlap("store.io", "store.io"));
        assert!(paths_overlap("store.io", "store"));
        assert!(!paths_overlap("store.io", "store.io_mode"));
        assert!(!paths_overlap("api.listen", "store.io"));
    }
}
