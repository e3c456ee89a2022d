//! Merkle roots over a run's events, environment and declared inputs.
//!
//! Each root is `metanode_core::merkle::root_of` (RFC 9162 shape, BLAKE3,
//! leaf tag 0x00, node tag 0x01) over one leaf per item; the empty list has
//! the empty-tree root. What a leaf holds, and in which order the leaves go,
//! is chosen so that replays under perturbation give the same root:
//!
//! - events: in observed order (the order is the trace); leaf = canonical
//!   [`Event`];
//! - environment: sorted by the bytes of the whole `KEY=value` entry, because
//!   replay shuffles env order on purpose and the order must not matter; a
//!   name may appear only once, since with duplicates `getenv` returns
//!   whichever comes first and that would change with the shuffle; leaf = the
//!   entry's bytes;
//! - inputs: sorted by name (names are unique); leaf = canonical
//!   [`InputRef`].

use metanode_core::cid::ContentId;
use metanode_core::encoding::{Encode, EncodeError, Writer};
use metanode_core::hash::Hash32;
use metanode_core::merkle::{leaf_hash, root_of};

use crate::limits::{
    ENV_ENTRIES_COUNT_MAX, ENV_ENTRY_LEN_BYTES_MAX, EVENTS_COUNT_MAX, INPUT_CID_LEN_BYTES_MAX,
    INPUT_NAME_LEN_BYTES_MAX, INPUTS_COUNT_MAX,
};
use crate::record::{ExitKind, ViolationRecord};

// ---------------------------------------------------------------- events

/// One entry of a run's trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Violation(ViolationRecord),
    /// This many violations came after the record's list was full.
    ViolationsDropped {
        count: u64,
    },
    /// The run ended; always the last event.
    Exit(ExitKind),
}

const EVENT_VIOLATION: u8 = 0;
const EVENT_VIOLATIONS_DROPPED: u8 = 1;
const EVENT_EXIT: u8 = 2;

impl Encode for Event {
    fn encode(&self, w: &mut Writer) {
        match self {
            Event::Violation(v) => {
                w.put_u8(EVENT_VIOLATION);
                v.encode(w);
            }
            Event::ViolationsDropped { count } => {
                w.put_u8(EVENT_VIOLATIONS_DROPPED);
                w.put_u64(*count);
            }
            Event::Exit(exit) => {
                w.put_u8(EVENT_EXIT);
                exit.encode(w);
            }
        }
    }
}

/// Why an events root could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    #[error("{count} events exceed the maximum {max}")]
    TooMany { count: usize, max: u32 },
    #[error("event {index} does not fit the canonical encoding: {source}")]
    Encode { index: usize, source: EncodeError },
}

/// Merkle root over `events` in the given order; leaf `i` is the canonical
/// encoding of `events[i]`.
pub fn events_root(events: &[Event]) -> Result<Hash32, EventsError> {
    if events.len() > EVENTS_COUNT_MAX as usize {
        return Err(EventsError::TooMany {
            count: events.len(),
            max: EVENTS_COUNT_MAX,
        });
    }
    let leaves = events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            event
                .to_canonical_bytes()
                .map(|bytes| leaf_hash(&bytes))
                .map_err(|source| EventsError::Encode { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(root_of(&leaves))
}

// ---------------------------------------------------------------- env

/// Why an environment could not be hashed. Indices are positions in the
/// list as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{count} environment entries exceed the maximum {max}")]
    TooMany { count: usize, max: u32 },
    #[error("environment entry {index} is {len} bytes, more than the maximum {max}")]
    EntryTooLong { index: usize, len: usize, max: u32 },
    #[error("environment entry {index} ({entry:?}) is not KEY=value")]
    MissingEquals { index: usize, entry: String },
    #[error("environment entry {index} contains a NUL byte")]
    ContainsNul { index: usize },
    #[error(
        "environment variable {name:?} is set twice (entries {first} and {second}); which one a program sees would depend on env order"
    )]
    DuplicateName {
        name: String,
        first: usize,
        second: usize,
    },
}

