//! JSON Schema → CUE definitions.
//!
//! No CUE implementation runs on the appliance (CUE is Go), but teams that
//! vet configs with the `cue` tool should check against exactly the schema
//! the agent enforces. So the CUE text is generated from the JSON Schema
//! value, never written by hand. Only the subset of JSON Schema that schemars
//! emits is understood: `$ref`/`$defs`, `type` (incl. type lists), `enum`,
//! `const`, `oneOf`/`anyOf`, `properties`/`required`/`additionalProperties`,
//! `items`, `default`, `minimum`/`maximum` (and exclusive forms),
//! `minLength`/`maxLength`, `pattern`, integer `format`s and `description`.
//! Anything else becomes CUE's top (`_`), i.e. unconstrained, rather than a
//! guess.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::schema::{FieldOrder, definition_schema, enum_values, ref_name};

/// Nesting bound for inline object schemas; schemars puts named structs in
/// `$defs`, so real nesting here is 0 or 1.
const INLINE_DEPTH_MAX: usize = 8;

/// Render `schema` (a JSON Schema as produced by [`super::json_schema`]) as
/// CUE definitions: the root becomes `#<title>`, each `$defs` entry `#<name>`.
/// `order` gives the field order within each definition.
pub fn json_schema_to_cue(schema: &Value, order: &FieldOrder) -> String {
    let root_name = schema
        .get("title")
        .and_then(Value::as_str)
        .map_or_else(|| "Config".to_string(), cue_definition_name);

    let mut definitions = String::new();
    emit_definition(&mut definitions, schema, schema, &root_name, "", order);
    for name in definition_order(schema, order) {
        if let Some(definition) = definition_schema(schema, &name) {
            definitions.push('\n');
            emit_definition(
                &mut definitions,
                schema,
                definition,
                &cue_definition_name(&name),
                &name,
                order,
            );
        }
    }

    let mut out = String::new();
    out.push_str(&format!(
        "// CUE definitions of the Metanode node config.\n\
         //\n\
         // Generated from the config's JSON Schema by `metanode config schema --format cue`;\n\
         // do not edit. Vet a config with:\n\
         //   cue vet -d '#{root_name}' node.cue node.yaml\n\n\
         package metanode\n\n"
    ));
    if definitions.contains("strings.") {
        out.push_str("import \"strings\"\n\n");
    }
    out.push_str(&definitions);
    out
}

/// `$defs` names in the order they are first referenced from the root (so
/// the file reads top-down), then any unreferenced ones, sorted.
fn definition_order(schema: &Value, order: &FieldOrder) -> Vec<String> {
    let mut ordered: Vec<String> = Vec::new();
    visit_in_order(schema, schema, "", order, &mut ordered, 0);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for name in defs.keys() {
            if !ordered.contains(name) {
                ordered.push(name.clone());
            }
        }
    }
    ordered
}

fn visit_in_order(
    root: &Value,
    schema: &Value,
    key: &str,
    order: &FieldOrder,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > INLINE_DEPTH_MAX * 4 {
        return;
    }
    let mut refs = Vec::new();
    collect_refs(schema, key, order, &mut refs, 0);
    for name in refs {
        if out.contains(&name) {
            continue;
        }
        out.push(name.clone());
        if let Some(definition) = definition_schema(root, &name) {
            visit_in_order(root, definition, &name, order, out, depth + 1);
        }
    }
}

fn collect_refs(
    schema: &Value,
    key: &str,
    order: &FieldOrder,
    out: &mut Vec<String>,
    depth: usize,
) {
    if depth > INLINE_DEPTH_MAX {
        return;
    }
    if let Some(name) = ref_name(schema) {
        out.push(name.to_string());
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for field in order.ordered(key, properties) {
            if let Some(property) = properties.get(field) {
                collect_refs(property, "", order, out, depth + 1);
            }
        }
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        for branch in schema
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_refs(branch, "", order, out, depth + 1);
        }
    }
    if let Some(items) = schema.get("items") {
        collect_refs(items, "", order, out, depth + 1);
    }
}

