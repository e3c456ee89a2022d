//! The genesis file: the YAML an operator reads and ships to every node, and
//! its conversion to and from [`Genesis`] (whose canonical encoding, not this
//! YAML, is what the chain id hashes).
//!
//! ```yaml
//! chain_name: local
//! genesis_time_ms: 1767225600000
//! validators:
//!   - 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29
//! accounts:
//!   - public_key: 8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c
//!     balance: 1000000
//! ```
//!
//! Every problem is reported with the file, line and column and the field
//! (`validators[2]`), and all of them at once: bad hex, a key that is not a
//! curve point, a duplicate validator or account, an empty validator set.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use metanode_chain::types::{Genesis, GenesisAccount, ValidatorSet};
use metanode_core::keys::PublicKey;
use metanode_core::limits::{
    CHAIN_GENESIS_ACCOUNTS_COUNT_MAX, CHAIN_NAME_LEN_MAX, CHAIN_VALIDATORS_COUNT_MAX,
    CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX,
};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// One problem in a genesis file, on the line that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisProblem {
    /// 1-based; 0 when the parser could not say.
    pub line: u64,
    pub column: u64,
    /// `validators[2]`, `accounts[0].public_key`; empty for the document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for GenesisProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a genesis file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GenesisFileError {
    #[error("cannot read genesis file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("genesis file {source_name} is larger than {size_bytes_max} bytes")]
    TooLarge {
        source_name: String,
        size_bytes_max: u64,
    },
    #[error("invalid genesis file {source_name}:\n{}", problems.iter().map(|p| format!("{source_name}:{p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        source_name: String,
        problems: Vec<GenesisProblem>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisDoc {
    chain_name: Spanned<String>,
    genesis_time_ms: Spanned<u64>,
    validators: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    accounts: Option<Spanned<Vec<AccountDoc>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountDoc {
    public_key: Spanned<String>,
    balance: Spanned<u64>,
}

#[derive(Serialize)]
struct GenesisOut<'a> {
    chain_name: &'a str,
    genesis_time_ms: u64,
    validators: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    accounts: Vec<AccountOut>,
}

#[derive(Serialize)]
struct AccountOut {
    public_key: String,
    balance: u64,
}

