//! # henn-serve
//!
//! The inference service: a client keeps its secret key, uploads its evaluation keys once
//! (a session), then sends encrypted queries and gets encrypted results; the server never
//! sees a secret key or a plaintext.
//!
//! Routes (bodies of keys, queries and results are `henn_nn::session::wire` bytes):
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /metrics` | Prometheus text: requests, latencies, inference time, queue depth, sessions, key-store bytes |
//! | `GET /v1/models` | name, plan fingerprint, parameters, sizes of keys, queries and results |
//! | `GET /v1/models/{name}/client` | the client artifact (plan, input preprocessing; no weights) |
//! | `POST /v1/sessions` | body: evaluation keys -> `201 {"session", "model", ...}` |
//! | `DELETE /v1/sessions/{id}` | `204` |
//! | `POST /v1/sessions/{id}/infer` | body: query -> `200` result |
//!
//! Everything is bounded ([`Config`]): body sizes per route, a work queue (inferences and key
//! uploads at once, waiting requests beyond which the answer is `503` with `Retry-After`),
//! the bytes of keys held in memory (least recently used sessions evicted: `410`, upload the
//! keys again), a session time to live, a request timeout. Sessions live in memory or in
//! Redis ([`KeyStoreKind::Redis`], chunked), so that replicas behind a load balancer serve
//! any session. Every bad input gets a 4xx with a JSON body naming the problem.

pub mod client;
mod config;
mod error;
mod metrics;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use henn_ckks::serial::Limits;
use henn_nn::session::artifact::{self, ClientArtifact, InputDescription};
use henn_nn::session::{EvaluationKeys, Query, Server, ServerSession, wire};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::{Config, KeyStoreKind};
pub use error::ApiError;
pub use metrics::Metrics;
pub use store::{REDIS_CHUNK_BYTES, RedisStore, Sessions, new_session_id};

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A model could not be loaded.
    #[error("model {path}: {source}")]
    Model {
        /// The server artifact.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<henn_nn::NnError>,
    },
    /// Two models with one name.
    #[error("two models are named '{0}': serve one of them")]
    DuplicateModel(String),
    /// No model given.
    #[error(
        "no model to serve: pass at least one server artifact (henn compile ... -o DIR; DIR/server)"
    )]
    NoModel,
    /// The key store could not be reached.
    #[error("key store: {0}")]
    KeyStore(String),
    /// Listening or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The worker pool could not be built.
    #[error("worker pool: {0}")]
    Pool(String),
}

/// What a client learns about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Name.
    pub name: String,
    /// Plan fingerprint (keys and ciphertexts carry it).
    pub plan_fingerprint: String,
    /// Packing layout.
    pub packing: String,
    /// Images per query.
    pub images_per_run: usize,
    /// log2 of the ring degree.
    pub log_n: u32,
    /// Data prime sizes (bits).
    pub q_bits: Vec<u32>,
    /// Special prime sizes (bits).
    pub p_bits: Vec<u32>,
    /// log2 of the scale.
    pub log_scale: f64,
    /// Security level of the parameters (`None`: below the HomomorphicEncryption.org table's
    /// 128 bits, explicitly allowed when the model was compiled).
    pub security_bits: Option<u32>,
    /// Rotation keys the evaluation keys hold.
    pub rotation_keys: usize,
    /// Bytes of the evaluation-key bundle.
    pub eval_key_bytes: usize,
    /// Bytes of a query.
    pub query_bytes: usize,
    /// Bytes of a result.
    pub result_bytes: usize,
    /// Input description.
    pub input: InputDescription,
}

/// Answer to `POST /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Session id (its only credential: keep it private).
    pub session: String,
    /// The model the keys are for.
    pub model: String,
    /// Seconds a session lives after its last use.
    pub ttl_s: u64,
    /// Bytes of the keys in the server's memory.
    pub key_memory_bytes: usize,
}

struct Model {
    server: Arc<Server>,
    info: ModelInfo,
    client: ClientArtifact,
}

/// Inferences and key uploads run one `concurrency`-limited turn at a time; at most `cap`
/// requests wait for a turn.
struct WorkQueue {
    sem: Arc<Semaphore>,
    concurrency: usize,
    waiting: AtomicUsize,
    cap: usize,
}

