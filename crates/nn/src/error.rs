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
    /// A homomorphic operation failed while executing a layer.
    #[error("node '{node}': {source}")]
    Ckks {
        /// Node name (or a step such as "encrypt").
        node: String,
        /// The CKKS error.
        #[source]
        source: henn_ckks::CkksError,
    },
    /// Executing a layer failed for a reason other than CKKS arithmetic (slot backend
    /// mismatch, missing key, bad input).
    #[error("execution failed: {0}")]
    Exec(String),
}

/// Result alias for henn-nn.
pub type Result<T, E = NnError> = std::result::Result<T, E>;
