//! Service configuration: every resource the server may use is bounded here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where sessions (evaluation-key bundles) live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStoreKind {
    /// In this process only (one replica).
    Memory,
    /// In Redis at this URL (`redis://host:port/db`), shared by every replica; large bundles
    /// are stored in chunks.
    Redis(String),
}

/// Configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub addr: SocketAddr,
    /// Server artifacts (`henn compile`'s `DIR/server`), one per model.
    pub models: Vec<PathBuf>,
    /// The key store.
    pub key_store: KeyStoreKind,
    /// Bytes of evaluation keys held in memory (deserialized); least recently used sessions
    /// are evicted beyond it (with Redis they are read again on their next use).
    pub key_budget_bytes: usize,
    /// A session expires this long after its last use.
    pub session_ttl: Duration,
    /// Largest evaluation-key upload.
    pub max_key_bytes: usize,
    /// Largest query.
    pub max_query_bytes: usize,
    /// Inferences (and key uploads being read) running at once.
    pub concurrency: usize,
    /// Requests waiting for a turn beyond which the server answers 503 + Retry-After.
    pub queue: usize,
    /// Longest a request may take (408 beyond).
    pub request_timeout: Duration,
    /// Worker threads of the inference pool (default: all cores).
    pub threads: Option<usize>,
    /// Bytes of encoded weight plaintexts cached per model (shared by its sessions).
    pub plaintext_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            models: Vec::new(),
            key_store: KeyStoreKind::Memory,
            key_budget_bytes: 4 << 30,
            session_ttl: Duration::from_secs(3600),
            max_key_bytes: 1 << 30,
            max_query_bytes: 256 << 20,
            concurrency: 1,
            queue: 16,
            request_timeout: Duration::from_secs(600),
            threads: None,
            plaintext_cache_bytes: 512 << 20,
        }
    }
}
