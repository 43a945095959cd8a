//! Generated input: thousands of random GraphQL documents built from the schema (nested
//! selections, aliases, fragments that spread each other, variables, directives, wrong
//! types and made-up names), and random bytes, sent to a real `snaptree serve` over HTTP
//! and over the WebSocket. Every answer must carry data or errors with a code; none may
//! come after the deadline; the server must never panic.
//!
//! The seed is printed; `SNAPTREE_FUZZ_SEED=N` replays a run, `SNAPTREE_FUZZ_DOCS=N`
//! changes how many documents go over HTTP (10,000 by default).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{BaseType, Type, TypeKind, TypeSystemDefinition};
use common::process::{self, ServerProcess};
use common::ws::{Frame, Subscriber};
use common::{Api, TestDb};
use serde_json::{Value, json};

/// Every code an answer may carry (`api.md`).
const CODES: &[&str] = &[
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "VALIDATION",
    "INVALID_STATE",
    "VM_BUSY",
    "LIMIT_REACHED",
    "QUERY_TOO_COMPLEX",
    "RATE_LIMITED",
    "TIMEOUT",
    "PROTECTED",
    "INTERNAL",
];
/// The server's deadline in this test, and how much later an answer may arrive (the
/// network and a loaded machine): an answer past both means the deadline did not hold.
const DEADLINE_SECS: u64 = 5;
const SLACK: Duration = Duration::from_secs(10);

/// Numbers at the edges: of 32 and 64 bits, of JSON's exact integers, of time spans.
const EDGES: &[i64] = &[
    i64::MIN,
    i64::MAX,
    -9_300_000_000_000_000,
    i32::MIN as i64,
    i32::MAX as i64,
    1 << 53,
    -1,
    0,
];

/// A field as the generator knows it.
#[derive(Clone, Debug)]
struct FieldDef {
    name: String,
    args: Vec<(String, Type)>,
    ty: Type,
}

/// The schema, read from `snaptree schema`'s SDL.
struct Schema {
    /// Object types' fields, by type name.
    objects: HashMap<String, Vec<FieldDef>>,
    /// Enums' values, by type name.
    enums: HashMap<String, Vec<String>>,
    /// Input objects' fields (name and type), by type name.
    inputs: HashMap<String, Vec<(String, Type)>>,
}

impl Schema {
    fn load() -> Self {
        let doc = async_graphql::parser::parse_schema(snaptree::graphql::sdl()).unwrap();
        let mut objects = HashMap::new();
        let mut enums = HashMap::new();
        let mut inputs = HashMap::new();
        for def in doc.definitions {
            let TypeSystemDefinition::Type(ty) = def else {
                continue;
            };
            let name = ty.node.name.node.to_string();
            match ty.node.kind {
                TypeKind::Object(object) => {
                    let fields = object
                        .fields
                        .into_iter()
                        // Revoking the tokens the test sends with would end it early.
                        .filter(|f| f.node.name.node != "revokeToken")
                        .map(|f| FieldDef {
                            name: f.node.name.node.to_string(),
                            args: f
                                .node
                                .arguments
                                .into_iter()
                                .map(|a| (a.node.name.node.to_string(), a.node.ty.node))
                                .collect(),
                            ty: f.node.ty.node,
                        })
                        .collect();
                    objects.insert(name, fields);
                }
                TypeKind::Enum(e) => {
                    let values = e.values.into_iter().map(|v| v.node.value.node.to_string());
                    enums.insert(name, values.collect());
                }
                TypeKind::InputObject(input) => {
                    let fields = input
                        .fields
                        .into_iter()
                        .map(|f| (f.node.name.node.to_string(), f.node.ty.node));
                    inputs.insert(name, fields.collect());
                }
                _ => {}
            }
        }
        Self {
            objects,
            enums,
            inputs,
        }
    }
}

fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

/// Builds one random document and its variables.
struct Generator<'a> {
    schema: &'a Schema,
    rng: fastrand::Rng,
    /// Fragments defined so far: (name, type).
    fragments: Vec<(String, String)>,
    /// Variables declared: (name, GraphQL type, value).
    variables: Vec<(String, String, Value)>,
    /// Build a document that should pass validation: real names, right types, small
    /// pages, no fragment cycles (so that execution is exercised, not only validation).
    strict: bool,
}

