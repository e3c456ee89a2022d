//! Node config: loading, every error class with its line and path, schema
//! exports, and the committed example.

use std::net::SocketAddr;
use std::path::PathBuf;

use metanode_core::config::{
    ChainConfig, ChainPeer, Compression, DEFAULT_CHAIN_LISTEN, Diagnostic, IoMode, LoadConfigError,
    LogLevel, NodeConfig, example_yaml, field_order, json_schema, json_schema_to_cue,
    parse_host_port,
};
use metanode_core::limits;
use serde_json::Value;

/// The diagnostics of a config that must fail, as (line, column, path, message).
fn errors(yaml: &str) -> Vec<Diagnostic> {
    match NodeConfig::from_yaml_str(yaml, "node.yaml") {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(LoadConfigError::Invalid { diagnostics }) => {
            assert_eq!(diagnostics.source_name, "node.yaml");
            assert!(!diagnostics.errors.is_empty());
            diagnostics.errors
        }
        Err(other) => panic!("expected diagnostics, got {other}"),
    }
}

/// The only error of a config, which must have exactly one.
fn only_error(yaml: &str) -> Diagnostic {
    let mut all = errors(yaml);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

fn at(d: &Diagnostic) -> (usize, usize, &str) {
    (d.line, d.column, d.path.as_str())
}

fn default_config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::dev("/var/lib/metanode", "127.0.0.1:7878".parse().expect("addr"));
    config.node.name = name.to_string();
    config.log.level = LogLevel::Info;
    config
}

// ---- the happy path ----

#[test]
fn minimal_config_gets_defaults() {
    let config = NodeConfig::from_yaml_str("node:\n  name: node-1\n", "node.yaml").expect("valid");
    assert_eq!(config, default_config("node-1"));
    assert_eq!(config.store.io, IoMode::Auto);
    assert_eq!(config.store.compression, Compression::None);
    assert_eq!(
        config.api.listen,
        "127.0.0.1:7878".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        config.key_file_path(),
        PathBuf::from("/var/lib/metanode/node.key")
    );
}

#[test]
fn full_config_parses_every_field() {
    let yaml = "\
node:
  name: edge-7
  data_dir: /data/mn
  key_file: /etc/metanode/node.key
api:
  listen: \"[::]:9000\"
  upload_size_bytes_max: 0x1000
  request_timeout_ms: 5000
  connections_max: 10
store:
  io: posix
  compression: zstd
  zstd_level: 19
  inline_size_bytes_max: 4096
  segment_size_bytes_max: 1048576
  group_commit_batch_bytes_max: 65536
  group_commit_batch_count_max: 1
log:
  level: trace
  format: json
";
    let config = NodeConfig::from_yaml_str(yaml, "node.yaml").expect("valid");
    assert_eq!(
        config.node.key_file,
        Some(PathBuf::from("/etc/metanode/node.key"))
    );
    assert_eq!(
        config.api.listen,
        "[::]:9000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(config.api.upload_size_bytes_max, 4096);
    assert_eq!(config.store.zstd_level, 19);
    assert_eq!(config.store.compression, Compression::Zstd);
    assert_eq!(config.log.level, LogLevel::Trace);
}

#[test]
fn config_round_trips_through_yaml() {
    let mut config = default_config("node-1");
    config.node.key_file = Some("/etc/metanode/node.key".into());
    config.store.compression = Compression::Zstd;
    config.api.listen = "[::1]:8080".parse().expect("addr");
    let yaml = serde_saphyr::to_string(&config).expect("serialize");
    let back = NodeConfig::from_yaml_str(&yaml, "round-trip").expect("reparse");
    assert_eq!(back, config);
}

#[test]
fn crlf_line_endings_are_accepted() {
    let config = NodeConfig::from_yaml_str(
        "node:\r\n  name: a\r\nstore:\r\n  zstd_level: 4\r\n",
        "crlf",
    )
    .expect("valid");
    assert_eq!(config.store.zstd_level, 4);
}

#[test]
fn dev_config_validates() {
    let config = NodeConfig::dev("/tmp/metanode-dev", "127.0.0.1:7878".parse().expect("addr"));
    config.validate().expect("dev config is valid");
    assert_eq!(config.node.data_dir, PathBuf::from("/tmp/metanode-dev"));

    let ephemeral = NodeConfig::dev("/tmp/metanode-dev", "127.0.0.1:0".parse().expect("addr"));
    let err = ephemeral
        .validate()
        .expect_err("port 0 is not for config files");
    assert_eq!(err.errors[0].path, "api.listen");
    ephemeral
        .validate_dev()
        .expect("--dev may bind an ephemeral port");
}

#[test]
fn default_config_validates() {
    default_config("node-1")
        .validate()
        .expect("defaults are valid");
}

// ---- the example ----

#[test]
fn example_passes_check_with_documented_defaults() {
    let example = example_yaml();
    let config = NodeConfig::from_yaml_str(&example, "example").expect("the example is valid");
    assert_eq!(config, default_config("node-1"));
    // Every field of every section is written out (key_file commented out).
    let schema = json_schema();
    for def in ["Node", "Api", "Store", "Log"] {
        for field in schema["$defs"][def]["properties"]
            .as_object()
            .expect("properties")
            .keys()
        {
            assert!(
                example.contains(&format!("  {field}: "))
                    || example.contains(&format!("  # {field}: ")),
                "field {def}.{field} missing from the example:\n{example}"
            );
        }
    }
    assert!(example.contains("  # key_file: /var/lib/metanode/node.key\n"));
    assert!(example.contains("# Default: 268435456 (256 MiB)\n"));
}

#[test]
fn committed_example_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-config/node.yaml");
    let generated = example_yaml();
    if std::env::var_os("METANODE_UPDATE_EXAMPLES").is_some() {
        std::fs::write(&path, &generated).expect("write example");
    }
    let committed = std::fs::read_to_string(&path).expect("read committed example");
    assert_eq!(
        committed,
        generated,
        "{} is stale; regenerate with METANODE_UPDATE_EXAMPLES=1 cargo test -p metanode-core --test config",
        path.display()
    );
}

