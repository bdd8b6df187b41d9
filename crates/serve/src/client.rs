//! A blocking HTTP client of the service (what `henn client` and the tests use). It moves
//! bytes only: keys, queries and results are made and read by `henn_nn::session::Client`,
//! which keeps the secret key.

use std::time::Duration;

use henn_nn::session::artifact::ClientArtifact;
use serde::de::DeserializeOwned;

use crate::{ModelInfo, SessionInfo};

/// Errors of a request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("server answered {status} {code}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The error code of the JSON body (`busy`, `unknown_session`, ...).
        code: String,
        /// The server's explanation.
        message: String,
        /// `Retry-After` seconds (on 503).
        retry_after: Option<u64>,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The answer is not what the protocol says.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status, for an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    agent: ureq::Agent,
    max_body: u64,
}

impl HttpClient {
    /// A client of `base` (`http://host:port`). Uploads announce themselves with `Expect:
    /// 100-continue`, so that a server refusing a request early (a body over its limit, an
    /// unknown route) answers before the body is sent instead of breaking the connection.
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(900)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
            max_body: 1 << 30,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Vec<u8>, Option<f64>), ClientError> {
        let mut r = r.map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = r.status().as_u16();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry = header("retry-after").and_then(|v| v.parse().ok());
        let eval_s = header("x-henn-eval-seconds").and_then(|v| v.parse().ok());
        let body = r
            .body_mut()
            .with_config()
            .limit(self.max_body)
            .read_to_vec()
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        if status >= 400 {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(ClientError::Http {
                status,
                code: v["error"].as_str().unwrap_or("?").to_string(),
                message: v["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&body).into_owned(),
                    str::to_string,
                ),
                retry_after: retry,
            });
        }
        Ok((status, body, eval_s))
    }

    fn json<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Result<(), ClientError> {
        self.finish(self.agent.get(&self.url("/healthz")).call())
            .map(|_| ())
    }

    /// `GET /metrics`: the Prometheus text.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let (_, b, _) = self.finish(self.agent.get(&self.url("/metrics")).call())?;
        String::from_utf8(b).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> Result<Vec<ModelInfo>, ClientError> {
        let (_, b, _) = self.finish(self.agent.get(&self.url("/v1/models")).call())?;
        self.json(&b)
    }

    /// `GET /v1/models/{name}/client`: the client artifact (plan; no weights).
    pub fn client_artifact(&self, name: &str) -> Result<ClientArtifact, ClientError> {
        let (_, b, _) = self.finish(
            self.agent
                .get(&self.url(&format!("/v1/models/{name}/client")))
                .call(),
        )?;
        self.json(&b)
    }

    /// `POST /v1/sessions` with an evaluation-key bundle.
    pub fn open_session(&self, keys: &[u8]) -> Result<SessionInfo, ClientError> {
        let (_, b, _) = self.finish(
            self.agent
                .post(&self.url("/v1/sessions"))
                .header("content-type", "application/octet-stream")
                .header("expect", "100-continue")
                .send(keys),
        )?;
        self.json(&b)
    }

    /// `POST /v1/sessions/{id}/infer` with a query: the result's bytes and the server's
    /// inference time in seconds.
    pub fn infer(&self, session: &str, query: &[u8]) -> Result<(Vec<u8>, f64), ClientError> {
        let (_, b, eval_s) = self.finish(
            self.agent
                .post(&self.url(&format!("/v1/sessions/{session}/infer")))
                .header("content-type", "application/octet-stream")
                .header("expect", "100-continue")
                .send(query),
        )?;
        Ok((b, eval_s.unwrap_or(0.0)))
    }

    /// `DELETE /v1/sessions/{id}`.
    pub fn close_session(&self, session: &str) -> Result<(), ClientError> {
        self.finish(
            self.agent
                .delete(&self.url(&format!("/v1/sessions/{session}")))
                .call(),
        )
        .map(|_| ())
    }

    /// A raw request (for tests of bad input): method, path and body; status and body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let url = self.url(path);
        let r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("expect", "100-continue")
                .send(body),
        };
        match self.finish(r) {
            Ok((s, b, _)) => Ok((s, b)),
            Err(ClientError::Http {
                status,
                message,
                code,
                ..
            }) => Ok((
                status,
                serde_json::to_vec(&serde_json::json!({"error": code, "message": message}))
                    .unwrap_or_default(),
            )),
            Err(e) => Err(e),
        }
    }
}