/// Merkle root over the environment, independent of its order (see the
/// module docs). Entries must be `KEY=value` with a non-empty key, no NUL,
/// and each key at most once.
pub fn env_root(env: &[String]) -> Result<Hash32, EnvError> {
    if env.len() > ENV_ENTRIES_COUNT_MAX as usize {
        return Err(EnvError::TooMany {
            count: env.len(),
            max: ENV_ENTRIES_COUNT_MAX,
        });
    }
    // (name, index) pairs, to find duplicates after sorting by name.
    let mut names: Vec<(&str, usize)> = Vec::with_capacity(env.len());
    for (index, entry) in env.iter().enumerate() {
        if entry.len() > ENV_ENTRY_LEN_BYTES_MAX as usize {
            return Err(EnvError::EntryTooLong {
                index,
                len: entry.len(),
                max: ENV_ENTRY_LEN_BYTES_MAX,
            });
        }
        if entry.contains('\0') {
            return Err(EnvError::ContainsNul { index });
        }
        match entry.split_once('=') {
            Some((name, _)) if !name.is_empty() => names.push((name, index)),
            _ => {
                return Err(EnvError::MissingEquals {
                    index,
                    entry: entry.chars().take(64).collect(),
                });
            }
        }
    }
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(EnvError::DuplicateName {
            name: pair[0].0.to_owned(),
            first: pair[0].1.min(pair[1].1),
            second: pair[0].1.max(pair[1].1),
        });
    }
    let mut sorted: Vec<&[u8]> = env.iter().map(|e| e.as_bytes()).collect();
    sorted.sort_unstable();
    let leaves: Vec<Hash32> = sorted.iter().map(|e| leaf_hash(e)).collect();
    Ok(root_of(&leaves))
}

// ---------------------------------------------------------------- inputs

/// How a declared input's content is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputDigest {
    /// A binary CID of a blob in the store (see `metanode_core::cid`).
    Cid(Vec<u8>),
    /// BLAKE3-256 of the content, for inputs that are not store blobs
    /// (a rootfs digest, the canonical args).
    Blake3([u8; 32]),
}

const INPUT_DIGEST_CID: u8 = 0;
const INPUT_DIGEST_BLAKE3: u8 = 1;

/// One declared input of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRef {
    /// Unique within the run; what the cage calls it (a path, "rootfs", ...).
    pub name: String,
    pub digest: InputDigest,
    pub size_bytes: u64,
}

impl Encode for InputRef {
    fn encode(&self, w: &mut Writer) {
        w.put_str_bounded(&self.name, INPUT_NAME_LEN_BYTES_MAX);
        match &self.digest {
            InputDigest::Cid(cid) => {
                w.put_u8(INPUT_DIGEST_CID);
                w.put_bytes_bounded(cid, INPUT_CID_LEN_BYTES_MAX);
            }
            InputDigest::Blake3(digest) => {
                w.put_u8(INPUT_DIGEST_BLAKE3);
                w.put_raw(digest);
            }
        }
        w.put_u64(self.size_bytes);
    }
}

/// Why declared inputs could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputsError {
    #[error("{count} inputs exceed the maximum {max}")]
    TooMany { count: usize, max: u32 },
    #[error("input {index} has an empty name")]
    EmptyName { index: usize },
    #[error("input {name:?} has a name of {len} bytes, more than the maximum {max}")]
    NameTooLong { name: String, len: usize, max: u32 },
    #[error("input {name:?} is declared twice")]
    DuplicateName { name: String },
    #[error("input {name:?} has cid {} that is not a valid binary cid: {reason}", hex::encode(.cid))]
    BadCid {
        name: String,
        cid: Vec<u8>,
        reason: String,
    },
}

