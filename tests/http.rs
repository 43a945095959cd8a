//! The HTTP surface around GraphQL: health, dashboard, GET for queries only, and
//! malformed or oversized requests answered with a code.

mod common;

use common::{TestApp, error_code};
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_dashboard_need_no_token() {
    let app = TestApp::spawn().await;
    let base = app.url.trim_end_matches("graphql");
    let health = app
        .client
        .get(format!("{base}healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    let page = app.client.get(base).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>snaptree</title>")
    );
}

#[tokio::test]
async fn get_runs_queries_but_not_mutations() {
    let app = TestApp::spawn().await;
    let get = |query: &str| {
        app.client
            .get(&app.url)
            .query(&[("query", query)])
            .bearer_auth(&app.admin)
    };
    let body: Value = get("{ projects { name } }")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["projects"], json!([{ "name": "ops" }]));

    let response = get("mutation { createProject(name: \"sneaky\") { id } }")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(error_code(&response.json().await.unwrap()), "VALIDATION");
    let body: Value = get("{ projects { name } }")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["data"]["projects"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_are_refused_with_a_code() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(&app.url)
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_code(&response.json().await.unwrap()), "VALIDATION");

    let huge =
        json!({ "query": "{ hosts { id } }", "variables": { "pad": "x".repeat(300 * 1024) } });
    let response = app
        .client
        .post(&app.url)
        .bearer_auth(&app.admin)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "QUERY_TOO_COMPLEX"
    );
}
