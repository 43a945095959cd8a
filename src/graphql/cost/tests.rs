//! Unit tests of `cost`.

use super::*;

fn catalog() -> Catalog {
    Catalog::new(&crate::graphql::sdl(), 100)
}

fn measure(query: &str) -> Result<Measured, AppError> {
    let doc = async_graphql::parser::parse_query(query).unwrap();
    catalog().measure(&doc, None, &Variables::default())
}

fn cost(query: &str) -> u64 {
    measure(query).unwrap().cost
}

#[test]
fn every_list_has_a_bound_of_its_own() {
    let lists = catalog().lists();
    let unruled: Vec<&String> = lists.iter().filter(|l| l.contains("Unruled")).collect();
    assert!(unruled.is_empty(), "lists without a rule: {unruled:?}");
}

#[test]
fn scalars_count_once_and_lists_by_their_page() {
    assert_eq!(cost("{ vm(id: 1) { id name } }"), 3);
    // The connection's `edges` take its page: 5 edges of (edge + node + 2 fields).
    let paged = "{ vms(first: 5) { edges { node { id name } } } }";
    assert_eq!(measure(paged).unwrap().nodes, 1 + 5 * 2);
    assert_eq!(cost(paged), 1 + 1 + 5 * (1 + 2));
}

#[test]
fn nested_lists_multiply() {
    let nested = "{ vm(id: 1) { host { vms { host { vms { host { vms { id } } } } } } } }";
    let m = measure(nested).unwrap();
    assert!(m.nodes > 50 * 50 * 50, "{m:?}");
}

#[test]
fn variables_and_defaults_set_the_page() {
    let doc = async_graphql::parser::parse_query(
        "query($n: Int = 3) { vms(first: $n) { edges { node { id } } } }",
    )
    .unwrap();
    let c = catalog();
    let by_default = c.measure(&doc, None, &Variables::default()).unwrap();
    let vars = Variables::from_json(serde_json::json!({ "n": 7 }));
    let given = c.measure(&doc, None, &vars).unwrap();
    assert_eq!(by_default.nodes, 1 + 3 * 2);
    assert_eq!(given.nodes, 1 + 7 * 2);
}

#[test]
fn tree_levels_cost_per_vm_not_per_parent() {
    let mut chain = String::from("{ vm(id: 1) { snapshotTree { id name ");
    for _ in 0..49 {
        chain.push_str("children { id name ");
    }
    chain.push_str(&"}".repeat(51));
    chain.push('}');
    let m = measure(&chain).unwrap();
    // At most 100 snapshots on a path, each with 2 fields and its `children`.
    assert_eq!(m.nodes, 1 + 100);
    assert_eq!(m.cost, 2 + 100 * 3);
    assert_eq!(m.depth, 52);
    // Below `snapshots` (a page of 200, parents and children alike), each level can
    // hold every snapshot again.
    let flat = chain.replacen("snapshotTree", "snapshots", 1);
    assert_eq!(measure(&flat).unwrap().nodes, 1 + 200 + 49 * 100);
}

#[test]
fn tree_walks_count_the_dearest_level_and_every_branch() {
    // The deepest level asks for the history; a path may hold 100 snapshots there.
    let deep = "{ vm(id: 1) { snapshotTree { id children { id history(first: 10) { at } } } } }";
    let m = measure(deep).unwrap();
    assert_eq!(m.nodes, 1 + 100 * (1 + 10));
    // Two aliases of `children` are two walks over the same snapshots.
    let twice = "{ vm(id: 1) { snapshotTree { a: children { id } b: children { id } } } }";
    assert_eq!(measure(twice).unwrap().nodes, 1 + 100 * 2);
}

#[test]
fn going_back_up_the_tree_multiplies_again() {
    let zigzag =
        "{ snapshot(id: 1) { children { parent { children { parent { children { id } } } } } } }";
    assert!(measure(zigzag).unwrap().nodes >= 100 * 100 * 100);
}

#[test]
fn doubled_fragments_cost_what_they_expand_to_without_expanding() {
    let mut doc = String::from("fragment F0 on Query { hosts { id } }\n");
    for i in 1..=60 {
        doc.push_str(&format!(
            "fragment F{i} on Query {{ ...F{} ...F{} }}\n",
            i - 1,
            i - 1
        ));
    }
    doc.push_str("{ ...F60 }");
    let m = measure(&doc).unwrap();
    assert_eq!(
        m.cost,
        u64::MAX,
        "saturates: 2^60 spreads of a page of hosts"
    );
}

#[test]
fn fragment_cycles_are_refused() {
    let err =
        measure("fragment A on Query { ...B } fragment B on Query { ...A } { ...A }").unwrap_err();
    assert_eq!(err.code(), "VALIDATION");
}

#[test]
fn host_calls_are_dear() {
    assert!(cost("{ vm(id: 1) { drift { kind } } }") > HOST_CALL_COST);
    // Fifty previews (a page of policies) cost what 5,000 fields do.
    assert!(cost("{ policies { preview { dueAt } } }") >= 50 * WIDE_READ_COST);
}

#[test]
fn introspection_is_bounded_by_what_the_schema_holds() {
    // The query GraphiQL and code generators send.
    let standard = measure(STANDARD_INTROSPECTION).unwrap();
    assert!(standard.cost < 20_000, "{standard:?}");
    // Going from a field back to its type and on starts again, and multiplies.
    let nested =
        "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    assert!(
        measure(nested).unwrap().nodes > 30_000,
        "{:?}",
        measure(nested)
    );
    assert_eq!(cost("{ __schema { queryType { name } } }"), 3);
}

const STANDARD_INTROSPECTION: &str = r#"query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue }
    type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType {
  kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name
} } } } } } } }"#;
