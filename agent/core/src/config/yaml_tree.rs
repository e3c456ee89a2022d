//! A YAML document as a tree whose every node remembers where it was written.
//!
//! serde stops at the first error and forgets positions once a value is
//! built, so `config check` parses the text once more into this tree: the
//! checker walks it against the JSON Schema to find *every* structural error,
//! and semantic errors found later on the typed config are placed back on a
//! line by looking their field path up here.
//!
//! Built from granit-parser events (the parser serde-saphyr itself uses, via
//! its re-export), so both agree on what the text says.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// A 1-based line and column in the config text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    fn from_marker(marker: &serde_saphyr::granit_parser::Marker) -> Pos {
        // granit lines are 1-based, columns 0-based; editors count both from 1.
        Pos {
            line: marker.line().max(1),
            column: marker.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Scalar {
        value: String,
        /// Plain scalars are subject to YAML type resolution (`~`, `0x10`);
        /// quoted and block scalars are always strings.
        plain: bool,
    },
    Mapping(Vec<(Node, Node)>),
    Sequence(Vec<Node>),
    /// `*name`: config files may not use aliases, but the checker must still
    /// see where one was written to report it.
    Alias,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub pos: Pos,
    /// The tag as written (`!!int`), if any.
    pub tag: Option<String>,
    /// Whether the node defines an anchor (`&name`).
    pub anchored: bool,
}

impl Node {
    /// A plain scalar that YAML resolves to null (`~`, `null`, or nothing).
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true }
            if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// Short description for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            _ if self.is_null() => "an empty value".to_string(),
            Kind::Scalar { value, .. } => format!("`{}`", abbreviate(value)),
            Kind::Mapping(_) => "a mapping".to_string(),
            Kind::Sequence(_) => "a list".to_string(),
            Kind::Alias => "an alias".to_string(),
        }
    }

    /// The value of `key` in this mapping (the first one, if duplicated),
    /// with the position of the key.
    pub fn get(&self, key: &str) -> Option<(&Node, Pos)> {
        let Kind::Mapping(entries) = &self.kind else {
            return None;
        };
        entries.iter().find_map(|(k, v)| match &k.kind {
            Kind::Scalar { value, .. } if value == key => Some((v, k.pos)),
            _ => None,
        })
    }

    /// Where the field at dotted `path` was written: the position of its key,
    /// or of the nearest enclosing key that exists (a field left at its
    /// default has no line of its own, its section does). A numeric segment
    /// indexes a list (`chain.peers.1.address`), landing on that item.
    pub fn locate(&self, path: &str) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            let next = match (&node.kind, segment.parse::<usize>()) {
                (Kind::Sequence(items), Ok(index)) => items.get(index).map(|item| (item, item.pos)),
                _ => node.get(segment),
            };
            match next {
                Some((child, child_pos)) => {
                    node = child;
                    pos = child_pos;
                }
                None => break,
            }
        }
        pos
    }
}

/// Keep diagnostics one line long even when someone pastes a certificate
/// into a string field.
pub fn abbreviate(value: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 40;
    let mut out: String = value
        .chars()
        .take(SHOWN_CHARS_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if value.chars().count() > SHOWN_CHARS_MAX {
        out.push('…');
    }
    out
}

/// Why the text could not be turned into a tree at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// One parsed document. `root` is `None` for an empty file (or one holding
/// only comments).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub root: Option<Node>,
}

enum Frame {
    Mapping {
        node: Node,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
    },
    Sequence {
        node: Node,
        items: Vec<Node>,
    },
}

