//! `snapshot/`, `snapshot/<pk>/` and `snapshot_tree/<vm_id>/`: CloudCIX's snapshot
//! objects, made of snaptree's rows.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::codes::{Op, refusal};
use super::{RestCaller, no_route, path_id, wire};
use crate::db::models::{HistoryEntry, Snapshot, Vm};
use crate::domain::{SnapshotState, state};
use crate::error::{AppError, AppResult};
use crate::service::{Caller, Change, Create, Service};

/// How many history rows a snapshot object or tree node holds: its newest (a snapshot
/// applied every day for years has thousands). `snapshot_history/` lists them all.
pub const HISTORY_EMBEDDED: i64 = 50;

/// A history row. CloudCIX's `modified_by` is a user id and `customer_address` a billing
/// address; snaptree has neither, and gives the token's name as `actor`.
pub fn history_json(entry: &HistoryEntry) -> Value {
    json!({
        "created": wire::timestamp(entry.at),
        "customer_address": null,
        "modified_by": null,
        "actor": entry.actor,
        "project_id": entry.project_id,
        "snapshot_id": entry.snapshot_id,
        "state": entry.state,
        "vm_id": entry.vm_id,
    })
}

/// The fields a snapshot has in every shape (object, tree node).
fn common(snapshot: &Snapshot, history: &[&HistoryEntry]) -> serde_json::Map<String, Value> {
    let json = json!({
        "active": snapshot.active,
        "created": wire::timestamp(snapshot.created_at),
        "description": snapshot.description,
        "history": history.iter().map(|h| history_json(h)).collect::<Vec<_>>(),
        "id": snapshot.id,
        "name": snapshot.name,
        "remove_subtree": snapshot.remove_subtree,
        "state": snapshot.state,
        "updated": wire::timestamp(snapshot.updated_at),
        "uri": format!("/snapshot/{}/", snapshot.id),
    });
    match json {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// A snapshot object: its fields, its parent and its VM.
pub fn snapshot_json(snapshot: &Snapshot, vm: &Vm, history: &[HistoryEntry]) -> Value {
    let own: Vec<&HistoryEntry> = history
        .iter()
        .filter(|h| h.snapshot_id == snapshot.id)
        .collect();
    let mut map = common(snapshot, &own);
    map.insert("parent_id".into(), json!(snapshot.parent_id));
    map.insert(
        "vm".into(),
        json!({
            "id": vm.id,
            "name": vm.name,
            "state": vm.state,
            "server_id": vm.host_id,
            "project_id": vm.project_id,
        }),
    );
    Value::Object(map)
}

/// A snapshot as its create answers it: as the request made it (REQUESTED, active, with
/// its one history row), as CloudCIX answers, even when a fast robot has already moved
/// it on by the time the answer is written.
async fn as_created(service: &Service, caller: &Caller, snapshot: &Snapshot) -> AppResult<Value> {
    let reads = service.reads();
    let vm = reads
        .vm(caller, snapshot.vm_id)
        .await?
        .ok_or_else(|| AppError::internal(format!("snapshot {} has no VM", snapshot.id)))?;
    let made = reads.first_history_of_snapshot(snapshot.id).await?;
    Ok(snapshot_json(snapshot, &vm, &made))
}

/// Snapshot `id` as its object, if the caller may see it.
async fn load(service: &Service, caller: &Caller, id: i64) -> AppResult<Option<Value>> {
    let reads = service.reads();
    let Some(snapshot) = reads.snapshot(caller, id).await? else {
        return Ok(None);
    };
    let vm = reads
        .vm(caller, snapshot.vm_id)
        .await?
        .ok_or_else(|| AppError::internal(format!("snapshot {id} has no VM")))?;
    let history = reads
        .recent_history_of_snapshots(&[snapshot.id], HISTORY_EMBEDDED)
        .await?;
    Ok(Some(snapshot_json(&snapshot, &vm, &history)))
}

/// `GET snapshot/<pk>/` (and HEAD).
pub async fn read(
    State(service): State<Service>,
    RestCaller(caller): RestCaller,
    Path(pk): Path<String>,
) -> Response {
    let Some(id) = path_id(&pk) else {
        return no_route();
    };
    match load(&service, &caller, id).await {
        Ok(Some(mut object)) => {
            // CloudCIX adds the e-mails of those to tell; snaptree has no e-mails.
            object["emails"] = json!([]);
            wire::content(StatusCode::OK, object)
        }
        Ok(None) => refusal(Op::Read, AppError::not_found("snapshot", id)),
        Err(err) => refusal(Op::Read, err),
    }
}

/// `POST snapshot/`: `{"vm_id": int, "name": string}` (and snaptree's `description`);
/// other keys are ignored, as CloudCIX does.
pub async fn create(
    State(service): State<Service>,
    RestCaller(caller): RestCaller,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return bad_json(&err),
    };
    let Some(vm_id) = integer(&body["vm_id"]) else {
        return wire::fields(&[(
            "vm_id",
            "iaas_snapshot_create_101".into(),
            "The \"vm_id\" parameter is invalid. \"vm_id\" is required and must be an integer."
                .into(),
        )]);
    };
    let name = body["name"].as_str().unwrap_or("");
    let description = body["description"].as_str();
    let accepted = service
        .actions()
        .create_snapshot(
            &caller,
            vm_id,
            Create {
                name,
                description,
                ..Create::default()
            },
        )
        .await;
    let result = match accepted {
        Ok(accepted) => as_created(&service, &caller, &accepted.snapshot).await,
        Err(err) => return refusal(Op::Create, err),
    };
    match result {
        Ok(object) => wire::content(StatusCode::CREATED, object),
        Err(err) => refusal(Op::Create, err),
    }
}

/// A field's error as CloudCIX's update answers it: the field, its code, the sentence.
type FieldError = (&'static str, String, String);

/// What an update asks for, read from its body.
struct Update<'a> {
    /// The new name (`None`: unchanged; absent, null or blank changes nothing).
    name: Option<&'a str>,
    /// The new description (`Some(None)` clears it).
    description: Option<Option<&'a str>>,
    /// The action the new state asks for (`None`: no change of state).
    action: Option<SnapshotState>,
    /// A delete takes the snapshot's subtree with it.
    remove_subtree: bool,
}

/// `PUT` or `PATCH snapshot/<pk>/` (the same: every key is optional): `state` 10
/// (RUNNING_UPDATE) applies the snapshot (on the VM's active one, reverts to it), `state`
/// 8 (SCRUB) deletes it, with its subtree when `remove_subtree` is true. A `state` equal
/// to the current one changes nothing, as in CloudCIX.
pub async fn update(
    State(service): State<Service>,
    RestCaller(caller): RestCaller,
    Path(pk): Path<String>,
    body: Bytes,
) -> Response {
    let Some(id) = path_id(&pk) else {
        return no_route();
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return bad_json(&err),
    };
    let current = match service.reads().snapshot(&caller, id).await {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => return refusal(Op::Update, AppError::not_found("snapshot", id)),
        Err(err) => return refusal(Op::Update, err),
    };
    let update = match read_update(&body, current.state) {
        Ok(update) => update,
        Err(errors) => return wire::fields(&errors),
    };
    let actions = service.actions();
    // The rename first: it is the part a request is likelier to be refused for, and then
    // nothing has changed. (A refused state change after it leaves the new name.)
    if update.name.is_some() || update.description.is_some() {
        let change = Change {
            name: update.name,
            description: update.description,
            ..Change::default()
        };
        let updated = actions.update_snapshot(&caller, id, change).await;
        if let Err(err) = updated {
            return refusal(Op::Update, err);
        }
    }
    let acted = match update.action {
        None => Ok(None),
        Some(SnapshotState::Scrub) => actions
            .delete_snapshot(&caller, id, update.remove_subtree)
            .await
            .map(Some),
        Some(_) => actions.apply_snapshot(&caller, id).await.map(Some),
    };
    if let Err(err) = acted {
        return refusal(Op::Update, err);
    }
    match load(&service, &caller, id).await {
        Ok(Some(object)) => wire::content(StatusCode::OK, object),
        Ok(None) => refusal(Op::Update, AppError::not_found("snapshot", id)),
        Err(err) => refusal(Op::Update, err),
    }
}

/// Reads an update's body for a snapshot now in state `current`, with every field's
/// error at once, in CloudCIX's codes.
/// Long because it is a list: one check per field of the body, each with CloudCIX's code,
/// so that every field's error is gathered at once.
fn read_update(body: &Value, current: i32) -> Result<Update<'_>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = match &body["name"] {
        Value::String(name) if !name.trim().is_empty() => Some(name.as_str()),
        Value::Null | Value::String(_) => None,
        _ => {
            errors.push((
                "name",
                "iaas_snapshot_update_101".into(),
                "The \"name\" parameter is invalid. It must be a string.".into(),
            ));
            None
        }
    };
    // snaptree's own: `null` clears the description, a string sets it.
    let description = match body.get("description") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(text)) => Some(Some(text.as_str())),
        Some(_) => {
            errors.push((
                "description",
                "VALIDATION".into(),
                "The \"description\" parameter is invalid. It must be a string or null.".into(),
            ));
            None
        }
    };
    let action = match read_state(&body["state"], current) {
        Ok(action) => action,
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let remove_subtree = match &body["remove_subtree"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => {
            errors.push((
                "remove_subtree",
                "iaas_snapshot_update_108".into(),
                "The \"remove_subtree\" parameter is invalid. It must be a boolean.".into(),
            ));
            false
        }
    };
    if remove_subtree {
        let delete = SnapshotState::Scrub;
        match action {
            None if errors.iter().all(|(field, ..)| *field != "state") => errors.push((
                "remove_subtree",
                "iaas_snapshot_update_109".into(),
                "The \"remove_subtree\" parameter is invalid. It needs a change of state.".into(),
            )),
            Some(state) if state != delete => errors.push((
                "remove_subtree",
                "iaas_snapshot_update_110".into(),
                format!(
                    "The \"remove_subtree\" parameter is invalid. It goes with state {} (delete) only.",
                    delete.code()
                ),
            )),
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Update {
        name,
        description,
        action,
        remove_subtree,
    })
}

/// The action a `state` asks of a snapshot now in state `current`: none when it is
/// absent or the current one, else one of [`SnapshotState::REQUESTABLE`].
fn read_state(value: &Value, current: i32) -> Result<Option<SnapshotState>, FieldError> {
    let invalid = |code: &str, why: String| {
        let message = format!("The \"state\" parameter is invalid. {why}");
        ("state", code.to_owned(), message)
    };
    if value.is_null() {
        return Ok(None);
    }
    let Some(code) = integer(value) else {
        let why = "\"state\" must be an integer.".to_owned();
        return Err(invalid("iaas_snapshot_update_103", why));
    };
    let in_table = i32::try_from(code)
        .ok()
        .filter(|&c| state::in_state_table(c));
    let Some(code) = in_table else {
        let why = format!("{code} is not a state ({}).", state::STATE_TABLE);
        return Err(invalid("iaas_snapshot_update_104", why));
    };
    if code == current {
        return Ok(None);
    }
    match SnapshotState::from_code(code) {
        Some(state) if SnapshotState::REQUESTABLE.contains(&state) => Ok(Some(state)),
        _ => {
            let [apply, delete] = SnapshotState::REQUESTABLE.map(SnapshotState::code);
            let why = format!(
                "A snapshot can be moved to {apply} (apply or revert) or {delete} (delete), not {code}."
            );
            Err(invalid("iaas_snapshot_update_106", why))
        }
    }
}

/// A body that is not JSON, answered as Django REST framework does.
fn bad_json(err: &serde_json::Error) -> Response {
    wire::detail(
        StatusCode::BAD_REQUEST,
        &format!("JSON parse error - {err}"),
    )
}

/// What Python's `int()` takes: an integer, or a string of one.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `GET snapshot_tree/<vm_id>/` (and HEAD): the VM's snapshots as a tree, each level in
/// name order. Deleted (CLOSED) snapshots are not in it: their children moved up.
pub async fn tree(
    State(service): State<Service>,
    RestCaller(caller): RestCaller,
    Path(vm_id): Path<String>,
) -> Response {
    let Some(id) = path_id(&vm_id) else {
        return no_route();
    };
    match branches(&service, &caller, id).await {
        Ok(Some(branches)) => wire::content(StatusCode::OK, json!({ "branches": branches })),
        Ok(None) => refusal(Op::Tree, AppError::not_found("VM", id)),
        Err(err) => refusal(Op::Tree, err),
    }
}

async fn branches(service: &Service, caller: &Caller, vm_id: i64) -> AppResult<Option<Value>> {
    let reads = service.reads();
    let Some(vm) = reads.vm(caller, vm_id).await? else {
        return Ok(None);
    };
    let mut snapshots = reads.snapshots_of_vms(&[vm.id], false).await?;
    snapshots.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let ids: Vec<i64> = snapshots.iter().map(|s| s.id).collect();
    let history = reads
        .recent_history_of_snapshots(&ids, HISTORY_EMBEDDED)
        .await?;
    let mut history_of: HashMap<i64, Vec<&HistoryEntry>> = HashMap::new();
    for entry in &history {
        history_of.entry(entry.snapshot_id).or_default().push(entry);
    }
    let mut children_of: HashMap<Option<i64>, Vec<&Snapshot>> = HashMap::new();
    for snapshot in &snapshots {
        children_of
            .entry(snapshot.parent_id)
            .or_default()
            .push(snapshot);
    }
    fn nodes(
        parent: Option<i64>,
        children_of: &HashMap<Option<i64>, Vec<&Snapshot>>,
        history_of: &HashMap<i64, Vec<&HistoryEntry>>,
    ) -> Vec<Value> {
        let Some(children) = children_of.get(&parent) else {
            return Vec::new();
        };
        children
            .iter()
            .map(|snapshot| {
                let history = history_of.get(&snapshot.id).map_or(&[][..], Vec::as_slice);
                let mut node = common(snapshot, history);
                node.insert(
                    "children".into(),
                    Value::Array(nodes(Some(snapshot.id), children_of, history_of)),
                );
                Value::Object(node)
            })
            .collect()
    }
    Ok(Some(Value::Array(nodes(None, &children_of, &history_of))))
}
