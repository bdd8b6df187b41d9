//! Client and server apart: the client works from the plan alone (no graph, no weights in
//! scope), everything crosses as bytes (plan JSON, evaluation keys, packed ciphertexts), the
//! server checks what it gets; tampered plans and corrupted wire objects are refused with
//! named errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod kit;

use std::sync::Arc;

use henn_ckks::serial::Limits;
use henn_nn::pack::{LayoutKind, Placement};
use henn_nn::plan::Plan;
use henn_nn::session::{Client, EvaluationKeys, PackedCiphertexts, Server};
use henn_nn::{Graph, NnError, Tensor};
use kit::{LAYOUTS, assert_bits};

/// The client's first half: from the plan's JSON to evaluation keys and an encrypted query,
/// as bytes. No graph here.
fn client_encrypt(plan_json: &str, images: &[Tensor]) -> (Client, Vec<u8>, Vec<u8>) {
    let plan = Plan::from_json(plan_json).unwrap();
    let client = Client::new(plan).unwrap();
    let keys = client.evaluation_keys().unwrap().to_bytes().unwrap();
    let query = client.encrypt(images).unwrap().to_bytes().unwrap();
    (client, keys, query)
}

/// The client's second half: logits from the server's bytes. No graph here either.
fn client_decrypt(client: &Client, result: &[u8]) -> Vec<Vec<f64>> {
    let out = PackedCiphertexts::from_bytes(
        client.params(),
        &client.plan().fingerprint,
        result,
        &Limits::default(),
    )
    .unwrap();
    client.decrypt(&out).unwrap()
}

/// The server: the model, the plan's JSON and the client's bytes.
fn server_side(graph: Arc<Graph>, plan_json: &str, keys: &[u8], query: &[u8]) -> Vec<u8> {
    let server = Server::new(graph, Plan::from_json(plan_json).unwrap()).unwrap();
    let (params, fp) = (server.params(), &server.plan().fingerprint);
    let limits = Limits::default();
    let keys = EvaluationKeys::from_bytes(params, fp, keys, &limits).unwrap();
    let query = PackedCiphertexts::from_bytes(params, fp, query, &limits).unwrap();
    let session = server.session(keys).unwrap();
    session.run(query).unwrap().output.to_bytes().unwrap()
}

fn planned(kind: LayoutKind, ci: usize) -> (Arc<Graph>, Plan, Vec<Tensor>) {
    let g =
        henn_nn::rewrite::simplify(&kit::generated(&kit::configs()[ci], 500 + ci as u64)).unwrap();
    let imgs = kit::images(&g, if kind == LayoutKind::Batch { 3 } else { 1 }, 9);
    let plan = kit::plan_on(&g, kind, &imgs, &kit::chain_for(&g, kind));
    (Arc::new(g), plan, imgs)
}

#[test]
fn the_client_needs_only_the_plan() {
    for kind in LAYOUTS {
        // a multiplexing config: the channel plan replicates the input
        let (g, plan, imgs) = planned(kind, 10);
        let json = plan.to_json().unwrap();
        let want = kit::reference(&g, &imgs);
        let (client, keys, query) = client_encrypt(&json, &imgs);
        let result = server_side(g, &json, &keys, &query);
        let got = client_decrypt(&client, &result);
        assert_eq!(got.len(), imgs.len());
        for (i, w) in want.iter().enumerate() {
            assert_bits(&format!("{kind} image {i}"), &got[i], w, 11.0);
        }
        eprintln!(
            "{kind}: plan {} bytes of JSON, keys {} bytes, query {} bytes, result {} bytes",
            json.len(),
            keys.len(),
            query.len(),
            result.len()
        );
    }
}

/// Re-signs an edited plan (so that only the server's recomputation can catch it) and
/// returns the server's error.
fn refused(g: &Arc<Graph>, mut plan: Plan) -> NnError {
    plan.fingerprint = plan.digest().unwrap();
    Server::new(g.clone(), plan).unwrap_err()
}

