//! The BPI chain as pure state machines.
//!
//! Nothing in this crate does I/O, reads a clock or spawns a thread: inputs
//! (messages, timer ticks, application results) go in, effects (messages to
//! send, state to persist, blocks to store) come out. The real node
//! (sockets, disk, timers) and the deterministic simulator drive the same
//! code, so what the simulator proves about a seed holds for the node.
//!
//! - [`types`]: transactions, headers, blocks, validator sets, commit
//!   certificates, receipts, genesis, and their canonical encodings.
//! - [`qbft`]: the QBFT consensus engine and its signed messages.
//! - [`poh`]: leader-side Proof-of-History ordering ticks.
//! - [`app`]: the application interface and the built-in ledger.
//! - [`mempool`]: bounded, nonce-ordered, fee-prioritized pending set.
//! - [`light`]: the light client (header chain, PoH root, receipt proofs).
//! - [`node`]: one validator's logic (engine + mempool + PoH + application)
//!   with I/O left to the driver: the node runtime and the simulator.

pub mod app;
pub mod light;
pub mod mempool;
pub mod node;
pub mod poh;
pub mod qbft;
pub mod types;
