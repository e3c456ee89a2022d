//! Which blocks a trustless-gateway CAR response carries, in which order
//! (<https://specs.ipfs.tech/http-gateways/trustless-gateway/>):
//! depth-first pre-order (`order=dfs`), each block once (`dups=n`).
//!
//! - `dag-scope=block`: the root only.
//! - `dag-scope=all`: every block reachable through dag-pb links.
//! - `dag-scope=entity`: for a UnixFS file (File or Raw node), every block of
//!   the file, or with `entity-bytes=from:to` only the leaves overlapping the
//!   range plus the nodes on the way to them (a range that resolves to
//!   nothing gives the root only); for a HAMT-sharded directory, the root and
//!   its sub-shard nodes but no entries; for a directory, symlink, raw block
//!   or non-UnixFS dag-pb node, the root only.
//!
//! `entity-bytes` resolves like boxo's `DagByteRange`: a negative `from`
//! counts from the end (clamped at 0), `*` is the last byte, a negative `to`
//! counts from the end, and a `to` past the end is clamped to it.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, ContentId};
use metanode_core::dagpb::{self, PbNodeRef};

use crate::data::{DataType, UnixFsData};
use crate::limits::{READ_AHEAD_BLOCKS, TRAVERSAL_DEPTH_MAX};
use crate::reader::{FileWalk, ReadError, file_node_size, link_cid};
use crate::source::BlockSource;

/// The `dag-scope` request parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DagScope {
    Block,
    Entity,
    All,
}

impl DagScope {
    pub const fn as_str(self) -> &'static str {
        match self {
            DagScope::Block => "block",
            DagScope::Entity => "entity",
            DagScope::All => "all",
        }
    }
}

impl fmt::Display for DagScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a gateway query parameter was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayParamError {
    #[error("dag-scope {value:?} is not one of block, entity, all")]
    DagScope { value: String },
    #[error("entity-bytes {value:?}: {reason}")]
    EntityBytes { value: String, reason: &'static str },
}

/// Parse `dag-scope`.
pub fn parse_dag_scope(value: &str) -> Result<DagScope, GatewayParamError> {
    match value {
        "block" => Ok(DagScope::Block),
        "entity" => Ok(DagScope::Entity),
        "all" => Ok(DagScope::All),
        _ => Err(GatewayParamError::DagScope {
            value: value.chars().take(64).collect(),
        }),
    }
}

impl FromStr for DagScope {
    type Err = GatewayParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_dag_scope(s)
    }
}

/// The `entity-bytes=from:to` request parameter (`to: None` is `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityBytes {
    pub from: i64,
    pub to: Option<i64>,
}

impl EntityBytes {
    pub fn parse(value: &str) -> Result<Self, GatewayParamError> {
        let refuse = |reason: &'static str| GatewayParamError::EntityBytes {
            value: value.chars().take(64).collect(),
            reason,
        };
        let (from, to) = value
            .split_once(':')
            .ok_or_else(|| refuse("expected from:to"))?;
        let from = parse_offset(from).ok_or_else(|| refuse("from is not a 64-bit integer"))?;
        let to = match to {
            "*" => None,
            to => Some(parse_offset(to).ok_or_else(|| refuse("to is not a 64-bit integer or *"))?),
        };
        if let Some(to) = to
            && (from >= 0) == (to >= 0)
            && from > to
        {
            return Err(refuse("from is after to"));
        }
        Ok(Self { from, to })
    }

    /// The inclusive byte range this names in an entity of `size_bytes`, or
    /// `None` when it is empty or entirely outside.
    pub fn resolve(&self, size_bytes: u64) -> Option<(u64, u64)> {
        let last = size_bytes.checked_sub(1)?;
        let from = if self.from < 0 {
            size_bytes.saturating_sub(self.from.unsigned_abs())
        } else {
            self.from as u64
        };
        let to = match self.to {
            None => last,
            Some(to) if to < 0 => size_bytes.checked_sub(to.unsigned_abs())?,
            Some(to) => (to as u64).min(last),
        };
        (from <= to && from <= last).then_some((from, to))
    }
}