/// The state shared by all requests.
pub struct App {
    models: HashMap<String, Model>,
    by_fingerprint: HashMap<String, String>,
    sessions: Sessions,
    queue: WorkQueue,
    metrics: Metrics,
    pool: rayon::ThreadPool,
    config: Config,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

fn model_info(server: &Server, client: &ClientArtifact) -> ModelInfo {
    let plan = server.plan();
    let params = server.params();
    let lit = &plan.params;
    let out_level = plan.layers.last().map_or(0, |l| l.level);
    ModelInfo {
        name: plan.model.clone(),
        plan_fingerprint: plan.fingerprint.clone(),
        packing: plan.kind().to_string(),
        images_per_run: plan.images_per_run(),
        log_n: lit.log_n,
        q_bits: lit.q_bits.clone(),
        p_bits: lit.p_bits.clone(),
        log_scale: lit.log_scale,
        security_bits: match &lit.security {
            henn_ckks::SecurityPolicy::Enforce { bits } => Some(*bits),
            henn_ckks::SecurityPolicy::InsecureAllowed { .. } => None,
        },
        rotation_keys: plan.rotations.len(),
        eval_key_bytes: wire::evaluation_keys_size(params, plan).unwrap_or(0),
        query_bytes: wire::query_size(params, plan.layout.input.ciphertexts),
        result_bytes: wire::packed_size(params, out_level, plan.layout.output.ciphertexts),
        input: client.input.clone(),
    }
}

impl App {
    /// Loads the models and connects the key store.
    pub async fn new(config: Config) -> Result<Arc<Self>, ServeError> {
        if config.models.is_empty() {
            return Err(ServeError::NoModel);
        }
        let mut models = HashMap::new();
        let mut by_fingerprint = HashMap::new();
        for path in &config.models {
            let err = |source| ServeError::Model {
                path: path.clone(),
                source: Box::new(source),
            };
            let m = artifact::read_server(path).map_err(err)?;
            let client = ClientArtifact::for_plan(&m.plan);
            let server =
                Server::with_cache_budget(Arc::new(m.graph), m.plan, config.plaintext_cache_bytes)
                    .map_err(err)?;
            let info = model_info(&server, &client);
            if models.contains_key(&info.name) {
                return Err(ServeError::DuplicateModel(info.name));
            }
            by_fingerprint.insert(info.plan_fingerprint.clone(), info.name.clone());
            tracing::info!(model = %info.name, fingerprint = %info.plan_fingerprint, "model loaded");
            models.insert(
                info.name.clone(),
                Model {
                    server,
                    info,
                    client,
                },
            );
        }
        let redis = match &config.key_store {
            KeyStoreKind::Memory => None,
            KeyStoreKind::Redis(url) => Some(
                RedisStore::connect(url, config.session_ttl)
                    .await
                    .map_err(|e| ServeError::KeyStore(e.to_string()))?,
            ),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads.unwrap_or(0))
            .build()
            .map_err(|e| ServeError::Pool(e.to_string()))?;
        let concurrency = config.concurrency.max(1);
        Ok(Arc::new(Self {
            models,
            by_fingerprint,
            sessions: Sessions::new(redis, config.key_budget_bytes, config.session_ttl),
            queue: WorkQueue {
                sem: Arc::new(Semaphore::new(concurrency)),
                concurrency,
                waiting: AtomicUsize::new(0),
                cap: config.queue,
            },
            metrics: Metrics::default(),
            pool,
            config,
        }))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn update_gauges(&self) {
        let running = self.queue.concurrency - self.queue.sem.available_permits();
        let waiting = self.queue.waiting.load(Ordering::Relaxed);
        self.metrics.queue_depth.set((running + waiting) as i64);
        self.metrics.sessions.set(self.sessions.count() as i64);
        self.metrics
            .key_store_bytes
            .set(self.sessions.bytes() as i64);
    }

    /// Runs CPU work `f` in a turn of the work queue, on the worker pool.
    async fn work<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let q = &self.queue;
        if q.waiting.fetch_add(1, Ordering::SeqCst) >= q.cap {
            q.waiting.fetch_sub(1, Ordering::SeqCst);
            self.metrics.rejected.inc();
            return Err(ApiError::Busy(format!(
                "{} requests are already waiting for the {} worker slot(s): retry later",
                q.cap, q.concurrency
            )));
        }
        self.update_gauges();
        let permit = q.sem.clone().acquire_owned().await;
        q.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit =
            permit.map_err(|_| ApiError::Internal("work queue closed (shutting down)".into()))?;
        self.update_gauges();
        let app = self.clone();
        let r = tokio::task::spawn_blocking(move || {
            let _turn = permit;
            app.pool.install(f)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")));
        self.update_gauges();
        r
    }

    fn model(&self, name: &str) -> Result<&Model, ApiError> {
        self.models.get(name).ok_or_else(|| {
            ApiError::UnknownModel(format!(
                "no model '{name}'; GET /v1/models lists the models served here"
            ))
        })
    }

    /// The session `id` (read from Redis and deserialized when this replica has not seen it).
    async fn session(self: &Arc<Self>, id: &str) -> Result<(String, Arc<ServerSession>), ApiError> {
        match self.sessions.lookup(id).await? {
            store::Lookup::Found(model, s) => Ok((model, s)),
            store::Lookup::Remote(model, bundle) => {
                let server = self.model(&model)?.server.clone();
                let limits = Limits::new(self.config.max_key_bytes);
                let s = self
                    .work(move || -> Result<ServerSession, ApiError> {
                        let fp = server.plan().fingerprint.clone();
                        let keys =
                            EvaluationKeys::from_bytes(server.params(), &fp, &bundle, &limits)?;
                        Ok(server.session(keys)?)
                    })
                    .await??;
                let s = Arc::new(s);
                self.sessions.insert_local(id, &model, s.clone())?;
                self.update_gauges();
                Ok((model, s))
            }
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    app.update_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn list_models(State(app): State<Arc<App>>) -> axum::Json<Vec<ModelInfo>> {
    let mut v: Vec<ModelInfo> = app.models.values().map(|m| m.info.clone()).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    axum::Json(v)
}

async fn client_artifact(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<axum::Json<ClientArtifact>, ApiError> {
    Ok(axum::Json(app.model(&name)?.client.clone()))
}

fn non_empty(body: &Bytes, what: &str) -> Result<(), ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "the request has no body: send the {what} as application/octet-stream"
        )));
    }
    Ok(())
}

async fn create_session(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<SessionInfo>), ApiError> {
    non_empty(&body, "evaluation-key bundle (henn keygen: eval.keys)")?;
    let fp = wire::peek_plan_fingerprint(&body)?;
    let name = app.by_fingerprint.get(&fp).cloned().ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "no model here has plan fingerprint {fp}: these keys are for another model or other parameters (GET /v1/models lists the fingerprints served)"
        ))
    })?;
    let server = app.model(&name)?.server.clone();
    let limits = Limits::new(app.config.max_key_bytes);
    let bundle = body.clone();
    let session = app
        .work(move || -> Result<ServerSession, ApiError> {
            let keys = EvaluationKeys::from_bytes(server.params(), &fp, &bundle, &limits)?;
            Ok(server.session(keys)?)
        })
        .await??;
    let key_memory_bytes = session.backend().key_bytes();
    let id = new_session_id();
    app.sessions
        .create(&id, &name, Arc::new(session), &body)
        .await?;
    app.update_gauges();
    tracing::info!(session = %id, model = %name, bytes = body.len(), "session created");
    Ok((
        StatusCode::CREATED,
        axum::Json(SessionInfo {
            session: id,
            model: name,
            ttl_s: app.config.session_ttl.as_secs(),
            key_memory_bytes,
        }),
    ))
}

