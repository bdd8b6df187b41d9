//! Subcommands. Each subcommand lives in its own module; this file only wires them up.

use clap::{Parser, Subcommand};

mod approximate;
mod bench;
mod eval;
mod eval_encrypted;
mod he;
mod inspect;
mod load;
mod offline;
mod plan;
mod plot;
mod predict;
mod profile;
mod prune;
mod run;
mod service;

#[derive(Debug, Parser)]
#[command(
    name = "henn",
    version,
    about = "Private neural-network inference over CKKS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Subcommands are added here, one line each, by the module that owns them.
    /// Classify inputs (images, .npy arrays) with a model: logits and top-1.
    Predict(predict::Args),
    /// Accuracy of a model on a data set's test split.
    Eval(eval::Args),
    /// Show the imported model layer by layer.
    Inspect(inspect::Args),
    /// Encrypted inference of the embedded MNIST samples with the embedded default model.
    Run(run::Args),
    /// The execution plan (depth, CKKS parameters, keys, per-layer levels) of a model.
    Plan(plan::Args),
    /// Per-layer profile (time, op counts, level, scale, error) of one encrypted batch.
    Profile(profile::Args),
    /// Micro-benchmarks (`henn bench ckks`: CKKS core operations).
    Bench(bench::Args),
    /// Compile a model into a client artifact (plan, no weights) and a server artifact.
    Compile(offline::CompileArgs),
    /// Client: a secret key and the evaluation-key bundle for a client artifact.
    Keygen(offline::KeygenArgs),
    /// Client: encrypt images into a query.
    Encrypt(offline::EncryptArgs),
    /// Server: run a query with a client's evaluation keys.
    Infer(offline::InferArgs),
    /// Client: decrypt a result (logits, top-1).
    Decrypt(offline::DecryptArgs),
    /// The HTTP inference service (sessions of evaluation keys, encrypted queries).
    Serve(service::ServeArgs),
    /// Client of `henn serve`: keys, session, encryption, inference, decryption.
    Client(service::ClientArgs),
    /// Replace non-polynomial activations by fitted polynomials (reference, uniform, OLA).
    Approximate(approximate::Args),
    /// L1-norm filter pruning of one convolution (and the matching inputs downstream).
    Prune(prune::Args),
}

impl Command {
    /// Whether this command is a long-running service (logs at info by default).
    pub fn is_service(&self) -> bool {
        matches!(self, Command::Serve(_))
    }
}

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Predict(a) => predict::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Approximate(a) => approximate::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Run(a) => run::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Compile(a) => offline::compile(a),
        Command::Keygen(a) => offline::keygen(a),
        Command::Encrypt(a) => offline::encrypt(a),
        Command::Infer(a) => offline::infer(a),
        Command::Decrypt(a) => offline::decrypt(a),
        Command::Serve(a) => service::serve(a),
        Command::Client(a) => service::client(a),
    }
}
