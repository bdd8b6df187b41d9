//! Error type of henn-nn.

use std::path::PathBuf;

/// Everything that can go wrong while importing, checking, rewriting or running a model,
/// or while reading input data. Messages say what was wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NnError {
    /// An I/O error on a named file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than the importer accepts.
    #[error(
        "{path} is {size} bytes, more than the limit of {limit} bytes; is this really a model file?"
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes are not a valid ONNX protobuf message.
    #[error(
        "malformed ONNX model (protobuf decoding failed: {0}); re-export the model with torch.onnx.export or check the file is not truncated"
    )]
    MalformedProtobuf(String),
    /// The ONNX model is structurally invalid (missing graph, no input, ...).
    #[error("invalid ONNX model: {0}")]
    InvalidModel(String),
    /// A node uses an op type that has no importer.
    #[error("node '{node}': unsupported ONNX op type '{op_type}'; supported op types: {supported}")]
    UnsupportedOp {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// Comma separated list of supported op types.
        supported: String,
    },
    /// A node uses an attribute or attribute value that is not supported.
    #[error("node '{node}' ({op_type}): unsupported attribute {attribute}: {detail}")]
    UnsupportedAttribute {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// Attribute name.
        attribute: String,
        /// What is supported instead.
        detail: String,
    },
    /// A node is used in a way the IR does not support (e.g. a weight that is not constant).
    #[error("node '{node}' ({op_type}): {detail}")]
    UnsupportedNode {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What is unsupported and what is supported.
        detail: String,
    },
    /// A node refers to a tensor that no node, input or initializer defines.
    #[error(
        "node '{node}': input '{input}' is not produced by any node, graph input or initializer"
    )]
    MissingInput {
        /// Node name.
        node: String,
        /// Name of the missing tensor.
        input: String,
    },
    /// A node requires a constant input (weight, initializer) that is missing.
    #[error("node '{node}': missing initializer or constant '{name}' ({what})")]
    MissingInitializer {
        /// Node name.
        node: String,
        /// Name of the tensor (may be empty when the input slot itself is absent).
        name: String,
        /// What the tensor is used for.
        what: String,
    },
    /// An initializer or constant tensor cannot be decoded.
    #[error("tensor '{name}': {detail}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Shapes do not fit together.
    #[error("node '{node}': shape mismatch: {detail}")]
    ShapeMismatch {
        /// Node name (or "input").
        node: String,
        /// What does not match.
        detail: String,
    },
    /// An IR graph is inconsistent (bad value ids, wrong order).
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
    /// A data file is corrupt (wrong magic, truncated, count mismatch, ...).
    #[error("{path}: {detail}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A data set file is missing.
    #[error(
        "data set file {path} not found; run `scripts/fetch-data.sh` to download the data sets (or pass the right data directory)"
    )]
    DataMissing {
        /// The file that is missing.
        path: PathBuf,
    },
    /// An input (image, array) does not fit the model input.
    #[error("{path}: {detail}")]
    InputMismatch {
        /// The file.
        path: PathBuf,
        /// What does not match.
        detail: String,
    },
    /// A rewrite could not be applied.
    #[error("rewrite {rewrite}: {detail}")]
    Rewrite {
        /// The rewrite's name.
        rewrite: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// An op the chosen packing layout cannot evaluate.
    #[error("node '{node}' ({op}) is not supported by the {layout} layout: {hint}")]
    UnsupportedForLayout {
        /// Node name.
        node: String,
        /// Op kind.
        op: String,
        /// Layout name (`batch`, `channel`).
        layout: String,
        /// What to do instead.
        hint: String,
    },
    /// The planner cannot find (or check) CKKS parameters for a model.
    #[error("planning failed: {0}")]
    Plan(String),
    /// A polynomial approximation cannot be made as asked (degree, range, budget, data).
    #[error("approximation: {0}")]
    Approx(String),
    /// A homomorphic operation failed while executing a layer.
    #[error("node '{node}': {source}")]
    Ckks {
        /// Node name (or a step such as "encrypt").
        node: String,
        /// The CKKS error.
        #[source]
        source: henn_ckks::CkksError,
    },
    /// Executing a layer failed for a reason other than CKKS arithmetic (level or scale
    /// mismatch, missing rotation key, slot overflow, ...).
    #[error("{}{source}", node_prefix(node))]
    Exec {
        /// Node name (empty when the failure happened outside a node, e.g. packing).
        node: String,
        /// What went wrong.
        #[source]
        source: ExecError,
    },
    /// A compiled artifact (client or server directory) is unreadable or inconsistent.
    #[error("{path}: {detail}")]
    BadArtifact {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A secret key was sent where evaluation keys or ciphertexts belong.
    #[error(
        "this is a secret key: it must never leave the client; send the evaluation keys (henn keygen writes them apart) and make a new key pair if this one was shared"
    )]
    SecretKeyUploaded,
    /// A received wire object (evaluation keys, packed ciphertexts) is malformed.
    #[error("cannot read the received object: {0}")]
    Wire(String),
    /// A plan does not match what this side computes from the model and the parameters (an
    /// edited, stale or foreign plan).
    #[error(
        "the plan does not match the model: {what} differs (plan: {stored}; recomputed: {computed}); make the plan again from this model (henn plan / henn compile)"
    )]
    PlanMismatch {
        /// The part of the plan that differs.
        what: String,
        /// What the plan says.
        stored: String,
        /// What was computed.
        computed: String,
    },
}

