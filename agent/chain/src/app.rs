//! The application interface the chain drives, and the built-in ledger.
//!
//! Bank, court and gov plug in here. The chain guarantees: `check_tx` is
//! only called with transactions whose signature and chain id were already
//! checked; `execute` may be called several times per height (once per
//! candidate block, on the proposer and on every validator) and must not
//! change committed state; `commit` is called exactly once per decided
//! block, in height order. Execution must be deterministic: the same
//! committed state, context and transactions give the same receipts, state
//! root and validator set on every node, or the chain halts (validators
//! reject a block whose roots they cannot reproduce).
//!
//! # The built-in ledger ([`LedgerApp`])
//!
//! Enough state for the chain to be usable and benchmarkable on its own:
//! accounts (`balance`, `next_nonce`), a payload log (a count and a rolling
//! hash, never the payloads themselves) and the validator set.
//!
//! Execution of one transaction, in block order:
//!
//! 1. **Not applicable** (receipt status ≠ 0, `fee_charged` = 0, no state
//!    change, nonce *not* consumed): wrong chain id, nonce below or above
//!    the sender's next nonce, nonce `u64::MAX` (no successor), fee below
//!    [`LEDGER_FEE_MIN`]. The mempool never selects such transactions, but a
//!    proposer may still include them; validators do not reject the block
//!    for it (the receipts and roots say what happened), and the proposer
//!    gains nothing since no fee is charged.
//! 2. Otherwise the nonce is consumed and the fee is charged: `min(fee,
//!    balance)`. If the balance did not cover the whole fee the transaction
//!    fails there ([`STATUS_INSUFFICIENT_FUNDS`]) having taken what there was.
//! 3. `Transfer`: if the balance left after the fee is below `amount`, or
//!    the recipient's balance would overflow, the transaction fails with the
//!    fee still charged and nothing moved. A transfer to oneself succeeds and
//!    moves nothing. Unknown recipients get an account.
//! 4. `Payload`: the payload is appended to the log (receipt output = its
//!    index, 8 bytes little-endian) unless it starts with
//!    [`VALIDATOR_SET_PAYLOAD_PREFIX`]: that prefix is reserved for
//!    validator-set changes, accepted only from the admin key set by
//!    [`LedgerApp::with_validator_admin`] (none by default), whose payload
//!    carries the canonical bytes of the next [`ValidatorSet`] (output = its
//!    hash). The last such change in a block wins; without one
//!    `next_validators` is `ctx.validators`. Governance will replace this.
//! 5. After the last transaction the fees of the block go to
//!    `ctx.proposer` (saturating: anything beyond `u64::MAX` is burned,
//!    only possible when genesis balances already sum past `u64::MAX`).
//!
//! All arithmetic is checked; no transaction can make execution panic.
//!
//! State root: re-hashing every account per block would not sustain
//! thousands of transactions per second, so the root is a chained
//! commitment to the whole history:
//!
//! - genesis: `H(0x1a || "metanode/ledger/genesis/v1" || chain_id ||
//!   validator_set_hash || count u64 || (key || balance u64 || 0 u64)*)`
//!   over the accounts in key order;
//! - block: `H(0x1a || "metanode/ledger/block/v1" || height u64 ||
//!   previous root || count u64 || receipts (canonical)* || count u64 ||
//!   (key || balance u64 || next_nonce u64)* of the accounts the block
//!   touched, in key order || payload_count u64 || payload_log_hash ||
//!   next validator_set_hash)`.
//!
//! Two ledgers have equal roots only if they started from the same genesis
//! and applied the same blocks with the same results. The price: a root
//! cannot be checked against a snapshot alone (only by replaying), so a
//! snapshot is trusted as much as its source.

use std::collections::{BTreeMap, VecDeque};

use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};
use metanode_core::hash::{Hash32, TaggedHasher, hash_tagged};
use metanode_core::keys::PublicKey;
use metanode_core::limits::CHAIN_RECEIPT_OUTPUT_BYTES_MAX;
use metanode_core::tags::DomainTag;

use crate::types::{ChainId, Genesis, Height, Receipt, SignedTx, TxBody, TxKind, ValidatorSet};

/// Everything execution may depend on besides committed state and the
/// transactions.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BlockContext {
    pub chain_id: ChainId,
    pub height: Height,
    pub timestamp_ms: u64,
    pub proposer: PublicKey,
    /// The set deciding this height; `Execution::next_validators` defaults
    /// to it.
    pub validators: ValidatorSet,
}

/// Result of executing one block's transactions.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Execution {
    /// One receipt per transaction, in block order.
    pub receipts: Vec<Receipt>,
    /// State root after the block.
    pub state_root: Hash32,
    /// Validators deciding `height + 1`.
    pub next_validators: ValidatorSet,
}

/// The 32 bytes of a public key, as error values carry it: a
/// [`PublicKey`] holds a decompressed curve point (about 200 bytes), and
/// carrying that in every `Err` would bloat every `Result` on the admission
/// path. Displays as the same lower-case hex as the key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 32]);

impl From<PublicKey> for KeyId {
    fn from(key: PublicKey) -> Self {
        KeyId(key.to_bytes())
    }
}

impl From<&PublicKey> for KeyId {
    fn from(key: &PublicKey) -> Self {
        KeyId(key.to_bytes())
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why an application refuses a transaction (at admission), or why an
/// included transaction had no effect (in its receipt's output).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxRejection {
    #[error("transaction {tx} is for chain {got}, not this chain {expected}")]
    WrongChain {
        tx: Hash32,
        got: ChainId,
        expected: ChainId,
    },
    #[error("nonce {nonce} of sender {sender} is already used: the next nonce is {expected}")]
    NonceTooLow {
        sender: KeyId,
        nonce: u64,
        expected: u64,
    },
    #[error("nonce {nonce} of sender {sender} skips ahead of the next nonce {expected}")]
    NonceGap {
        sender: KeyId,
        nonce: u64,
        expected: u64,
    },
    #[error("nonce {nonce} of sender {sender} is the last possible nonce and cannot be used")]
    NonceExhausted { sender: KeyId, nonce: u64 },
    #[error("fee {fee} of sender {sender} nonce {nonce} is below the minimum fee {min}")]
    FeeTooLow {
        sender: KeyId,
        nonce: u64,
        fee: u64,
        min: u64,
    },
    #[error(
        "sender {sender} nonce {nonce} has balance {balance} but needs {needed} (fee plus amount)"
    )]
    InsufficientFunds {
        sender: KeyId,
        nonce: u64,
        balance: u64,
        needed: u128,
    },
    #[error("crediting amount {amount} to {to} would overflow its balance {balance}")]
    BalanceOverflow {
        to: KeyId,
        balance: u64,
        amount: u64,
    },
    #[error(
        "sender {sender} nonce {nonce} is not the validator admin and may not send a validator-set payload"
    )]
    NotValidatorAdmin { sender: KeyId, nonce: u64 },
    #[error("validator-set payload of sender {sender} nonce {nonce} is invalid: {reason}")]
    BadValidatorSet {
        sender: KeyId,
        nonce: u64,
        reason: String,
    },
}