/// Parse `text` as exactly one YAML document.
///
/// Syntax errors are fatal (a parser cannot know what the rest of a broken
/// document meant), so at most one is returned, always with a position.
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents_seen = 0usize;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|err| SyntaxError {
            pos: Pos::from_marker(err.marker()),
            message: err.kind().to_string(),
        })?;
        let pos = Pos::from_marker(&span.start);
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Anchor(..) => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                documents_seen += 1;
                if documents_seen > 1 {
                    return Err(SyntaxError {
                        pos,
                        message:
                            "a config file holds exactly one yaml document; found a second `---`"
                                .to_string(),
                    });
                }
            }
            Event::Scalar(value, style, anchor_id, tag) => {
                let node = Node {
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    pos,
                    tag: tag.map(|t| tag_as_written(&t)),
                    anchored: anchor_id != 0,
                };
                attach(&mut stack, &mut root, node);
            }
            Event::Alias(_) | Event::UnresolvedAlias(_) => {
                let node = Node {
                    kind: Kind::Alias,
                    pos,
                    tag: None,
                    anchored: false,
                };
                attach(&mut stack, &mut root, node);
            }
            Event::MappingStart(_, anchor_id, tag) => stack.push(Frame::Mapping {
                node: Node {
                    kind: Kind::Mapping(Vec::new()),
                    pos,
                    tag: tag.map(|t| tag_as_written(&t)),
                    anchored: anchor_id != 0,
                },
                entries: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceStart(_, anchor_id, tag) => stack.push(Frame::Sequence {
                node: Node {
                    kind: Kind::Sequence(Vec::new()),
                    pos,
                    tag: tag.map(|t| tag_as_written(&t)),
                    anchored: anchor_id != 0,
                },
                items: Vec::new(),
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                let finished = match stack.pop() {
                    Some(Frame::Mapping {
                        mut node, entries, ..
                    }) => {
                        node.kind = Kind::Mapping(entries);
                        node
                    }
                    Some(Frame::Sequence { mut node, items }) => {
                        node.kind = Kind::Sequence(items);
                        node
                    }
                    None => {
                        return Err(SyntaxError {
                            pos,
                            message: "unbalanced end of a collection".to_string(),
                        });
                    }
                };
                attach(&mut stack, &mut root, finished);
            }
            // Comments, and any presentation-only event a later parser
            // version adds, carry no data.
            _ => {}
        }
    }
    if !stack.is_empty() {
        // The parser reports truncation itself; this only guards the tree
        // builder against an event stream that ends early without an error.
        return Err(SyntaxError {
            pos: Pos {
                line: text.lines().count().max(1),
                column: 1,
            },
            message: "the document ends inside an unfinished mapping or list".to_string(),
        });
    }
    Ok(Document { root })
}

fn tag_as_written(tag: &serde_saphyr::granit_parser::Tag) -> String {
    format!("{}{}", tag.original_handle(), tag.suffix())
}

fn attach(stack: &mut [Frame], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Sequence { items, .. }) => items.push(node),
        Some(Frame::Mapping {
            entries,
            pending_key,
            ..
        }) => match pending_key.take() {
            Some(key) => entries.push((key, node)),
            None => *pending_key = Some(node),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_keys() {
        let doc = parse("node:\n  name: a\nstore:\n  zstd_level: 25\n").expect("valid yaml");
        let root = doc.root.expect("a root");
        assert_eq!(root.locate("store.zstd_level"), Pos { line: 4, column: 3 });
        assert_eq!(root.locate("node.name"), Pos { line: 2, column: 3 });
        // Absent field: the nearest key that exists.
        assert_eq!(root.locate("store.io"), Pos { line: 3, column: 1 });
        assert_eq!(root.locate("api.listen"), Pos::START);
    }

    #[test]
    fn empty_value_is_null_but_quoted_empty_is_not() {
        let doc = parse("a:\nb: ''\nc: ~\n").expect("valid yaml");
        let root = doc.root.expect("a root");
        assert!(root.get("a").expect("a").0.is_null());
        assert!(!root.get("b").expect("b").0.is_null());
        assert!(root.get("c").expect("c").0.is_null());
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse("a:\n\tb: 1\n").expect_err("tab indentation");
        assert_eq!(err.pos.line, 2);
        assert!(err.message.contains("tab"), "{}", err.message);
        let err = parse("a: 1\n---\nb: 2\n").expect_err("two documents");
        assert_eq!(err.pos.line, 2);
    }

    #[test]
    fn anchors_aliases_and_tags_are_recorded() {
        let doc = parse("a: &x 1\nb: *x\nc: !!int 5\n").expect("valid yaml");
        let root = doc.root.expect("a root");
        assert!(root.get("a").expect("a").0.anchored);
        assert_eq!(root.get("b").expect("b").0.kind, Kind::Alias);
        assert_eq!(root.get("c").expect("c").0.tag.as_deref(), Some("!!int"));
    }

    #[test]
    fn empty_text_has_no_root() {
        assert_eq!(parse("").expect("empty is valid").root, None);
        assert_eq!(parse("# only a comment\n").expect("valid").root, None);
    }
}
