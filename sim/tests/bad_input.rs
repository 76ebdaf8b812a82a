//! Bad input gets a Kubernetes error, never a panic or a hung connection: malformed bodies,
//! unknown kinds, oversized bodies, invalid names, broken HTTP.

use crate::common;

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use sv_sim::api::{Options, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes and returns the whole answer (the server closes or answers within 10 s).
async fn raw(address: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes instead of hanging")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

fn post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status_of(answer: &str) -> (u16, Value) {
    let code = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    // Bodies may be chunked; the JSON object is the part between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => serde_json::from_str(&body[start..=end]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (code, json)
}

#[tokio::test]
async fn malformed_requests_get_status_errors_and_the_server_keeps_serving() {
    let sim = common::start_with(Options { max_body_bytes: 4096, ..Options::default() }).await;
    for crd in sv_operator::api::crds() {
        sim.server.create_object(serde_json::to_value(crd).expect("crd"), "test").expect("create CRD");
    }
    let cms = "/api/v1/namespaces/default/configmaps";
    let svs = "/apis/sv.sharedvolume.io/v1alpha1/namespaces/default/sharedvolumes";

    let (code, body) = status_of(&raw(sim.address, &post(svs, "application/json", "{\"apiVersion\": \"sv.sh")).await);
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("unexpected end of JSON input"), "{body}");

    let (code, body) = status_of(&raw(sim.address, &post(cms, "application/yaml", "kind: [unclosed")).await);
    assert_eq!(code, 400, "{body}");

    let big = format!("{{\"metadata\": {{\"name\": \"big\"}}, \"data\": {{\"k\": \"{}\"}}}}", "x".repeat(10_000));
    let (code, body) = status_of(&raw(sim.address, &post(cms, "application/json", &big)).await);
    assert_eq!((code, body["reason"].as_str()), (413, Some("RequestEntityTooLarge")), "{body}");

    let answer = raw(sim.address, &post("/apis/nope.example.com/v1/things", "application/json", "{}")).await;
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains("404 page not found"), "{answer}");
    let (code, body) = status_of(&raw(sim.address, &post("/api/v1/bogus", "application/json", "{}")).await);
    assert_eq!((code, body["message"].as_str()), (404, Some("the server could not find the requested resource")));

    let bad_name = json!({"metadata": {"name": "Not_Valid"}}).to_string();
    let (code, body) = status_of(&raw(sim.address, &post(cms, "application/json", &bad_name)).await);
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")), "{body}");

    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}).to_string();
    let (code, _) = status_of(&raw(sim.address, &post(cms, "application/json", &wrong_kind)).await);
    assert_eq!(code, 422, "a Secret posted to configmaps is refused");

    let patch = b"PATCH /apis/sv.sharedvolume.io/v1alpha1/namespaces/default/sharedvolumes/x HTTP/1.1\r\nHost: sim\r\nContent-Type: application/strategic-merge-patch+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    let (code, _) = status_of(&raw(sim.address, patch).await);
    assert_eq!(code, 415, "strategic merge patches are refused on custom resources");

    // A body shorter than its Content-Length, then garbage that is not HTTP at all.
    let truncated =
        b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: sim\r\nContent-Length: 100\r\n\r\n{\"meta";
    raw(sim.address, truncated).await;
    let garbage = raw(sim.address, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n").await;
    assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    let fine = json!({"metadata": {"name": "after"}}).to_string();
    let (code, _) = status_of(&raw(sim.address, &post(cms, "application/json", &fine)).await);
    assert_eq!(code, 201, "the server still serves after all of the above");
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9_./-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                "(apiVersion|kind|metadata|name|namespace|spec|status|finalizers|labels|[a-z]{1,6})",
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Arbitrary bodies and patches against CRs and built-in kinds: every answer is a success or a
    /// Kubernetes Status error, never a panic.
    #[test]
    fn arbitrary_writes_never_panic(body in arbitrary_json(), method in 0..5usize, target in 0..3usize) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let server = sv_sim::api::ApiServer::new(Options::default(), std::sync::Arc::new(sv_operator::clock::SystemClock));
            for crd in sv_operator::api::crds() {
                server.create_object(serde_json::to_value(crd).expect("crd"), "test").expect("crd");
            }
            let (collection, seed) = [
                ("/api/v1/namespaces/default/configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}})),
                ("/apis/sv.sharedvolume.io/v1alpha1/namespaces/default/sharedvolumes",
                 json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume", "metadata": {"name": "x"},
                        "spec": {"mountPath": "/m", "storageClassName": "standard", "storage": {"capacity": "1Gi"}}})),
                ("/api/v1/namespaces", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})),
            ][target].clone();
            // The object the updates and patches below aim at exists, so they reach its kind's
            // validation rather than a 404.
            let created = server.handle(Request::new(http::Method::POST, collection).with_json("application/json", &seed)).await;
            prop_assert!(matches!(created, Response::Json { code: 201, .. }), "the seed object: {created:?}");
            let (method, path, content_type) = match method {
                0 => (http::Method::POST, collection.to_string(), "application/json"),
                1 => (http::Method::PUT, format!("{collection}/x"), "application/json"),
                2 => (http::Method::PATCH, format!("{collection}/x"), "application/merge-patch+json"),
                3 => (http::Method::PATCH, format!("{collection}/x"), "application/json-patch+json"),
                _ => (http::Method::PATCH, format!("{collection}/x?fieldManager=p"), "application/apply-patch+yaml"),
            };
            let answer = server.handle(Request::new(method, &path).with_json(content_type, &body)).await;
            match answer {
                Response::Json { code, .. } => prop_assert!(code == 200 || code == 201),
                Response::Error(e) => prop_assert!(e.code() >= 400 && e.code() < 600, "{e:?}"),
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            Ok(())
        })?;
    }
}
