//! The JSON Schema of [`NodeConfig`] and the order its fields are declared in.

use std::collections::BTreeMap;

use serde_json::Value;

use super::yaml_tree::{self, Kind, Node};
use super::{
    CHAIN_PUBLIC_KEY_EXAMPLE, ChainConfig, ChainPeer, DEFAULT_DATA_DIR, DEFAULT_KEY_FILE_NAME,
    DocklockConfig, NetworkConfig, NetworkMode, NodeConfig, NodeSection, TrafficConfig, XdpMode,
};

/// The JSON Schema (draft 2020-12) of the node config, derived from the serde
/// structs. `config check`, the CUE export and the example all read this one
/// value.
pub fn json_schema() -> Value {
    schema_ref().clone()
}

/// The schema, generated once: `config check` consults it for every file.
pub(super) fn schema_ref() -> &'static Value {
    static SCHEMA: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| schemars::schema_for!(NodeConfig).to_value());
    &SCHEMA
}

/// Declaration order of the properties of each object in the schema.
///
/// JSON objects are unordered (and serde_json sorts them), but a generated
/// example or CUE file reads best in the order the structs declare their
/// fields: `node` before `log`, `name` before `key_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldOrder {
    /// Keyed by `$defs` name; the root object is keyed by `""`.
    by_definition: BTreeMap<String, Vec<String>>,
}

impl FieldOrder {
    /// The property names of `properties` (the `properties` object of the
    /// definition `definition`), in declaration order. Names the order does
    /// not know come last, sorted, so nothing in the schema is ever dropped.
    pub fn ordered<'a>(
        &self,
        definition: &str,
        properties: &'a serde_json::Map<String, Value>,
    ) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::with_capacity(properties.len());
        if let Some(declared) = self.by_definition.get(definition) {
            for name in declared {
                if let Some((key, _)) = properties.get_key_value(name.as_str()) {
                    out.push(key.as_str());
                }
            }
        }
        for key in properties.keys() {
            if !out.contains(&key.as_str()) {
                out.push(key.as_str());
            }
        }
        out
    }
}