#[test]
fn committed_invalid_example_reports_every_error() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples-config/invalid.yaml");
    let err = NodeConfig::from_file(&path).expect_err("invalid on purpose");
    let LoadConfigError::Invalid { diagnostics } = err else {
        panic!("expected diagnostics, got {err}");
    };
    let found: Vec<(usize, usize, &str)> = diagnostics.errors.iter().map(at).collect();
    assert_eq!(
        found,
        [
            (4, 3, "node.name"),
            (5, 3, "node.data_dir"),
            (8, 3, "api.listen"),
            (9, 3, "api.request_timeout_ms"),
            (10, 3, "api.conections_max"),
            (13, 3, "store.io"),
            (14, 3, "store.zstd_level"),
            (15, 3, "store.inline_size_bytes_max"),
            (18, 3, "log.level"),
            (20, 3, "chain.genesis"),
            (23, 7, "chain.peers.0.address"),
            (24, 3, "chain.block_interval_min_ms"),
        ],
        "{diagnostics}"
    );
}

// ---- one test per error class: right line, column and path ----

#[test]
fn out_of_range_value_reports_line_and_path() {
    let yaml = "\
# node config
node:
  name: node-1

store:
  io: auto
  zstd_level: 25
";
    let diagnostics = match NodeConfig::from_yaml_str(yaml, "node.yaml") {
        Err(LoadConfigError::Invalid { diagnostics }) => diagnostics,
        other => panic!("expected diagnostics, got {other:?}"),
    };
    assert_eq!(
        diagnostics.to_string(),
        "node.yaml:7:3: store.zstd_level: 25 is out of range 1..=19"
    );
}

#[test]
fn unknown_key_reports_line_path_and_suggestion() {
    let e = only_error("node:\n  name: a\nstore:\n  zstd_levl: 5\n");
    assert_eq!(at(&e), (4, 3, "store.zstd_levl"));
    assert!(
        e.message.contains("did you mean `zstd_level`"),
        "{}",
        e.message
    );

    let e = only_error("node:\n  name: a\nmetrics:\n  port: 9\n");
    assert_eq!(at(&e), (3, 1, "metrics"));
    assert!(e.message.contains("expected one of: "), "{}", e.message);
}

#[test]
fn wrong_type_reports_line_and_path() {
    let e = only_error("node:\n  name: a\napi:\n  connections_max: lots\n");
    assert_eq!(at(&e), (4, 3, "api.connections_max"));
    assert_eq!(
        e.message,
        "expected an integer in 0..=4294967295, found `lots`"
    );

    let e = only_error("node:\n  name: a\napi:\n  connections_max: 99999999999\n");
    assert_eq!(at(&e), (4, 3, "api.connections_max"));

    let e = only_error("node:\n  name: a\napi:\n  listen: 7878\n");
    assert_eq!(at(&e), (4, 3, "api.listen"));
    assert!(e.message.contains("socket address"), "{}", e.message);

    let e = only_error("node:\n  name: a\nstore:\n  zstd_level: [1, 2]\n");
    assert_eq!(at(&e), (4, 3, "store.zstd_level"));
    assert!(e.message.ends_with("found a list"), "{}", e.message);

    let e = only_error("node:\n  name: a\napi: 5\n");
    assert_eq!(at(&e), (3, 1, "api"));
    assert_eq!(e.message, "expected a mapping, found `5`");

    let e = only_error("node:\n  name: a\nstore:\n");
    assert_eq!(at(&e), (3, 1, "store"));
    assert!(
        e.message.contains("remove the key to use the defaults"),
        "{}",
        e.message
    );
}