/// Decimal with an optional leading minus; no plus sign, no spaces.
fn parse_offset(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for EntityBytes {
    type Err = GatewayParamError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EntityBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to {
            Some(to) => write!(f, "{}:{to}", self.from),
            None => write!(f, "{}:*", self.from),
        }
    }
}

#[derive(Debug)]
struct LinkFrame {
    children: Vec<ContentId>,
    next: usize,
}

#[derive(Debug)]
enum State {
    Start {
        root: ContentId,
        scope: DagScope,
        entity_bytes: Option<EntityBytes>,
    },
    /// Following links depth-first: every link (`hamt_only == false`) or
    /// only links to HAMT sub-shards.
    Links {
        stack: Vec<LinkFrame>,
        hamt_only: bool,
    },
    File(FileWalk),
    Done,
}

/// The blocks of a trustless-gateway CAR response, streamed in DFS
/// pre-order without duplicates. The first item is the root (or the error
/// that it is missing), so a gateway can decide the status before sending.
///
/// Memory: one link list per DAG level plus the set of CIDs already sent.
#[derive(Debug)]
pub struct CarBlocks<S> {
    source: S,
    seen: HashSet<ContentId>,
    state: State,
}

impl<S: BlockSource> CarBlocks<S> {
    /// `entity_bytes` applies to `DagScope::Entity` (the spec says the
    /// parameter implies it; pass `Entity` when only `entity-bytes` was
    /// given) and is ignored for the other scopes.
    pub fn new(
        source: S,
        root: ContentId,
        scope: DagScope,
        entity_bytes: Option<EntityBytes>,
    ) -> Self {
        Self {
            source,
            seen: HashSet::new(),
            state: State::Start {
                root,
                scope,
                entity_bytes,
            },
        }
    }

    fn start(
        &mut self,
        root: ContentId,
        scope: DagScope,
        entity_bytes: Option<EntityBytes>,
    ) -> Result<(ContentId, Bytes), ReadError> {
        let block = self.source.block(&root)?;
        self.seen.insert(root);
        self.state = match scope {
            DagScope::Block => State::Done,
            DagScope::All => all_links_state(root, &block)?,
            DagScope::Entity => entity_state(root, &block, entity_bytes)?,
        };
        Ok((root, block))
    }