/// Merkle root over `inputs` sorted by name, so declaration order does not
/// matter. CIDs must parse and be in their canonical binary form.
pub fn input_root(inputs: &[InputRef]) -> Result<Hash32, InputsError> {
    if inputs.len() > INPUTS_COUNT_MAX as usize {
        return Err(InputsError::TooMany {
            count: inputs.len(),
            max: INPUTS_COUNT_MAX,
        });
    }
    for (index, input) in inputs.iter().enumerate() {
        if input.name.is_empty() {
            return Err(InputsError::EmptyName { index });
        }
        if input.name.len() > INPUT_NAME_LEN_BYTES_MAX as usize {
            return Err(InputsError::NameTooLong {
                name: input.name.chars().take(64).collect(),
                len: input.name.len(),
                max: INPUT_NAME_LEN_BYTES_MAX,
            });
        }
        if let InputDigest::Cid(cid) = &input.digest {
            check_cid(&input.name, cid)?;
        }
    }
    let mut sorted: Vec<&InputRef> = inputs.iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    if let Some(pair) = sorted.windows(2).find(|p| p[0].name == p[1].name) {
        return Err(InputsError::DuplicateName {
            name: pair[0].name.clone(),
        });
    }
    let leaves: Vec<Hash32> = sorted
        .iter()
        .map(|input| {
            let bytes = input
                .to_canonical_bytes()
                .expect("name and cid lengths were checked against the encoding bounds");
            leaf_hash(&bytes)
        })
        .collect();
    Ok(root_of(&leaves))
}

