//! Structured fuzzing on stable Rust: every parser and state machine a peer or an auditor's file
//! can reach, driven by proptest strategies instead of coverage feedback (no nightly toolchain,
//! so no libFuzzer), each target with properties beyond "does not panic".
//!
//! `cargo test --test fuzz` runs every target for a few seconds; `scripts/fuzz [SECONDS]` runs
//! them for longer, in the same unoptimized build (overflow checks on). A failure prints the
//! shrunk input and the command that replays it.
//!
//! - [`frame`]: IDSCP2 framing and message decoding, over arbitrarily split streams.
//! - [`fsm`]: event sequences into the handshake and alternating-bit state machine.
//! - [`ids`]: the IDS request header and the `ch-ids-*` parameters.
//! - [`dat`]: DAT verification against a DAPS key set.
//! - [`export`]: exports, chains and receipts as an auditor verifies them.
//! - [`understand`]: messages recognised in logged payloads, and the view folded from them.

// A test binary has no public API: `pub` marks what its modules share (the package's
// `unreachable_pub` lint is for the library).
#![allow(unreachable_pub)]

mod dat;
mod export;
mod frame;
mod fsm;
mod ids;
mod json;
mod mutate;
mod runner;
mod understand;

fn main() -> std::process::ExitCode {
    runner::main(&[
        frame::TARGET,
        fsm::TARGET,
        ids::TARGET,
        dat::TARGET,
        export::TARGET,
        understand::TARGET,
    ])
}
