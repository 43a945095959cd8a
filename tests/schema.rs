//! `schema.graphql` is the SDL the binary prints, and it keeps every name api.md binds.

use std::collections::HashMap;
use std::process::Command;

fn printed() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .arg("schema")
        .output()
        .expect("snaptree schema runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn schema_graphql_is_up_to_date() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists");
    assert!(
        committed == printed(),
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql` and commit it"
    );
}

/// Fields of each type (and values of each enum) in an SDL document.
fn members(sdl: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut current: Option<String> = None;
    let mut in_doc = false;
    for line in sdl.lines().map(str::trim) {
        if line.starts_with("\"\"\"") {
            in_doc = !(in_doc || line.len() > 3 && line.ends_with("\"\"\""));
            continue;
        }
        if in_doc || line.is_empty() {
            continue;
        }
        if let Some(rest) = ["type ", "enum ", "input "]
            .iter()
            .find_map(|k| line.strip_prefix(k))
        {
            current = Some(rest.split([' ', '{']).next().unwrap().to_owned());
        } else if line == "}" {
            current = None;
        } else if let Some(t) = &current {
            let name = line.split(['(', ':', ' ']).next().unwrap().to_owned();
            out.entry(t.clone()).or_default().push(name);
        }
    }
    out
}

#[test]
fn every_binding_name_of_the_api_contract_is_there() {
    let required: &[(&str, &str)] = &[
        ("Hypervisor", "KVM HYPERV SIMULATED"),
        (
            "SnapshotState",
            "REQUESTED BUILDING UNRESOURCED RUNNING SCRUB RUNNING_UPDATE RUNNING_UPDATING SCRUBBING CLOSED",
        ),
        ("TaskKind", "BUILD UPDATE SCRUB"),
        ("TaskState", "QUEUED RUNNING SUCCEEDED FAILED CANCELLED"),
        ("Role", "ADMIN OPERATOR VIEWER"),
        ("Query", "hosts host vms vm snapshot task tasks projects"),
        ("Host", "id name hypervisor maxSnapshotsPerVm vms"),
        (
            "Vm",
            "id name identifier host state stateName activeSnapshot snapshotTree snapshots snapshotCount snapshotLimit busy",
        ),
        (
            "Snapshot",
            "id vm name description parent children active state stateCode removeSubtree createdAt updatedAt history tasks",
        ),
        ("SnapshotHistoryEntry", "state stateCode actor at"),
        (
            "Task",
            "id kind state vm snapshot progress phase attempts error createdAt startedAt finishedAt events",
        ),
        ("TaskEvent", "id task state progress phase message at"),
        (
            "Mutation",
            "createSnapshot applySnapshot revertSnapshot deleteSnapshot cancelTask createProject createToken revokeToken createHost createVm importVms",
        ),
        ("SnapshotPayload", "snapshot task"),
        ("Project", "id name"),
        ("CreatedToken", "id token"),
        ("VmConnection", "edges pageInfo"),
        ("VmEdge", "cursor node"),
        ("TaskConnection", "edges pageInfo"),
    ];
    let sdl = printed();
    let found = members(&sdl);
    for (ty, names) in required {
        let have = found
            .get(*ty)
            .unwrap_or_else(|| panic!("type {ty} is missing"));
        for name in names.split(' ') {
            assert!(have.iter().any(|h| h == name), "{ty}.{name} is missing");
        }
    }
    assert!(sdl.contains("scalar DateTime"));
}