async fn delete_session(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app.sessions.delete(&id).await? {
        app.update_gauges();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::UnknownSession(format!("no session {id}")))
    }
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    non_empty(&body, "query (henn encrypt)")?;
    let (model, session) = app.session(&id).await?;
    let limits = Limits::new(app.config.max_query_bytes);
    let (out, eval_s) = app
        .work(move || -> Result<(Vec<u8>, f64), ApiError> {
            let server = session.server();
            let q = Query::read(server.params(), &server.plan().fingerprint, &body, &limits)?;
            let run = session.run(q)?;
            Ok((run.output.to_bytes()?, run.eval_s))
        })
        .await??;
    app.metrics
        .inference
        .get_or_create(&metrics::ModelLabels {
            model: model.clone(),
        })
        .observe(eval_s);
    let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], out).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{eval_s:.6}")) {
        r.headers_mut().insert("x-henn-eval-seconds", v);
    }
    Ok(r)
}

/// Counts requests and their latency by route template and status.
async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let start = Instant::now();
    let resp = next.run(req).await;
    app.metrics
        .latency
        .get_or_create(&metrics::RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Request ids `<process start>-<counter>` in `x-request-id` (kept when the client sends one).
#[derive(Clone, Debug)]
struct Ids(Arc<AtomicU64>, u64);

impl MakeRequestId for Ids {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:x}-{n}", self.1))
            .ok()
            .map(RequestId::new)
    }
}

