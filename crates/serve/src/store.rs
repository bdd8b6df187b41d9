//! Sessions: a client's evaluation keys, deserialized, held in memory under a byte budget
//! (least recently used evicted first), with a time to live; optionally backed by Redis, so
//! that every replica behind a load balancer can serve every session (a replica that has not
//! seen a session reads its bundle from Redis, in chunks, and deserializes it).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use henn_nn::session::ServerSession;
use rand::{RngCore, SeedableRng};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Bytes per Redis value of a chunked bundle.
pub const REDIS_CHUNK_BYTES: usize = 8 << 20;
/// Evicted session ids remembered (to answer 410 instead of 404).
const EVICTED_REMEMBERED: usize = 4096;

/// A fresh session id: 128 bits from the OS-seeded ChaCha20 CSPRNG, hex (it is the only
/// credential of a session, so it must be unguessable).
pub fn new_session_id() -> String {
    let mut b = [0u8; 16];
    rand_chacha::ChaCha20Rng::from_os_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `id` has the form of a session id (anything else is not looked up).
pub fn valid_session_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit())
}

struct Entry {
    model: String,
    session: Arc<ServerSession>,
    bytes: usize,
    last: Instant,
}

/// Redis-backed bundle storage.
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
    ttl: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn redis_err(e: redis::RedisError) -> ApiError {
    ApiError::Internal(format!("key store (Redis): {e}"))
}

fn meta_key(id: &str) -> String {
    format!("henn:session:{id}:meta")
}

fn chunk_key(id: &str, i: usize) -> String {
    format!("henn:session:{id}:chunk:{i}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl RedisStore {
    /// Connects to `url`.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, ApiError> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        let conn = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(redis_err)?;
        Ok(Self { conn, ttl })
    }

    fn ttl_s(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// Stores a bundle (chunked) for `model` under `id`, expiring after the TTL.
    pub async fn put(&self, id: &str, model: &str, bundle: &[u8]) -> Result<(), ApiError> {
        let chunks: Vec<&[u8]> = bundle.chunks(REDIS_CHUNK_BYTES).collect();
        let meta = format!(
            "{model}\n{}\n{}\n{}",
            bundle.len(),
            chunks.len(),
            hex(&Sha256::digest(bundle))
        );
        let mut p = redis::pipe();
        p.atomic();
        for (i, c) in chunks.iter().enumerate() {
            p.set_ex(chunk_key(id, i), *c, self.ttl_s()).ignore();
        }
        // the meta key last: a reader that sees it sees every chunk
        p.set_ex(meta_key(id), meta, self.ttl_s()).ignore();
        let mut conn = self.conn.clone();
        p.query_async::<()>(&mut conn).await.map_err(redis_err)
    }

    async fn meta(&self, id: &str) -> Result<Option<(String, usize, usize, String)>, ApiError> {
        let mut conn = self.conn.clone();
        let m: Option<String> = conn.get(meta_key(id)).await.map_err(redis_err)?;
        let Some(m) = m else { return Ok(None) };
        let mut it = m.split('\n');
        let bad = || ApiError::Internal(format!("key store: session {id} has a corrupt record"));
        let model = it.next().ok_or_else(bad)?.to_string();
        let len: usize = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let n: usize = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let sha = it.next().ok_or_else(bad)?.to_string();
        Ok(Some((model, len, n, sha)))
    }

    /// The bundle and model of `id`, if the session exists.
    pub async fn get(&self, id: &str) -> Result<Option<(String, Vec<u8>)>, ApiError> {
        let Some((model, len, n, sha)) = self.meta(id).await? else {
            return Ok(None);
        };
        let mut conn = self.conn.clone();
        let keys: Vec<String> = (0..n).map(|i| chunk_key(id, i)).collect();
        let parts: Vec<Option<Vec<u8>>> = if keys.is_empty() {
            Vec::new()
        } else {
            conn.mget(&keys).await.map_err(redis_err)?
        };
        let mut bundle = Vec::with_capacity(len);
        for p in parts {
            match p {
                Some(b) => bundle.extend_from_slice(&b),
                // a chunk expired between the reads: the session is gone
                None => return Ok(None),
            }
        }
        if bundle.len() != len || hex(&Sha256::digest(&bundle)) != sha {
            return Err(ApiError::Internal(format!(
                "key store: session {id}'s bundle does not match its record"
            )));
        }
        Ok(Some((model, bundle)))
    }

    /// Extends the session's time to live; whether it still exists.
    pub async fn touch(&self, id: &str) -> Result<bool, ApiError> {
        let Some((_, _, n, _)) = self.meta(id).await? else {
            return Ok(false);
        };
        let mut p = redis::pipe();
        p.expire(meta_key(id), self.ttl_s() as i64).ignore();
        for i in 0..n {
            p.expire(chunk_key(id, i), self.ttl_s() as i64).ignore();
        }
        let mut conn = self.conn.clone();
        p.query_async::<()>(&mut conn).await.map_err(redis_err)?;
        Ok(true)
    }

    /// Deletes a session; whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, ApiError> {
        let Some((_, _, n, _)) = self.meta(id).await? else {
            return Ok(false);
        };
        let mut keys: Vec<String> = (0..n).map(|i| chunk_key(id, i)).collect();
        keys.push(meta_key(id));
        let mut conn = self.conn.clone();
        conn.del::<_, ()>(keys).await.map_err(redis_err)?;
        Ok(true)
    }
}