/// Receipt status of a successful transaction.
pub const STATUS_OK: u32 = 0;
pub const STATUS_WRONG_CHAIN: u32 = 1;
pub const STATUS_NONCE_TOO_LOW: u32 = 2;
pub const STATUS_NONCE_GAP: u32 = 3;
pub const STATUS_NONCE_EXHAUSTED: u32 = 4;
pub const STATUS_FEE_TOO_LOW: u32 = 5;
pub const STATUS_INSUFFICIENT_FUNDS: u32 = 6;
pub const STATUS_BALANCE_OVERFLOW: u32 = 7;
pub const STATUS_NOT_VALIDATOR_ADMIN: u32 = 8;
pub const STATUS_BAD_VALIDATOR_SET: u32 = 9;

impl TxRejection {
    /// The receipt status an included transaction failing this way gets.
    pub fn status(&self) -> u32 {
        match self {
            TxRejection::WrongChain { .. } => STATUS_WRONG_CHAIN,
            TxRejection::NonceTooLow { .. } => STATUS_NONCE_TOO_LOW,
            TxRejection::NonceGap { .. } => STATUS_NONCE_GAP,
            TxRejection::NonceExhausted { .. } => STATUS_NONCE_EXHAUSTED,
            TxRejection::FeeTooLow { .. } => STATUS_FEE_TOO_LOW,
            TxRejection::InsufficientFunds { .. } => STATUS_INSUFFICIENT_FUNDS,
            TxRejection::BalanceOverflow { .. } => STATUS_BALANCE_OVERFLOW,
            TxRejection::NotValidatorAdmin { .. } => STATUS_NOT_VALIDATOR_ADMIN,
            TxRejection::BadValidatorSet { .. } => STATUS_BAD_VALIDATOR_SET,
        }
    }

    /// A short stable name of the refusal: a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            TxRejection::WrongChain { .. } => "wrong_chain_id",
            TxRejection::NonceTooLow { .. } => "nonce_too_low",
            TxRejection::NonceGap { .. } => "nonce_gap",
            TxRejection::NonceExhausted { .. } => "nonce_exhausted",
            TxRejection::FeeTooLow { .. } => "fee_too_low",
            TxRejection::InsufficientFunds { .. } => "insufficient_funds",
            TxRejection::BalanceOverflow { .. } => "balance_overflow",
            TxRejection::NotValidatorAdmin { .. } => "not_validator_admin",
            TxRejection::BadValidatorSet { .. } => "bad_validator_set",
        }
    }
}

/// What the chain needs from an application.
pub trait Application {
    /// Admission check against committed state; signature and chain id
    /// already checked by the caller.
    fn check_tx(&self, tx: &SignedTx) -> Result<(), TxRejection>;
    /// Next nonce the committed state expects from `sender` (0 for unknown
    /// accounts).
    fn next_nonce(&self, sender: &PublicKey) -> u64;
    /// Executes `txs` on top of committed state without changing it.
    /// Deterministic.
    fn execute(&mut self, ctx: &BlockContext, txs: &[SignedTx]) -> Execution;
    /// Applies the block decided at `ctx.height` (exactly once per height, in
    /// order), returning its execution.
    fn commit(&mut self, ctx: &BlockContext, txs: &[SignedTx]) -> Execution;
    fn committed_height(&self) -> Height;
    fn committed_state_root(&self) -> Hash32;
    /// Canonical snapshot of committed state (for state sync and the
    /// replay-from-genesis checker); each application has its own restore.
    fn snapshot(&self) -> Vec<u8>;
}

/// Smallest fee the ledger accepts. Zero would let any funded account fill
/// blocks for free; one base unit is the smallest charge that makes spam
/// cost something while keeping benchmark accounting trivial. Real pricing
/// belongs to the bank.
pub const LEDGER_FEE_MIN: u64 = 1;

/// Payload prefix reserved for validator-set changes by the admin key.
pub const VALIDATOR_SET_PAYLOAD_PREFIX: &[u8] = b"metanode/validators/v1\0";

/// Executions kept so `commit` of an already executed candidate does not
/// re-execute it. A height sees one candidate per round (plus the
/// proposer's own re-check), so a handful covers several round changes.
const EXECUTION_CACHE_COUNT_MAX: usize = 8;

const SNAPSHOT_VERSIONS: &[u8] = &[1];
/// Bytes of one account in a snapshot: key, balance, next nonce.
const SNAPSHOT_ACCOUNT_BYTES: usize = 32 + 8 + 8;

const GENESIS_ROOT_LABEL: &[u8] = b"metanode/ledger/genesis/v1";
const BLOCK_ROOT_LABEL: &[u8] = b"metanode/ledger/block/v1";
const PAYLOAD_LOG_LABEL: &[u8] = b"metanode/ledger/payload/v1";
const EXECUTION_KEY_LABEL: &[u8] = b"metanode/ledger/execution-key/v1";

/// Why a ledger snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("ledger snapshot does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("ledger snapshot declares {count} accounts but only {remaining} bytes remain")]
    AccountCount { count: u64, remaining: usize },
    #[error("ledger snapshot account {index} ({key}) is not after the previous one in key order")]
    AccountOrder { index: u64, key: KeyId },
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Account {
    balance: u64,
    next_nonce: u64,
}

/// Committed ledger state.
#[derive(Clone, Debug)]
struct LedgerState {
    chain_id: ChainId,
    height: Height,
    state_root: Hash32,
    accounts: BTreeMap<PublicKey, Account>,
    payload_count: u64,
    payload_log_hash: Hash32,
    /// The set deciding `height + 1`.
    validators: ValidatorSet,
}

/// What executing a block would change: the touched accounts' new values
/// and the new payload log and validator set.
#[derive(Clone, Debug)]
struct Overlay {
    accounts: BTreeMap<PublicKey, Account>,
    payload_count: u64,
    payload_log_hash: Hash32,
}

#[derive(Clone, Debug)]
struct CachedExecution {
    height: Height,
    key: Hash32,
    execution: Execution,
    overlay: Overlay,
}

/// The built-in ledger (see the module docs for its rules).
#[derive(Clone, Debug)]
pub struct LedgerApp {
    state: LedgerState,
    /// The only key allowed to change the validator set. Configuration
    /// every node must share; carried in snapshots.
    validator_admin: Option<PublicKey>,
    cache: VecDeque<CachedExecution>,
}