/// Turns an axum body rejection (too large, unreadable) into the JSON error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let e = match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge("the body exceeds this route's size limit".into())
            }
            StatusCode::REQUEST_TIMEOUT => {
                ApiError::BadRequest("the request took longer than the server's timeout".into())
            }
            StatusCode::NOT_FOUND => ApiError::NoRoute(
                "no such route: see GET /v1/models, POST /v1/sessions, POST /v1/sessions/{id}/infer"
                    .into(),
            ),
            StatusCode::METHOD_NOT_ALLOWED => {
                ApiError::BadRequest("method not allowed on this route".into())
            }
            s if s.is_client_error() => {
                ApiError::BadRequest(format!("the request could not be read ({s})"))
            }
            s => ApiError::Internal(format!("{s}")),
        };
        let mut r = e.into_response();
        *r.status_mut() = status;
        return r;
    }
    resp
}

/// The HTTP routes of `app`.
pub fn router(app: Arc<App>) -> Router {
    let max_keys = app.config.max_key_bytes;
    let max_query = app.config.max_query_bytes;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/client", get(client_artifact))
        .route(
            "/v1/sessions",
            post(create_session).layer(DefaultBodyLimit::max(max_keys)),
        )
        .route("/v1/sessions/{id}", delete(delete_session))
        .route(
            "/v1/sessions/{id}/infer",
            post(infer).layer(DefaultBodyLimit::max(max_query)),
        )
        .layer(middleware::from_fn_with_state(app.clone(), record))
        .layer(middleware::from_fn(json_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.config.request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id = %id, method = %req.method(), uri = %req.uri())
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(Ids(
            Arc::new(AtomicU64::new(0)),
            started,
        )))
        .with_state(app)
}

/// Serves `config` until `shutdown` resolves (then finishes the requests in flight).
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let app = App::new(config).await?;
    serve_on(listener, app, shutdown).await
}

/// Serves a loaded `app` on a bound listener until `shutdown` resolves; a background task
/// expires sessions unused beyond their time to live.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let every = (app.config.session_ttl / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(60));
            loop {
                tokio::time::sleep(every).await;
                if let Ok(n) = app.sessions.expire()
                    && n > 0
                {
                    tracing::info!(expired = n, "sessions expired");
                    app.update_gauges();
                }
            }
        })
    };
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let r = axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    Ok(r?)
}

/// A server running on a background thread (its own runtime), for tests and tools: bound to
/// `config.addr` (port 0 picks a free one); stopped when dropped.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish()
    }
}

impl Running {
    /// Starts a server; returns once it listens with its models loaded (or failed to).
    pub fn start(config: Config) -> Result<Self, ServeError> {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(SocketAddr, Arc<App>), ServeError>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || -> Result<(), ServeError> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let ready = async {
                    let listener = tokio::net::TcpListener::bind(config.addr).await?;
                    let addr = listener.local_addr()?;
                    let app = App::new(config).await?;
                    Ok::<_, ServeError>((listener, addr, app))
                }
                .await;
                match ready {
                    Ok((listener, addr, app)) => {
                        let _ = tx.send(Ok((addr, app.clone())));
                        serve_on(listener, app, async move {
                            let _ = stopped.await;
                        })
                        .await
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        Ok(())
                    }
                }
            })
        });
        match rx.recv() {
            Ok(Ok((addr, app))) => Ok(Self {
                addr,
                app,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(ServeError::Io(std::io::Error::other(
                "the server thread ended before listening",
            ))),
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's state (sessions, metrics).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