    fn next_linked(&mut self) -> Option<Result<(ContentId, Bytes), ReadError>> {
        let State::Links { stack, hamt_only } = &mut self.state else {
            return None;
        };
        let hamt_only = *hamt_only;
        let cid = loop {
            let frame = stack.last_mut()?;
            match frame.children.get(frame.next).copied() {
                Some(cid) => {
                    frame.next += 1;
                    // Everything under an already-sent block was sent with it
                    // (a DAG has no cycles), so the whole subtree is skipped.
                    if !self.seen.contains(&cid) {
                        break cid;
                    }
                }
                None => {
                    stack.pop();
                }
            }
        };
        if stack.len() > TRAVERSAL_DEPTH_MAX {
            return Some(Err(ReadError::TooDeep {
                cid,
                depth_max: TRAVERSAL_DEPTH_MAX,
            }));
        }
        // After a raw block (a leaf) come its next siblings; after a dag-pb
        // node come its own children first, so its siblings are not hinted
        // then (read early, they would hold the read-ahead's slots through
        // the whole subtree).
        if let Some(frame) = stack.last().filter(|_| cid.codec() == CODEC_RAW) {
            let mut upcoming = [cid; READ_AHEAD_BLOCKS];
            let mut n = 0;
            for next in &frame.children[frame.next..] {
                if n == upcoming.len() {
                    break;
                }
                if *next != cid && !self.seen.contains(next) {
                    upcoming[n] = *next;
                    n += 1;
                }
            }
            if n > 0 {
                self.source.prefetch(&upcoming[..n]);
            }
        }
        let result = self
            .source
            .block(&cid)
            .map_err(ReadError::from)
            .and_then(|block| {
                let children = if hamt_only {
                    hamt_subshard_children(cid, &block)?
                } else {
                    all_links(cid, &block)?
                };
                Ok((block, children))
            });
        match result {
            Ok((block, children)) => {
                self.seen.insert(cid);
                if !children.is_empty() {
                    stack.push(LinkFrame { children, next: 0 });
                }
                Some(Ok((cid, block)))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl<S: BlockSource> Iterator for CarBlocks<S> {
    type Item = Result<(ContentId, Bytes), ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match std::mem::replace(&mut self.state, State::Done) {
            State::Done => return None,
            State::Start {
                root,
                scope,
                entity_bytes,
            } => Some(self.start(root, scope, entity_bytes)),
            links @ State::Links { .. } => {
                self.state = links;
                self.next_linked()
            }
            State::File(mut walk) => loop {
                match walk.next(&self.source) {
                    None => break None,
                    Some(Err(e)) => break Some(Err(e)),
                    Some(Ok(visit)) => {
                        // Repeated chunks are walked (their range may differ)
                        // but sent once.
                        if self.seen.insert(visit.cid) {
                            self.state = State::File(walk);
                            break Some(Ok((visit.cid, visit.block)));
                        }
                    }
                }
            },
        };
        if matches!(item, Some(Err(_))) {
            self.state = State::Done;
        }
        item
    }
}

fn decode(cid: ContentId, block: &[u8]) -> Result<PbNodeRef<'_>, ReadError> {
    dagpb::decode_ref(block).map_err(|source| ReadError::DagPb {
        cid,
        source: Box::new(source),
    })
}

fn all_links(cid: ContentId, block: &[u8]) -> Result<Vec<ContentId>, ReadError> {
    if cid.codec() != CODEC_DAG_PB {
        return Ok(Vec::new());
    }
    let node = decode(cid, block)?;
    node.links
        .iter()
        .enumerate()
        .map(|(index, link)| link_cid(cid, index, link))
        .collect()
}

fn all_links_state(root: ContentId, block: &[u8]) -> Result<State, ReadError> {
    let children = all_links(root, block)?;
    Ok(links_state(children, false))
}

fn links_state(children: Vec<ContentId>, hamt_only: bool) -> State {
    if children.is_empty() {
        return State::Done;
    }
    State::Links {
        stack: vec![LinkFrame { children, next: 0 }],
        hamt_only,
    }
}

fn entity_state(
    root: ContentId,
    block: &Bytes,
    entity_bytes: Option<EntityBytes>,
) -> Result<State, ReadError> {
    if root.codec() != CODEC_DAG_PB {
        return Ok(State::Done);
    }
    let node = decode(root, block)?;
    // Non-UnixFS dag-pb: the entity is the block.
    let Some(Ok(unixfs)) = node.data.map(UnixFsData::decode) else {
        return Ok(State::Done);
    };
    match unixfs.kind {
        DataType::File | DataType::Raw => match entity_bytes {
            None => all_links_state(root, block),
            Some(range) => {
                let size_bytes = file_node_size(root, &unixfs, node.links.len(), 0)?;
                Ok(match range.resolve(size_bytes) {
                    None => State::Done,
                    Some((from, to)) => {
                        State::File(FileWalk::new(root, block.clone(), from, to + 1))
                    }
                })
            }
        },
        DataType::HamtShard => Ok(links_state(shard_children(root, &node, &unixfs)?, true)),
        DataType::Directory | DataType::Symlink | DataType::Metadata => Ok(State::Done),
    }
}

/// Links of a HAMT shard node that point at sub-shards: their names are
/// exactly the hex bucket prefix (entries append the entry name to it).
fn shard_children(
    cid: ContentId,
    node: &PbNodeRef<'_>,
    unixfs: &UnixFsData<'_>,
) -> Result<Vec<ContentId>, ReadError> {
    let fanout = unixfs
        .fanout
        .filter(|f| f.is_power_of_two() && (2..=4096).contains(f))
        .ok_or(ReadError::HamtFanout {
            cid,
            fanout: unixfs.fanout,
        })?;
    let prefix_len = format!("{:X}", fanout - 1).len();
    let mut children = Vec::new();
    for (index, link) in node.links.iter().enumerate() {
        if link.name.map_or(0, <[u8]>::len) == prefix_len {
            children.push(link_cid(cid, index, link)?);
        }
    }
    Ok(children)
}

fn hamt_subshard_children(cid: ContentId, block: &[u8]) -> Result<Vec<ContentId>, ReadError> {
    if cid.codec() != CODEC_DAG_PB {
        return Err(ReadError::HamtChild {
            cid,
            kind: "raw block",
        });
    }
    let node = decode(cid, block)?;
    let unixfs = crate::reader::unixfs_of(cid, node.data)?;
    if unixfs.kind != DataType::HamtShard {
        return Err(ReadError::HamtChild {
            cid,
            kind: unixfs.kind.name(),
        });
    }
    shard_children(cid, &node, &unixfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dag_scope_parses() {
        assert_eq!(parse_dag_scope("block"), Ok(DagScope::Block));
        assert_eq!("entity".parse::<DagScope>(), Ok(DagScope::Entity));
        assert_eq!(parse_dag_scope("all"), Ok(DagScope::All));
        for bad in ["", "ALL", "blocks", " all"] {
            assert!(
                matches!(
                    parse_dag_scope(bad),
                    Err(GatewayParamError::DagScope { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn entity_bytes_parse_like_boxo() {
        let ok = |s: &str, from: i64, to: Option<i64>| {
            let parsed = EntityBytes::parse(s).unwrap();
            assert_eq!(parsed, EntityBytes { from, to }, "{s}");
            assert_eq!(parsed.to_string(), s);
        };
        ok("0:*", 0, None);
        ok("0:0", 0, Some(0));
        ok("-1024:*", -1024, None);
        ok("499:-1000", 499, Some(-1000));
        ok("-5:-1", -5, Some(-1));
        ok("-5:3", -5, Some(3));
        ok("9223372036854775807:*", i64::MAX, None);
        ok("-9223372036854775808:*", i64::MIN, None);
        for bad in [
            "",
            "0",
            "0-5",
            "a:5",
            "5:b",
            "5:",
            ":5",
            "+1:2",
            "1:+2",
            " 1:2",
            "10:5",
            "-1:-5",
            "0:*:1",
            "9223372036854775808:*",
            "1:**",
        ] {
            assert!(
                matches!(
                    EntityBytes::parse(bad),
                    Err(GatewayParamError::EntityBytes { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn entity_bytes_resolve() {
        let r = |from: i64, to: Option<i64>, size: u64| EntityBytes { from, to }.resolve(size);
        assert_eq!(r(0, None, 100), Some((0, 99)));
        assert_eq!(r(0, Some(0), 100), Some((0, 0)));
        assert_eq!(r(10, Some(1000), 100), Some((10, 99)));
        assert_eq!(r(-10, None, 100), Some((90, 99)));
        assert_eq!(r(-1000, None, 100), Some((0, 99)));
        assert_eq!(r(5, Some(-10), 100), Some((5, 90)));
        assert_eq!(r(-20, Some(-10), 100), Some((80, 90)));
        assert_eq!(r(0, Some(-100), 100), Some((0, 0)));
        assert_eq!(r(0, Some(-101), 100), None);
        assert_eq!(r(100, None, 100), None);
        assert_eq!(r(95, Some(-10), 100), None);
        assert_eq!(r(0, None, 0), None);
        assert_eq!(r(i64::MIN, None, 10), Some((0, 9)));
        assert_eq!(
            r(i64::MAX, Some(i64::MAX), u64::MAX),
            Some((i64::MAX as u64, i64::MAX as u64))
        );
    }
}
