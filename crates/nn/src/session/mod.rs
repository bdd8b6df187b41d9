//! The top floor: client and server sessions.
//!
//! * [`client::Client`]: the secret key; keys, packing and encryption of inputs, decryption
//!   and unpacking of outputs, from the plan alone (no graph, no weights);
//! * [`server::Server`]: the model and a plan checked against it; a
//!   [`server::ServerSession`] adds one client's evaluation keys (never a secret key) and runs
//!   one or many inputs;
//! * [`wire`]: the bytes that cross between them (evaluation keys, packed ciphertexts) on top
//!   of `henn-ckks`'s serialization;
//! * [`local::LocalSession`]: both in one process, image loops for evaluation and profiling.
//!
//! The secret key and the evaluation keys never share a struct.

pub mod artifact;
pub mod client;
pub mod local;
pub mod secret;
pub mod server;
pub mod wire;

pub use client::Client;
pub use local::{AllResult, LocalSession, RunResult, Timings, run_once};
pub use secret::SecretKeyFile;
pub use server::{Server, ServerRun, ServerSession};
pub use wire::{EvaluationKeys, PackedCiphertexts, Query};
