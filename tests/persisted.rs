//! Automatic persisted queries as Apollo's clients speak them (issue 31), against server
//! processes: a hash alone is answered from the document sent before, on any server
//! sharing the database, or `PERSISTED_QUERY_NOT_FOUND`; a document must match its hash;
//! GET runs only queries; the gate judges the stored document; and a flood of unknown
//! hashes is refused like other refused documents.

mod common;

use common::process::{self, ServerProcess};
use common::{Api, TestDb, error_code};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const QUERY: &str = "query Mine { me { role } }";

fn sha(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

fn extensions(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// GETs the hash alone (Apollo's `useGETForHashedQueries`); the status and the answer.
async fn get(api: &Api, token: &str, hash: &str) -> (u16, Value) {
    let response = api
        .client
        .get(&api.url)
        .bearer_auth(token)
        .query(&[("extensions", extensions(hash).to_string())])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

struct Two {
    first: ServerProcess,
    second: ServerProcess,
    token: String,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

/// Two server processes on one database, and an OPERATOR's token.
async fn two_servers() -> Two {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let first = ServerProcess::start(&db.cli_url(), &dir.path().join("sim"), &["--no-robot"]);
    let second = ServerProcess::start(&db.cli_url(), &dir.path().join("sim"), &["--no-robot"]);
    let api = Api::new(&first.url, admin);
    let project = api.create_project("apq").await;
    let token = api.create_token(&project, "OPERATOR").await;
    Two {
        first,
        second,
        token,
        _db: db,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_hash_sent_to_one_server_is_known_to_another() {
    let two = two_servers().await;
    let (first, second) = (
        Api::new(&two.first.url, two.token.clone()),
        Api::new(&two.second.url, two.token.clone()),
    );
    let token = two.token.as_str();
    let hash = sha(QUERY);

    // Unknown: the code and the message Apollo's link looks for, naming the hash.
    let (status, body) = second
        .post_json(token, json!({ "extensions": extensions(&hash) }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert_eq!(
        body["errors"][0]["extensions"]["persistedQuery"]["sha256Hash"],
        hash
    );

    // The document with its hash, to the first server: run, and kept.
    let full = json!({ "query": QUERY, "extensions": extensions(&hash) });
    let (_, body) = first.post_json(token, full).await;
    assert_eq!(body["data"]["me"]["role"], "OPERATOR", "{body}");

    // The hash alone, to the second server, by POST and by GET.
    let (_, body) = second
        .post_json(token, json!({ "extensions": extensions(&hash) }))
        .await;
    assert_eq!(body["data"]["me"]["role"], "OPERATOR", "{body}");
    let (status, body) = get(&second, token, &hash).await;
    assert_eq!(
        (status, &body["data"]["me"]["role"]),
        (200, &json!("OPERATOR")),
        "{body}"
    );
}

#[tokio::test]
async fn documents_must_match_their_hash_and_go_through_the_gate() {
    let two = two_servers().await;
    let api = Api::new(&two.first.url, two.token.clone());
    let token = two.token.as_str();

    // A document with another's hash is refused, and not kept under either.
    let other = sha("{ me { name } }");
    let (_, body) = api
        .post_json(
            token,
            json!({ "query": QUERY, "extensions": extensions(&other) }),
        )
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "provided sha does not match query"
    );
    let (_, body) = api
        .post_json(token, json!({ "extensions": extensions(&other) }))
        .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND");

    // Another version of the protocol, or a hash that is not one.
    let v2 = json!({ "persistedQuery": { "version": 2, "sha256Hash": sha(QUERY) } });
    let (_, body) = api
        .post_json(token, json!({ "query": QUERY, "extensions": v2 }))
        .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_SUPPORTED", "{body}");
    let (_, body) = api
        .post_json(token, json!({ "extensions": extensions("abc") }))
        .await;
    assert_eq!(error_code(&body), "VALIDATION", "{body}");

    // A document the gate refuses (it would cost more than a request may) is not kept:
    // its hash stays unknown.
    let alias = |i: usize| {
        format!(
            "a{i}: vms(first: 20) {{ edges {{ node {{ snapshots(first: 10) {{ history(first: 10) {{ actor at }} }} }} }} }}"
        )
    };
    let deep = format!("{{ {} }}", (0..10).map(alias).collect::<Vec<_>>().join(" "));
    let (_, body) = api
        .post_json(
            token,
            json!({ "query": deep, "extensions": extensions(&sha(&deep)) }),
        )
        .await;
    assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
    let (_, body) = api
        .post_json(token, json!({ "extensions": extensions(&sha(&deep)) }))
        .await;
    assert_eq!(error_code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // A mutation is kept by POST, but its hash alone by GET is not run.
    let mutation = "mutation { revokeToken(id: \"999999\") }";
    let hash = sha(mutation);
    api.post_json(
        token,
        json!({ "query": mutation, "extensions": extensions(&hash) }),
    )
    .await;
    let (status, body) = get(&api, token, &hash).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(error_code(&body), "VALIDATION", "{body}");
}

#[tokio::test]
async fn a_flood_of_unknown_hashes_is_refused_before_any_lookup() {
    let two = two_servers().await;
    let api = Api::new(&two.first.url, two.token.clone());
    let token = two.token.as_str();
    let mut codes = Vec::new();
    for i in 0..200 {
        let hash = sha(&format!("{{ unknown{i} }}"));
        let (_, body) = api
            .post_json(token, json!({ "extensions": extensions(&hash) }))
            .await;
        codes.push(error_code(&body));
    }
    let not_found = codes
        .iter()
        .filter(|c| *c == "PERSISTED_QUERY_NOT_FOUND")
        .count();
    let barred = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!(not_found + barred, 200, "{codes:?}");
    // The refused-documents bar (10 a second, a burst of 30) stops the lookups.
    assert!(barred > 100, "{not_found} looked up, {barred} barred");
    // The bar is the token's: its other operations wait too.
    let (_, body) = api.post_json(token, json!({ "query": QUERY })).await;
    assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
}

/// A deployment that runs only its trusted documents (an Apollo persisted query
/// manifest): listed operations run, by hash alone or in full, over HTTP and WebSocket;
/// anything else is refused, and nothing new is kept.
#[tokio::test]
async fn with_trusted_documents_nothing_else_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let manifest = json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{ "id": sha(QUERY), "name": "Mine", "type": "query", "body": QUERY }]
    });
    let path = dir.path().join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    let server = ServerProcess::start(
        &db.cli_url(),
        &dir.path().join("sim"),
        &["--no-robot", "--trusted-documents", path.to_str().unwrap()],
    );
    let api = Api::new(&server.url, admin.clone());
    let token = admin.as_str();

    let (_, body) = api
        .post_json(token, json!({ "extensions": extensions(&sha(QUERY)) }))
        .await;
    assert_eq!(body["data"]["me"]["role"], "ADMIN", "{body}");
    let (_, body) = api.post_json(token, json!({ "query": QUERY })).await;
    assert_eq!(body["data"]["me"]["role"], "ADMIN", "{body}");
    let other = "{ me { name } }";
    for request in [
        json!({ "query": other }),
        json!({ "query": other, "extensions": extensions(&sha(other)) }),
    ] {
        let (_, body) = api.post_json(token, request).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    }
    let (_, body) = api
        .post_json(token, json!({ "extensions": extensions(&sha(other)) }))
        .await;
    assert_eq!(
        error_code(&body),
        "PERSISTED_QUERY_NOT_FOUND",
        "nothing new was kept: {body}"
    );
    let mut socket = common::ws::Subscriber::connect(&api.url, Some(token))
        .await
        .unwrap();
    socket
        .subscribe("e", "subscription { events { id } }", json!({}))
        .await;
    match socket.next().await {
        common::ws::Frame::Error(_, payload) => {
            assert_eq!(payload[0]["extensions"]["code"], "FORBIDDEN", "{payload}")
        }
        other => panic!("an untrusted subscription answered {other:?}"),
    }

    // A manifest whose ids are not their bodies' hashes is refused at start.
    let bad = json!({ "format": "apollo-persisted-query-manifest", "version": 1,
        "operations": [{ "id": sha(other), "body": QUERY }] });
    std::fs::write(&path, bad.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.cli_url(),
        ])
        .args(["--trusted-documents", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not have that SHA-256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