/// Reads and checks the genesis file at `path`.
pub fn load(path: &Path) -> Result<Genesis, GenesisFileError> {
    let read_error = |source| GenesisFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    let source_name = path.display().to_string();
    if bytes.len() as u64 > CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX {
        return Err(GenesisFileError::TooLarge {
            source_name,
            size_bytes_max: CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| GenesisFileError::Invalid {
        source_name: source_name.clone(),
        problems: vec![GenesisProblem {
            line: 0,
            column: 0,
            field: String::new(),
            message: format!(
                "the file is not valid utf-8 (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        }],
    })?;
    parse(&text, &source_name)
}

/// Parses and checks genesis YAML; `source_name` names it in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Genesis, GenesisFileError> {
    let invalid = |problems| GenesisFileError::Invalid {
        source_name: source_name.to_string(),
        problems,
    };
    let doc: GenesisDoc = serde_saphyr::from_str(text).map_err(|err| {
        let (line, column) = err
            .location()
            .map_or((0, 0), |loc| (loc.line(), loc.column()));
        invalid(vec![GenesisProblem {
            line,
            column,
            field: String::new(),
            message: err.without_snippet().to_string(),
        }])
    })?;

    let mut problems = Vec::new();
    let mut problem = |at: &serde_saphyr::Location, field: String, message: String| {
        problems.push(GenesisProblem {
            line: at.line(),
            column: at.column(),
            field,
            message,
        });
    };

    let name = &doc.chain_name.value;
    if name.is_empty() || name.len() > CHAIN_NAME_LEN_MAX as usize {
        problem(
            &doc.chain_name.referenced,
            "chain_name".into(),
            format!(
                "is {} bytes; a chain name has 1..={CHAIN_NAME_LEN_MAX}",
                name.len()
            ),
        );
    }

    let listed = &doc.validators.value;
    if listed.is_empty() {
        problem(
            &doc.validators.referenced,
            "validators".into(),
            "the validator set is empty; list at least one validator's public key".into(),
        );
    }
    if listed.len() > CHAIN_VALIDATORS_COUNT_MAX as usize {
        problem(
            &doc.validators.referenced,
            "validators".into(),
            format!(
                "{} validators; at most {CHAIN_VALIDATORS_COUNT_MAX}",
                listed.len()
            ),
        );
    }
    let mut validators: Vec<PublicKey> = Vec::with_capacity(listed.len());
    let mut validator_index: std::collections::HashMap<PublicKey, usize> =
        std::collections::HashMap::new();
    for (i, entry) in listed.iter().enumerate() {
        let field = format!("validators[{i}]");
        match parse_key(&entry.value) {
            Err(message) => problem(&entry.referenced, field, message),
            Ok(key) => {
                if let Some(first) = validator_index.get(&key) {
                    problem(
                        &entry.referenced,
                        field,
                        format!(
                            "{key} is already validators[{first}]; each validator is listed once"
                        ),
                    );
                } else {
                    validator_index.insert(key, i);
                    validators.push(key);
                }
            }
        }
    }

    let mut accounts = Vec::new();
    if let Some(listed) = &doc.accounts {
        if listed.value.len() > CHAIN_GENESIS_ACCOUNTS_COUNT_MAX as usize {
            problem(
                &listed.referenced,
                "accounts".into(),
                format!(
                    "{} accounts; at most {CHAIN_GENESIS_ACCOUNTS_COUNT_MAX}",
                    listed.value.len()
                ),
            );
        }
        let mut account_index: std::collections::HashMap<PublicKey, usize> =
            std::collections::HashMap::new();
        for (i, account) in listed.value.iter().enumerate() {
            let field = format!("accounts[{i}].public_key");
            match parse_key(&account.public_key.value) {
                Err(message) => problem(&account.public_key.referenced, field, message),
                Ok(key) => {
                    if let Some(first) = account_index.get(&key) {
                        problem(
                            &account.public_key.referenced,
                            field,
                            format!("{key} is already accounts[{first}]; fund an account once"),
                        );
                    } else {
                        account_index.insert(key, i);
                        accounts.push(GenesisAccount {
                            key,
                            balance: account.balance.value,
                        });
                    }
                }
            }
        }
    }

    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.line, p.column));
        return Err(invalid(problems));
    }
    // Checked above (non-empty, bounded, no duplicates), so this cannot
    // fail; report rather than assume.
    let validators = ValidatorSet::new(validators).map_err(|e| {
        invalid(vec![GenesisProblem {
            line: doc.validators.referenced.line(),
            column: doc.validators.referenced.column(),
            field: "validators".into(),
            message: e.to_string(),
        }])
    })?;
    Ok(Genesis {
        chain_name: doc.chain_name.value,
        genesis_time_ms: doc.genesis_time_ms.value,
        validators,
        accounts,
    })
}

fn parse_key(text: &str) -> Result<PublicKey, String> {
    text.trim().parse::<PublicKey>().map_err(|e| {
        let shown: String = text.chars().take(80).collect();
        format!("{shown:?} is not an Ed25519 public key: {e}")
    })
}

/// The genesis as YAML, with its chain id in a comment at the top.
pub fn to_yaml(genesis: &Genesis) -> Result<String, serde_saphyr::SerializeError> {
    let out = GenesisOut {
        chain_name: &genesis.chain_name,
        genesis_time_ms: genesis.genesis_time_ms,
        validators: genesis
            .validators
            .validators()
            .iter()
            .map(ToString::to_string)
            .collect(),
        accounts: genesis
            .accounts
            .iter()
            .map(|a| AccountOut {
                public_key: a.key.to_string(),
                balance: a.balance,
            })
            .collect(),
    };
    let body = serde_saphyr::to_string(&out)?;
    Ok(format!(
        "# Genesis of a Metanode chain. Every node of the chain must start from this\n\
         # exact document: the chain id is the hash of its canonical encoding.\n\
         # chain id: {}\n{body}",
        genesis.chain_id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metanode_core::keys::SigningKey;

    fn key(i: u8) -> String {
        SigningKey::from_seed(&[i; 32]).public_key().to_string()
    }

    fn problems(text: &str) -> Vec<(u64, u64, String, String)> {
        match parse(text, "g.yaml") {
            Ok(g) => panic!("expected problems, got {g:?}"),
            Err(GenesisFileError::Invalid {
                source_name,
                problems,
            }) => {
                assert_eq!(source_name, "g.yaml");
                problems
                    .into_iter()
                    .map(|p| (p.line, p.column, p.field, p.message))
                    .collect()
            }
            Err(other) => panic!("expected problems, got {other}"),
        }
    }

    #[test]
    fn round_trips_and_keeps_the_chain_id() {
        let text = format!(
            "chain_name: test\ngenesis_time_ms: 1700000000000\nvalidators:\n  - {}\n  - {}\naccounts:\n  - public_key: {}\n    balance: 500\n",
            key(1),
            key(2),
            key(9)
        );
        let genesis = parse(&text, "g.yaml").expect("valid");
        assert_eq!(genesis.chain_name, "test");
        assert_eq!(genesis.genesis_time_ms, 1_700_000_000_000);
        assert_eq!(genesis.validators.len(), 2);
        assert_eq!(genesis.validators.validators()[1].to_string(), key(2));
        assert_eq!(genesis.accounts.len(), 1);
        assert_eq!(genesis.accounts[0].balance, 500);
        let yaml = to_yaml(&genesis).expect("serialize");
        assert!(
            yaml.contains(&format!("# chain id: {}\n", genesis.chain_id())),
            "{yaml}"
        );
        let again = parse(&yaml, "again").expect("reparse");
        assert_eq!(again, genesis);
        assert_eq!(again.hash(), genesis.hash());
        // Accounts are optional.
        let no_accounts = format!(
            "chain_name: x\ngenesis_time_ms: 1\nvalidators: [{}]\n",
            key(1)
        );
        assert!(parse(&no_accounts, "g").expect("valid").accounts.is_empty());
    }

    #[test]
    fn every_problem_names_its_line_and_field() {
        let text = format!(
            "chain_name: test\ngenesis_time_ms: 1\nvalidators:\n  - {}\n  - abc\n  - {}\naccounts:\n  - public_key: {}\n    balance: 1\n  - public_key: {}\n    balance: 2\n",
            key(1),
            key(1),
            key(5),
            key(5)
        );
        let found = problems(&text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!((found[0].0, found[0].2.as_str()), (5, "validators[1]"));
        assert_eq!(
            found[0].3,
            "\"abc\" is not an Ed25519 public key: public key hex: expected 64 hex digits, got 3 bytes"
        );
        assert_eq!((found[1].0, found[1].2.as_str()), (6, "validators[2]"));
        assert_eq!(
            found[1].3,
            format!(
                "{} is already validators[0]; each validator is listed once",
                key(1)
            )
        );
        assert_eq!(
            (found[2].0, found[2].2.as_str()),
            (10, "accounts[1].public_key")
        );
        assert!(
            found[2].3.contains("is already accounts[0]"),
            "{}",
            found[2].3
        );
    }

    #[test]
    fn empty_sets_unknown_fields_and_bad_types_are_refused() {
        let found = problems("chain_name: t\ngenesis_time_ms: 1\nvalidators: []\n");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].2.as_str()), (3, "validators"));
        assert!(found[0].3.contains("the validator set is empty"));

        let found = problems(&format!(
            "chain_name: t\ngenesis_time_ms: 1\nvalidators: [{}]\nvalidator_admin: x\n",
            key(1)
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 4, "{found:?}");
        assert!(found[0].3.contains("validator_admin"), "{found:?}");

        let found = problems(&format!(
            "chain_name: t\ngenesis_time_ms: soon\nvalidators: [{}]\n",
            key(1)
        ));
        assert_eq!(found[0].0, 2, "{found:?}");

        let found = problems(&format!(
            "chain_name: \"\"\ngenesis_time_ms: 1\nvalidators: [{}]\n",
            key(1)
        ));
        assert_eq!(
            found,
            [(
                1,
                13,
                "chain_name".to_string(),
                "is 0 bytes; a chain name has 1..=64".to_string()
            )]
        );
    }

    #[test]
    fn the_error_message_lists_file_line_and_field() {
        let err = parse(
            "chain_name: t\ngenesis_time_ms: 1\nvalidators:\n  - 00\n",
            "net/genesis.yaml",
        )
        .expect_err("bad key");
        let text = err.to_string();
        assert!(
            text.starts_with("invalid genesis file net/genesis.yaml:\nnet/genesis.yaml:4:"),
            "{text}"
        );
        assert!(
            text.contains(": validators[0]: \"00\" is not an Ed25519 public key"),
            "{text}"
        );
    }
}