fn emit_definition(
    out: &mut String,
    root: &Value,
    schema: &Value,
    cue_name: &str,
    order_key: &str,
    order: &FieldOrder,
) {
    emit_doc(out, schema, "");
    if let Some(values) = enum_values(schema) {
        // Per-variant docs go in the definition's comment: CUE has no place
        // for a comment on one disjunct that survives `cue fmt`.
        if values.iter().any(|(_, doc)| doc.is_some()) && schema.get("oneOf").is_some() {
            for (value, doc) in &values {
                if let Some(doc) = doc {
                    let _ = writeln!(out, "//   {}: {}", quote(value), first_line(doc));
                }
            }
        }
        let _ = writeln!(out, "#{cue_name}: {}", expr(root, schema, 0));
        return;
    }
    if schema.get("properties").is_some() {
        let _ = writeln!(
            out,
            "#{cue_name}: {}",
            struct_body(root, schema, order_key, order, 0)
        );
    } else {
        let _ = writeln!(out, "#{cue_name}: {}", expr(root, schema, 0));
    }
}

fn struct_body(
    root: &Value,
    schema: &Value,
    order_key: &str,
    order: &FieldOrder,
    depth: usize,
) -> String {
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let indent = "\t".repeat(depth + 1);
    let mut body = String::from("{\n");
    for name in order.ordered(order_key, properties) {
        let Some(property) = properties.get(name) else {
            continue;
        };
        emit_doc(&mut body, property, &indent);
        let mut value = expr(root, property, depth + 1);
        let default = property
            .get("default")
            .filter(|d| !d.is_null() && !d.is_object() && !d.is_array());
        if let Some(default) = default {
            value = format!("*{} | {value}", literal(default));
        }
        let optional =
            !required.contains(&name) && property.get("default").is_none_or(Value::is_null);
        let marker = if optional { "?" } else { "" };
        let _ = writeln!(body, "{indent}{}{marker}: {value}", cue_label(name));
    }
    if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
        // Definitions are closed in CUE; reopen when the schema is open.
        let _ = writeln!(body, "{indent}...");
    }
    body.push_str(&"\t".repeat(depth));
    body.push('}');
    body
}