impl LedgerApp {
    /// The state at height 0. Accounts listed twice in genesis are merged
    /// (balances added, saturating).
    pub fn from_genesis(genesis: &Genesis) -> LedgerApp {
        let mut accounts: BTreeMap<PublicKey, Account> = BTreeMap::new();
        for a in &genesis.accounts {
            let account = accounts.entry(a.key).or_default();
            account.balance = account.balance.saturating_add(a.balance);
        }
        let chain_id = genesis.chain_id();
        let mut h = TaggedHasher::new(DomainTag::ChainState);
        h.update(GENESIS_ROOT_LABEL)
            .update(chain_id.0.as_bytes())
            .update(genesis.validators.hash().as_bytes())
            .update(&(accounts.len() as u64).to_le_bytes());
        for (key, account) in &accounts {
            hash_account(&mut h, key, account);
        }
        LedgerApp {
            state: LedgerState {
                chain_id,
                height: 0,
                state_root: h.finalize(),
                accounts,
                payload_count: 0,
                payload_log_hash: Hash32::ZERO,
                validators: genesis.validators.clone(),
            },
            validator_admin: None,
            cache: VecDeque::new(),
        }
    }

    /// Lets `admin` change the validator set with
    /// [`VALIDATOR_SET_PAYLOAD_PREFIX`] payloads. Every node of the chain
    /// must be configured alike, or they fork at the first such payload.
    pub fn with_validator_admin(mut self, admin: PublicKey) -> LedgerApp {
        self.validator_admin = Some(admin);
        self.cache.clear();
        self
    }

    /// Rebuilds a ledger from [`Application::snapshot`] bytes.
    pub fn restore(snapshot: &[u8]) -> Result<LedgerApp, SnapshotError> {
        let mut r = Reader::new(snapshot);
        decode_version(&mut r, SNAPSHOT_VERSIONS)?;
        let chain_id = ChainId::decode(&mut r)?;
        let height = r.read_u64()?;
        let state_root = Hash32::decode(&mut r)?;
        let validator_admin = Option::<PublicKey>::decode(&mut r)?;
        let validators = ValidatorSet::decode(&mut r)?;
        let payload_count = r.read_u64()?;
        let payload_log_hash = Hash32::decode(&mut r)?;
        let count = r.read_u64()?;
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(SNAPSHOT_ACCOUNT_BYTES))
            .is_some_and(|bytes| bytes <= r.remaining());
        if !fits {
            return Err(SnapshotError::AccountCount {
                count,
                remaining: r.remaining(),
            });
        }
        let mut accounts = BTreeMap::new();
        let mut previous: Option<PublicKey> = None;
        for index in 0..count {
            let key = PublicKey::decode(&mut r)?;
            let account = Account {
                balance: r.read_u64()?,
                next_nonce: r.read_u64()?,
            };
            // Strictly increasing keys make the snapshot of a state unique.
            if previous.is_some_and(|p| p >= key) {
                return Err(SnapshotError::AccountOrder {
                    index,
                    key: key.into(),
                });
            }
            previous = Some(key);
            accounts.insert(key, account);
        }
        r.finish()?;
        Ok(LedgerApp {
            state: LedgerState {
                chain_id,
                height,
                state_root,
                accounts,
                payload_count,
                payload_log_hash,
                validators,
            },
            validator_admin,
            cache: VecDeque::new(),
        })
    }

    /// Committed balance of `key` (0 for unknown accounts).
    pub fn balance(&self, key: &PublicKey) -> u64 {
        self.state.accounts.get(key).map_or(0, |a| a.balance)
    }

    /// Payloads recorded so far.
    pub fn payload_count(&self) -> u64 {
        self.state.payload_count
    }

    /// Rolling hash over the ids of every recorded payload transaction:
    /// `H(0x1a || "metanode/ledger/payload/v1" || previous || tx_hash)`,
    /// starting from 32 zero bytes.
    pub fn payload_log_hash(&self) -> Hash32 {
        self.state.payload_log_hash
    }

    /// Validators deciding `committed_height() + 1`.
    pub fn validators(&self) -> &ValidatorSet {
        &self.state.validators
    }

    pub fn chain_id(&self) -> ChainId {
        self.state.chain_id
    }

    pub fn validator_admin(&self) -> Option<&PublicKey> {
        self.validator_admin.as_ref()
    }

    fn account(&self, key: &PublicKey) -> Account {
        self.state.accounts.get(key).copied().unwrap_or_default()
    }

    fn run(&self, ctx: &BlockContext, txs: &[SignedTx]) -> (Execution, Overlay) {
        let mut block = BlockRun {
            committed: &self.state,
            admin: self.validator_admin.as_ref(),
            chain_id: ctx.chain_id,
            overlay: Overlay {
                accounts: BTreeMap::new(),
                payload_count: self.state.payload_count,
                payload_log_hash: self.state.payload_log_hash,
            },
            next_validators: None,
            fees_total: 0,
        };
        let receipts: Vec<Receipt> = txs.iter().map(|tx| block.apply(tx)).collect();
        if block.fees_total > 0 {
            let mut proposer = block.account(&ctx.proposer);
            proposer.balance = proposer.balance.saturating_add(block.fees_total);
            block.overlay.accounts.insert(ctx.proposer, proposer);
        }
        let next_validators = block
            .next_validators
            .take()
            .unwrap_or_else(|| ctx.validators.clone());
        let overlay = block.overlay;
        let state_root = block_root(
            ctx.height,
            &self.state.state_root,
            &receipts,
            &overlay,
            &next_validators,
        );
        (
            Execution {
                receipts,
                state_root,
                next_validators,
            },
            overlay,
        )
    }

    fn take_cached(&mut self, height: Height, key: &Hash32) -> Option<CachedExecution> {
        let i = self
            .cache
            .iter()
            .position(|c| c.height == height && c.key == *key)?;
        self.cache.remove(i)
    }

    fn assert_next_height(&self, ctx: &BlockContext, what: &str) {
        assert_eq!(
            ctx.height,
            self.state.height + 1,
            "{what} at height {} but the ledger is committed at {}",
            ctx.height,
            self.state.height
        );
    }
}