fn assert_mismatch(e: &NnError, what: &str) {
    match e {
        NnError::PlanMismatch { what: w, .. } => assert!(w.contains(what), "{what}: {e}"),
        other => panic!("{what}: expected a plan mismatch, got {other}"),
    }
}

#[test]
fn tampered_plans_are_refused() {
    let (g, plan, _) = planned(LayoutKind::Channel, 10);
    assert!(
        plan.layout.input.replicas > 1,
        "the plan replicates the input"
    );
    // the intact plan is accepted
    Server::new(g.clone(), plan.clone()).unwrap();

    // an edit without a new fingerprint: refused on reading
    let mut p = plan.clone();
    p.layout.input.replicas = 1;
    let e = Plan::from_json(&p.to_json().unwrap()).unwrap_err();
    assert_mismatch(&e, "plan fingerprint");
    let e = Client::new(p).unwrap_err();
    assert_mismatch(&e, "plan fingerprint");

    // edits with a recomputed fingerprint: refused by the server's recomputation
    let mut p = plan.clone();
    p.layout.input.replicas /= 2;
    assert_mismatch(&refused(&g, p), "input replicas");
    let mut p = plan.clone();
    let v = p
        .layout
        .values
        .iter()
        .position(|x| matches!(x, Some(Placement::Grid(gr)) if gr.k > 1))
        .unwrap();
    if let Some(Placement::Grid(gr)) = p.layout.values[v].as_mut() {
        gr.k = 1;
    }
    assert_mismatch(&refused(&g, p), "placement of value");
    let mut p = plan.clone();
    p.params.log_scale -= 1.0;
    let e = refused(&g, p);
    assert!(matches!(e, NnError::PlanMismatch { .. }), "{e}");
    let mut p = plan.clone();
    p.params.q_bits[1] -= 6;
    let e = refused(&g, p);
    assert!(matches!(e, NnError::PlanMismatch { .. }), "{e}");
    let mut p = plan.clone();
    p.rotations.pop();
    assert_mismatch(&refused(&g, p), "rotation steps");
    let mut p = plan.clone();
    p.rotation_levels[0] = (p.rotation_levels[0] + 1) % (p.params.q_bits.len() - 1);
    assert_mismatch(&refused(&g, p), "levels of the rotation keys");
    let mut p = plan.clone();
    p.relin_level += 1;
    assert_mismatch(&refused(&g, p), "relinearization key");
    let mut p = plan.clone();
    p.output_multiplier *= 2.0;
    assert_mismatch(&refused(&g, p), "output multiplier");
    let mut p = plan.clone();
    p.layout.output.positions.swap(0, 1);
    assert_mismatch(&refused(&g, p), "output map");

    // a plan of another model
    let (g2, _, _) = planned(LayoutKind::Channel, 0);
    let e = Server::new(g2, plan.clone()).unwrap_err();
    assert_mismatch(&e, "model fingerprint");

    // a plan of an older format
    let mut v: serde_json::Value = serde_json::from_str(&plan.to_json().unwrap()).unwrap();
    v["format"] = serde_json::json!(1);
    let e = Plan::from_json(&v.to_string()).unwrap_err();
    assert!(
        matches!(e, NnError::Plan(ref m) if m.contains("format")),
        "{e}"
    );
}

