//! `metanode chain …`: create a local test network (`genesis --validators`),
//! and talk to a chain node through its API: status, genesis, blocks,
//! receipts, accounts, the head stream, and signed transfers or payloads.
//!
//! Transactions are built and signed here, with the chain id taken from the
//! node's canonical genesis bytes (decoded and hashed here, not trusted as
//! text), and sent as canonical bytes; JSON is only ever for reading.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use clap::{ArgGroup, Args, Subcommand};
use metanode_api::wire::{
    AccountResponse, BlockResponse, ChainStatusResponse, GenesisResponse, HeadEventInfo,
    HeadsLagged, ReceiptResponse, TxSubmitResponse,
};
use metanode_chain::app;
use metanode_chain::types::{
    FinalizedBlock, Genesis, GenesisAccount, Height, SignedTx, TxBody, TxKind, ValidatorSet,
};
use metanode_core::config::{ChainConfig, ChainPeer, LogLevel, NodeConfig};
use metanode_core::encoding::{Decode, Encode};
use metanode_core::hash::Hash32;
use metanode_core::keys::{Overwrite, PublicKey, SigningKey, SigningKeyFile};
use metanode_core::limits::{
    API_CHAIN_HEADS_LINE_BYTES_MAX, CHAIN_BLOCK_RECORD_BYTES_MAX, CHAIN_GENESIS_ACCOUNTS_COUNT_MAX,
    CHAIN_TX_PAYLOAD_BYTES_MAX, CHAIN_VALIDATORS_COUNT_MAX,
    CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX,
};

use crate::cmd_store::Remote;
use crate::genesis_file;
use crate::output::{Output, print_line};

/// How often `submit --wait` asks for the receipt.
const RECEIPT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// `submit --wait` gives up after this long unless told otherwise.
const RECEIPT_WAIT_S_DEFAULT: u64 = 30;
/// Times `submit` retries a 429 (mempool full) before giving up; it waits
/// what the node's Retry-After says (bounded below) between tries.
const SUBMIT_RETRIES_MAX: u32 = 5;
const SUBMIT_RETRY_WAIT_MAX: Duration = Duration::from_secs(5);
/// `genesis --fund-clients`: client key files written at most.
const GENESIS_CLIENTS_COUNT_MAX: u32 = 10_000;
const GENESIS_CLIENT_BALANCE_DEFAULT: u64 = 1_000_000_000;