fn check_cid(name: &str, cid: &[u8]) -> Result<(), InputsError> {
    let bad = |reason: String| InputsError::BadCid {
        name: name.to_owned(),
        cid: cid.to_vec(),
        reason,
    };
    if cid.len() > INPUT_CID_LEN_BYTES_MAX as usize {
        return Err(bad(format!(
            "{} bytes, more than the maximum {INPUT_CID_LEN_BYTES_MAX}",
            cid.len()
        )));
    }
    let parsed = ContentId::from_bytes(cid).map_err(|e| bad(e.to_string()))?;
    // A CID with a non-minimal varint names the same blob with other bytes;
    // only the canonical form may enter a root.
    if parsed.to_bytes() != cid {
        return Err(bad(format!(
            "not canonical: the canonical form is {}",
            hex::encode(parsed.to_bytes())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ViolationKind;
    use metanode_core::merkle::empty_root;

    fn env(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn env_root_is_independent_of_order() {
        let a = env(&["PATH=/bin", "HOME=/root", "LANG=C.UTF-8", "A=1=2"]);
        let root = env_root(&a).unwrap();
        // Every rotation and the reverse give the same root.
        for shift in 0..a.len() {
            let mut b = a.clone();
            b.rotate_left(shift);
            assert_eq!(env_root(&b).unwrap(), root, "rotation {shift}");
        }
        let mut rev = a.clone();
        rev.reverse();
        assert_eq!(env_root(&rev).unwrap(), root);
        // The root is the Merkle root over the sorted entries' bytes.
        let leaves: Vec<Hash32> = ["A=1=2", "HOME=/root", "LANG=C.UTF-8", "PATH=/bin"]
            .iter()
            .map(|e| leaf_hash(e.as_bytes()))
            .collect();
        assert_eq!(root, root_of(&leaves));
        // Any change of a value changes it.
        let mut changed = a.clone();
        changed[1] = "HOME=/home".into();
        assert_ne!(env_root(&changed).unwrap(), root);
        assert_eq!(env_root(&[]).unwrap(), empty_root());
    }

    #[test]
    fn env_root_rejects_ambiguous_entries() {
        assert_eq!(
            env_root(&env(&["A=1", "B=2", "A=3"])),
            Err(EnvError::DuplicateName {
                name: "A".into(),
                first: 0,
                second: 2
            })
        );
        assert_eq!(
            env_root(&env(&["A=1", "NOVALUE"])),
            Err(EnvError::MissingEquals {
                index: 1,
                entry: "NOVALUE".into()
            })
        );
        assert!(matches!(
            env_root(&env(&["=x"])),
            Err(EnvError::MissingEquals { index: 0, .. })
        ));
        assert_eq!(
            env_root(&env(&["A=1\0"])),
            Err(EnvError::ContainsNul { index: 0 })
        );
        let long = format!("A={}", "x".repeat(ENV_ENTRY_LEN_BYTES_MAX as usize));
        assert!(matches!(
            env_root(&[long]),
            Err(EnvError::EntryTooLong { index: 0, .. })
        ));
        let many: Vec<String> = (0..=ENV_ENTRIES_COUNT_MAX)
            .map(|i| format!("V{i}=1"))
            .collect();
        assert!(matches!(env_root(&many), Err(EnvError::TooMany { .. })));
    }

    fn cid_of(data: &[u8]) -> Vec<u8> {
        ContentId::raw_blake3_of(data).to_bytes()
    }

    #[test]
    fn input_root_is_independent_of_declaration_order() {
        let inputs = vec![
            InputRef {
                name: "data/b.bin".into(),
                digest: InputDigest::Cid(cid_of(b"bbb")),
                size_bytes: 3,
            },
            InputRef {
                name: "rootfs".into(),
                digest: InputDigest::Blake3([7; 32]),
                size_bytes: 4096,
            },
            InputRef {
                name: "data/a.bin".into(),
                digest: InputDigest::Cid(cid_of(b"a")),
                size_bytes: 1,
            },
        ];
        let root = input_root(&inputs).unwrap();
        let mut reversed = inputs.clone();
        reversed.reverse();
        assert_eq!(input_root(&reversed).unwrap(), root);

        // Leaf layout: name, digest tag + body, size.
        let mut w = Writer::new();
        w.put_str("data/a.bin");
        w.put_u8(0);
        w.put_bytes(&cid_of(b"a"));
        w.put_u64(1);
        let first = leaf_hash(&w.finish().unwrap());
        let leaves: Vec<Hash32> = [&inputs[2], &inputs[0], &inputs[1]]
            .iter()
            .map(|i| leaf_hash(&i.to_canonical_bytes().unwrap()))
            .collect();
        assert_eq!(leaves[0], first);
        assert_eq!(root, root_of(&leaves));

        // Size, digest and name all matter.
        let mut other = inputs.clone();
        other[1].size_bytes += 1;
        assert_ne!(input_root(&other).unwrap(), root);
        let mut other = inputs.clone();
        other[0].digest = InputDigest::Cid(cid_of(b"bbc"));
        assert_ne!(input_root(&other).unwrap(), root);
    }

    #[test]
    fn input_root_rejects_bad_declarations() {
        let good = InputRef {
            name: "x".into(),
            digest: InputDigest::Cid(cid_of(b"x")),
            size_bytes: 1,
        };
        assert_eq!(
            input_root(&[good.clone(), good.clone()]),
            Err(InputsError::DuplicateName { name: "x".into() })
        );
        let mut empty = good.clone();
        empty.name.clear();
        assert_eq!(
            input_root(&[good.clone(), empty]),
            Err(InputsError::EmptyName { index: 1 })
        );
        let mut trailing = good.clone();
        if let InputDigest::Cid(c) = &mut trailing.digest {
            c.push(0);
        }
        let err = input_root(&[trailing]).unwrap_err();
        assert!(
            matches!(&err, InputsError::BadCid { name, .. } if name == "x"),
            "{err}"
        );
        let mut garbage = good.clone();
        garbage.digest = InputDigest::Cid(vec![0xff; 10]);
        assert!(matches!(
            input_root(&[garbage]),
            Err(InputsError::BadCid { .. })
        ));
        assert_eq!(input_root(&[]).unwrap(), empty_root());
    }

    #[test]
    fn events_root_depends_on_order_and_content() {
        let v = |n: i64| {
            Event::Violation(ViolationRecord {
                kind: ViolationKind::Syscall {
                    nr: n,
                    name: "bpf".into(),
                },
                detail: String::new(),
            })
        };
        let a = [v(321), v(425), Event::Exit(ExitKind::Exited(0))];
        let b = [v(425), v(321), Event::Exit(ExitKind::Exited(0))];
        let root = events_root(&a).unwrap();
        assert_ne!(root, events_root(&b).unwrap());
        let leaves: Vec<Hash32> = a
            .iter()
            .map(|e| leaf_hash(&e.to_canonical_bytes().unwrap()))
            .collect();
        assert_eq!(root, root_of(&leaves));
        // The exit event's leaf is tag 2, exit tag 0, code.
        assert_eq!(a[2].to_canonical_bytes().unwrap(), vec![2, 0, 0]);
        let too_many = vec![Event::Exit(ExitKind::Exited(0)); EVENTS_COUNT_MAX as usize + 1];
        assert!(matches!(
            events_root(&too_many),
            Err(EventsError::TooMany { .. })
        ));
    }
}