fn expr(root: &Value, schema: &Value, depth: usize) -> String {
    if depth > INLINE_DEPTH_MAX {
        return "_".to_string();
    }
    if let Some(name) = ref_name(schema) {
        return format!("#{}", cue_definition_name(name));
    }
    if let Some(values) = enum_values(schema) {
        return values
            .iter()
            .map(|(v, _)| quote(v))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(combinator).and_then(Value::as_array) {
            return branches
                .iter()
                .map(|b| expr(root, b, depth + 1))
                .collect::<Vec<_>>()
                .join(" | ");
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return "_".to_string();
    }
    types
        .iter()
        .map(|t| match *t {
            "string" => string_expr(schema),
            "integer" => number_expr(schema, integer_base(schema)),
            "number" => number_expr(schema, "number"),
            "boolean" => "bool".to_string(),
            "null" => "null".to_string(),
            "array" => match schema.get("items") {
                Some(items) => format!("[...{}]", expr(root, items, depth + 1)),
                None => "[...]".to_string(),
            },
            "object" if schema.get("properties").is_some() => {
                struct_body(root, schema, "", &FieldOrder::default(), depth)
            }
            "object" => "{...}".to_string(),
            _ => "_".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn string_expr(schema: &Value) -> String {
    let mut parts = vec!["string".to_string()];
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        parts.push(format!("=~{}", quote(pattern)));
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        parts.push(format!("strings.MinRunes({min})"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        parts.push(format!("strings.MaxRunes({max})"));
    }
    parts.join(" & ")
}

/// CUE predeclares the sized integer types, which carry their own bounds.
fn integer_base(schema: &Value) -> &'static str {
    match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => "uint8",
        Some("uint16") => "uint16",
        Some("uint32") => "uint32",
        Some("uint64") => "uint64",
        Some("int8") => "int8",
        Some("int16") => "int16",
        Some("int32") => "int32",
        Some("int64") => "int64",
        _ => "int",
    }
}

fn number_expr(schema: &Value, base: &str) -> String {
    let mut parts = vec![base.to_string()];
    let unsigned = base.starts_with("uint");
    // A sized unsigned type already implies >=0.
    if let Some(min) = schema
        .get("minimum")
        .filter(|m| m.is_number() && !(unsigned && m.as_u64() == Some(0)))
    {
        parts.push(format!(">={min}"));
    }
    if let Some(min) = schema.get("exclusiveMinimum").filter(|m| m.is_number()) {
        parts.push(format!(">{min}"));
    }
    if let Some(max) = schema.get("maximum").filter(|m| m.is_number()) {
        parts.push(format!("<={max}"));
    }
    if let Some(max) = schema.get("exclusiveMaximum").filter(|m| m.is_number()) {
        parts.push(format!("<{max}"));
    }
    parts.join(" & ")
}

fn emit_doc(out: &mut String, schema: &Value, indent: &str) {
    let Some(doc) = schema.get("description").and_then(Value::as_str) else {
        return;
    };
    for line in doc.lines() {
        if line.trim().is_empty() {
            let _ = writeln!(out, "{indent}//");
        } else {
            let _ = writeln!(out, "{indent}// {line}");
        }
    }
}

fn first_line(doc: &str) -> &str {
    doc.lines().next().unwrap_or("")
}

/// A JSON scalar as a CUE literal. JSON string syntax is valid CUE string
/// syntax, and escaping the backslash keeps `\(` from meaning interpolation.
fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// A field label: bare when it is a plain CUE identifier that is not hidden
/// (`_x`) or a definition (`#x`), quoted otherwise.
fn cue_label(name: &str) -> String {
    let mut chars = name.chars();
    let bare = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if bare { name.to_string() } else { quote(name) }
}

fn cue_definition_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.chars().next() {
        Some(c) if c.is_ascii_alphabetic() => cleaned,
        _ => format!("D{cleaned}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_render_with_types_ranges_defaults_and_optionality() {
        let schema = json!({
            "title": "Cfg",
            "type": "object",
            "properties": {
                "level": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 19, "default": 3,
                          "description": "Compression level."},
                "mode": {"type": "string", "enum": ["auto", "posix"], "default": "auto"},
                "key": {"type": ["string", "null"], "pattern": "^/"},
                "name": {"type": "string", "minLength": 1, "maxLength": 63}
            },
            "required": ["name"],
            "additionalProperties": false
        });
        let cue = json_schema_to_cue(&schema, &FieldOrder::default());
        assert!(
            cue.contains("\t// Compression level.\n\tlevel: *3 | int32 & >=1 & <=19\n"),
            "{cue}"
        );
        assert!(
            cue.contains("\tmode: *\"auto\" | \"auto\" | \"posix\"\n"),
            "{cue}"
        );
        assert!(cue.contains("\tkey?: string & =~\"^/\" | null\n"), "{cue}");
        assert!(
            cue.contains("\tname: string & strings.MinRunes(1) & strings.MaxRunes(63)\n"),
            "{cue}"
        );
        assert!(cue.contains("import \"strings\""), "{cue}");
        assert!(cue.contains("#Cfg: {"), "{cue}");
        assert!(!cue.contains("..."), "closed schema stays closed: {cue}");
    }

    #[test]
    fn labels_and_strings_are_escaped() {
        assert_eq!(cue_label("zstd_level"), "zstd_level");
        assert_eq!(cue_label("_hidden"), "\"_hidden\"");
        assert_eq!(cue_label("a-b"), "\"a-b\"");
        assert_eq!(quote("a\\(b)"), "\"a\\\\(b)\"");
    }
}