fn node_prefix(node: &str) -> String {
    if node.is_empty() {
        String::new()
    } else {
        format!("node '{node}': ")
    }
}

/// Why a homomorphic layer could not be executed (the executor adds the node).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// Two operands of an addition or product are at different levels.
    #[error("level mismatch: {lhs} vs {rhs}")]
    LevelMismatch {
        /// Level of the left operand.
        lhs: usize,
        /// Level of the right operand.
        rhs: usize,
    },
    /// Two operands of an addition are at different scales.
    #[error("scale mismatch: 2^{lhs:.6} vs 2^{rhs:.6}")]
    ScaleMismatch {
        /// log2 of the left operand's scale.
        lhs: f64,
        /// log2 of the right operand's scale.
        rhs: f64,
    },
    /// A plaintext is at a lower level than the ciphertext it multiplies.
    #[error("plaintext at level {pt} below the ciphertext's level {ct}")]
    PlaintextLevel {
        /// Level of the plaintext.
        pt: usize,
        /// Level of the ciphertext.
        ct: usize,
    },
    /// A level cannot be raised by dropping primes.
    #[error("cannot raise level {from} to {to}")]
    RaiseLevel {
        /// Current level.
        from: usize,
        /// Requested level.
        to: usize,
    },
    /// The modulus chain is exhausted.
    #[error("out of levels: {0}; plan with more levels (a deeper modulus chain)")]
    OutOfLevels(&'static str),
    /// There is no prime at a level.
    #[error("no prime at level {0}")]
    NoPrime(usize),
    /// A scale is not a finite value >= 1.
    #[error("invalid scale {0} (must be finite and >= 1)")]
    InvalidScale(f64),
    /// The evaluation keys lack rotation steps the layer needs.
    #[error(
        "the Galois keys lack rotation steps {steps:?} that the plan needs; regenerate the keys from the plan"
    )]
    MissingRotation {
        /// The missing steps.
        steps: Vec<i64>,
    },
    /// An evaluation key serves lower levels than the plan uses it at.
    #[error(
        "the {what} serves levels up to {have}, the plan needs it at level {need}; regenerate the keys from the plan"
    )]
    KeyLevel {
        /// Which key.
        what: String,
        /// Highest level it serves.
        have: usize,
        /// Level the plan needs.
        need: usize,
    },
    /// A value needs more slots than a ciphertext has.
    #[error("needs {need} slots, a ciphertext has {have}")]
    SlotOverflow {
        /// Slots needed.
        need: usize,
        /// Slots available.
        have: usize,
    },
    /// A packed value has another number of ciphertexts than its placement.
    #[error("{what}: expected {expected} ciphertexts, got {got}")]
    CiphertextCount {
        /// Which value.
        what: &'static str,
        /// Ciphertexts the placement has.
        expected: usize,
        /// Ciphertexts given.
        got: usize,
    },
    /// Input images do not fit the plan (count, size).
    #[error("input: {0}")]
    Input(String),
    /// A value's multiplier makes an operation impossible.
    #[error("{0}")]
    Multiplier(&'static str),
    /// A broken invariant of the executor or a layout (a bug, never bad input).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ExecError> for NnError {
    fn from(source: ExecError) -> Self {
        NnError::Exec {
            node: String::new(),
            source,
        }
    }
}

/// Result alias for henn-nn.
pub type Result<T, E = NnError> = std::result::Result<T, E>;