impl Application for LedgerApp {
    fn check_tx(&self, tx: &SignedTx) -> Result<(), TxRejection> {
        let body = tx.body();
        if body.chain_id != self.state.chain_id {
            return Err(TxRejection::WrongChain {
                tx: tx.hash(),
                got: body.chain_id,
                expected: self.state.chain_id,
            });
        }
        let sender = self.account(&body.sender);
        if body.nonce < sender.next_nonce {
            return Err(TxRejection::NonceTooLow {
                sender: body.sender.into(),
                nonce: body.nonce,
                expected: sender.next_nonce,
            });
        }
        // Gaps are fine here: the mempool holds them until the gap fills.
        if body.nonce == u64::MAX {
            return Err(TxRejection::NonceExhausted {
                sender: body.sender.into(),
                nonce: body.nonce,
            });
        }
        check_fee(body)?;
        let amount = match &body.kind {
            TxKind::Transfer { amount, .. } => *amount,
            TxKind::Payload { .. } => 0,
        };
        let needed = u128::from(body.fee) + u128::from(amount);
        if u128::from(sender.balance) < needed {
            return Err(TxRejection::InsufficientFunds {
                sender: body.sender.into(),
                nonce: body.nonce,
                balance: sender.balance,
                needed,
            });
        }
        match &body.kind {
            TxKind::Transfer { to, amount } if *to != body.sender => {
                let balance = self.account(to).balance;
                if balance.checked_add(*amount).is_none() {
                    return Err(TxRejection::BalanceOverflow {
                        to: (*to).into(),
                        balance,
                        amount: *amount,
                    });
                }
            }
            TxKind::Transfer { .. } => {}
            TxKind::Payload { data } => {
                if let Some(set) = data.strip_prefix(VALIDATOR_SET_PAYLOAD_PREFIX) {
                    validator_set_change(self.validator_admin.as_ref(), body, set)?;
                }
            }
        }
        Ok(())
    }

    fn next_nonce(&self, sender: &PublicKey) -> u64 {
        self.account(sender).next_nonce
    }

    fn execute(&mut self, ctx: &BlockContext, txs: &[SignedTx]) -> Execution {
        self.assert_next_height(ctx, "execute");
        let key = execution_key(ctx, txs);
        if let Some(cached) = self
            .cache
            .iter()
            .find(|c| c.height == ctx.height && c.key == key)
        {
            return cached.execution.clone();
        }
        let (execution, overlay) = self.run(ctx, txs);
        if self.cache.len() >= EXECUTION_CACHE_COUNT_MAX {
            self.cache.pop_front();
        }
        self.cache.push_back(CachedExecution {
            height: ctx.height,
            key,
            execution: execution.clone(),
            overlay,
        });
        execution
    }

    fn commit(&mut self, ctx: &BlockContext, txs: &[SignedTx]) -> Execution {
        self.assert_next_height(ctx, "commit");
        let key = execution_key(ctx, txs);
        let (execution, overlay) = match self.take_cached(ctx.height, &key) {
            Some(cached) => (cached.execution, cached.overlay),
            None => self.run(ctx, txs),
        };
        // Every other cached candidate was executed on the state this block
        // just replaced.
        self.cache.clear();
        let state = &mut self.state;
        state.accounts.extend(overlay.accounts);
        state.payload_count = overlay.payload_count;
        state.payload_log_hash = overlay.payload_log_hash;
        state.validators = execution.next_validators.clone();
        state.height = ctx.height;
        state.state_root = execution.state_root;
        execution
    }

    fn committed_height(&self) -> Height {
        self.state.height
    }

    fn committed_state_root(&self) -> Hash32 {
        self.state.state_root
    }

    /// Version 1: `version u8 || chain_id || height u64 || state_root ||
    /// option(admin key) || validator set || payload_count u64 ||
    /// payload_log_hash || count u64 || (key || balance u64 || next_nonce
    /// u64)*` with keys strictly increasing.
    fn snapshot(&self) -> Vec<u8> {
        let s = &self.state;
        let mut w =
            Writer::with_capacity(256 + s.accounts.len().saturating_mul(SNAPSHOT_ACCOUNT_BYTES));
        w.put_u8(SNAPSHOT_VERSIONS[0]);
        s.chain_id.encode(&mut w);
        w.put_u64(s.height);
        s.state_root.encode(&mut w);
        self.validator_admin.encode(&mut w);
        s.validators.encode(&mut w);
        w.put_u64(s.payload_count);
        s.payload_log_hash.encode(&mut w);
        w.put_u64(s.accounts.len() as u64);
        for (key, account) in &s.accounts {
            key.encode(&mut w);
            w.put_u64(account.balance);
            w.put_u64(account.next_nonce);
        }
        w.finish()
            .expect("ledger snapshot has only fixed-size and bounded fields")
    }
}

/// One block's execution over committed state.
struct BlockRun<'a> {
    committed: &'a LedgerState,
    admin: Option<&'a PublicKey>,
    chain_id: ChainId,
    overlay: Overlay,
    next_validators: Option<ValidatorSet>,
    fees_total: u64,
}

impl BlockRun<'_> {
    fn account(&self, key: &PublicKey) -> Account {
        self.overlay
            .accounts
            .get(key)
            .or_else(|| self.committed.accounts.get(key))
            .copied()
            .unwrap_or_default()
    }

    fn apply(&mut self, tx: &SignedTx) -> Receipt {
        let (fee_charged, result) = self.apply_body(tx);
        let (status, output) = match result {
            Ok(output) => (STATUS_OK, output),
            Err(rejection) => {
                let mut message = rejection.to_string().into_bytes();
                message.truncate(CHAIN_RECEIPT_OUTPUT_BYTES_MAX as usize);
                (rejection.status(), message)
            }
        };
        Receipt {
            tx_hash: tx.hash(),
            status,
            fee_charged,
            output,
        }
    }

    /// Returns the fee charged and the receipt output or failure.
    fn apply_body(&mut self, tx: &SignedTx) -> (u64, Result<Vec<u8>, TxRejection>) {
        let body = tx.body();
        if body.chain_id != self.chain_id {
            let wrong = TxRejection::WrongChain {
                tx: tx.hash(),
                got: body.chain_id,
                expected: self.chain_id,
            };
            return (0, Err(wrong));
        }
        let mut sender = self.account(&body.sender);
        if let Err(rejection) = check_exact_nonce(body, sender.next_nonce) {
            return (0, Err(rejection));
        }
        if let Err(rejection) = check_fee(body) {
            return (0, Err(rejection));
        }
        // Applicable from here on: the nonce is consumed whatever follows.
        // check_exact_nonce refused u64::MAX, so the successor exists.
        sender.next_nonce = body.nonce + 1;
        let balance_before = sender.balance;
        let fee_charged = body.fee.min(sender.balance);
        sender.balance -= fee_charged;
        self.fees_total = self.fees_total.saturating_add(fee_charged);
        if fee_charged < body.fee {
            self.overlay.accounts.insert(body.sender, sender);
            let short = TxRejection::InsufficientFunds {
                sender: body.sender.into(),
                nonce: body.nonce,
                balance: balance_before,
                needed: u128::from(body.fee),
            };
            return (fee_charged, Err(short));
        }
        let result = match &body.kind {
            TxKind::Transfer { to, amount } => {
                self.transfer(body, &mut sender, balance_before, to, *amount)
            }
            TxKind::Payload { data } => match data.strip_prefix(VALIDATOR_SET_PAYLOAD_PREFIX) {
                Some(set_bytes) => validator_set_change(self.admin, body, set_bytes).map(|set| {
                    let output = set.hash().as_bytes().to_vec();
                    self.next_validators = Some(set);
                    output
                }),
                None => {
                    let index = self.overlay.payload_count;
                    self.overlay.payload_count = index.saturating_add(1);
                    self.overlay.payload_log_hash = hash_tagged(
                        DomainTag::ChainState,
                        &[
                            PAYLOAD_LOG_LABEL,
                            self.overlay.payload_log_hash.as_bytes(),
                            tx.hash().as_bytes(),
                        ],
                    );
                    Ok(index.to_le_bytes().to_vec())
                }
            },
        };
        self.overlay.accounts.insert(body.sender, sender);
        (fee_charged, result)
    }

    /// Moves `amount` from `sender` (already charged its fee, written back by
    /// the caller) to `to`.
    fn transfer(
        &mut self,
        body: &TxBody,
        sender: &mut Account,
        balance_before: u64,
        to: &PublicKey,
        amount: u64,
    ) -> Result<Vec<u8>, TxRejection> {
        if sender.balance < amount {
            return Err(TxRejection::InsufficientFunds {
                sender: body.sender.into(),
                nonce: body.nonce,
                balance: balance_before,
                needed: u128::from(body.fee) + u128::from(amount),
            });
        }
        if *to == body.sender {
            return Ok(Vec::new());
        }
        let mut recipient = self.account(to);
        recipient.balance =
            recipient
                .balance
                .checked_add(amount)
                .ok_or(TxRejection::BalanceOverflow {
                    to: (*to).into(),
                    balance: recipient.balance,
                    amount,
                })?;
        sender.balance -= amount;
        self.overlay.accounts.insert(*to, recipient);
        Ok(Vec::new())
    }
}