/// The sessions of one replica.
pub struct Sessions {
    redis: Option<RedisStore>,
    cache: Mutex<HashMap<String, Entry>>,
    evicted: Mutex<VecDeque<String>>,
    budget: usize,
    ttl: Duration,
    bytes: AtomicUsize,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("redis", &self.redis.is_some())
            .field("budget", &self.budget)
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// In this replica's memory.
    Found(String, Arc<ServerSession>),
    /// Only in Redis: the bundle to deserialize (then [`Sessions::insert_local`]).
    Remote(String, Vec<u8>),
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, ApiError> {
    m.lock()
        .map_err(|_| ApiError::Internal("session table lock poisoned".into()))
}

impl Sessions {
    /// Sessions in memory only, or backed by `redis`.
    pub fn new(redis: Option<RedisStore>, budget: usize, ttl: Duration) -> Self {
        Self {
            redis,
            cache: Mutex::new(HashMap::new()),
            evicted: Mutex::new(VecDeque::new()),
            budget,
            ttl,
            bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes of keys held in memory.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Sessions held in memory.
    pub fn count(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.len())
    }

    /// Adds a new session (its bundle to Redis first, when there is one).
    pub async fn create(
        &self,
        id: &str,
        model: &str,
        session: Arc<ServerSession>,
        bundle: &[u8],
    ) -> Result<(), ApiError> {
        if let Some(r) = &self.redis {
            r.put(id, model, bundle).await?;
        }
        self.insert_local(id, model, session)
    }

    /// Holds a session in memory, evicting the least recently used ones beyond the budget.
    pub fn insert_local(
        &self,
        id: &str,
        model: &str,
        session: Arc<ServerSession>,
    ) -> Result<(), ApiError> {
        let bytes = session.backend().key_bytes();
        if bytes > self.budget {
            return Err(ApiError::TooLarge(format!(
                "these evaluation keys take {bytes} bytes in memory, more than this server's key budget of {}",
                self.budget
            )));
        }
        let mut c = lock(&self.cache)?;
        let mut evicted = Vec::new();
        while self.bytes() + bytes > self.budget {
            let Some(victim) = c.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(e) = c.remove(&victim) {
                self.bytes.fetch_sub(e.bytes, Ordering::Relaxed);
                tracing::info!(session = %victim, bytes = e.bytes, "session evicted (key budget)");
            }
            evicted.push(victim);
        }
        if let Some(old) = c.insert(
            id.to_string(),
            Entry {
                model: model.to_string(),
                session,
                bytes,
                last: Instant::now(),
            },
        ) {
            self.bytes.fetch_sub(old.bytes, Ordering::Relaxed);
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        drop(c);
        // with Redis an evicted session is only dropped from memory: it is read again
        if self.redis.is_none() && !evicted.is_empty() {
            let mut ev = lock(&self.evicted)?;
            for v in evicted {
                ev.push_back(v);
                if ev.len() > EVICTED_REMEMBERED {
                    ev.pop_front();
                }
            }
        }
        Ok(())
    }

    fn drop_local(&self, id: &str) -> Result<bool, ApiError> {
        let mut c = lock(&self.cache)?;
        Ok(match c.remove(id) {
            Some(e) => {
                self.bytes.fetch_sub(e.bytes, Ordering::Relaxed);
                true
            }
            None => false,
        })
    }

    fn unknown(id: &str) -> ApiError {
        ApiError::UnknownSession(format!(
            "no session {id} (never created, expired or deleted): create one with POST /v1/sessions and your evaluation keys"
        ))
    }

    /// The session `id`, refreshing its time to live.
    pub async fn lookup(&self, id: &str) -> Result<Lookup, ApiError> {
        if !valid_session_id(id) {
            return Err(Self::unknown(id));
        }
        let local = {
            let mut c = lock(&self.cache)?;
            match c.get_mut(id) {
                Some(e) if self.redis.is_some() || e.last.elapsed() <= self.ttl => {
                    e.last = Instant::now();
                    Some(Ok((e.model.clone(), e.session.clone())))
                }
                Some(_) => Some(Err(())),
                None => None,
            }
        };
        match (local, &self.redis) {
            (Some(Ok((m, s))), None) => Ok(Lookup::Found(m, s)),
            (Some(Ok((m, s))), Some(r)) => {
                // another replica may have deleted it, or Redis let it expire
                if r.touch(id).await? {
                    Ok(Lookup::Found(m, s))
                } else {
                    self.drop_local(id)?;
                    Err(Self::unknown(id))
                }
            }
            (Some(Err(())), _) => {
                self.drop_local(id)?;
                Err(ApiError::UnknownSession(format!(
                    "session {id} expired (unused for more than {} s): create a new one with POST /v1/sessions",
                    self.ttl.as_secs()
                )))
            }
            (None, Some(r)) => match r.get(id).await? {
                Some((model, bundle)) => {
                    r.touch(id).await?;
                    Ok(Lookup::Remote(model, bundle))
                }
                None => Err(Self::unknown(id)),
            },
            (None, None) => {
                if lock(&self.evicted)?.iter().any(|e| e == id) {
                    Err(ApiError::Evicted(format!(
                        "session {id} was evicted to keep the server's key store within its budget: upload your evaluation keys again (POST /v1/sessions)"
                    )))
                } else {
                    Err(Self::unknown(id))
                }
            }
        }
    }

    /// Deletes a session; whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, ApiError> {
        if !valid_session_id(id) {
            return Ok(false);
        }
        let local = self.drop_local(id)?;
        let remote = match &self.redis {
            Some(r) => r.delete(id).await?,
            None => false,
        };
        Ok(local || remote)
    }

    /// Drops sessions unused for longer than the time to live (memory only; Redis expires
    /// its own).
    pub fn expire(&self) -> Result<usize, ApiError> {
        let mut c = lock(&self.cache)?;
        let old: Vec<String> = c
            .iter()
            .filter(|(_, e)| e.last.elapsed() > self.ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            if let Some(e) = c.remove(k) {
                self.bytes.fetch_sub(e.bytes, Ordering::Relaxed);
            }
        }
        Ok(old.len())
    }
}