#[test]
fn wire_objects_are_checked() {
    let (g, plan, imgs) = planned(LayoutKind::Batch, 0);
    let server = Server::new(g, plan.clone()).unwrap();
    let params = server.params().clone();
    let client = Client::with_params(plan.clone(), params.clone()).unwrap();
    let fp = plan.fingerprint.clone();
    let limits = Limits::default();
    let keys = client.evaluation_keys().unwrap().to_bytes().unwrap();
    let query = client.encrypt(&imgs).unwrap().to_bytes().unwrap();
    let read = |b: &[u8]| PackedCiphertexts::from_bytes(&params, &fp, b, &limits);
    read(&query).unwrap();
    // corrupted, truncated, trailing bytes, the wrong kind, too large: named wire errors
    let mut bad = query.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    for (what, b) in [
        ("flipped bit", bad),
        ("truncated", query[..query.len() - 9].to_vec()),
        ("trailing", [query.clone(), vec![0]].concat()),
        ("keys as ciphertexts", keys.clone()),
        ("empty", Vec::new()),
    ] {
        let e = read(&b).unwrap_err();
        assert!(matches!(e, NnError::Wire(_)), "{what}: {e}");
    }
    let e = PackedCiphertexts::from_bytes(&params, &fp, &query, &Limits::new(1000)).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    // objects of another plan
    let other = "0".repeat(64);
    let e = PackedCiphertexts::from_bytes(&params, &other, &query, &limits).unwrap_err();
    assert!(matches!(e, NnError::PlanMismatch { .. }), "{e}");
    let e = EvaluationKeys::from_bytes(&params, &other, &keys, &limits).unwrap_err();
    assert!(matches!(e, NnError::PlanMismatch { .. }), "{e}");
    // keys of another plan are refused by the server
    let (_, plan2, _) = planned(LayoutKind::Batch, 1);
    let keys2 = Client::new(plan2).unwrap().evaluation_keys().unwrap();
    let e = server.session(keys2).unwrap_err();
    assert_mismatch(&e, "evaluation keys");
    // keys of this plan made on another parameter instance: named, not a ring error later
    let keys3 = Client::new(plan).unwrap().evaluation_keys().unwrap();
    let e = server.session(keys3).unwrap_err();
    assert!(e.to_string().contains("Server::params"), "{e}");
    // the right keys
    server
        .session(EvaluationKeys::from_bytes(&params, &fp, &keys, &limits).unwrap())
        .unwrap();
}

#[test]
fn a_server_refuses_inputs_that_do_not_fit() {
    let (g, plan, imgs) = planned(LayoutKind::Batch, 0);
    let model = Server::new(g, plan.clone()).unwrap();
    let client = Client::with_params(plan.clone(), model.params().clone()).unwrap();
    let server = model.session(client.evaluation_keys().unwrap()).unwrap();
    // too many images for one run
    let many = kit::images(model.graph(), plan.images_per_run() + 1, 3);
    let e = client.encrypt(&many).unwrap_err();
    assert!(
        matches!(
            e,
            NnError::Exec {
                source: henn_nn::ExecError::Input(_),
                ..
            }
        ),
        "{e}"
    );
    // a ciphertext short: the count is checked
    let mut q = client.encrypt(&imgs).unwrap();
    q.cts.pop();
    let e = server.run(q).unwrap_err();
    assert!(
        matches!(
            e,
            NnError::Exec {
                source: henn_nn::ExecError::CiphertextCount { .. },
                ..
            }
        ),
        "{e}"
    );
    // an input not at the top level
    let mut q = client.encrypt(&imgs).unwrap();
    let eval = henn_ckks::Evaluator::new(client.params());
    let below = henn_ckks::Level(client.params().max_level().0 - 1);
    eval.drop_level_to_assign(&mut q.cts[0], below).unwrap();
    let e = server.run(q).unwrap_err();
    assert!(e.to_string().contains("level"), "{e}");
}

