//! The service end to end on loopback: several concurrent clients, each with its own keys,
//! classify real MNIST images through a real server (decrypted top-1 = plaintext top-1);
//! then every bad input of the list gets its 4xx with a JSON error naming the problem, the
//! server keeps answering and the good sessions keep working; sessions expire, are evicted
//! beyond the key budget (410), and a full queue answers 503 with Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MODEL, compiled, config, infer_top1, mnist, open, reference_top1};
use henn_nn::session::{Client, Query};
use henn_serve::Running;
use henn_serve::client::{ClientError, HttpClient};

/// Asserts an error answer: status and JSON error code.
fn refused(r: Result<(u16, Vec<u8>), ClientError>, status: u16, code: &str, what: &str) {
    let (s, body) = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("{what}: not JSON: {}", String::from_utf8_lossy(&body)));
    assert_eq!(s, status, "{what}: {v}");
    assert_eq!(v["error"], code, "{what}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.len() > 10),
        "{what}: the message should say what is wrong: {v}"
    );
}

#[test]
fn concurrent_clients_then_every_bad_input_then_a_round_trip() {
    let server = Running::start(config()).unwrap();
    let url = server.url();
    let images = mnist(6);
    let want = reference_top1(&images);

    // three clients at once, each with its own keys and session, two images each
    let handles: Vec<_> = (0..3)
        .map(|c| {
            let (url, images, want) = (url.clone(), images.clone(), want.clone());
            std::thread::spawn(move || {
                let http = HttpClient::new(&url);
                let (client, session) = open(&http);
                for i in [2 * c, 2 * c + 1] {
                    assert_eq!(
                        infer_top1(&http, &client, &session, &images[i]),
                        want[i],
                        "client {c} image {i}"
                    );
                }
                http.close_session(&session).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    let http = HttpClient::new(&url);
    let models = http.models().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, MODEL);
    // a good session that must survive everything below
    let (client, session) = open(&http);
    let good_keys = client.evaluation_keys().unwrap().to_bytes().unwrap();
    let info = &models[0];
    assert_eq!(good_keys.len(), info.eval_key_bytes, "advertised key size");
    let query = client
        .encrypt_query(&images[..1])
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(query.len(), info.query_bytes, "advertised query size");
    let infer_path = format!("/v1/sessions/{session}/infer");

    // keys: truncated, corrupt, oversized, empty, a secret key, another model's
    refused(
        http.raw("POST", "/v1/sessions", &good_keys[..good_keys.len() / 2]),
        400,
        "bad_request",
        "truncated keys",
    );
    let mut corrupt = good_keys.clone();
    corrupt[good_keys.len() / 3] ^= 0x40;
    refused(
        http.raw("POST", "/v1/sessions", &corrupt),
        400,
        "bad_request",
        "corrupt keys",
    );
    refused(
        http.raw("POST", "/v1/sessions", &vec![7u8; (96 << 20) + 1]),
        413,
        "too_large",
        "oversized keys",
    );
    refused(
        http.raw("POST", "/v1/sessions", &[]),
        400,
        "bad_request",
        "keys without a body",
    );
    let secret = client.secret_file().to_bytes().unwrap();
    refused(
        http.raw("POST", "/v1/sessions", &secret),
        400,
        "secret_key_uploaded",
        "a secret key as keys",
    );
    let other = Client::new(compiled().2.clone()).unwrap();
    let other_keys = other.evaluation_keys().unwrap().to_bytes().unwrap();
    refused(
        http.raw("POST", "/v1/sessions", &other_keys),
        422,
        "does_not_fit",
        "keys of another plan",
    );
    // keys with a rotation key missing
    let mut keys = client.evaluation_keys().unwrap();
    let g = keys.galois.elements().next().unwrap();
    assert!(keys.galois.remove(g));
    refused(
        http.raw("POST", "/v1/sessions", &keys.to_bytes().unwrap()),
        422,
        "does_not_fit",
        "keys without a rotation",
    );

    // queries: truncated, corrupt, oversized, empty, a secret key, another plan's, at the
    // wrong level
    refused(
        http.raw("POST", &infer_path, &query[..query.len() - 100]),
        400,
        "bad_request",
        "truncated query",
    );
    let mut bad = query.clone();
    bad[query.len() / 2] ^= 1;
    refused(
        http.raw("POST", &infer_path, &bad),
        400,
        "bad_request",
        "corrupt query",
    );
    refused(
        http.raw("POST", &infer_path, &vec![0u8; (4 << 20) + 1]),
        413,
        "too_large",
        "oversized query",
    );
    refused(
        http.raw("POST", &infer_path, &[]),
        400,
        "bad_request",
        "query without a body",
    );
    refused(
        http.raw("POST", &infer_path, &secret),
        400,
        "secret_key_uploaded",
        "a secret key as a query",
    );
    let other_query = other
        .encrypt_query(&images[..1])
        .unwrap()
        .to_bytes()
        .unwrap();
    refused(
        http.raw("POST", &infer_path, &other_query),
        422,
        "does_not_fit",
        "a query of another plan",
    );
    let (result, _) = http.infer(&session, &query).unwrap();
    refused(
        http.raw("POST", &infer_path, &result),
        400,
        "bad_request",
        "a result sent as a query",
    );
    refused(
        http.raw("POST", &infer_path, &low_level_query(&client)),
        422,
        "does_not_fit",
        "a query below the top level",
    );

    // sessions: unknown, malformed id, deleted
    refused(
        http.raw(
            "POST",
            &format!("/v1/sessions/{}/infer", "ab".repeat(16)),
            &query,
        ),
        404,
        "unknown_session",
        "unknown session",
    );
    refused(
        http.raw("POST", "/v1/sessions/../../etc/infer", &query),
        404,
        "no_route",
        "a path that is no route",
    );
    refused(
        http.raw("POST", "/v1/sessions/not-an-id/infer", &query),
        404,
        "unknown_session",
        "malformed session id",
    );
    let (c2, s2) = open(&http);
    http.close_session(&s2).unwrap();
    let q2 = c2.encrypt_query(&images[..1]).unwrap().to_bytes().unwrap();
    refused(
        http.raw("POST", &format!("/v1/sessions/{s2}/infer"), &q2),
        404,
        "unknown_session",
        "deleted session",
    );
    refused(
        http.raw("GET", "/v1/models/nope/client", &[]),
        404,
        "unknown_model",
        "unknown model",
    );

    // still serving, the good session still works, metrics counted the refusals
    http.health().unwrap();
    for (i, x) in images.iter().enumerate().take(2) {
        assert_eq!(
            infer_top1(&http, &client, &session, x),
            want[i],
            "final round trip {i}"
        );
    }
    let m = http.metrics().unwrap();
    assert!(
        m.contains("henn_requests_total{route=\"/v1/sessions\",status=\"400\"}"),
        "{m}"
    );
    assert!(
        m.contains("henn_inference_seconds_count{model=\"mnist_cnn3_square\"}"),
        "{m}"
    );
    http.close_session(&session).unwrap();
}

/// Seeded ciphertexts of the plan's parameters one level below the top (made with a key of
/// their own: the server checks levels before it could notice).
fn low_level_query(client: &Client) -> Vec<u8> {
    use henn_ckks::{Encoder, Encryptor, KeyGenerator, Level};
    use rand::SeedableRng;
    let params = client.params();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let sk = KeyGenerator::new(params).secret_key(&mut rng).unwrap();
    let pt = Encoder::new(params)
        .encode(
            &[0.5; 16],
            Level(params.max_level().0 - 1),
            params.default_scale(),
        )
        .unwrap();
    let ct = Encryptor::new(params)
        .encrypt_sk_seeded(&pt, &sk, &mut rng)
        .unwrap();
    Query {
        plan_fingerprint: client.plan().fingerprint.clone(),
        images: 1,
        cts: vec![ct; client.plan().layout.input.ciphertexts],
    }
    .to_bytes()
    .unwrap()
}

#[test]
fn sessions_expire_and_are_evicted_beyond_the_key_budget() {
    let images = mnist(1);
    let want = reference_top1(&images)[0];
    // one session's keys fit, two do not; sessions unused for 10 s expire (long enough that
    // session a outlives opening session b on a loaded 2-core machine: at 3 s it once did not)
    let probe = Running::start(config()).unwrap();
    let _ = open(&HttpClient::new(&probe.url()));
    let one = probe.app().sessions().bytes();
    assert!(one > 0);
    drop(probe);
    let mut cfg = config();
    cfg.key_budget_bytes = one * 3 / 2;
    cfg.session_ttl = Duration::from_secs(10);
    let server = Running::start(cfg).unwrap();
    let http = HttpClient::new(&server.url());
    // keys and queries made before the clock matters
    let plan = http.client_artifact(MODEL).unwrap().plan;
    let (ca, cb) = (
        Client::new(plan.clone()).unwrap(),
        Client::new(plan).unwrap(),
    );
    let keys = |c: &Client| c.evaluation_keys().unwrap().to_bytes().unwrap();
    let (ka, kb) = (keys(&ca), keys(&cb));
    let query = |c: &Client| c.encrypt_query(&images).unwrap().to_bytes().unwrap();
    let (qa, qb) = (query(&ca), query(&cb));
    let sa = http.open_session(&ka).unwrap().session;
    assert_eq!(infer_top1(&http, &ca, &sa, &images[0]), want);
    let sb = http.open_session(&kb).unwrap().session;
    refused(
        http.raw("POST", &format!("/v1/sessions/{sa}/infer"), &qa),
        410,
        "session_evicted",
        "evicted session",
    );
    assert_eq!(infer_top1(&http, &cb, &sb, &images[0]), want);
    std::thread::sleep(Duration::from_millis(10_600));
    refused(
        http.raw("POST", &format!("/v1/sessions/{sb}/infer"), &qb),
        404,
        "unknown_session",
        "expired session",
    );
    assert_eq!(server.app().sessions().count(), 0);
    // and a new session works
    let (cc, sc) = open(&http);
    assert_eq!(infer_top1(&http, &cc, &sc, &images[0]), want);
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_nothing_breaks() {
    let mut cfg = config();
    cfg.concurrency = 1;
    cfg.queue = 1;
    let server = Running::start(cfg).unwrap();
    let http = HttpClient::new(&server.url());
    let (client, session) = open(&http);
    let images = mnist(1);
    let want = reference_top1(&images)[0];
    let q = Arc::new(client.encrypt_query(&images).unwrap().to_bytes().unwrap());
    let outcomes: Vec<Result<(Vec<u8>, f64), ClientError>> = (0..8)
        .map(|_| {
            let (http, q, s) = (http.clone(), q.clone(), session.clone());
            std::thread::spawn(move || http.infer(&s, &q))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let ok = outcomes.iter().filter(|r| r.is_ok()).count();
    let busy = outcomes
        .iter()
        .filter(|r| {
            matches!(r, Err(ClientError::Http { status: 503, code, retry_after: Some(_), .. }) if code == "busy")
        })
        .count();
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}: {outcomes:?}");
    assert_eq!(
        ok + busy,
        outcomes.len(),
        "only successes and 503s: {outcomes:?}"
    );
    assert!(http.metrics().unwrap().contains("henn_rejected_total"));
    // after the burst, serving as before
    assert_eq!(infer_top1(&http, &client, &session, &images[0]), want);
}