/// A config with every field present, used only for its serialized key order
/// (serde serializes struct fields in declaration order).
pub(super) fn sample_config() -> NodeConfig {
    NodeConfig {
        node: NodeSection {
            name: "node-1".to_string(),
            data_dir: DEFAULT_DATA_DIR.into(),
            key_file: Some(std::path::Path::new(DEFAULT_DATA_DIR).join(DEFAULT_KEY_FILE_NAME)),
        },
        api: Default::default(),
        store: Default::default(),
        log: Default::default(),
        network: NetworkConfig {
            mode: NetworkMode::Static,
            interface: Some("eth0".to_string()),
            address: Some("10.0.2.15/24".to_string()),
            gateway: Some(std::net::Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![std::net::Ipv4Addr::new(10, 0, 2, 3)],
        },
        chain: Some(ChainConfig {
            key: Some(std::path::Path::new(DEFAULT_DATA_DIR).join("chain.key")),
            peers: vec![ChainPeer {
                public_key: CHAIN_PUBLIC_KEY_EXAMPLE.to_string(),
                address: Some("10.0.0.2:7900".to_string()),
            }],
            ..ChainConfig::new(
                std::path::Path::new(DEFAULT_DATA_DIR).join("genesis.yaml"),
                None,
            )
        }),
        traffic: Some(TrafficConfig {
            policy: std::path::Path::new(DEFAULT_DATA_DIR).join("biso.yaml"),
            xdp_interfaces: vec!["eth0".to_string()],
            xdp_mode: XdpMode::Native,
            xdp_pin_dir: "/sys/fs/bpf/metanode".into(),
            cage: Some(std::path::Path::new(DEFAULT_DATA_DIR).join("cage.yaml")),
        }),
        docklock: Some(DocklockConfig::new(
            std::path::Path::new(DEFAULT_DATA_DIR).join("workloads"),
        )),
    }
}

/// The declaration order of every object in [`json_schema`].
pub fn field_order() -> FieldOrder {
    let mut order = FieldOrder::default();
    let schema = json_schema();
    let Ok(yaml) = serde_saphyr::to_string(&sample_config()) else {
        return order;
    };
    let Ok(yaml_tree::Document { root: Some(root) }) = yaml_tree::parse(&yaml) else {
        return order;
    };
    record_order(&schema, &schema, "", &root, &mut order, 0);
    order
}

fn record_order(
    root_schema: &Value,
    schema: &Value,
    definition: &str,
    node: &Node,
    order: &mut FieldOrder,
    depth: usize,
) {
    // The config is a few levels deep; the bound only guards a recursive $ref.
    const DEPTH_MAX: usize = 16;
    let Kind::Mapping(entries) = &node.kind else {
        return;
    };
    if depth > DEPTH_MAX || order.by_definition.contains_key(definition) {
        return;
    }
    let keys: Vec<String> = entries
        .iter()
        .filter_map(|(k, _)| match &k.kind {
            Kind::Scalar { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect();
    order.by_definition.insert(definition.to_string(), keys);
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (key, value) in entries {
        let Kind::Scalar { value: name, .. } = &key.kind else {
            continue;
        };
        let Some(property) = properties.get(name) else {
            continue;
        };
        // A list of objects: the first item shows the item type's order.
        let (property, value) = match (property.get("items"), &value.kind) {
            (Some(items), Kind::Sequence(values)) => match values.first() {
                Some(first) => (items, first),
                None => continue,
            },
            _ => (property, value),
        };
        if let Some(def_name) = section_ref_name(property)
            && let Some(target) = definition_schema(root_schema, def_name)
        {
            record_order(root_schema, target, def_name, value, order, depth + 1);
        }
    }
}

/// The definition an object-valued property refers to: `{"$ref": …}`, or
/// an optional section `{"anyOf": [{"$ref": …}, {"type": "null"}]}`.
pub(super) fn section_ref_name(schema: &Value) -> Option<&str> {
    ref_name(schema).or_else(|| schema.get("anyOf")?.as_array()?.iter().find_map(ref_name))
}

/// `Foo` for a schema `{"$ref": "#/$defs/Foo"}`.
pub(super) fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix("#/$defs/")
}

pub(super) fn definition_schema<'a>(root_schema: &'a Value, name: &str) -> Option<&'a Value> {
    root_schema.get("$defs")?.get(name)
}

/// Follow `$ref`s (a bounded number of hops) to the schema that describes
/// the value.
pub(super) fn resolve<'a>(root_schema: &'a Value, mut schema: &'a Value) -> &'a Value {
    const HOPS_MAX: usize = 8;
    for _ in 0..HOPS_MAX {
        match ref_name(schema).and_then(|name| definition_schema(root_schema, name)) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

/// The string values an enum schema allows, whichever way schemars wrote it
/// (`enum`, `const`, or a `oneOf` of those when variants carry docs).
pub(super) fn enum_values(schema: &Value) -> Option<Vec<(String, Option<String>)>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let doc = schema
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        return values
            .iter()
            .map(|v| v.as_str().map(|s| (s.to_string(), doc.clone())))
            .collect();
    }
    if let Some(value) = schema.get("const").and_then(Value::as_str) {
        let doc = schema
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        return Some(vec![(value.to_string(), doc)]);
    }
    let branches = schema.get("oneOf").and_then(Value::as_array)?;
    let mut out = Vec::new();
    for branch in branches {
        out.extend(enum_values(branch)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_follows_the_struct_declarations() {
        let order = field_order();
        let schema = json_schema();
        let root_props = schema["properties"].as_object().expect("root properties");
        assert_eq!(
            order.ordered("", root_props),
            [
                "node", "api", "store", "log", "network", "chain", "traffic", "docklock"
            ]
        );
        let chain_props = schema["$defs"]["Chain"]["properties"]
            .as_object()
            .expect("Chain");
        assert_eq!(
            order.ordered("Chain", chain_props),
            [
                "genesis",
                "key",
                "listen",
                "peers",
                "block_interval_min_ms",
                "empty_block_interval_ms",
                "round_timeout_base_ms"
            ]
        );
        let peer_props = schema["$defs"]["ChainPeer"]["properties"]
            .as_object()
            .expect("ChainPeer");
        assert_eq!(
            order.ordered("ChainPeer", peer_props),
            ["public_key", "address"]
        );
        let network_props = schema["$defs"]["Network"]["properties"]
            .as_object()
            .expect("Network");
        assert_eq!(
            order.ordered("Network", network_props),
            ["mode", "interface", "address", "gateway", "dns"]
        );
        let node_props = schema["$defs"]["Node"]["properties"]
            .as_object()
            .expect("Node");
        assert_eq!(
            order.ordered("Node", node_props),
            ["name", "data_dir", "key_file"]
        );
    }

    #[test]
    fn enums_are_recognised_in_every_schemars_shape() {
        let schema = json_schema();
        let io = enum_values(&schema["$defs"]["IoMode"]).expect("IoMode is an enum");
        let names: Vec<&str> = io.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["auto", "io_uring", "posix"]);
        let level = enum_values(&schema["$defs"]["LogLevel"]).expect("LogLevel is an enum");
        assert_eq!(level.len(), 5);
    }
}