#[test]
fn bad_enum_value_reports_line_path_and_choices() {
    let e = only_error("node:\n  name: a\nstore:\n  io: uring\n");
    assert_eq!(at(&e), (4, 3, "store.io"));
    assert_eq!(e.message, "`uring` is not one of: auto, io_uring, posix");

    let e = only_error("node:\n  name: a\nlog:\n  level: Debug\n");
    assert_eq!(at(&e), (4, 3, "log.level"));
    assert!(e.message.contains("did you mean `debug`"), "{}", e.message);
}

#[test]
fn cross_field_violation_reports_line_and_path() {
    let yaml = "\
node:
  name: a
store:
  inline_size_bytes_max: 1048576
  group_commit_batch_bytes_max: 524288
";
    let e = only_error(yaml);
    assert_eq!(at(&e), (4, 3, "store.inline_size_bytes_max"));
    assert!(
        e.message
            .contains("exceeds store.group_commit_batch_bytes_max (524288)"),
        "{}",
        e.message
    );

    // The rule holds against defaults too: batch (default 8 MiB) must fit a
    // segment, reported on the batch field, which is absent, so on `store:`.
    let e = only_error("node:\n  name: a\nstore:\n  segment_size_bytes_max: 1048576\n");
    assert_eq!(at(&e), (3, 1, "store.group_commit_batch_bytes_max"));
}

#[test]
fn missing_required_field_reports_its_section() {
    let e = only_error("node:\n  data_dir: /srv/mn\n");
    assert_eq!(at(&e), (1, 1, "node.name"));
    assert_eq!(e.message, "missing required field `name`");

    let e = only_error("api:\n  connections_max: 5\n");
    assert_eq!(at(&e), (1, 1, "node"));
}

#[test]
fn duplicate_key_reports_second_occurrence() {
    let e = only_error("node:\n  name: a\n  name: b\n");
    assert_eq!(at(&e), (3, 3, "node.name"));
    assert_eq!(e.message, "duplicate field `name` (first set on line 2)");
}

#[test]
fn semantic_rules_report_line_and_path() {
    let e = only_error("node:\n  name: Node_1\n");
    assert_eq!(at(&e), (2, 3, "node.name"));

    let e = only_error("node:\n  name: a\n  data_dir: var/lib/mn\n");
    assert_eq!(at(&e), (3, 3, "node.data_dir"));
    assert!(e.message.contains("absolute"), "{}", e.message);

    let e = only_error("node:\n  name: a\n  data_dir: /\n");
    assert_eq!(at(&e), (3, 3, "node.data_dir"));

    let e = only_error("node:\n  name: a\n  key_file: /x/../etc/key\n");
    assert_eq!(at(&e), (3, 3, "node.key_file"));

    let e = only_error("node:\n  name: a\napi:\n  listen: 0.0.0.0:0\n");
    assert_eq!(at(&e), (4, 3, "api.listen"));
    assert!(e.message.contains("port 0"), "{}", e.message);
}

#[test]
fn yaml_features_outside_the_config_subset_are_errors() {
    let e = only_error("node:\n  name: &n a\n");
    assert_eq!(at(&e), (2, 3, "node.name"));
    assert!(e.message.contains("anchors"), "{}", e.message);

    let yaml = "node:\n  name: a\n  data_dir: &d /srv\n  key_file: *d\n";
    let found: Vec<_> = errors(yaml)
        .iter()
        .map(|d| (d.line, d.path.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (3, "node.data_dir".to_string()),
            (4, "node.key_file".to_string())
        ]
    );

    let e = only_error("node:\n  name: a\nstore:\n  zstd_level: !!int 5\n");
    assert_eq!(at(&e), (4, 3, "store.zstd_level"));
    assert!(e.message.contains("`!!int`"), "{}", e.message);
}