fn check_exact_nonce(body: &TxBody, expected: u64) -> Result<(), TxRejection> {
    let (sender, nonce) = (KeyId::from(body.sender), body.nonce);
    if nonce < expected {
        Err(TxRejection::NonceTooLow {
            sender,
            nonce,
            expected,
        })
    } else if nonce > expected {
        Err(TxRejection::NonceGap {
            sender,
            nonce,
            expected,
        })
    } else if nonce == u64::MAX {
        Err(TxRejection::NonceExhausted { sender, nonce })
    } else {
        Ok(())
    }
}

fn check_fee(body: &TxBody) -> Result<(), TxRejection> {
    if body.fee < LEDGER_FEE_MIN {
        return Err(TxRejection::FeeTooLow {
            sender: body.sender.into(),
            nonce: body.nonce,
            fee: body.fee,
            min: LEDGER_FEE_MIN,
        });
    }
    Ok(())
}

/// The validator set a reserved-prefix payload asks for, if its sender may.
fn validator_set_change(
    admin: Option<&PublicKey>,
    body: &TxBody,
    set_bytes: &[u8],
) -> Result<ValidatorSet, TxRejection> {
    if admin != Some(&body.sender) {
        return Err(TxRejection::NotValidatorAdmin {
            sender: body.sender.into(),
            nonce: body.nonce,
        });
    }
    ValidatorSet::from_canonical_bytes(set_bytes).map_err(|e| TxRejection::BadValidatorSet {
        sender: body.sender.into(),
        nonce: body.nonce,
        reason: e.to_string(),
    })
}

fn hash_account(h: &mut TaggedHasher, key: &PublicKey, account: &Account) {
    h.update(key.as_bytes())
        .update(&account.balance.to_le_bytes())
        .update(&account.next_nonce.to_le_bytes());
}

fn block_root(
    height: Height,
    previous: &Hash32,
    receipts: &[Receipt],
    overlay: &Overlay,
    next_validators: &ValidatorSet,
) -> Hash32 {
    let mut encoded = Writer::with_capacity(receipts.len() * 64);
    for receipt in receipts {
        receipt.encode(&mut encoded);
    }
    let encoded = encoded
        .finish()
        .expect("receipt outputs are truncated to the receipt bound");
    let mut h = TaggedHasher::new(DomainTag::ChainState);
    h.update(BLOCK_ROOT_LABEL)
        .update(&height.to_le_bytes())
        .update(previous.as_bytes())
        .update(&(receipts.len() as u64).to_le_bytes())
        .update(&encoded)
        .update(&(overlay.accounts.len() as u64).to_le_bytes());
    for (key, account) in &overlay.accounts {
        hash_account(&mut h, key, account);
    }
    h.update(&overlay.payload_count.to_le_bytes())
        .update(overlay.payload_log_hash.as_bytes())
        .update(next_validators.hash().as_bytes());
    h.finalize()
}

