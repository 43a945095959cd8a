//! CloudCIX's REST API over plain HTTP: the routes, their envelopes, error codes and
//! encodings as `shared/reference/cloudcix-rest.md` gives them, authentication and
//! methods, and isolation between projects, against a real server.

mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A REST client of one server.
struct Rest {
    base: String,
    client: reqwest::Client,
}

impl Rest {
    fn of(app: &TestApp) -> Self {
        Self {
            base: app.url.trim_end_matches("graphql").to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Sends `method path` with `token` in `X-Auth-Token` (and `body` as JSON).
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, token, body).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Waits until snapshot `id` reaches `state` (a hang guard, not a time limit).
    async fn wait_for_state(&self, token: &str, id: i64, state: i64) -> Value {
        for _ in 0..15_000 {
            let (status, body) = self
                .json(Method::GET, &format!("snapshot/{id}/"), Some(token), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["content"]["state"] == state {
                return body["content"].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("snapshot {id} never reached state {state}");
    }
}

/// A timestamp as CloudCIX writes it: naive, no `Z`, no offset.
fn is_naive_timestamp(value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        && !text.ends_with('Z')
        && !text.contains('+')
}

#[tokio::test]
async fn create_read_and_tree_speak_cloudcix() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let vm: i64 = f.vm.parse().unwrap();
    let op = Some(f.operator.as_str());

    let (status, body) = rest
        .json(
            Method::POST,
            "snapshot/",
            op,
            Some(json!({ "vm_id": vm, "name": " first ", "ignored": true })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "only content: {body}");
    let created = &body["content"];
    let id = created["id"].as_i64().expect("an integer id");
    assert_eq!(created["name"], "first");
    // REQUESTED, or BUILDING already: the robot of this process may have begun.
    assert!(
        matches!(created["state"].as_i64(), Some(1 | 2)),
        "{created}"
    );
    assert_eq!(created["active"], true);
    assert_eq!(created["remove_subtree"], false);
    assert_eq!(created["parent_id"], Value::Null);
    assert_eq!(created["uri"], format!("/snapshot/{id}/"));
    assert_eq!(created["vm"]["id"], vm);
    assert!(is_naive_timestamp(&created["created"]), "{created}");
    assert_eq!(created["history"][0]["state"], 1);
    assert!(is_naive_timestamp(&created["history"][0]["created"]));

    let running = rest.wait_for_state(&f.operator, id, 4).await;
    assert_eq!(running["active"], true);
    let (status, body) = rest
        .json(Method::GET, &format!("snapshot/{id}/"), op, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["content"]["emails"], json!([]));

    // The same snapshot, seen through GraphQL: the same state integer.
    let data = app
        .data(
            &f.operator,
            "query($id: ID!) { snapshot(id: $id) { stateCode active } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(data["snapshot"]["stateCode"], running["state"]);

    // A child, then the tree: branches, each node with its children.
    let (status, body) = rest
        .json(
            Method::POST,
            "snapshot/",
            op,
            Some(json!({ "vm_id": vm.to_string(), "name": "second" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a vm_id string of an integer is taken"
    );
    let child = body["content"]["id"].as_i64().unwrap();
    assert_eq!(body["content"]["parent_id"], id);
    rest.wait_for_state(&f.operator, child, 4).await;
    let (status, body) = rest
        .json(Method::GET, &format!("snapshot_tree/{vm}/"), op, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let branches = body["content"]["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 1);
    assert_eq!(branches[0]["id"], id);
    assert_eq!(branches[0]["children"][0]["id"], child);
    assert_eq!(branches[0]["children"][0]["active"], true);
    assert_eq!(branches[0]["children"][0]["children"], json!([]));
}

#[tokio::test]
async fn refusals_carry_cloudcix_codes() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let vm: i64 = f.vm.parse().unwrap();
    let op = Some(f.operator.as_str());
    let field_code = |body: &Value, field: &str| {
        assert_eq!(body["detail"], "Bad request.", "{body}");
        body["errors"][field]["error_code"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let cases = [
        (json!({ "name": "x" }), "vm_id", "iaas_snapshot_create_101"),
        (
            json!({ "vm_id": "abc", "name": "x" }),
            "vm_id",
            "iaas_snapshot_create_101",
        ),
        (
            json!({ "vm_id": 999_999, "name": "x" }),
            "vm_id",
            "iaas_snapshot_create_102",
        ),
        (
            json!({ "vm_id": vm, "name": "  " }),
            "name",
            "iaas_snapshot_create_106",
        ),
        (json!({ "vm_id": vm }), "name", "iaas_snapshot_create_106"),
        (
            json!({ "vm_id": vm, "name": "x".repeat(129) }),
            "name",
            "iaas_snapshot_create_106",
        ),
    ];
    for (body, field, code) in cases {
        let (status, answer) = rest
            .json(Method::POST, "snapshot/", op, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(field_code(&answer, field), code, "{body}");
    }

    let (_, first) = rest
        .json(
            Method::POST,
            "snapshot/",
            op,
            Some(json!({ "vm_id": vm, "name": "one" })),
        )
        .await;
    // Busy while its build runs or queued... the simulated host is quick, so wait.
    rest.wait_for_state(&f.operator, first["content"]["id"].as_i64().unwrap(), 4)
        .await;
    let (status, answer) = rest
        .json(
            Method::POST,
            "snapshot/",
            op,
            Some(json!({ "vm_id": vm, "name": "one" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field_code(&answer, "name"), "iaas_snapshot_create_107");

    let (status, answer) = rest.json(Method::GET, "snapshot/999999/", op, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error_code"], "iaas_snapshot_read_001");
    let (status, answer) = rest
        .json(Method::GET, "snapshot_tree/999999/", op, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error_code"], "iaas_snapshot_tree_read_001");
    // A path id that is no integer matches no route (Django's plain 404).
    let response = rest.send(Method::GET, "snapshot/abc/", op, None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let viewer = app.create_token(&f.project, "VIEWER").await;
    let (status, answer) = rest
        .json(
            Method::POST,
            "snapshot/",
            Some(&viewer),
            Some(json!({ "vm_id": vm, "name": "v" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["error_code"], "iaas_snapshot_create_202");

    let response = rest
        .client
        .post(format!("{}snapshot/", rest.base))
        .header("X-Auth-Token", &f.operator)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn tokens_methods_and_slashes_behave_as_in_cloudcix() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let snapshot = app.snapshot_built(&f.operator, &f.vm, "s").await;
    let path = format!("snapshot/{snapshot}/");

    let response = rest.send(Method::GET, &path, None, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "X-Auth-Token");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["detail"],
        "Authentication credentials were not provided."
    );
    let (status, _) = rest
        .json(Method::GET, &path, Some("snaptree_nope"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Authentication before the method: unauthenticated DELETE is 401, then 405.
    let (status, _) = rest.json(Method::DELETE, &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = rest
        .send(Method::DELETE, &path, Some(&f.operator), None)
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], "Method \"DELETE\" not allowed.");

    // GraphQL's bearer token works here too.
    let response = rest
        .client
        .get(format!("{}{path}", rest.base))
        .bearer_auth(&f.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // HEAD: the status of a GET, no body.
    let response = rest
        .send(Method::HEAD, &path, Some(&f.operator), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());
    let response = rest
        .send(Method::HEAD, "snapshot/999999/", Some(&f.operator), None)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Without the trailing slash: moved permanently to it, the query kept.
    let response = rest
        .send(
            Method::GET,
            &format!("snapshot/{snapshot}?x=1"),
            Some(&f.operator),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        response.headers()["location"],
        format!("/snapshot/{snapshot}/?x=1")
    );
}

#[tokio::test]
async fn another_projects_snapshots_do_not_exist() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let mine = app.project_with_vm("mine", "sim://").await;
    let theirs = app.project_with_vm("theirs", "sim://").await;
    let snapshot = app
        .snapshot_built(&theirs.operator, &theirs.vm, "secret")
        .await;
    let me = Some(mine.operator.as_str());

    let (status, body) = rest
        .json(Method::GET, &format!("snapshot/{snapshot}/"), me, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "iaas_snapshot_read_001");
    let (status, body) = rest
        .json(
            Method::GET,
            &format!("snapshot_tree/{}/", theirs.vm),
            me,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "iaas_snapshot_tree_read_001");
    let (status, body) = rest
        .json(
            Method::POST,
            "snapshot/",
            me,
            Some(json!({ "vm_id": theirs.vm.parse::<i64>().unwrap(), "name": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["vm_id"]["error_code"],
        "iaas_snapshot_create_102"
    );
    assert!(!body.to_string().contains("secret"));
}

#[tokio::test]
async fn updates_apply_revert_and_delete_as_cloudcix_clients_ask() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let op = Some(f.operator.as_str());
    let root: i64 = app
        .snapshot_built(&f.operator, &f.vm, "root")
        .await
        .parse()
        .unwrap();
    let child: i64 = app
        .snapshot_built(&f.operator, &f.vm, "child")
        .await
        .parse()
        .unwrap();
    let path = |id: i64| format!("snapshot/{id}/");

    // Apply: state 10 on a snapshot that is not active.
    let (status, body) = rest
        .json(Method::PATCH, &path(root), op, Some(json!({ "state": 10 })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // RUNNING_UPDATE, RUNNING_UPDATING, or done already (the simulated host is quick).
    assert!(
        matches!(body["content"]["state"].as_i64(), Some(10 | 11 | 4)),
        "{body}"
    );
    assert_eq!(body["content"]["active"], true);
    rest.wait_for_state(&f.operator, root, 4).await;
    let (_, body) = rest.json(Method::GET, &path(child), op, None).await;
    assert_eq!(body["content"]["active"], false);

    // Revert: state 10 on the active one, with PUT.
    let (status, body) = rest
        .json(Method::PUT, &path(root), op, Some(json!({ "state": 10 })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reverted = rest.wait_for_state(&f.operator, root, 4).await;
    assert_eq!(reverted["active"], true);

    // The current state again changes nothing and records nothing.
    let before = reverted["history"].as_array().unwrap().len();
    let (status, body) = rest
        .json(
            Method::PATCH,
            &path(root),
            op,
            Some(json!({ "state": 4, "name": "root" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"]["history"].as_array().unwrap().len(), before);

    // Refused fields, each with its code.
    let cases = [
        (json!({ "state": "x" }), "state", "iaas_snapshot_update_103"),
        (json!({ "state": 50 }), "state", "iaas_snapshot_update_104"),
        (json!({ "state": 2 }), "state", "iaas_snapshot_update_106"),
        (
            json!({ "state": 8, "remove_subtree": "true" }),
            "remove_subtree",
            "iaas_snapshot_update_108",
        ),
        (
            json!({ "remove_subtree": true }),
            "remove_subtree",
            "iaas_snapshot_update_109",
        ),
        (
            json!({ "state": 10, "remove_subtree": true }),
            "remove_subtree",
            "iaas_snapshot_update_110",
        ),
    ];
    for (request, field, code) in cases {
        let (status, body) = rest
            .json(Method::PATCH, &path(child), op, Some(request.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request} -> {body}");
        assert_eq!(
            body["errors"][field]["error_code"], code,
            "{request} -> {body}"
        );
    }
    let (status, body) = rest
        .json(
            Method::PATCH,
            "snapshot/999999/",
            op,
            Some(json!({ "state": 10 })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], "iaas_snapshot_update_001");
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let (status, body) = rest
        .json(
            Method::PATCH,
            &path(child),
            Some(&viewer),
            Some(json!({ "state": 8 })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error_code"], "iaas_snapshot_update_203");

    // Delete one: state 8; then it is CLOSED (99) and gone from the tree.
    let (status, body) = rest
        .json(Method::PATCH, &path(child), op, Some(json!({ "state": 8 })))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    rest.wait_for_state(&f.operator, child, 99).await;
    let (status, body) = rest
        .json(
            Method::PATCH,
            &path(child),
            op,
            Some(json!({ "state": 10 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["state"]["error_code"],
        "iaas_snapshot_update_105"
    );

    // Delete a subtree: a and its child b close together.
    let a: i64 = app
        .snapshot_built(&f.operator, &f.vm, "a")
        .await
        .parse()
        .unwrap();
    let b: i64 = app
        .snapshot_built(&f.operator, &f.vm, "b")
        .await
        .parse()
        .unwrap();
    let (status, body) = rest
        .json(
            Method::PATCH,
            &path(a),
            op,
            Some(json!({ "state": 8, "remove_subtree": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"]["remove_subtree"], true);
    rest.wait_for_state(&f.operator, a, 99).await;
    rest.wait_for_state(&f.operator, b, 99).await;
    let (_, body) = rest
        .json(Method::GET, &format!("snapshot_tree/{}/", f.vm), op, None)
        .await;
    let branches = body["content"]["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 1);
    assert_eq!(branches[0]["id"], root);
    assert_eq!(branches[0]["children"], json!([]));
}

/// The ids of a list answer's content, in order.
fn ids(body: &Value) -> Vec<i64> {
    body["content"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_filter_order_and_page_as_cloudcix_does() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let other = app.create_vm(&f.host, &f.project, "web-2").await;
    let theirs = app.project_with_vm("theirs", "sim://").await;
    app.snapshot_built(&theirs.operator, &theirs.vm, "alpha")
        .await;
    let op = Some(f.operator.as_str());
    // p-vm: alpha <- beta <- gamma_1; web-2: alpha.
    let mut mine = Vec::new();
    for name in ["alpha", "beta", "gamma_1"] {
        mine.push(
            app.snapshot_built(&f.operator, &f.vm, name)
                .await
                .parse::<i64>()
                .unwrap(),
        );
    }
    let on_other: i64 = app
        .snapshot_built(&f.operator, &other, "alpha")
        .await
        .parse()
        .unwrap();
    let vm: i64 = f.vm.parse().unwrap();

    // Everything the caller may see, in id order, with the envelope and its metadata.
    let (status, body) = rest.json(Method::GET, "snapshot/", op, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), [mine.clone(), vec![on_other]].concat());
    assert_eq!(
        body["_metadata"],
        json!({ "page": 0, "limit": 50, "order": "id", "total_records": 4, "warnings": [] })
    );
    let first = &body["content"][0];
    assert_eq!(first["vm"]["id"], vm);
    assert_eq!(first["history"][0]["state"], 1);
    assert!(is_naive_timestamp(&first["created"]));

    let list = |query: String| {
        let rest = &rest;
        async move {
            let (status, body) = rest
                .json(Method::GET, &format!("snapshot/?{query}"), op, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body
        }
    };
    // Filters, excludes and their operators.
    let by_vm = format!("search[vm_id]={vm}");
    assert_eq!(ids(&list(by_vm).await), mine);
    assert_eq!(
        ids(&list("search[name__iexact]=ALPHA".into()).await),
        [mine[0], on_other]
    );
    assert_eq!(
        ids(&list("search[name__icontains]=MM".into()).await),
        [mine[2]]
    );
    // `_` and `%` are letters to match, not wildcards.
    assert_eq!(
        ids(&list("search[name__icontains]=a_".into()).await),
        [mine[2]]
    );
    assert_eq!(
        ids(&list("search[name__icontains]=%25".into()).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&list("search[name__istartswith]=be".into()).await),
        [mine[1]]
    );
    assert_eq!(
        ids(&list("search[name__iendswith]=A".into()).await),
        [mine[0], mine[1], on_other]
    );
    assert_eq!(
        ids(&list("search[name__in]=beta,alpha".into()).await),
        [mine[0], mine[1], on_other]
    );
    assert_eq!(
        ids(&list("search[vm__name]=web-2".into()).await),
        [on_other]
    );
    assert_eq!(
        ids(&list("search[vm__project__name__iexact]=P".into()).await).len(),
        4
    );
    assert_eq!(
        ids(&list("search[active]=TRUE".into()).await),
        [mine[2], on_other]
    );
    assert_eq!(
        ids(&list("exclude[active]=true".into()).await),
        [mine[0], mine[1]]
    );
    // A root has no parent: `exclude` keeps it (a null matches no condition).
    assert_eq!(
        ids(&list("search[parent_id__isnull]=true".into()).await),
        [mine[0], on_other]
    );
    let child_of_alpha = format!("exclude[parent_id]={}", mine[0]);
    assert_eq!(
        ids(&list(child_of_alpha).await),
        [mine[0], mine[2], on_other]
    );
    let range = format!("search[id__range]=[{},{}]", mine[1], mine[2]);
    assert_eq!(ids(&list(range).await), [mine[1], mine[2]]);
    let gt = format!("search[id__gt]={}&search[id__lte]={}", mine[0], mine[2]);
    assert_eq!(ids(&list(gt).await), [mine[1], mine[2]]);
    assert_eq!(
        ids(&list("search[state]=4&exclude[state]=99".into()).await).len(),
        4
    );
    assert_eq!(
        ids(&list("search[created__istartswith]=20".into()).await).len(),
        4
    );
    // snaptree has no addresses or regions: no snapshot is in one.
    assert_eq!(
        ids(&list("search[vm__project__region_id]=1".into()).await).len(),
        0
    );

    // Order, limit and page, each falling back as CloudCIX's do.
    assert_eq!(
        ids(&list("order=-id".into()).await),
        [on_other, mine[2], mine[1], mine[0]]
    );
    let body = list("order=name&limit=2".into()).await;
    assert_eq!(ids(&body), [mine[0], on_other], "ties in id order");
    assert_eq!(body["_metadata"]["order"], "name");
    let body = list("order=-name&limit=2&page=1".into()).await;
    assert_eq!(ids(&body), [on_other, mine[0]]);
    assert_eq!(body["_metadata"]["total_records"], 4);
    assert_eq!(body["_metadata"]["page"], 1);
    let body = list("limit=101&page=-3&order=secret".into()).await;
    assert_eq!(body["_metadata"]["limit"], 50);
    assert_eq!(body["_metadata"]["page"], 0);
    assert_eq!(body["_metadata"]["order"], "id");
    let body = list("page=9223372036854775807".into()).await;
    assert_eq!(ids(&body), Vec::<i64>::new());
    assert_eq!(body["_metadata"]["total_records"], 4);

    // What cannot be used is a warning; a value the field cannot hold is refused.
    let body = list("search[secret]=1&search[name__gt]=a&name__icontains=alp".into()).await;
    let warnings = body["_metadata"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("DeprecationWarning"))
    );
    assert_eq!(ids(&body), [mine[0], on_other]);
    for bad in [
        "search[id]=abc",
        "search[vm_id]=",
        "search[active]=maybe",
        "exclude[state__in]=4,x",
    ] {
        let (status, body) = rest
            .json(Method::GET, &format!("snapshot/?{bad}"), op, None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error_code"], "iaas_snapshot_list_001", "{bad}");
    }
    // HEAD runs the GET, without a body.
    let response = rest.send(Method::HEAD, "snapshot/", op, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.bytes().await.unwrap().is_empty());
    // Another project's rows are not there, whatever the filter.
    let theirs_vm = format!("search[vm_id]={}", theirs.vm);
    assert_eq!(ids(&list(theirs_vm).await), Vec::<i64>::new());
}

#[tokio::test]
async fn history_lists_every_state_change_of_the_callers_project() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let theirs = app.project_with_vm("theirs", "sim://").await;
    app.snapshot_built(&theirs.operator, &theirs.vm, "secret")
        .await;
    let op = Some(f.operator.as_str());
    let first: i64 = app
        .snapshot_built(&f.operator, &f.vm, "first")
        .await
        .parse()
        .unwrap();
    let second: i64 = app
        .snapshot_built(&f.operator, &f.vm, "second")
        .await
        .parse()
        .unwrap();

    let (status, body) = rest.json(Method::GET, "snapshot_history/", op, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["content"].as_array().unwrap();
    // REQUESTED, BUILDING, RUNNING for each.
    assert_eq!(rows.len(), 6, "{body}");
    assert_eq!(body["_metadata"]["total_records"], 6);
    assert_eq!(body["_metadata"]["order"], "created");
    assert!(
        rows.iter()
            .all(|r| r["project_id"] == f.project.parse::<i64>().unwrap())
    );
    let states: Vec<i64> = rows
        .iter()
        .filter(|r| r["snapshot_id"] == first)
        .map(|r| r["state"].as_i64().unwrap())
        .collect();
    assert_eq!(states, [1, 2, 4]);
    assert!(is_naive_timestamp(&rows[0]["created"]));
    assert_eq!(rows[0]["modified_by"], Value::Null);

    let get = |query: String| {
        let rest = &rest;
        async move {
            let (status, body) = rest
                .json(Method::GET, &format!("snapshot_history/?{query}"), op, None)
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body
        }
    };
    let body = get(format!("search[snapshot_id]={second}&order=-created")).await;
    let rows = body["content"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["state"], 4, "newest first");
    // Times take number operators, with a date or a time.
    let since = rows[2]["created"].as_str().unwrap().to_owned();
    let body = get(format!("search[created__gte]={since}")).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 3);
    let body = get("search[created__lt]=2000-01-01".into()).await;
    assert_eq!(body["content"], json!([]));
    // State is not a history filter in CloudCIX: a warning, and every row.
    let body = get("search[state]=4".into()).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 6);
    assert_eq!(body["_metadata"]["warnings"].as_array().unwrap().len(), 1);
    let body = get("search[modified_by__isnull]=true&limit=2".into()).await;
    assert_eq!(body["content"].as_array().unwrap().len(), 2);
    assert_eq!(body["_metadata"]["total_records"], 6);
    let (status, body) = rest
        .json(
            Method::GET,
            "snapshot_history/?search[created__gt]=yesterday",
            op,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_code"], "iaas_snapshot_history_list_001");
    assert!(!body.to_string().contains("secret"));
}

/// A UI on another origin, allowed by `--cors-origins`, and a page of an origin that is
/// not: preflights, answers and WebSockets, against a `snaptree serve` process.
#[tokio::test]
async fn only_listed_origins_get_cors_and_sockets() {
    use common::process::{self, ServerProcess};
    use common::ws::Subscriber;

    const UI: &str = "https://ui.cloudcix.test";
    let dir = tempfile::tempdir().unwrap();
    let db = common::TestDb::new(dir.path()).await;
    let admin = process::token(&db.cli_url(), "ops", "ADMIN");
    let server = ServerProcess::start(
        &db.cli_url(),
        &dir.path().join("sim"),
        &["--cors-origins", &format!("{UI}/, http://127.0.0.1:1")],
    );
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(Method::OPTIONS, format!("{}snapshot/", server.url))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "x-auth-token, content-type",
            )
            .send()
    };
    let allowed = preflight(UI).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(header(&allowed, "access-control-allow-origin"), UI);
    assert!(header(&allowed, "access-control-allow-headers").contains("x-auth-token"));
    assert!(header(&allowed, "access-control-allow-headers").contains("authorization"));
    assert!(header(&allowed, "access-control-allow-methods").contains("patch"));
    let refused = preflight("https://evil.test").await.unwrap();
    assert_eq!(header(&refused, "access-control-allow-origin"), "");

    // A real request from the UI's origin is answered with the header; GraphQL too.
    let answer = client
        .get(format!("{}snapshot/", server.url))
        .header("Origin", UI)
        .header("X-Auth-Token", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(header(&answer, "access-control-allow-origin"), UI);
    let answer = client
        .post(format!("{}graphql", server.url))
        .header("Origin", "https://evil.test")
        .bearer_auth(&admin)
        .json(&json!({ "query": "{ projects { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&answer, "access-control-allow-origin"), "");

    // WebSockets: no Origin (not a browser), the server's own, a listed one; not others.
    let url = format!("{}graphql", server.url);
    let own = server.url.trim_end_matches('/');
    assert_eq!(Subscriber::upgrade_status(&url, None).await, 101);
    assert_eq!(Subscriber::upgrade_status(&url, Some(own)).await, 101);
    assert_eq!(Subscriber::upgrade_status(&url, Some(UI)).await, 101);
    assert_eq!(
        Subscriber::upgrade_status(&url, Some("https://evil.test")).await,
        403
    );
    assert_eq!(Subscriber::upgrade_status(&url, Some("null")).await, 403);
    drop(server);
}

/// With no `--cors-origins`, only the server's own pages: no CORS header for anyone,
/// and a socket from another origin is refused.
#[tokio::test]
async fn no_origin_is_allowed_by_default() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let base = app.url.trim_end_matches("graphql").to_owned();
    let answer = client
        .request(Method::OPTIONS, format!("{base}snapshot/"))
        .header("Origin", "https://ui.cloudcix.test")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let status =
        common::ws::Subscriber::upgrade_status(&app.url, Some("https://ui.cloudcix.test")).await;
    assert_eq!(status, 403);
}

/// A busy VM (a task on its way) and a VM that is not running, as CloudCIX says them.
#[tokio::test]
async fn busy_and_stopped_vms_are_refused_with_cloudcix_codes() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://?latency_ms=3000").await;
    let vm: i64 = f.vm.parse().unwrap();
    let op = Some(f.operator.as_str());
    let create = |name: &'static str| {
        rest.json(
            Method::POST,
            "snapshot/",
            op,
            Some(json!({ "vm_id": vm, "name": name })),
        )
    };
    let (status, body) = create("first").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["content"]["id"].as_i64().unwrap();
    // While it builds, the VM is busy: a create and an update are refused.
    let (status, body) = create("second").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error_code"], "iaas_snapshot_create_001", "{body}");
    let (status, body) = rest
        .json(
            Method::PATCH,
            &format!("snapshot/{first}/"),
            op,
            Some(json!({ "state": 8 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error_code"], "iaas_snapshot_update_002", "{body}");
    rest.wait_for_state(&f.operator, first, 4).await;

    // The VM stops (its host says so): nothing may be asked of its snapshots.
    app.set_vm_state(&f.vm, 5).await;
    let (status, body) = create("third").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["errors"]["vm_id"]["error_code"], "iaas_snapshot_create_103",
        "{body}"
    );
    let (status, body) = rest
        .json(
            Method::PUT,
            &format!("snapshot/{first}/"),
            op,
            Some(json!({ "state": 10 })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["errors"]["state"]["error_code"], "iaas_snapshot_update_107",
        "{body}"
    );
}

/// The two APIs are one service: an action taken through REST reaches a GraphQL
/// subscriber live, and a snapshot made through GraphQL reads the same through REST.
#[tokio::test]
async fn rest_and_graphql_see_each_others_changes() {
    use common::ws::Subscriber;

    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let vm: i64 = f.vm.parse().unwrap();
    let op = Some(f.operator.as_str());
    let mut sub = Subscriber::connect(&app.url, Some(&f.operator))
        .await
        .expect("the socket is accepted");
    sub.subscribe(
        "e",
        "subscription { events { id state task { kind snapshot { id stateCode } } } }",
        json!({}),
    )
    .await;
    // The subscription is live once it answers; an action through GraphQL proves it.
    let warm = app.snapshot_built(&f.operator, &f.vm, "warm").await;
    loop {
        let event = sub.event("events").await;
        if event["task"]["snapshot"]["id"] == warm && event["state"] == "SUCCEEDED" {
            break;
        }
    }

    let (status, body) = rest
        .json(
            Method::POST,
            "snapshot/",
            op,
            Some(json!({ "vm_id": vm, "name": "through-rest" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["content"]["id"].as_i64().unwrap().to_string();
    let mut seen = Vec::new();
    loop {
        let event = sub.event("events").await;
        assert_eq!(event["task"]["snapshot"]["id"], id, "{event}");
        seen.push(event["state"].as_str().unwrap().to_owned());
        if event["state"] == "SUCCEEDED" {
            assert_eq!(event["task"]["kind"], "BUILD");
            assert_eq!(event["task"]["snapshot"]["stateCode"], 4);
            break;
        }
    }
    assert_eq!(seen.first().map(String::as_str), Some("QUEUED"), "{seen:?}");

    // A snapshot made through GraphQL, read through REST: the same state integers.
    let (status, body) = rest
        .json(Method::GET, &format!("snapshot/{warm}/"), op, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let data = app
        .data(
            &f.operator,
            "query($id: ID!) { snapshot(id: $id) { stateCode active history { stateCode } } }",
            json!({ "id": warm }),
        )
        .await;
    assert_eq!(body["content"]["state"], data["snapshot"]["stateCode"]);
    assert_eq!(body["content"]["active"], data["snapshot"]["active"]);
    let rest_history: Vec<&Value> = body["content"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["state"])
        .collect();
    let graphql_history: Vec<&Value> = data["snapshot"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["stateCode"])
        .collect();
    assert_eq!(rest_history, graphql_history);
}

/// `name` (and snaptree's `description`) in an update: a rename, refused with CloudCIX's
/// codes when too long or taken; blank or null changes nothing.
#[tokio::test]
async fn updates_rename_snapshots() {
    let app = TestApp::spawn().await;
    let rest = Rest::of(&app);
    let f = app.project_with_vm("p", "sim://").await;
    let op = Some(f.operator.as_str());
    let first = app.snapshot_built(&f.operator, &f.vm, "first").await;
    app.snapshot_built(&f.operator, &f.vm, "second").await;
    let patch = |body: Value| {
        let rest = &rest;
        let path = format!("snapshot/{first}/");
        async move { rest.json(Method::PATCH, &path, op, Some(body)).await }
    };
    let (status, body) =
        patch(json!({ "name": " before the upgrade ", "description": "kernel 6.1" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"]["name"], "before the upgrade");
    assert_eq!(body["content"]["description"], "kernel 6.1");
    let (status, body) = patch(json!({ "name": "", "description": null })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["content"]["name"], "before the upgrade",
        "a blank name is ignored"
    );
    assert_eq!(body["content"]["description"], Value::Null);
    let (status, body) = patch(json!({ "name": "second" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["name"]["error_code"],
        "iaas_snapshot_update_102"
    );
    let (status, body) = patch(json!({ "name": "x".repeat(129) })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["errors"]["name"]["error_code"],
        "iaas_snapshot_update_101"
    );
    let (status, body) = patch(json!({ "name": 7 })).await;
    assert_eq!(
        body["errors"]["name"]["error_code"], "iaas_snapshot_update_101",
        "{status}"
    );
    let (status, body) = patch(json!({ "description": ["x"] })).await;
    assert_eq!(
        body["errors"]["description"]["error_code"], "VALIDATION",
        "{status}"
    );
    let (status, body) = patch(json!({ "description": "d".repeat(100_000) })).await;
    assert_eq!(
        body["errors"]["description"]["error_code"], "VALIDATION",
        "{status}"
    );
    // The same name seen through GraphQL, and the tree rules know it: it is taken.
    let data = app
        .data(
            &f.operator,
            "query($id: ID!) { snapshot(id: $id) { name } }",
            json!({ "id": first }),
        )
        .await;
    assert_eq!(data["snapshot"]["name"], "before the upgrade");
    let code = app
        .error_code(
            Some(&f.operator),
            "mutation($vm: ID!) { createSnapshot(vmId: $vm, name: \"before the upgrade\") { task { id } } }",
            json!({ "vm": f.vm }),
        )
        .await;
    assert_eq!(code, "VALIDATION");
    // A VIEWER may not rename.
    let viewer = app.create_token(&f.project, "VIEWER").await;
    let (status, body) = rest
        .json(
            Method::PATCH,
            &format!("snapshot/{first}/"),
            Some(&viewer),
            Some(json!({ "name": "mine" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error_code"], "iaas_snapshot_update_203");
}