/// `henn compile`'s artifacts and `henn keygen`'s key directory: the client side reads only
/// the client artifact (no weights), the secret key file is 0600 and reloads to the same
/// key, queries are seeded and half the size of full ciphertexts, flooded decryption keeps
/// the top-1; a changed model, a corrupt or foreign secret key are refused by name.
#[test]
fn artifacts_key_directories_queries_and_flooding() {
    use henn_nn::session::artifact::{self, key_dir};
    use henn_nn::session::{Query, SecretKeyFile};
    let onnx = std::fs::read(kit::repo().join("models/mnist_cnn3_square.onnx")).unwrap();
    let g = kit::shipped("mnist_cnn3_square");
    let imgs = kit::mnist_images(2);
    let plan = kit::plan_on(
        &g,
        LayoutKind::Channel,
        &imgs[..1],
        &kit::chain_for(&g, LayoutKind::Channel),
    );
    let dir = std::env::temp_dir().join(format!("henn-artifacts-{}", std::process::id()));
    let (cdir, sdir) = artifact::write_compiled(&dir, &onnx, &plan).unwrap();
    let client_json = std::fs::read_to_string(cdir.join("client.json")).unwrap();
    assert!(
        client_json.len() < onnx.len() / 4,
        "the client artifact carries no weights"
    );
    let a = artifact::read_client(&cdir).unwrap();
    assert_eq!(a.plan, plan);

    // keys: a 0600 secret file that reloads to the same key
    let kdir = dir.join("keys");
    let files = artifact::write_key_dir(&kdir, &a).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.secret)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (_, client) = artifact::read_key_dir(&kdir).unwrap();
    let model = artifact::read_server(&sdir).unwrap();
    let server = Server::new(Arc::new(model.graph), model.plan).unwrap();
    let (params, fp) = (server.params().clone(), plan.fingerprint.clone());
    let limits = Limits::default();
    let keys = std::fs::read(kdir.join(key_dir::EVAL)).unwrap();
    assert_eq!(keys.len() as u64, files.eval_bytes);
    let session = server
        .session(EvaluationKeys::from_bytes(&params, &fp, &keys, &limits).unwrap())
        .unwrap();
    let q = client
        .encrypt_query(&imgs[..1])
        .unwrap()
        .to_bytes()
        .unwrap();
    let full = client.encrypt(&imgs[..1]).unwrap().to_bytes().unwrap();
    assert!(
        2 * q.len() < full.len() + 4096,
        "seeded: {} vs {}",
        q.len(),
        full.len()
    );
    let out = session
        .run(Query::read(&params, &fp, &q, &limits).unwrap())
        .unwrap()
        .output;
    let out =
        PackedCiphertexts::from_bytes(client.params(), &fp, &out.to_bytes().unwrap(), &limits)
            .unwrap();
    let want = kit::reference(&g, &imgs[..1]);
    let got = client.decrypt(&out).unwrap();
    assert_bits("reloaded key", &got[0], &want[0], 10.0);
    let flooded = client.decrypt_flooded(&out, 16).unwrap();
    let top = |v: &[f64]| Tensor::new(vec![v.len()], v.to_vec()).unwrap().argmax();
    assert_eq!(top(&flooded[0]), top(&want[0]));
    assert_ne!(flooded[0], got[0]);
    assert!(client.decrypt_flooded(&out, 60).is_err());

    // refusals by name
    let secret = std::fs::read(&files.secret).unwrap();
    let mut bad = secret.clone();
    bad[50] ^= 1;
    assert!(
        SecretKeyFile::from_bytes(&bad, &fp)
            .unwrap_err()
            .to_string()
            .contains("checksum")
    );
    assert!(matches!(
        SecretKeyFile::from_bytes(&secret, &"1".repeat(64)).unwrap_err(),
        NnError::PlanMismatch { .. }
    ));
    assert!(matches!(
        EvaluationKeys::from_bytes(&params, &fp, &secret, &limits).unwrap_err(),
        NnError::SecretKeyUploaded
    ));
    let mut changed = onnx.clone();
    changed.push(0);
    std::fs::write(sdir.join("model.onnx"), &changed).unwrap();
    let e = artifact::read_server(&sdir).unwrap_err();
    assert!(
        matches!(e, NnError::BadArtifact { .. }) && e.to_string().contains("SHA-256"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