/// Identifies an execution request (context and transactions) for the
/// cache; not part of any consensus data.
fn execution_key(ctx: &BlockContext, txs: &[SignedTx]) -> Hash32 {
    let mut h = TaggedHasher::new(DomainTag::ChainState);
    h.update(EXECUTION_KEY_LABEL)
        .update(ctx.chain_id.0.as_bytes())
        .update(&ctx.height.to_le_bytes())
        .update(&ctx.timestamp_ms.to_le_bytes())
        .update(ctx.proposer.as_bytes())
        .update(ctx.validators.hash().as_bytes())
        .update(&(txs.len() as u64).to_le_bytes());
    for tx in txs {
        h.update(tx.hash().as_bytes());
    }
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::GenesisAccount;
    use metanode_core::keys::SigningKey;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_seed(&[i; 32])
    }

    fn pk(i: u8) -> PublicKey {
        key(i).public_key()
    }

    struct Fixture {
        genesis: Genesis,
        validators: ValidatorSet,
    }

    /// Validators are keys 1..=4; accounts 10 and 11 are funded.
    fn fixture(balances: &[(u8, u64)]) -> Fixture {
        let validators = ValidatorSet::new((1..=4).map(pk).collect()).unwrap();
        let genesis = Genesis {
            chain_name: "ledger-test".into(),
            genesis_time_ms: 1_000,
            validators: validators.clone(),
            accounts: balances
                .iter()
                .map(|&(i, balance)| GenesisAccount {
                    key: pk(i),
                    balance,
                })
                .collect(),
        };
        Fixture {
            genesis,
            validators,
        }
    }

    impl Fixture {
        fn ctx(&self, height: Height) -> BlockContext {
            BlockContext {
                chain_id: self.genesis.chain_id(),
                height,
                timestamp_ms: 1_000 + height,
                proposer: pk(1),
                validators: self.validators.clone(),
            }
        }

        fn tx(&self, from: u8, nonce: u64, fee: u64, kind: TxKind) -> SignedTx {
            TxBody {
                chain_id: self.genesis.chain_id(),
                sender: pk(from),
                nonce,
                fee,
                kind,
            }
            .sign(&key(from))
            .unwrap()
        }

        fn transfer(&self, from: u8, nonce: u64, to: u8, amount: u64) -> SignedTx {
            self.tx(from, nonce, 1, TxKind::Transfer { to: pk(to), amount })
        }

        fn payload(&self, from: u8, nonce: u64, data: &[u8]) -> SignedTx {
            self.tx(
                from,
                nonce,
                2,
                TxKind::Payload {
                    data: data.to_vec(),
                },
            )
        }
    }

    fn status_text(r: &Receipt) -> String {
        String::from_utf8(r.output.clone()).unwrap()
    }

    #[test]
    fn transfers_move_balances_and_pay_the_proposer() {
        let f = fixture(&[(10, 1_000), (11, 50)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let txs = vec![
            f.transfer(10, 0, 11, 300),
            f.transfer(11, 0, 12, 340),
            f.transfer(10, 1, 12, 9),
        ];
        let ex = app.commit(&f.ctx(1), &txs);
        assert_eq!(ex.receipts.len(), 3);
        for (r, tx) in ex.receipts.iter().zip(&txs) {
            assert_eq!(r.status, STATUS_OK, "{}", status_text(r));
            assert_eq!(r.fee_charged, 1);
            assert_eq!(r.tx_hash, tx.hash());
            assert!(r.output.is_empty());
        }
        assert_eq!(app.balance(&pk(10)), 1_000 - 300 - 1 - 9 - 1);
        assert_eq!(app.balance(&pk(11)), 50 + 300 - 340 - 1);
        assert_eq!(app.balance(&pk(12)), 349);
        // Fees go to the proposer (key 1).
        assert_eq!(app.balance(&pk(1)), 3);
        assert_eq!(app.next_nonce(&pk(10)), 2);
        assert_eq!(app.next_nonce(&pk(11)), 1);
        assert_eq!(app.next_nonce(&pk(12)), 0);
        assert_eq!(app.committed_height(), 1);
        assert_eq!(app.committed_state_root(), ex.state_root);
        assert_eq!(ex.next_validators, f.validators);
        // Supply is conserved.
        let total: u64 = [1, 10, 11, 12].iter().map(|&i| app.balance(&pk(i))).sum();
        assert_eq!(total, 1_050);
    }

    #[test]
    fn insufficient_funds_consumes_nonce_and_charges_what_it_can() {
        let f = fixture(&[(10, 100), (11, 1)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let fee5 = f.tx(
            11,
            0,
            5,
            TxKind::Transfer {
                to: pk(12),
                amount: 1,
            },
        );
        let txs = vec![f.transfer(10, 0, 12, 100), fee5];
        let ex = app.commit(&f.ctx(1), &txs);
        // 100 + fee 1 > 100: fee charged, nothing moved, nonce consumed.
        let r = &ex.receipts[0];
        assert_eq!(r.status, STATUS_INSUFFICIENT_FUNDS);
        assert_eq!(r.fee_charged, 1);
        assert_eq!(
            status_text(r),
            format!(
                "sender {} nonce 0 has balance 100 but needs 101 (fee plus amount)",
                pk(10)
            )
        );
        assert_eq!(app.balance(&pk(10)), 99);
        assert_eq!(app.balance(&pk(12)), 0);
        assert_eq!(app.next_nonce(&pk(10)), 1);
        // Balance 1 cannot pay fee 5: it pays 1 and fails.
        let r = &ex.receipts[1];
        assert_eq!(r.status, STATUS_INSUFFICIENT_FUNDS);
        assert_eq!(r.fee_charged, 1);
        assert_eq!(app.balance(&pk(11)), 0);
        assert_eq!(app.next_nonce(&pk(11)), 1);
        assert_eq!(app.balance(&pk(1)), 2);
        // Admission would have refused both.
        let again = f.transfer(10, 1, 12, 99);
        assert_eq!(
            app.check_tx(&again),
            Err(TxRejection::InsufficientFunds {
                sender: pk(10).into(),
                nonce: 1,
                balance: 99,
                needed: 100
            })
        );
    }

    #[test]
    fn bad_nonces_and_fees_have_no_effect() {
        let f = fixture(&[(10, 100)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let free = f.tx(
            10,
            1,
            0,
            TxKind::Transfer {
                to: pk(12),
                amount: 1,
            },
        );
        let txs = vec![
            f.transfer(10, 1, 12, 5), // gap: expected 0
            f.transfer(10, 0, 12, 5),
            f.transfer(10, 0, 12, 5), // replay of nonce 0 in the same block
            free,
        ];
        let ex = app.commit(&f.ctx(1), &txs);
        let statuses: Vec<u32> = ex.receipts.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            vec![
                STATUS_NONCE_GAP,
                STATUS_OK,
                STATUS_NONCE_TOO_LOW,
                STATUS_FEE_TOO_LOW
            ]
        );
        let fees: Vec<u64> = ex.receipts.iter().map(|r| r.fee_charged).collect();
        assert_eq!(fees, vec![0, 1, 0, 0]);
        assert_eq!(
            status_text(&ex.receipts[0]),
            format!(
                "nonce 1 of sender {} skips ahead of the next nonce 0",
                pk(10)
            )
        );
        assert_eq!(app.next_nonce(&pk(10)), 1);
        assert_eq!(app.balance(&pk(10)), 94);
        assert_eq!(app.balance(&pk(12)), 5);

        // Admission: low nonce refused, gaps allowed, fee floor enforced.
        assert_eq!(
            app.check_tx(&f.transfer(10, 0, 12, 1)),
            Err(TxRejection::NonceTooLow {
                sender: pk(10).into(),
                nonce: 0,
                expected: 1
            })
        );
        assert_eq!(app.check_tx(&f.transfer(10, 7, 12, 1)), Ok(()));
        let zero_fee = f.tx(
            10,
            1,
            0,
            TxKind::Payload {
                data: b"x".to_vec(),
            },
        );
        assert_eq!(
            app.check_tx(&zero_fee),
            Err(TxRejection::FeeTooLow {
                sender: pk(10).into(),
                nonce: 1,
                fee: 0,
                min: LEDGER_FEE_MIN
            })
        );
        let last = f.transfer(10, u64::MAX, 12, 1);
        assert_eq!(
            app.check_tx(&last),
            Err(TxRejection::NonceExhausted {
                sender: pk(10).into(),
                nonce: u64::MAX
            })
        );
    }

    #[test]
    fn overflowing_amounts_fail_cleanly() {
        let f = fixture(&[(10, u64::MAX), (11, 10), (12, u64::MAX - 5)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        // Fee + amount exceeds u64: checked in u128, no wrap.
        let huge = f.transfer(11, 0, 13, u64::MAX);
        assert_eq!(
            app.check_tx(&huge),
            Err(TxRejection::InsufficientFunds {
                sender: pk(11).into(),
                nonce: 0,
                balance: 10,
                needed: u128::from(u64::MAX) + 1
            })
        );
        let all = f.transfer(10, 0, 13, u64::MAX);
        // Recipient 12 would overflow.
        let overflow = f.transfer(10, 0, 12, 6);
        assert_eq!(
            app.check_tx(&overflow),
            Err(TxRejection::BalanceOverflow {
                to: pk(12).into(),
                balance: u64::MAX - 5,
                amount: 6
            })
        );
        let ex = app.commit(&f.ctx(1), &[huge, all, f.transfer(10, 1, 12, 6)]);
        assert_eq!(ex.receipts[0].status, STATUS_INSUFFICIENT_FUNDS);
        assert_eq!(ex.receipts[0].fee_charged, 1);
        // u64::MAX − 1 left after the fee is short of u64::MAX.
        assert_eq!(ex.receipts[1].status, STATUS_INSUFFICIENT_FUNDS);
        assert_eq!(ex.receipts[2].status, STATUS_BALANCE_OVERFLOW);
        assert_eq!(ex.receipts[2].fee_charged, 1);
        assert_eq!(app.balance(&pk(10)), u64::MAX - 2);
        assert_eq!(app.balance(&pk(12)), u64::MAX - 5);
        assert_eq!(app.balance(&pk(13)), 0);
        assert_eq!(app.next_nonce(&pk(10)), 2);
    }

    #[test]
    fn payloads_are_logged_without_being_kept() {
        let f = fixture(&[(10, 100)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let txs = vec![f.payload(10, 0, b"first"), f.payload(10, 1, b"second")];
        let ex = app.commit(&f.ctx(1), &txs);
        assert_eq!(ex.receipts[0].output, 0u64.to_le_bytes());
        assert_eq!(ex.receipts[1].output, 1u64.to_le_bytes());
        assert_eq!(ex.receipts[1].fee_charged, 2);
        assert_eq!(app.payload_count(), 2);
        assert_eq!(app.balance(&pk(10)), 96);
        let h1 = hash_tagged(
            DomainTag::ChainState,
            &[
                PAYLOAD_LOG_LABEL,
                Hash32::ZERO.as_bytes(),
                txs[0].hash().as_bytes(),
            ],
        );
        let h2 = hash_tagged(
            DomainTag::ChainState,
            &[PAYLOAD_LOG_LABEL, h1.as_bytes(), txs[1].hash().as_bytes()],
        );
        assert_eq!(app.payload_log_hash(), h2);
    }

    #[test]
    fn same_blocks_give_same_roots_and_different_blocks_differ() {
        let f = fixture(&[(10, 1_000), (11, 1_000)]);
        let blocks = [
            vec![f.transfer(10, 0, 11, 5), f.payload(11, 0, b"p")],
            vec![],
            vec![f.transfer(11, 1, 10, 7), f.transfer(10, 1, 12, 1)],
        ];
        let mut a = LedgerApp::from_genesis(&f.genesis);
        let mut b = LedgerApp::from_genesis(&f.genesis);
        assert_eq!(a.committed_state_root(), b.committed_state_root());
        let mut roots = vec![a.committed_state_root()];
        for (i, txs) in blocks.iter().enumerate() {
            let ctx = f.ctx(i as u64 + 1);
            let ea = a.commit(&ctx, txs);
            let eb = b.commit(&ctx, txs);
            assert_eq!(ea, eb);
            roots.push(ea.state_root);
        }
        assert_eq!(a.snapshot(), b.snapshot());
        // Every block, even an empty one, moves the root.
        for i in 0..roots.len() {
            for j in i + 1..roots.len() {
                assert_ne!(roots[i], roots[j]);
            }
        }
        // A different proposer (fees elsewhere) gives a different root.
        let mut c = LedgerApp::from_genesis(&f.genesis);
        let mut ctx = f.ctx(1);
        ctx.proposer = pk(2);
        assert_ne!(c.commit(&ctx, &blocks[0]).state_root, roots[1]);
        // A different genesis gives a different root from the start.
        let other = fixture(&[(10, 1_001), (11, 1_000)]);
        assert_ne!(
            LedgerApp::from_genesis(&other.genesis).committed_state_root(),
            roots[0]
        );
    }

    #[test]
    fn execute_leaves_committed_state_alone_and_commit_reuses_it() {
        let f = fixture(&[(10, 1_000)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let root0 = app.committed_state_root();
        let snapshot0 = app.snapshot();
        let txs = vec![f.transfer(10, 0, 11, 5), f.payload(10, 1, b"x")];
        let ex = app.execute(&f.ctx(1), &txs);
        // Another candidate for the same height, executed in between.
        let other = app.execute(&f.ctx(1), &txs[..1]);
        assert_ne!(other.state_root, ex.state_root);
        assert_eq!(app.committed_state_root(), root0);
        assert_eq!(app.committed_height(), 0);
        assert_eq!(app.balance(&pk(10)), 1_000);
        assert_eq!(app.next_nonce(&pk(10)), 0);
        assert_eq!(app.payload_count(), 0);
        assert_eq!(app.snapshot(), snapshot0);
        // Executing again gives the same answer.
        assert_eq!(app.execute(&f.ctx(1), &txs), ex);

        let committed = app.commit(&f.ctx(1), &txs);
        assert_eq!(committed, ex);
        let mut fresh = LedgerApp::from_genesis(&f.genesis);
        assert_eq!(fresh.commit(&f.ctx(1), &txs), ex);
        assert_eq!(fresh.snapshot(), app.snapshot());
        assert_eq!(app.balance(&pk(11)), 5);
        assert_eq!(app.payload_count(), 1);
    }

    #[test]
    fn cache_is_bounded_and_keyed_by_context() {
        let f = fixture(&[(10, 1_000)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let txs = vec![f.transfer(10, 0, 11, 5)];
        for t in 0..20u64 {
            let mut ctx = f.ctx(1);
            ctx.timestamp_ms = t;
            app.execute(&ctx, &txs);
        }
        assert_eq!(app.cache.len(), EXECUTION_CACHE_COUNT_MAX);
        // A different proposer is a different execution (fees move).
        let mut ctx = f.ctx(1);
        ctx.proposer = pk(3);
        let ex = app.execute(&ctx, &txs);
        let committed = app.commit(&ctx, &txs);
        assert_eq!(committed, ex);
        assert_eq!(app.balance(&pk(3)), 1);
        assert_eq!(app.balance(&pk(1)), 0);
        assert!(app.cache.is_empty());
    }

    #[test]
    fn snapshot_restores_same_root_and_behaviour() {
        let f = fixture(&[(10, 1_000), (11, 20)]);
        let mut app = LedgerApp::from_genesis(&f.genesis).with_validator_admin(pk(10));
        app.commit(
            &f.ctx(1),
            &[f.transfer(10, 0, 11, 5), f.payload(11, 0, b"log")],
        );
        let bytes = app.snapshot();
        let mut restored = LedgerApp::restore(&bytes).unwrap();
        assert_eq!(restored.snapshot(), bytes);
        assert_eq!(restored.committed_state_root(), app.committed_state_root());
        assert_eq!(restored.committed_height(), 1);
        assert_eq!(restored.balance(&pk(11)), 23);
        assert_eq!(restored.payload_count(), 1);
        assert_eq!(restored.validator_admin(), Some(&pk(10)));
        assert_eq!(restored.validators(), &f.validators);
        let next = vec![f.transfer(11, 1, 10, 3), f.transfer(10, 1, 12, 2)];
        assert_eq!(
            restored.commit(&f.ctx(2), &next),
            app.commit(&f.ctx(2), &next)
        );
        assert_eq!(restored.snapshot(), app.snapshot());

        // Corrupt snapshots are refused with a reason.
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            LedgerApp::restore(&trailing),
            Err(SnapshotError::Decode(DecodeError::TrailingBytes { .. }))
        ));
        assert!(matches!(
            LedgerApp::restore(&bytes[..bytes.len() - 1]),
            Err(SnapshotError::AccountCount { .. })
        ));
        let mut version = bytes.clone();
        version[0] = 7;
        assert!(matches!(
            LedgerApp::restore(&version),
            Err(SnapshotError::Decode(DecodeError::UnknownVersion { .. }))
        ));
        // Swap the first two accounts (proposer 1, senders 10 and 11 exist):
        // same content, not canonical.
        let accounts_at = bytes.len() - 3 * SNAPSHOT_ACCOUNT_BYTES;
        assert_eq!(bytes[accounts_at - 8..accounts_at], 3u64.to_le_bytes());
        let mut swapped = bytes.clone();
        let (a, b) = (accounts_at, accounts_at + SNAPSHOT_ACCOUNT_BYTES);
        let first: Vec<u8> = bytes[a..b].to_vec();
        swapped.copy_within(b..b + SNAPSHOT_ACCOUNT_BYTES, a);
        swapped[b..b + SNAPSHOT_ACCOUNT_BYTES].copy_from_slice(&first);
        assert!(matches!(
            LedgerApp::restore(&swapped),
            Err(SnapshotError::AccountOrder { index: 1, .. })
        ));
    }

    #[test]
    fn validator_admin_changes_the_next_set() {
        let f = fixture(&[(10, 1_000), (11, 1_000)]);
        let new_set = ValidatorSet::new(vec![pk(2), pk(3), pk(4), pk(5)]).unwrap();
        let mut data = VALIDATOR_SET_PAYLOAD_PREFIX.to_vec();
        data.extend(new_set.to_canonical_bytes().unwrap());

        // Without an admin nobody may use the prefix.
        let plain = LedgerApp::from_genesis(&f.genesis);
        assert_eq!(
            plain.check_tx(&f.payload(10, 0, &data)),
            Err(TxRejection::NotValidatorAdmin {
                sender: pk(10).into(),
                nonce: 0
            })
        );

        let mut app = LedgerApp::from_genesis(&f.genesis).with_validator_admin(pk(10));
        assert_eq!(app.check_tx(&f.payload(10, 0, &data)), Ok(()));
        let mut bad = VALIDATOR_SET_PAYLOAD_PREFIX.to_vec();
        bad.extend([1, 0, 0, 0, 0]); // version 1, zero validators
        assert!(matches!(
            app.check_tx(&f.payload(10, 0, &bad)),
            Err(TxRejection::BadValidatorSet { .. })
        ));

        let txs = vec![
            f.payload(11, 0, &data), // not the admin: fails, fee charged
            f.payload(10, 0, &bad),  // admin, invalid set
            f.payload(10, 1, &data),
        ];
        let ex = app.commit(&f.ctx(1), &txs);
        assert_eq!(ex.receipts[0].status, STATUS_NOT_VALIDATOR_ADMIN);
        assert_eq!(ex.receipts[0].fee_charged, 2);
        assert_eq!(ex.receipts[1].status, STATUS_BAD_VALIDATOR_SET);
        assert_eq!(ex.receipts[2].status, STATUS_OK);
        assert_eq!(ex.receipts[2].output, new_set.hash().as_bytes().to_vec());
        assert_eq!(ex.next_validators, new_set);
        assert_eq!(app.validators(), &new_set);
        // Reserved payloads are not logged.
        assert_eq!(app.payload_count(), 0);

        // The next block runs under the new set and keeps it.
        let mut ctx = f.ctx(2);
        ctx.validators = new_set.clone();
        ctx.proposer = pk(5);
        let ex2 = app.commit(&ctx, &[f.transfer(11, 1, 12, 1)]);
        assert_eq!(ex2.next_validators, new_set);
        assert_eq!(app.balance(&pk(5)), 1);
    }

    #[test]
    fn wrong_chain_transactions_are_refused() {
        let f = fixture(&[(10, 1_000)]);
        let mut app = LedgerApp::from_genesis(&f.genesis);
        let foreign = TxBody {
            chain_id: ChainId(Hash32([9; 32])),
            sender: pk(10),
            nonce: 0,
            fee: 1,
            kind: TxKind::Payload { data: vec![1] },
        }
        .sign(&key(10))
        .unwrap();
        assert!(matches!(
            app.check_tx(&foreign),
            Err(TxRejection::WrongChain { .. })
        ));
        let ex = app.commit(&f.ctx(1), &[foreign]);
        assert_eq!(ex.receipts[0].status, STATUS_WRONG_CHAIN);
        assert_eq!(ex.receipts[0].fee_charged, 0);
        assert_eq!(app.next_nonce(&pk(10)), 0);
        assert_eq!(app.balance(&pk(10)), 1_000);
    }

    #[test]
    fn duplicate_genesis_accounts_are_merged() {
        let f = fixture(&[(10, 5), (11, 1), (10, 7)]);
        let app = LedgerApp::from_genesis(&f.genesis);
        assert_eq!(app.balance(&pk(10)), 12);
        assert_eq!(app.balance(&pk(11)), 1);
        assert_eq!(app.next_nonce(&pk(10)), 0);
    }
}