#[derive(Debug, Subcommand)]
pub enum ChainCommand {
    /// Create a local test network (keys, genesis, one config per node), or
    /// with --api show the genesis a node runs.
    #[command(after_help = "\
With --validators N --out DIR it writes:
  DIR/genesis.yaml                 the genesis (chain id = hash of its canonical bytes)
  DIR/node-I/node.key              validator I's Ed25519 key (mode 0600)
  DIR/node-I/config.yaml           a full node config: data in DIR/node-I/data,
                                   api 127.0.0.1:(API-BASE-PORT+I), bpci HOST:(BASE-PORT+I),
                                   every other validator as a peer
  DIR/clients/client-J.key         funded client accounts (--fund-clients)
and prints the chain id and the command that starts each node. It refuses to
overwrite an existing DIR/genesis.yaml unless --force.

Examples:
  metanode chain genesis --validators 4 --out ./net --fund-clients 2
  metanode chain genesis --validators 1 --out /tmp/solo --chain-name solo --force
  metanode chain genesis --validators 4 --out ./net --host 10.0.0.5 --base-port 9000
  metanode chain genesis --api http://127.0.0.1:7878")]
    Genesis(GenesisArgs),
    /// Height, head, validators, peers, mempool and counters of a node.
    #[command(after_help = "\
Examples:
  metanode chain status --api http://127.0.0.1:7878
  metanode --json chain status --api http://127.0.0.1:7878")]
    Status(ApiArgs),
    /// A finalized block: header, transactions, who certified it.
    #[command(after_help = "\
Examples:
  metanode chain block latest --api http://127.0.0.1:7878
  metanode --json chain block 12 --api http://127.0.0.1:7878")]
    Block(BlockArgs),
    /// The receipt of a final transaction, with its inclusion proof.
    #[command(after_help = "\
To check the receipt without trusting the node, use
`metanode light verify-receipt --genesis FILE --api URL TX_HASH`.

Example:
  metanode chain receipt 9f2c…e1 --api http://127.0.0.1:7878")]
    Receipt(ReceiptArgs),
    /// An account's balance and next nonce.
    #[command(after_help = "\
Examples:
  metanode chain account 8a88e3dd…6f5c --api http://127.0.0.1:7878
  metanode chain account --key net/clients/client-0.key --api http://127.0.0.1:7878")]
    Account(AccountArgs),
    /// Follow finalized heads as they happen (until Ctrl-C or --count).
    #[command(after_help = "\
Prints one line per finalized block; with --json the node's NDJSON lines.
A line {\"lagged\": N} means N heads were skipped because this reader was slow.

Examples:
  metanode chain heads --api http://127.0.0.1:7878
  metanode --json chain heads --api http://127.0.0.1:7878 --count 10")]
    Heads(HeadsArgs),
    /// Sign and submit a transfer or a payload transaction.
    #[command(after_help = "\
The chain id comes from the node's genesis and the nonce from the account's
next nonce (as of the last final block: pass --nonce when you have other
transactions of the same sender still pending). With --wait the command
polls for the receipt and fails if the transaction failed on chain.

Examples:
  metanode chain submit --api http://127.0.0.1:7878 --key net/clients/client-0.key \\
      --to 8a88e3dd…6f5c --amount 100 --wait
  metanode chain submit --api http://127.0.0.1:7878 --key me.key --payload-hex 68656c6c6f
  metanode chain submit --api http://127.0.0.1:7878 --key me.key --payload-file doc.json --fee 5")]
    Submit(SubmitArgs),
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The node's API, e.g. http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    pub api: String,
}

#[derive(Debug, Args)]
pub struct GenesisArgs {
    /// Show the genesis of the node at URL instead of creating one.
    #[arg(long, value_name = "URL", conflicts_with_all = ["validators", "out", "fund_clients", "force"])]
    api: Option<String>,
    /// Validators (= nodes) of the new chain.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "api",
        requires = "out",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(CHAIN_VALIDATORS_COUNT_MAX))
    )]
    validators: Option<u16>,
    /// Directory to write the network into (created if missing).
    #[arg(long, value_name = "DIR", requires = "validators")]
    out: Option<PathBuf>,
    /// Name recorded in the genesis (at most 64 bytes).
    #[arg(long, value_name = "NAME", default_value = "local")]
    chain_name: String,
    /// IP address the nodes' BPCI transport listens on and peers dial.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    host: IpAddr,
    /// BPCI (UDP) port of node-0; node-I gets BASE+I.
    #[arg(long, value_name = "PORT", default_value_t = 7900)]
    base_port: u16,
    /// API (TCP) port of node-0 on 127.0.0.1; node-I gets BASE+I.
    #[arg(long, value_name = "PORT", default_value_t = 7878)]
    api_base_port: u16,
    /// Client accounts to create and fund at genesis (keys in DIR/clients).
    #[arg(long, value_name = "K", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(GENESIS_CLIENTS_COUNT_MAX)))]
    fund_clients: u32,
    /// Balance of each funded client, in base units.
    #[arg(long, value_name = "B", default_value_t = GENESIS_CLIENT_BALANCE_DEFAULT)]
    client_balance: u64,
    /// Replace an existing DIR/genesis.yaml, its keys and configs.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct BlockArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Height (from 1) or `latest`.
    #[arg(value_name = "HEIGHT")]
    height: String,
}

#[derive(Debug, Args)]
pub struct ReceiptArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The transaction id (64 hex digits), as `chain submit` printed it.
    #[arg(value_name = "TX_HASH", value_parser = parse_hash)]
    tx_hash: Hash32,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("account").required(true).args(["public_key", "key"])))]
pub struct AccountArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The account's Ed25519 public key (64 hex digits).
    #[arg(value_name = "PUBKEY", value_parser = parse_public_key)]
    public_key: Option<PublicKey>,
    /// Or the account's key file (its public key is used).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Stop after N heads (lag markers do not count).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["to", "payload_hex", "payload_file"])))]