#[test]
fn document_level_problems_have_a_line_and_no_path() {
    let e = only_error("");
    assert_eq!(at(&e), (1, 1, ""));
    let e = only_error("# nothing here\n");
    assert_eq!(at(&e), (1, 1, ""));
    let e = only_error("- node\n- api\n");
    assert_eq!(at(&e), (1, 1, ""));
    assert!(e.message.starts_with("expected a mapping"), "{}", e.message);
    let e = only_error("node:\n  name: a\n---\nnode:\n  name: b\n");
    assert_eq!((e.line, e.path.as_str()), (3, ""));
}

#[test]
fn malformed_yaml_reports_a_line_without_panicking() {
    let e = only_error("node:\n\tname: a\n");
    assert_eq!((e.line, e.path.as_str()), (2, ""));
    assert!(
        e.message.contains("invalid yaml") && e.message.contains("tab"),
        "{}",
        e.message
    );

    let e = only_error("node:\n  name: a\n data_dir: /x\n");
    assert_eq!(e.line, 3);

    let e = only_error("node:\n  name: \"unterminated\n");
    assert_eq!(e.line, 2);

    let e = only_error("node: {name: a\n");
    assert!(e.line >= 1);
}

// ---- many errors at once ----

#[test]
fn every_error_in_a_file_is_reported() {
    let yaml = "\
node:
  name: a
  colour: blue
api:
  listen: not-an-address
  request_timeout_ms: 5
  connections_max: -1
store:
  compression: brotli
  zstd_level: 0
  inline_size_bytes_max: 1048576
  group_commit_batch_bytes_max: 524288
log:
  format: xml
";
    let found: Vec<(usize, usize, String)> = errors(yaml)
        .iter()
        .map(|d| (d.line, d.column, d.path.clone()))
        .collect();
    let expected = [
        (3, 3, "node.colour"),
        (5, 3, "api.listen"),
        (6, 3, "api.request_timeout_ms"),
        (7, 3, "api.connections_max"),
        (9, 3, "store.compression"),
        (10, 3, "store.zstd_level"),
        (11, 3, "store.inline_size_bytes_max"),
        (14, 3, "log.format"),
    ];
    let expected: Vec<(usize, usize, String)> = expected
        .iter()
        .map(|(l, c, p)| (*l, *c, p.to_string()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn cross_field_rules_skip_fields_that_failed_to_parse() {
    // inline is malformed, so comparing the default inline against batch
    // would report a violation the file does not contain.
    let yaml = "\
node:
  name: a
store:
  inline_size_bytes_max: big
  group_commit_batch_bytes_max: 65536
";
    let e = only_error(yaml);
    assert_eq!(at(&e), (4, 3, "store.inline_size_bytes_max"));
}

#[test]
fn semantic_errors_are_reported_next_to_structural_ones() {
    // An unknown key elsewhere must not hide a range error.
    let found: Vec<String> = errors("node:\n  name: a\n  nmae: b\nstore:\n  zstd_level: 30\n")
        .into_iter()
        .map(|d| d.path)
        .collect();
    assert_eq!(found, ["node.nmae", "store.zstd_level"]);
    // A missing name must not hide other sections' errors either.
    let found: Vec<String> = errors("node:\n  data_dir: rel\nlog:\n  level: loud\n")
        .into_iter()
        .map(|d| d.path)
        .collect();
    assert_eq!(found, ["node.name", "node.data_dir", "log.level"]);
}

// ---- fuzz-ish: broken inputs never panic and always explain themselves ----

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn assert_well_behaved(text: &str) {
    let lines = text.lines().count().max(1);
    match NodeConfig::from_yaml_str(text, "fuzz.yaml") {
        Ok(config) => config.validate().expect("a loaded config is valid"),
        Err(LoadConfigError::Invalid { diagnostics }) => {
            assert!(!diagnostics.errors.is_empty());
            for d in &diagnostics.errors {
                assert!(
                    d.line >= 1 && d.line <= lines + 1 && d.column >= 1,
                    "diagnostic outside the text: {d:?}\n---\n{text}"
                );
                assert!(!d.message.is_empty());
            }
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

#[test]
fn truncated_example_never_panics() {
    let example = example_yaml();
    for (cut, _) in example.char_indices() {
        assert_well_behaved(&example[..cut]);
    }
}

#[test]
fn garbled_example_never_panics() {
    const SPECIAL: &[char] = &[
        ':', '-', ' ', '\t', '"', '\'', '[', ']', '{', '}', '#', '&', '*', '!', '\n', '|', '>',
        '%', '@', '`', ',', '?', '0', 'x', '\u{feff}', 'é',
    ];
    let example = example_yaml();
    let base: Vec<char> = example.chars().collect();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut invalid_count = 0;
    for round in 0..3000 {
        let mut chars = base.clone();
        for _ in 0..1 + round % 4 {
            let at = rng.below(chars.len());
            match rng.below(3) {
                0 => chars[at] = SPECIAL[rng.below(SPECIAL.len())],
                1 => chars.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
                _ => {
                    chars.remove(at);
                }
            }
        }
        let text: String = chars.into_iter().collect();
        if NodeConfig::from_yaml_str(&text, "fuzz.yaml").is_err() {
            invalid_count += 1;
        }
        assert_well_behaved(&text);
    }
    // Most single-character edits of the example land in comments; the
    // rest must have produced errors rather than all being silently taken.
    assert!(invalid_count > 0);
}

#[test]
fn line_shuffles_and_duplicates_never_panic() {
    let example = example_yaml();
    let lines: Vec<&str> = example.lines().collect();
    let mut rng = XorShift(42);
    for _ in 0..500 {
        let mut picked: Vec<&str> = Vec::new();
        for _ in 0..rng.below(lines.len()) {
            picked.push(lines[rng.below(lines.len())]);
        }
        assert_well_behaved(&picked.join("\n"));
    }
}

// ---- files ----

#[test]
fn from_file_reports_io_size_and_encoding_problems() {
    let dir = tempfile::tempdir().expect("tempdir");

    let missing = dir.path().join("missing.yaml");
    assert!(matches!(
        NodeConfig::from_file(&missing),
        Err(LoadConfigError::Read { .. })
    ));

    let big = dir.path().join("big.yaml");
    let size = usize::try_from(limits::CONFIG_FILE_SIZE_BYTES_MAX).expect("fits") + 1;
    std::fs::write(&big, "#".repeat(size)).expect("write");
    assert!(matches!(
        NodeConfig::from_file(&big),
        Err(LoadConfigError::TooLarge { .. })
    ));

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"node:\n  name: caf\xe9\n").expect("write");
    match NodeConfig::from_file(&latin1) {
        Err(LoadConfigError::Invalid { diagnostics }) => {
            assert_eq!(at(&diagnostics.errors[0]), (2, 12, ""));
            assert!(
                diagnostics
                    .to_string()
                    .starts_with(&format!("{}:2:12: ", latin1.display()))
            );
        }
        other => panic!("expected a utf-8 diagnostic, got {other:?}"),
    }

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "node:\n  name: a\n").expect("write");
    assert_eq!(NodeConfig::from_file(&good).expect("valid").node.name, "a");
}

#[test]
fn load_error_message_lists_every_error() {
    let err = NodeConfig::from_yaml_str("node:\n  name: A\nstore:\n  zstd_level: 99\n", "n.yaml")
        .expect_err("two errors");
    assert_eq!(
        err.to_string(),
        "invalid config n.yaml (2 errors):\n\
         n.yaml:2:3: node.name: \"A\" contains 'A'; a node name uses only a-z, 0-9 and '-'\n\
         n.yaml:4:3: store.zstd_level: 99 is out of range 1..=19"
    );
}

// ---- schema exports ----

/// Every (definition, property) of the JSON Schema; the root is "".
fn schema_fields(schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |def: &str, object: &Value| {
        for key in object["properties"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys())
        {
            out.push((def.to_string(), key.clone()));
        }
    };
    add("", schema);
    for (name, def) in schema["$defs"].as_object().expect("$defs") {
        add(name, def);
    }
    out
}

/// The body of `#name: { ... }` in CUE text.
fn cue_block<'a>(cue: &'a str, name: &str) -> &'a str {
    let start = cue
        .find(&format!("\n#{name}: {{\n"))
        .unwrap_or_else(|| panic!("#{name} missing:\n{cue}"));
    let body = &cue[start..];
    let end = body.find("\n}\n").unwrap_or(body.len());
    &body[..end]
}

#[test]
fn every_json_schema_field_appears_in_the_cue_export() {
    let schema = json_schema();
    let cue = json_schema_to_cue(&schema, &field_order());
    let fields = schema_fields(&schema);
    assert!(fields.len() >= 19, "{fields:?}");
    for (def, field) in fields {
        let def = if def.is_empty() {
            "NodeConfig".to_string()
        } else {
            def
        };
        let block = cue_block(&cue, &def);
        assert!(
            block.contains(&format!("\n\t{field}: ")) || block.contains(&format!("\n\t{field}?: ")),
            "{def}.{field} missing from #{def}:\n{block}"
        );
    }
    assert!(cue.contains("#NodeConfig: {\n"));
    assert!(cue.contains("\tnode: #Node\n"));
    assert!(cue.contains("#IoMode: \"auto\" | \"io_uring\" | \"posix\"\n"));
    assert!(cue.contains("\tio: *\"auto\" | #IoMode\n"));
    assert!(cue.contains("\tzstd_level: *3 | int32 & >=1 & <=19\n"));
    assert!(cue.contains("\tkey_file?: "));
    assert!(cue.contains("\t// zstd compression level; only used when `compression` is `zstd`.\n"));
}

#[test]
fn schema_ranges_are_the_limits_and_validation_enforces_them() {
    let schema = json_schema();
    let ranges: [(&str, &str, i128, i128); 11] = [
        ("Api", "upload_size_bytes_max", 1, 1 << 40),
        ("Api", "request_timeout_ms", 100, 3_600_000),
        ("Api", "connections_max", 1, 65_536),
        ("Store", "zstd_level", 1, 19),
        ("Store", "inline_size_bytes_max", 1024, 64 << 20),
        ("Store", "segment_size_bytes_max", 1 << 20, 4 << 30),
        ("Store", "group_commit_batch_bytes_max", 64 << 10, 1 << 30),
        ("Store", "group_commit_batch_count_max", 1, 65_536),
        ("Chain", "block_interval_min_ms", 1, 60_000),
        ("Chain", "empty_block_interval_ms", 10, 600_000),
        ("Chain", "round_timeout_base_ms", 100, 60_000),
    ];
    assert_eq!(*limits::CONFIG_STORE_ZSTD_LEVEL_RANGE.end(), 19);
    for (def, field, min, max) in ranges {
        let property = &schema["$defs"][def]["properties"][field];
        assert_eq!(
            property["minimum"].as_i64().map(i128::from),
            Some(min),
            "{def}.{field}"
        );
        assert_eq!(
            property["maximum"].as_i64().map(i128::from),
            Some(max),
            "{def}.{field}"
        );
        let section = def.to_lowercase();
        for bad in [min - 1, max + 1] {
            let yaml = format!("node:\n  name: a\n{section}:\n  {field}: {bad}\n");
            let found = errors(&yaml);
            assert!(
                found
                    .iter()
                    .any(|d| d.path == format!("{section}.{field}") && d.line == 4),
                "{section}.{field} = {bad} not rejected on line 4: {found:?}"
            );
        }
    }
}

#[test]
fn garbage_with_many_errors_is_capped() {
    let mut yaml = String::from("node:\n  name: a\n");
    for i in 0..20_000 {
        yaml.push_str(&format!("k{i}: 1\n"));
    }
    let found = errors(&yaml);
    assert_eq!(found.len(), limits::CONFIG_DIAGNOSTICS_COUNT_MAX);
    assert_eq!(at(&found[0]), (3, 1, "k0"));
    let last = found.last().expect("a last diagnostic");
    assert_eq!(
        last.message,
        format!(
            "{} more errors not shown",
            20_000 - limits::CONFIG_DIAGNOSTICS_COUNT_MAX + 1
        )
    );
}

// ---- the chain section ----

const PEER_1: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const PEER_2: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

#[test]
fn chain_section_is_absent_by_default() {
    let config = NodeConfig::from_yaml_str("node:\n  name: a\n", "node.yaml").expect("valid");
    assert_eq!(config.chain, None);
    assert_eq!(config.chain_key_file_path(), None);
}

#[test]
fn minimal_chain_section_gets_defaults() {
    let yaml = "node:\n  name: a\n  data_dir: /srv/mn\nchain:\n  genesis: /srv/genesis.yaml\n";
    let config = NodeConfig::from_yaml_str(yaml, "node.yaml").expect("valid");
    let chain = config.chain.as_ref().expect("chain section");
    assert_eq!(*chain, ChainConfig::new("/srv/genesis.yaml", None));
    assert_eq!(chain.listen, DEFAULT_CHAIN_LISTEN);
    assert_eq!(chain.listen.to_string(), "0.0.0.0:7900");
    assert_eq!(
        (
            chain.block_interval_min_ms,
            chain.empty_block_interval_ms,
            chain.round_timeout_base_ms
        ),
        (50, 1000, 1000)
    );
    assert!(chain.peers.is_empty());
    // Without `chain.key` the chain signs with the node key.
    assert_eq!(
        config.chain_key_file_path(),
        Some(PathBuf::from("/srv/mn/node.key"))
    );
    assert_eq!(config.chain_data_dir(), PathBuf::from("/srv/mn/chain"));
}

#[test]
fn full_chain_section_parses_every_field() {
    let yaml = format!(
        "\
node:
  name: v1
chain:
  genesis: /etc/metanode/genesis.yaml
  key: /etc/metanode/chain.key
  listen: 10.0.0.1:7901
  peers:
    - public_key: {PEER_1}
      address: 10.0.0.2:7900
    - public_key: {OTHER_PEER}
      address: node-3.example:7900
    - public_key: {PEER_2}
  block_interval_min_ms: 20
  empty_block_interval_ms: 500
  round_timeout_base_ms: 2000
"
    );
    let config = NodeConfig::from_yaml_str(&yaml, "node.yaml").expect("valid");
    let chain = config.chain.expect("chain section");
    assert_eq!(
        chain,
        ChainConfig {
            genesis: "/etc/metanode/genesis.yaml".into(),
            key: Some("/etc/metanode/chain.key".into()),
            listen: "10.0.0.1:7901".parse().expect("addr"),
            peers: vec![
                ChainPeer {
                    public_key: PEER_1.to_string(),
                    address: Some("10.0.0.2:7900".to_string()),
                },
                ChainPeer {
                    public_key: OTHER_PEER.to_string(),
                    address: Some("node-3.example:7900".to_string()),
                },
                ChainPeer {
                    public_key: PEER_2.to_string(),
                    address: None,
                },
            ],
            block_interval_min_ms: 20,
            empty_block_interval_ms: 500,
            round_timeout_base_ms: 2000,
        }
    );
    assert_eq!(
        chain.peers[0].public_key().expect("key").to_string(),
        PEER_1
    );
    assert_eq!(
        chain.peers[1].host_port(),
        Some(Ok(("node-3.example", 7900)))
    );
    assert_eq!(chain.peers[2].host_port(), None);
    // The section round-trips through YAML.
    let mut again = default_config("v1");
    again.chain = Some(chain.clone());
    let text = serde_saphyr::to_string(&again).expect("serialize");
    let back = NodeConfig::from_yaml_str(&text, "again").expect("reparse");
    assert_eq!(back.chain, Some(chain));
}

/// Ed25519 public key of the RFC 8032 test 3 vector.
const OTHER_PEER: &str = "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025";

#[test]
fn host_port_parsing() {
    assert_eq!(parse_host_port("10.0.0.2:7900"), Ok(("10.0.0.2", 7900)));
    assert_eq!(parse_host_port("[fd00::2]:7900"), Ok(("fd00::2", 7900)));
    assert_eq!(parse_host_port("node-2:1"), Ok(("node-2", 1)));
    for (bad, needle) in [
        ("node-2", "has no port"),
        (":7900", "no host"),
        ("fd00::2:7900", "in brackets"),
        ("[fd00::2:7900", "without closing"),
        ("[nope]:7900", "not an IPv6 address"),
        ("node 2:7900", "contains ' '"),
        ("node-2:70000", "not a number in 1..=65535"),
        ("node-2:0", "port 0"),
    ] {
        let err = parse_host_port(bad).expect_err(bad);
        assert!(err.contains(needle), "{bad}: {err}");
    }
    let long = format!("{}:1", "a".repeat(300));
    assert!(
        parse_host_port(&long)
            .expect_err("long")
            .contains("at most 259")
    );
}

#[test]
fn chain_errors_name_the_field_and_line() {
    let cases: Vec<(String, (usize, usize, &str), &str)> = vec![
        (
            "  genesis: genesis.yaml\n".into(),
            (4, 3, "chain.genesis"),
            "\"genesis.yaml\" must be an absolute path",
        ),
        (
            "  genesis: /g.yaml\n  key: /keys/\n".into(),
            (5, 3, "chain.key"),
            "\"/keys/\" names a directory; expected a file path",
        ),
        (
            "  genesis: /g.yaml\n  listen: 0.0.0.0:0\n".into(),
            (5, 3, "chain.listen"),
            "port 0 in 0.0.0.0:0 would bind a random port that peers cannot find",
        ),
        (
            "  genesis: /g.yaml\n  listen: node-1:7900\n".into(),
            (5, 3, "chain.listen"),
            "expected an ip:port socket address such as 127.0.0.1:7878, found `node-1:7900`",
        ),
        (
            "  genesis: /g.yaml\n  block_interval_min_ms: 2000\n".into(),
            (5, 3, "chain.block_interval_min_ms"),
            "2000 exceeds chain.empty_block_interval_ms (1000): an idle proposer would wait longer than its heartbeat",
        ),
        (
            "  genesis: /g.yaml\n  round_timeout_base_ms: 10\n".into(),
            (5, 3, "chain.round_timeout_base_ms"),
            "10 is out of range 100..=60000",
        ),
        (
            format!(
                "  genesis: /g.yaml\n  peers:\n    - public_key: {PEER_1}\n    - public_key: {}\n",
                &PEER_1[..60]
            ),
            (7, 7, "chain.peers.1.public_key"),
            "\"d75a980182b10ab7d54bfed3c964073a0ee172f3…\" is not an Ed25519 public key: public key hex: expected 64 hex digits, got 60 bytes",
        ),
        (
            format!(
                "  genesis: /g.yaml\n  peers:\n    - public_key: {PEER_1}\n      address: 10.0.0.2:7900\n    - public_key: {PEER_2}\n      address: 10.0.0.3\n"
            ),
            (9, 7, "chain.peers.1.address"),
            "\"10.0.0.3\" has no port; expected host:port such as 10.0.0.2:7900",
        ),
        (
            format!(
                "  genesis: /g.yaml\n  peers:\n    - public_key: {PEER_1}\n    - public_key: {PEER_2}\n    - public_key: {PEER_1}\n"
            ),
            (8, 7, "chain.peers.2.public_key"),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a is already listed as chain.peers.0",
        ),
        (
            "  genesis: /g.yaml\n  peers:\n    - address: 10.0.0.2:7900\n".into(),
            (6, 7, "chain.peers.public_key"),
            "missing required field `public_key`",
        ),
        (
            format!(
                "  genesis: /g.yaml\n  peers:\n    - public_key: {PEER_1}\n      adress: 10.0.0.2:7900\n"
            ),
            (7, 7, "chain.peers.adress"),
            "unknown field `adress`; did you mean `address`?",
        ),
        (
            "  listen: 0.0.0.0:7900\n".into(),
            (3, 1, "chain.genesis"),
            "missing required field `genesis`",
        ),
    ];
    for (section, (line, column, path), message) in cases {
        let yaml = format!("node:\n  name: a\nchain:\n{section}");
        let e = only_error(&yaml);
        assert_eq!(at(&e), (line, column, path), "{yaml}\n{e:?}");
        assert_eq!(e.message, message, "{yaml}");
    }
    // 64 hex digits, but the identity point: small order, no signer.
    let not_a_point = format!("01{}", "00".repeat(31));
    let yaml = format!(
        "node:\n  name: a\nchain:\n  genesis: /g.yaml\n  peers:\n    - public_key: {not_a_point}\n"
    );
    let e = only_error(&yaml);
    assert_eq!(at(&e), (6, 7, "chain.peers.0.public_key"));
    assert!(
        e.message.contains("is a small-order point"),
        "{}",
        e.message
    );
}

#[test]
fn chain_section_in_the_example_is_valid_once_uncommented() {
    let example = example_yaml();
    let start = example
        .find("\n# chain:\n")
        .expect("commented chain section")
        + 1;
    // The chain section runs to the next top-level comment block.
    let end = example[start..]
        .find("\n\n")
        .map_or(example.len(), |i| start + i + 1);
    let uncommented: String = example[start..end]
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(uncommented.starts_with("chain:\n  # Absolute path of the genesis file"));
    let text = format!("{}{uncommented}", &example[..start]);
    let config = NodeConfig::from_yaml_str(&text, "example+chain").expect("valid");
    let chain = config.chain.expect("chain section");
    assert_eq!(
        chain,
        ChainConfig::new("/var/lib/metanode/genesis.yaml", None)
    );
}

#[test]
fn chain_schema_and_cue_export() {
    let schema = json_schema();
    let chain = &schema["$defs"]["Chain"];
    assert_eq!(chain["required"], serde_json::json!(["genesis"]));
    assert_eq!(chain["properties"]["listen"]["default"], "0.0.0.0:7900");
    assert_eq!(chain["properties"]["peers"]["maxItems"], 256);
    assert_eq!(
        schema["$defs"]["ChainPeer"]["properties"]["public_key"]["pattern"],
        "^[0-9a-fA-F]{64}$"
    );
    let cue = json_schema_to_cue(&schema, &field_order());
    assert!(cue.contains("\tchain?: #Chain | null\n"), "{cue}");
    assert!(cue.contains("\tpeers?: [...#ChainPeer]"), "{cue}");
    assert!(
        cue.contains("\tblock_interval_min_ms: *50 | uint64 & >=1 & <=60000\n"),
        "{cue}"
    );
    let block = cue_block(&cue, "Chain");
    let genesis = block.find("\tgenesis: ").expect("genesis");
    let rounds = block
        .find("\tround_timeout_base_ms: ")
        .expect("round timeout");
    assert!(genesis < rounds, "fields keep declaration order:\n{block}");
}
