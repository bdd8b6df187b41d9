//! Prometheus metrics (text exposition at `GET /metrics`): requests by route and status,
//! request latency by route, inference time by model, queue depth, sessions and key-store
//! bytes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/v1/sessions/{id}/infer`, ...).
    pub route: String,
    /// HTTP status.
    pub status: u16,
}

/// Labels of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template.
    pub route: String,
}

/// Labels of a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// Model name.
    pub model: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The service's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by route.
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Server-side inference time by model.
    pub inference: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Requests waiting for or holding a turn of the work queue.
    pub queue_depth: Gauge,
    /// Sessions held in memory.
    pub sessions: Gauge,
    /// Bytes of evaluation keys held in memory.
    pub key_store_bytes: Gauge,
    /// Requests refused because the queue was full.
    pub rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let inference = Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let queue_depth = Gauge::default();
        let sessions = Gauge::default();
        let key_store_bytes = Gauge::default();
        let rejected = Counter::default();
        registry.register(
            "henn_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "henn_request_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "henn_inference_seconds",
            "Server-side encrypted inference time by model",
            inference.clone(),
        );
        registry.register(
            "henn_queue_depth",
            "Requests waiting for or holding a turn of the work queue",
            queue_depth.clone(),
        );
        registry.register(
            "henn_sessions",
            "Sessions (evaluation keys) held in memory",
            sessions.clone(),
        );
        registry.register(
            "henn_key_store_bytes",
            "Bytes of evaluation keys held in memory",
            key_store_bytes.clone(),
        );
        registry.register(
            "henn_rejected",
            "Requests refused with 503 because the work queue was full",
            rejected.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            inference,
            queue_depth,
            sessions,
            key_store_bytes,
            rejected,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