pub struct SubmitArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The sender's key file (mode 0600).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Transfer to this public key (with --amount).
    #[arg(long, value_name = "PUBKEY", value_parser = parse_public_key, requires = "amount")]
    to: Option<PublicKey>,
    /// Base units to transfer.
    #[arg(long, value_name = "N", requires = "to")]
    amount: Option<u64>,
    /// Record these bytes (hex) on chain.
    #[arg(long, value_name = "HEX")]
    payload_hex: Option<String>,
    /// Record this file's bytes on chain (at most 64 KiB).
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// Fee offered, in base units (the mempool prefers higher fees).
    #[arg(long, value_name = "N", default_value_t = 1)]
    fee: u64,
    /// Nonce to use; by default the account's next nonce from the node.
    #[arg(long, value_name = "N")]
    nonce: Option<u64>,
    /// Wait until the transaction is final and print its receipt.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "S", default_value_t = RECEIPT_WAIT_S_DEFAULT, requires = "wait")]
    timeout_s: u64,
}

fn parse_hash(text: &str) -> Result<Hash32, String> {
    text.parse::<Hash32>().map_err(|e| e.to_string())
}

pub(crate) fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    text.parse::<PublicKey>().map_err(|e| e.to_string())
}

pub fn run(cmd: ChainCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        ChainCommand::Genesis(args) => match &args.api {
            Some(api) => show_genesis(&ChainApi::new(api)?, out),
            None => create_network(&args, out),
        },
        ChainCommand::Status(args) => status(&ChainApi::new(&args.api)?, out),
        ChainCommand::Block(args) => block(&ChainApi::new(&args.api.api)?, &args.height, out),
        ChainCommand::Receipt(args) => receipt(&ChainApi::new(&args.api.api)?, &args.tx_hash, out),
        ChainCommand::Account(args) => {
            let key = match (args.public_key, &args.key) {
                (Some(key), _) => key,
                (None, Some(path)) => load_key(path)?.public_key(),
                (None, None) => bail!("pass PUBKEY or --key FILE"),
            };
            account(&ChainApi::new(&args.api.api)?, &key, out)
        }
        ChainCommand::Heads(args) => heads(&ChainApi::new(&args.api.api)?, args.count, out),
        ChainCommand::Submit(args) => submit(&args, out),
    }
}

pub(crate) fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    SigningKeyFile::new(path)
        .load()
        .with_context(|| format!("loading the key {}", path.display()))
}

// ---- the node's chain API ----

/// `/api/v1/chain*` of one node, over [`Remote`].
pub(crate) struct ChainApi {
    remote: Remote,
}