impl Generator<'_> {
    fn chance(&mut self, percent: u32) -> bool {
        self.rng.u32(0..100) < percent
    }

    /// A mistake, made only outside strict mode.
    fn mistake(&mut self, percent: u32) -> bool {
        !self.strict && self.chance(percent)
    }

    fn word(&mut self) -> String {
        let n = self.rng.usize(1..12);
        (0..n).map(|_| self.rng.alphanumeric()).collect()
    }

    /// A string literal, sometimes full of quotes, escapes and braces.
    fn string(&mut self) -> String {
        let pool = [
            'a', 'Z', '"', '\\', '{', '}', ' ', 'é', '$', '\n', '\'', '#', '\u{2019}',
        ];
        let n = self.rng.usize(0..20);
        let raw: String = (0..n)
            .map(|_| pool[self.rng.usize(0..pool.len())])
            .collect();
        serde_json::to_string(&raw).unwrap()
    }

    /// A value for an argument of type `ty`: right most of the time, else anything.
    fn value(&mut self, ty: &Type) -> String {
        if self.mistake(10) {
            // A variable, declared with a type that may or may not fit.
            let name = format!("v{}", self.variables.len());
            let declared = if self.chance(80) {
                ty.to_string()
            } else {
                "String".to_owned()
            };
            let value = match self.rng.u32(0..5) {
                0 => json!(null),
                1 if self.chance(30) => json!(EDGES[self.rng.usize(0..EDGES.len())]),
                1 => json!(self.rng.i64(-10..300)),
                2 => json!(self.word()),
                3 => json!(true),
                _ => json!([1, "x"]),
            };
            self.variables.push((name.clone(), declared, value));
            return format!("${name}");
        }
        if self.mistake(10) {
            // The wrong type.
            return match self.rng.u32(0..5) {
                0 => "null".into(),
                1 => "[1, 2]".into(),
                2 => "{ a: 1 }".into(),
                3 => "9999999999999999999999".into(),
                _ => self.string(),
            };
        }
        if let BaseType::List(inner) = &ty.base {
            return format!("[{}]", self.value(inner));
        }
        if let Some(fields) = self.schema.inputs.get(named(ty)).cloned() {
            return self.input(&fields);
        }
        if self.chance(8) {
            // A value at the edge of its type's range, valid or not for the field: every
            // number must be checked before it is used.
            return match named(ty) {
                "ID" => {
                    let edge = ["-9223372036854775808", "9223372036854775807", "0", "-1"];
                    format!("\"{}\"", edge[self.rng.usize(0..edge.len())])
                }
                "Int" => EDGES[self.rng.usize(0..EDGES.len())].to_string(),
                "DateTime" => {
                    let edge = [
                        "9999-12-31T23:59:59Z",
                        "+262142-12-31T23:59:59Z",
                        "0001-01-01T00:00:00Z",
                        "1970-01-01T00:00:00-23:59",
                        "2026-02-30T00:00:00Z",
                    ];
                    format!("\"{}\"", edge[self.rng.usize(0..edge.len())])
                }
                _ => self.string(),
            };
        }
        if self.strict {
            return match named(ty) {
                "ID" => format!("\"{}\"", self.rng.i64(1..6)),
                "Int" => self.rng.i32(0..4).to_string(),
                "Boolean" => self.rng.bool().to_string(),
                "String" => self.string(),
                other => match self.schema.enums.get(other) {
                    Some(values) => values[self.rng.usize(0..values.len())].clone(),
                    None => self.string(),
                },
            };
        }
        match named(ty) {
            "ID" => match self.rng.u32(0..4) {
                0 => format!("\"{}\"", self.rng.i64(-2..12)),
                1 => self.rng.i64(1..12).to_string(),
                2 => self.string(),
                _ => "\"1\"".into(),
            },
            "Int" => match self.rng.u32(0..4) {
                0 => self.rng.i32(-5..250).to_string(),
                1 => i32::MAX.to_string(),
                2 => "-1".into(),
                _ => self.rng.i32(0..10).to_string(),
            },
            "Boolean" => self.rng.bool().to_string(),
            "String" => self.string(),
            other => match self.schema.enums.get(other) {
                Some(values) if !values.is_empty() => {
                    values[self.rng.usize(0..values.len())].clone()
                }
                _ => self.word(),
            },
        }
    }

    /// An input object of `fields`: each required field, and some of the others.
    fn input(&mut self, fields: &[(String, Type)]) -> String {
        let mut out = Vec::new();
        for (name, ty) in fields {
            if !ty.nullable || self.chance(50) {
                out.push(format!("{name}: {}", self.value(ty)));
            }
        }
        format!("{{ {} }}", out.join(", "))
    }

    fn directives(&mut self) -> String {
        if self.strict {
            return match self.rng.u32(0..20) {
                0 => " @skip(if: true)".into(),
                1 => " @include(if: true)".into(),
                _ => String::new(),
            };
        }
        match self.rng.u32(0..20) {
            0 => " @skip(if: true)".into(),
            1 => " @include(if: false)".into(),
            2 => " @include(if: true)".into(),
            3 => format!(" @{}", self.word()),
            _ => String::new(),
        }
    }

    /// A selection set on object type `ty`.
    fn selection(&mut self, ty: &str, depth: u32) -> String {
        let Some(fields) = self.schema.objects.get(ty).cloned() else {
            return "{ __typename }".into();
        };
        let mut out = String::from("{ ");
        for i in 0..self.rng.usize(1..5) {
            if self.mistake(8) && !self.fragments.is_empty() {
                let (name, _) = self.fragments[self.rng.usize(0..self.fragments.len())].clone();
                out.push_str(&format!("...{name} "));
                continue;
            }
            if self.chance(5) {
                let inner = self.selection(ty, depth + 1);
                out.push_str(&format!("... on {ty} {inner} "));
                continue;
            }
            if self.mistake(3) {
                out.push_str(&format!("{} ", self.word())); // no such field
                continue;
            }
            let field = &fields[self.rng.usize(0..fields.len())];
            // Aliases keep fields of the same name apart (they may differ in arguments).
            if self.chance(20) || self.strict {
                out.push_str(&format!("a{i}{}: ", self.rng.u32(0..1000)));
            }
            out.push_str(&field.name);
            let mut args = Vec::new();
            for (name, ty) in field.args.clone() {
                let required = !ty.nullable;
                if (self.strict && required) || (!self.strict && self.chance(70)) {
                    args.push(format!("{name}: {}", self.value(&ty)));
                }
            }
            if !args.is_empty() {
                out.push_str(&format!("({})", args.join(", ")));
            }
            out.push_str(&self.directives());
            let target = named(&field.ty).to_owned();
            if self.schema.objects.contains_key(&target) {
                if (depth < 7 && !self.mistake(3)) || self.strict {
                    out.push(' ');
                    out.push_str(&self.selection(&target, depth + 1));
                }
            } else if self.mistake(2) {
                out.push_str(" { id }"); // a selection on a scalar
            }
            out.push(' ');
        }
        out.push('}');
        out
    }

    /// A whole document: fragments, one operation, its variables.
    fn document(&mut self) -> (String, Value) {
        self.fragments.clear();
        self.variables.clear();
        self.strict = self.rng.bool();
        let mut fragments = String::new();
        let types: Vec<String> = self.schema.objects.keys().cloned().collect();
        for i in 0..if self.strict { 0 } else { self.rng.usize(0..4) } {
            let on = types[self.rng.usize(0..types.len())].clone();
            let name = format!("F{i}");
            let body = self.selection(&on, 3);
            fragments.push_str(&format!("fragment {name} on {on} {body}\n"));
            self.fragments.push((name, on));
        }
        if self.mistake(3) && !self.fragments.is_empty() {
            // A fragment spreading itself.
            fragments.push_str("fragment Loop on Query { ...Loop }\n");
        }
        let (keyword, root) = match self.rng.u32(0..10) {
            0..=6 => ("query", "Query"),
            7..=8 => ("mutation", "Mutation"),
            _ => ("subscription", "Subscription"),
        };
        let body = self.selection(root, 0);
        let declared: Vec<String> = self
            .variables
            .iter()
            .map(|(name, ty, _)| format!("${name}: {ty}"))
            .collect();
        let head = if declared.is_empty() {
            keyword.to_owned()
        } else {
            format!("{keyword}({})", declared.join(", "))
        };
        let variables: serde_json::Map<String, Value> = self
            .variables
            .iter()
            .filter(|_| self.rng.u32(0..10) != 0)
            .map(|(name, _, value)| (name.clone(), value.clone()))
            .collect();
        (
            format!("{fragments}{head} {body}"),
            Value::Object(variables),
        )
    }

    /// Random bytes, as text.
    fn noise(&mut self) -> String {
        let n = self.rng.usize(0..400);
        let bytes: Vec<u8> = (0..n).map(|_| self.rng.u8(..)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Fails unless `body` holds data, or errors that each carry a known code; the first
/// code, or DATA.
fn check_answer(body: &Value, what: &str) -> String {
    match body.get("errors") {
        Some(errors) => {
            let errors = errors
                .as_array()
                .unwrap_or_else(|| panic!("{what}: {body}"));
            assert!(!errors.is_empty(), "{what}: {body}");
            for error in errors {
                let code = error["extensions"]["code"].as_str();
                assert!(
                    code.is_some_and(|c| CODES.contains(&c)),
                    "an answer without a code for {what}: {body}"
                );
            }
            errors[0]["extensions"]["code"].as_str().unwrap().to_owned()
        }
        None => {
            assert!(body.get("data").is_some(), "{what}: {body}");
            "DATA".to_owned()
        }
    }
}

#[tokio::test]
async fn random_documents_and_bytes_always_get_an_answer_with_a_code() {
    let seed = std::env::var("SNAPTREE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let docs: usize = std::env::var("SNAPTREE_FUZZ_DOCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    eprintln!("SNAPTREE_FUZZ_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let log = dir.path().join("server.log");
    let deadline = DEADLINE_SECS.to_string();
    let mut server = ServerProcess::start_logging(
        &db.cli_url(),
        &dir.path().join("sim"),
        // Every document is parsed and measured: the bar on a token whose operations keep
        // being refused (tested in tests/abuse.rs) would answer many of them unparsed.
        &[
            "--request-timeout",
            &deadline,
            "--refused-per-token",
            "1000000",
        ],
        Some(&log),
    );
    let api = Api::new(&server.url, admin.clone());
    let project = api.create_project("fuzz").await;
    let viewer = api.create_token(&project, "VIEWER").await;
    let host = api.create_host("sim", "SIMULATED", "sim://", None).await;
    for i in 0..3 {
        let vm = api.create_vm(&host, &project, &format!("vm{i}")).await;
        api.snapshot_built(&admin, &vm, "base").await;
    }
    let schema = Schema::load();
    let mut generator = Generator {
        schema: &schema,
        rng: fastrand::Rng::with_seed(seed),
        fragments: Vec::new(),
        variables: Vec::new(),
        strict: false,
    };
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();

    // Documents over HTTP, mostly as ADMIN (no budget), some as a VIEWER.
    for i in 0..docs {
        let (query, variables) = generator.document();
        let token = if i % 10 == 0 { &viewer } else { &admin };
        let started = Instant::now();
        let response = client
            .post(&api.url)
            .bearer_auth(token)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        slowest = slowest.max(started.elapsed());
        *seen.entry(check_answer(&body, &query)).or_default() += 1;
    }
    eprintln!("answers over HTTP: {seen:?}");
    // Random bytes as the body, as the query, and as variables.
    for _ in 0..1000 {
        let noise = generator.noise();
        let bodies = [
            client
                .post(&api.url)
                .bearer_auth(&admin)
                .body(noise.clone()),
            client
                .post(&api.url)
                .bearer_auth(&admin)
                .header("Content-Type", "application/json")
                .body(noise.clone()),
            client
                .post(&api.url)
                .bearer_auth(&admin)
                .json(&json!({ "query": noise, "variables": { "x": noise } })),
        ];
        for request in bodies {
            let response = request.send().await.unwrap();
            let body: Value = response.json().await.unwrap();
            check_answer(&body, &noise);
        }
    }

    // Documents over the WebSocket: each operation ends with `complete` or `error`, and
    // every message carries data or coded errors. Subscriptions are completed by the
    // client at once (they would otherwise wait for events).
    let url = api.url.clone();
    let mut socket = Subscriber::connect(&url, Some(&admin)).await.unwrap();
    for i in 0..docs / 5 {
        let (query, variables) = generator.document();
        let id = format!("q{i}");
        socket.subscribe(&id, &query, variables).await;
        if query.contains("subscription") {
            socket.send(json!({ "id": id, "type": "complete" })).await;
            continue;
        }
        let started = Instant::now();
        loop {
            let frame =
                tokio::time::timeout(Duration::from_secs(DEADLINE_SECS) + SLACK, socket.next())
                    .await
                    .unwrap_or_else(|_| panic!("no answer within the deadline to {query}"));
            match frame {
                Frame::Next(got, payload) => {
                    check_answer(&payload, &query);
                    if got == id {
                        continue;
                    }
                }
                Frame::Error(got, payload) => {
                    let errors = payload.as_array().cloned().unwrap_or_default();
                    check_answer(&json!({ "errors": errors }), &query);
                    if got == id {
                        break;
                    }
                }
                Frame::Complete(got) if got == id => break,
                Frame::Complete(_) => {}
                Frame::Closed(code, reason) => panic!("closed {code} {reason} after {query}"),
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    // Random frames: each socket is closed with a code, never dropped.
    for _ in 0..200 {
        let mut socket = Subscriber::connect(&url, Some(&admin)).await.unwrap();
        socket.send_text(generator.noise()).await;
        match socket.next().await {
            Frame::Closed(code, _) => assert!(code == 4400, "closed with {code}"),
            other => panic!("random bytes answered {other:?}"),
        }
    }

    eprintln!("slowest answer: {} ms", slowest.as_millis());
    assert!(
        slowest < Duration::from_secs(DEADLINE_SECS) + SLACK,
        "an answer took {} ms, past the deadline",
        slowest.as_millis()
    );
    assert!(server.alive(), "the server died");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("panicked"),
        "the server panicked:\n{logged}"
    );
}

/// A random JSON value for a REST body or parameter: numbers at their edges, floats,
/// strings, and the wrong shapes.
fn rest_value(rng: &mut fastrand::Rng, ids: &[i64]) -> Value {
    match rng.u32(0..10) {
        0 => json!(EDGES[rng.usize(0..EDGES.len())]),
        1 => json!(ids[rng.usize(0..ids.len())]),
        2 => json!([1e308, -0.0, 0.5][rng.usize(0..3)]),
        3 => json!(["", "x", "\u{0}", "9999999999999999999999", "é\n\"{}"][rng.usize(0..5)]),
        4 => json!(null),
        5 => json!(rng.bool()),
        6 => json!([ids[0], "a"]),
        7 => json!({ "a": { "b": [] } }),
        8 => json!([10, 8, 3, 0, 99, 17, 18][rng.usize(0..7)]),
        _ => json!(ids[rng.usize(0..ids.len())].to_string()),
    }
}

#[tokio::test]
async fn random_rest_bodies_and_parameters_never_reach_a_panic() {
    let seed = std::env::var("SNAPTREE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("SNAPTREE_FUZZ_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let log = dir.path().join("server.log");
    let mut server = ServerProcess::start_logging(
        &db.cli_url(),
        &dir.path().join("sim"),
        &[
            "--request-timeout",
            &DEADLINE_SECS.to_string(),
            "--refused-per-token",
            "1000000",
        ],
        Some(&log),
    );
    let api = Api::new(&server.url, admin.clone());
    let project = api.create_project("fuzz").await;
    let host = api.create_host("sim", "SIMULATED", "sim://", None).await;
    let vm = api.create_vm(&host, &project, "vm").await;
    let snapshot = api.snapshot_built(&admin, &vm, "base").await;
    let ids: Vec<i64> = vec![vm.parse().unwrap(), snapshot.parse().unwrap()];
    let keys = [
        "vm_id",
        "name",
        "description",
        "state",
        "remove_subtree",
        "other",
    ];
    let params = [
        "page",
        "limit",
        "order",
        "search[vm_id]",
        "search[id__in]",
        "search[state]",
        "search[created__gte]",
        "search[name__icontains]",
        "exclude[state]",
        "search[id__gt]",
    ];
    let client = reqwest::Client::new();
    let base = server.url.clone();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for _ in 0..1500 {
        let id = match rng.u32(0..4) {
            0 => rest_value(&mut rng, &ids)
                .to_string()
                .trim_matches('"')
                .to_owned(),
            _ => ids[rng.usize(0..ids.len())].to_string(),
        };
        let path = match rng.u32(0..4) {
            0 => "snapshot/".to_owned(),
            1 => format!("snapshot/{id}/"),
            2 => format!("snapshot_tree/{id}/"),
            _ => "snapshot_history/".to_owned(),
        };
        let query: Vec<(String, String)> = (0..rng.usize(0..4))
            .map(|_| {
                let value = rest_value(&mut rng, &ids);
                let value = value.as_str().map_or(value.to_string(), str::to_owned);
                (params[rng.usize(0..params.len())].to_owned(), value)
            })
            .collect();
        let body: serde_json::Map<String, Value> = (0..rng.usize(0..5))
            .map(|_| {
                let key = keys[rng.usize(0..keys.len())].to_owned();
                (key, rest_value(&mut rng, &ids))
            })
            .collect();
        let method = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"][rng.usize(0..6)];
        let request = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .query(&query)
            .header("X-Auth-Token", &admin)
            .json(&body);
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} {body:?}: {e}"));
        let status = response.status().as_u16();
        assert!(
            status < 500,
            "{method} {path}?{query:?} {body:?}: {status} {}",
            response.text().await.unwrap_or_default()
        );
        *statuses.entry(status).or_default() += 1;
    }
    eprintln!("statuses: {statuses:?}");
    assert!(server.alive(), "the server died");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("panicked"),
        "the server panicked:\n{logged}"
    );
}