impl ChainApi {
    pub(crate) fn new(url: &str) -> anyhow::Result<ChainApi> {
        Ok(ChainApi {
            remote: Remote::new(url)?,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.remote.base
    }

    /// GET `path`: `None` on 404, the response on 2xx, an error naming the
    /// node's message otherwise.
    fn get_found(
        &self,
        path: &str,
        what: &str,
    ) -> anyhow::Result<Option<ureq::http::Response<ureq::Body>>> {
        let response = self.remote.agent.get(self.remote.url(path)).call();
        if let Ok(r) = &response
            && r.status() == ureq::http::StatusCode::NOT_FOUND
        {
            return Ok(None);
        }
        self.remote.check(what, response).map(Some)
    }

    pub(crate) fn status(&self) -> anyhow::Result<ChainStatusResponse> {
        self.remote.get_json("/api/v1/chain/status", "chain status")
    }

    pub(crate) fn genesis_json(&self) -> anyhow::Result<GenesisResponse> {
        self.remote
            .get_json("/api/v1/chain/genesis", "chain genesis")
    }

    /// The node's genesis from its canonical bytes: the chain id computed
    /// here is the hash of exactly what the node runs.
    pub(crate) fn genesis(&self) -> anyhow::Result<Genesis> {
        let what = "chain genesis";
        let response = self.remote.check(
            what,
            self.remote
                .agent
                .get(self.remote.url("/api/v1/chain/genesis?format=bin"))
                .call(),
        )?;
        let bytes =
            self.remote
                .read_bin(what, response, CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX)?;
        Genesis::from_canonical_bytes(&bytes).with_context(|| {
            format!(
                "{what}: the node at {} sent genesis bytes that do not decode",
                self.base()
            )
        })
    }

    /// Block `height` from its canonical bytes; `None` if the node has none.
    pub(crate) fn block(&self, height: Height) -> anyhow::Result<Option<FinalizedBlock>> {
        let what = format!("block {height}");
        let Some(response) =
            self.get_found(&format!("/api/v1/chain/blocks/{height}?format=bin"), &what)?
        else {
            return Ok(None);
        };
        let bytes =
            self.remote
                .read_bin(&what, response, u64::from(CHAIN_BLOCK_RECORD_BYTES_MAX))?;
        let block = FinalizedBlock::from_canonical_bytes(&bytes).with_context(|| {
            format!(
                "{what}: the node at {} sent bytes that do not decode",
                self.base()
            )
        })?;
        Ok(Some(block))
    }

    pub(crate) fn block_json(&self, id: &str) -> anyhow::Result<Option<BlockResponse>> {
        let what = format!("block {id}");
        match self.get_found(&format!("/api/v1/chain/blocks/{id}"), &what)? {
            Some(response) => self.remote.read_json(&what, response).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn receipt(&self, tx_hash: &Hash32) -> anyhow::Result<Option<ReceiptResponse>> {
        let what = format!("receipt of {tx_hash}");
        match self.get_found(&format!("/api/v1/chain/receipts/{tx_hash}"), &what)? {
            Some(response) => self.remote.read_json(&what, response).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn account(&self, key: &PublicKey) -> anyhow::Result<AccountResponse> {
        self.remote
            .get_json(&format!("/api/v1/chain/accounts/{key}"), "chain account")
    }

    /// POSTs the canonical bytes; a 429 (mempool full) is retried a few
    /// times after the node's Retry-After.
    pub(crate) fn submit(&self, tx: &SignedTx) -> anyhow::Result<TxSubmitResponse> {
        let bytes = tx
            .to_canonical_bytes()
            .context("encoding the transaction")?;
        let mut retries = 0;
        loop {
            let response = self
                .remote
                .agent
                .post(self.remote.url("/api/v1/chain/txs"))
                .header("content-type", "application/octet-stream")
                .send(&bytes[..]);
            if let Ok(r) = &response
                && r.status() == ureq::http::StatusCode::TOO_MANY_REQUESTS
                && retries < SUBMIT_RETRIES_MAX
            {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
                    .min(SUBMIT_RETRY_WAIT_MAX);
                retries += 1;
                std::thread::sleep(wait);
                continue;
            }
            let response = self.remote.check("submit", response)?;
            return self.remote.read_json("submit", response);
        }
    }
}

// ---- reading ----

fn show_genesis(api: &ChainApi, out: &Output) -> anyhow::Result<()> {
    let g = api.genesis_json()?;
    let mut text = format!(
        "chain {} (id {})\ngenesis time {} ms\nvalidators ({}):\n",
        g.chain_name,
        g.chain_id,
        g.genesis_time_ms,
        g.validators.len()
    );
    for (i, v) in g.validators.iter().enumerate() {
        text += &format!("  {i}: {v}\n");
    }
    text += &format!("funded accounts: {}", g.accounts.len());
    for a in &g.accounts {
        text += &format!("\n  {} {}", a.public_key, a.balance);
    }
    out.emit(&text, &serde_json::to_value(&g)?);
    Ok(())
}

fn status(api: &ChainApi, out: &Output) -> anyhow::Result<()> {
    let s = api.status()?;
    let role = if s.is_validator {
        "validator"
    } else {
        "observer"
    };
    let text = format!(
        "chain {} (id {})\n\
         height {} block {} at {} ms, state root {}\n\
         deciding height {} round {}\n\
         node {} ({role}), peers connected {}/{}\n\
         mempool {} txs ({} bytes); {} txs refused\n\
         consensus messages {} received, {} rejected{}; frames rejected {}; blocks synced {}",
        s.chain_name,
        s.chain_id,
        s.height,
        s.block_hash,
        s.block_timestamp_ms,
        s.state_root,
        s.consensus_height,
        s.consensus_round,
        s.node_key,
        s.peers_connected.len(),
        s.validators
            .len()
            .saturating_sub(usize::from(s.is_validator)),
        s.mempool_txs,
        s.mempool_bytes,
        s.txs_refused,
        s.messages_received,
        s.messages_rejected,
        s.last_rejection
            .as_deref()
            .map(|r| format!(" (last: {r})"))
            .unwrap_or_default(),
        s.frames_rejected,
        s.blocks_synced,
    );
    out.emit(&text, &serde_json::to_value(&s)?);
    Ok(())
}

fn block(api: &ChainApi, id: &str, out: &Output) -> anyhow::Result<()> {
    if id != "latest" && id.parse::<u64>().is_err() {
        bail!("block {id:?}: expected a height (1, 2, …) or latest");
    }
    let Some(b) = api.block_json(id)? else {
        bail!("the node at {} has no block {id}", api.base());
    };
    let h = &b.header;
    let mut text = format!(
        "block {} {}\n  proposer {} (round {}), timestamp {} ms\n  prev {}\n  state root {}\n  \
         certified in round {} by validators {:?} ({} signatures)\n  txs {}",
        b.height,
        b.hash,
        h.proposer,
        h.round,
        h.timestamp_ms,
        h.prev_hash,
        h.state_root,
        b.certificate.round,
        b.certificate.signers,
        b.certificate.signatures_count,
        b.txs_count
    );
    for tx in &b.txs {
        text += &format!("\n    {tx}");
    }
    out.emit(&text, &serde_json::to_value(&b)?);
    Ok(())
}

/// The ledger's name for a receipt status.
pub(crate) fn status_name(status: u32) -> &'static str {
    match status {
        app::STATUS_OK => "ok",
        app::STATUS_WRONG_CHAIN => "wrong chain",
        app::STATUS_NONCE_TOO_LOW => "nonce too low",
        app::STATUS_NONCE_GAP => "nonce gap",
        app::STATUS_NONCE_EXHAUSTED => "nonce exhausted",
        app::STATUS_FEE_TOO_LOW => "fee too low",
        app::STATUS_INSUFFICIENT_FUNDS => "insufficient funds",
        app::STATUS_BALANCE_OVERFLOW => "balance overflow",
        app::STATUS_NOT_VALIDATOR_ADMIN => "not the validator admin",
        app::STATUS_BAD_VALIDATOR_SET => "bad validator set",
        _ => "application-defined",
    }
}

/// A receipt output: text when it is printable UTF-8 (the ledger's error
/// messages), else hex.
fn shown_output(output_hex: &str) -> String {
    if output_hex.is_empty() {
        return "(none)".to_string();
    }
    let Ok(bytes) = hex::decode(output_hex) else {
        return output_hex.to_string();
    };
    match String::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && !text.chars().any(char::is_control) => {
            format!("{text:?}")
        }
        _ => format!("0x{output_hex}"),
    }
}

fn receipt_text(r: &ReceiptResponse) -> String {
    format!(
        "tx {} is final at height {} (index {} of {}): status {} ({}), fee {}, output {}",
        r.receipt.tx_hash,
        r.height,
        r.index,
        r.txs_count,
        r.receipt.status,
        status_name(r.receipt.status),
        r.receipt.fee_charged,
        shown_output(&r.receipt.output)
    )
}

fn receipt(api: &ChainApi, tx_hash: &Hash32, out: &Output) -> anyhow::Result<()> {
    let Some(r) = api.receipt(tx_hash)? else {
        bail!(
            "the node at {} has no receipt for {tx_hash}: unknown or not final yet",
            api.base()
        );
    };
    out.emit(&receipt_text(&r), &serde_json::to_value(&r)?);
    Ok(())
}

fn account(api: &ChainApi, key: &PublicKey, out: &Output) -> anyhow::Result<()> {
    let a = api.account(key)?;
    out.emit(
        &format!(
            "account {}: balance {}, next nonce {}",
            a.public_key, a.balance, a.next_nonce
        ),
        &serde_json::to_value(&a)?,
    );
    Ok(())
}

fn heads(api: &ChainApi, count: Option<u64>, out: &Output) -> anyhow::Result<()> {
    let what = "chain heads";
    let response = api.remote.check(
        what,
        api.remote
            .agent
            .get(api.remote.url("/api/v1/chain/heads"))
            .call(),
    )?;
    let mut reader = BufReader::new(response.into_body().into_reader());
    let mut seen = 0u64;
    let mut line = Vec::new();
    while count.is_none_or(|c| seen < c) {
        line.clear();
        let read = (&mut reader)
            .take(API_CHAIN_HEADS_LINE_BYTES_MAX + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{what}: reading the stream from {}", api.base()))?;
        if read == 0 {
            bail!("{what}: the node at {} ended the stream", api.base());
        }
        if line.last() != Some(&b'\n') {
            bail!(
                "{what}: a line from {} is longer than {API_CHAIN_HEADS_LINE_BYTES_MAX} bytes or was cut off",
                api.base()
            );
        }
        let text = std::str::from_utf8(&line)
            .with_context(|| format!("{what}: a line is not utf-8"))?
            .trim_end();
        if let Ok(lagged) = serde_json::from_str::<HeadsLagged>(text) {
            if out.is_json() {
                print_line(text);
            } else {
                eprintln!(
                    "warning: skipped {} heads (this reader was too slow); `metanode chain status` shows the tip",
                    lagged.lagged
                );
            }
            continue;
        }
        let head: HeadEventInfo = serde_json::from_str(text)
            .with_context(|| format!("{what}: unexpected line {text:.200}"))?;
        out.emit(
            &format!(
                "height {} {} txs {} round {} at {} ms",
                head.height, head.block_hash, head.txs_count, head.round, head.timestamp_ms
            ),
            &serde_json::to_value(&head)?,
        );
        seen += 1;
    }
    Ok(())
}

// ---- submitting ----

fn submit(args: &SubmitArgs, out: &Output) -> anyhow::Result<()> {
    let key = load_key(&args.key)?;
    let kind = match (&args.to, args.amount, &args.payload_hex, &args.payload_file) {
        (Some(to), Some(amount), None, None) => TxKind::Transfer { to: *to, amount },
        (None, None, Some(text), None) => {
            let data =
                hex::decode(text.trim()).map_err(|e| anyhow!("--payload-hex is not hex: {e}"))?;
            payload(data, "--payload-hex")?
        }
        (None, None, None, Some(path)) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut data = Vec::new();
            file.take(u64::from(CHAIN_TX_PAYLOAD_BYTES_MAX) + 1)
                .read_to_end(&mut data)
                .with_context(|| format!("reading {}", path.display()))?;
            payload(data, &path.display().to_string())?
        }
        _ => bail!(
            "say what to send: --to PUBKEY --amount N, --payload-hex HEX or --payload-file FILE"
        ),
    };
    let api = ChainApi::new(&args.api.api)?;
    let chain_id = api.genesis()?.chain_id();
    let sender = key.public_key();
    let nonce = match args.nonce {
        Some(n) => n,
        None => api.account(&sender)?.next_nonce,
    };
    let tx = TxBody {
        chain_id,
        sender,
        nonce,
        fee: args.fee,
        kind,
    }
    .sign(&key)
    .context("signing the transaction")?;
    let admitted = api.submit(&tx)?;
    let tx_hash = tx.hash();
    if admitted.tx_hash != tx_hash.to_hex() {
        bail!(
            "the node at {} admitted transaction {} but we signed {tx_hash}",
            api.base(),
            admitted.tx_hash
        );
    }
    if !args.wait {
        out.emit(
            &format!("submitted tx {tx_hash} (sender {sender}, nonce {nonce})"),
            &serde_json::json!({
                "tx_hash": tx_hash.to_hex(), "sender": sender.to_string(), "nonce": nonce,
            }),
        );
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let r = loop {
        if let Some(r) = api.receipt(&tx_hash)? {
            break r;
        }
        if Instant::now() >= deadline {
            bail!(
                "tx {tx_hash} was admitted but is not final after {} s (see `metanode chain receipt {tx_hash} --api {}`)",
                args.timeout_s,
                api.base()
            );
        }
        std::thread::sleep(RECEIPT_POLL_INTERVAL);
    };
    if r.receipt.status != app::STATUS_OK {
        bail!(
            "tx {tx_hash} is final at height {} but failed: status {} ({}), output {}",
            r.height,
            r.receipt.status,
            status_name(r.receipt.status),
            shown_output(&r.receipt.output)
        );
    }
    out.emit(
        &receipt_text(&r),
        &serde_json::json!({
            "tx_hash": tx_hash.to_hex(), "sender": sender.to_string(), "nonce": nonce,
            "height": r.height, "index": r.index, "status": r.receipt.status,
            "fee_charged": r.receipt.fee_charged, "output": r.receipt.output,
        }),
    );
    Ok(())
}

fn payload(data: Vec<u8>, source: &str) -> anyhow::Result<TxKind> {
    if data.len() > CHAIN_TX_PAYLOAD_BYTES_MAX as usize {
        bail!(
            "{source}: the payload is larger than {CHAIN_TX_PAYLOAD_BYTES_MAX} bytes, the most one transaction carries"
        );
    }
    if data.starts_with(app::VALIDATOR_SET_PAYLOAD_PREFIX) {
        bail!("{source}: the payload starts with the prefix reserved for validator-set changes");
    }
    Ok(TxKind::Payload { data })
}

// ---- creating a network ----

struct NodePlan {
    name: String,
    dir: PathBuf,
    key: SigningKey,
    listen: SocketAddr,
    api: SocketAddr,
}

fn now_ms() -> anyhow::Result<u64> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    u64::try_from(since.as_millis()).context("the system clock is past year 500 million")
}

fn port(base: u16, i: usize, flag: &str) -> anyhow::Result<u16> {
    u16::try_from(usize::from(base) + i)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| anyhow!("{flag} {base} + {i} is not a port (1..=65535)"))
}

fn create_network(args: &GenesisArgs, out: &Output) -> anyhow::Result<()> {
    let (Some(count), Some(dir)) = (args.validators, &args.out) else {
        bail!("pass --validators N --out DIR (or --api URL to show a node's genesis)");
    };
    let count = usize::from(count);
    if args.chain_name.is_empty() || args.chain_name.len() > 64 {
        bail!("--chain-name must be 1 to 64 bytes");
    }
    if args.fund_clients as usize > CHAIN_GENESIS_ACCOUNTS_COUNT_MAX as usize {
        bail!(
            "--fund-clients {} exceeds the genesis account limit",
            args.fund_clients
        );
    }
    // Configs hold absolute paths (the agent may run with another cwd).
    let dir =
        std::path::absolute(dir).with_context(|| format!("resolving --out {}", dir.display()))?;
    let genesis_path = dir.join("genesis.yaml");
    if genesis_path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace the network (keys and configs too)",
            genesis_path.display()
        );
    }
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };

    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let key = SigningKey::generate().context("generating a validator key")?;
        nodes.push(NodePlan {
            name: format!("node-{i}"),
            dir: dir.join(format!("node-{i}")),
            key,
            listen: SocketAddr::new(args.host, port(args.base_port, i, "--base-port")?),
            api: SocketAddr::new(
                IpAddr::from([127, 0, 0, 1]),
                port(args.api_base_port, i, "--api-base-port")?,
            ),
        });
    }
    let clients: Vec<SigningKey> = (0..args.fund_clients)
        .map(|_| SigningKey::generate().context("generating a client key"))
        .collect::<anyhow::Result<_>>()?;
    let genesis = Genesis {
        chain_name: args.chain_name.clone(),
        genesis_time_ms: now_ms()?,
        validators: ValidatorSet::new(nodes.iter().map(|n| n.key.public_key()).collect())
            .context("building the validator set")?,
        accounts: clients
            .iter()
            .map(|k| GenesisAccount {
                key: k.public_key(),
                balance: args.client_balance,
            })
            .collect(),
    };
    let chain_id = genesis.chain_id();

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let yaml = genesis_file::to_yaml(&genesis).context("writing the genesis as yaml")?;
    // What we wrote must read back as the same document, or the nodes would
    // disagree with this command about the chain id.
    let reread = genesis_file::parse(&yaml, &genesis_path.display().to_string())?;
    if reread.chain_id() != chain_id {
        bail!("the genesis yaml does not read back to the same chain id (a bug)");
    }

    let mut node_reports = Vec::with_capacity(count);
    for node in &nodes {
        std::fs::create_dir_all(&node.dir)
            .with_context(|| format!("creating {}", node.dir.display()))?;
        let key_path = node.dir.join("node.key");
        SigningKeyFile::new(&key_path)
            .save(&node.key, overwrite)
            .with_context(|| format!("writing {}", key_path.display()))?;
        let peers = nodes
            .iter()
            .filter(|other| other.name != node.name)
            .map(|other| ChainPeer {
                public_key: other.key.public_key().to_string(),
                address: Some(other.listen.to_string()),
            })
            .collect();
        let mut cfg = NodeConfig::dev(node.dir.join("data"), node.api);
        cfg.node.name = node.name.clone();
        cfg.log.level = LogLevel::Info;
        cfg.chain = Some(ChainConfig {
            key: Some(key_path.clone()),
            listen: node.listen,
            peers,
            ..ChainConfig::new(genesis_path.clone(), None)
        });
        let config_path = node.dir.join("config.yaml");
        let text = format!(
            "# Node {} of chain {} (id {chain_id}), written by `metanode chain genesis`.\n\
             # Start it with: metanode agent --config {}\n{}",
            node.name,
            genesis.chain_name,
            config_path.display(),
            serde_saphyr::to_string(&cfg).context("serializing the node config")?
        );
        // The same check `metanode agent` will run, before anything relies on it.
        NodeConfig::from_yaml_str(&text, &config_path.display().to_string())
            .context("the generated node config does not validate (a bug)")?;
        write_new(&config_path, text.as_bytes(), args.force)?;
        if node.dir.join("data").join("chain").exists() {
            eprintln!(
                "warning: {} holds chain data of an earlier network; remove it before starting the node",
                node.dir.join("data").display()
            );
        }
        node_reports.push(serde_json::json!({
            "name": node.name,
            "public_key": node.key.public_key().to_string(),
            "config": config_path,
            "key": key_path,
            "api": format!("http://{}", node.api),
            "listen": node.listen.to_string(),
        }));
    }
    let mut client_reports = Vec::with_capacity(clients.len());
    if !clients.is_empty() {
        let clients_dir = dir.join("clients");
        std::fs::create_dir_all(&clients_dir)
            .with_context(|| format!("creating {}", clients_dir.display()))?;
        for (j, key) in clients.iter().enumerate() {
            let path = clients_dir.join(format!("client-{j}.key"));
            SigningKeyFile::new(&path)
                .save(key, overwrite)
                .with_context(|| format!("writing {}", path.display()))?;
            client_reports.push(serde_json::json!({
                "key": path,
                "public_key": key.public_key().to_string(),
                "balance": args.client_balance,
            }));
        }
    }
    // The genesis last: its presence marks a complete network directory.
    write_new(&genesis_path, yaml.as_bytes(), args.force)?;

    let mut text = format!(
        "chain {} id {chain_id}: {count} validator{}, {} funded client{}\ngenesis {}\nstart the nodes:\n",
        genesis.chain_name,
        if count == 1 { "" } else { "s" },
        clients.len(),
        if clients.len() == 1 { "" } else { "s" },
        genesis_path.display()
    );
    for node in &nodes {
        text += &format!(
            "  metanode agent --config {}    # api http://{}, bpci {}\n",
            node.dir.join("config.yaml").display(),
            node.api,
            node.listen
        );
    }
    for r in &client_reports {
        text += &format!(
            "client {} ({})\n",
            r["key"].as_str().unwrap_or(""),
            r["public_key"].as_str().unwrap_or("")
        );
    }
    if let Some(first) = nodes.first() {
        text += &format!("then: metanode chain status --api http://{}", first.api);
    }
    out.emit(
        text.trim_end(),
        &serde_json::json!({
            "chain_id": chain_id.to_string(),
            "chain_name": genesis.chain_name,
            "genesis": genesis_path,
            "nodes": node_reports,
            "clients": client_reports,
        }),
    );
    Ok(())
}

/// Write `path`, refusing to replace an existing file unless `force`.
fn write_new(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    if !force && path.exists() {
        bail!(
            "{} already exists; pass --force to replace it",
            path.display()
        );
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
