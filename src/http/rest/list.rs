//! `GET snapshot/` and `GET snapshot_history/`: CloudCIX's lists, with their filters,
//! order and pages ([`params`](super::params)), in `{"content": [...], "_metadata":
//! {...}}`. A list holds what the caller may see; it is never a 403.

use std::collections::HashMap;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};

use super::codes::general;
use super::params::{self, Fields, Kind, ListParams};
use super::snapshot::{history_json, snapshot_json};
use super::{RestCaller, wire};
use crate::db::listing::{HistoryField, SnapshotField};
use crate::db::models::Vm;
use crate::error::AppResult;
use crate::service::{Caller, Service};

/// The snapshot list's fields, as CloudCIX's `SnapshotListController` has them. A
/// snapshot's `created` takes text operators there, compared with the time as text.
const SNAPSHOT_FIELDS: &Fields<SnapshotField> = &[
    ("active", Kind::Flag, SnapshotField::Active),
    ("remove_subtree", Kind::Flag, SnapshotField::RemoveSubtree),
    ("created", Kind::Text, SnapshotField::Created),
    ("name", Kind::Text, SnapshotField::Name),
    ("vm__name", Kind::Text, SnapshotField::VmName),
    ("vm__project__name", Kind::Text, SnapshotField::ProjectName),
    ("id", Kind::Number, SnapshotField::Id),
    ("parent_id", Kind::Number, SnapshotField::ParentId),
    ("state", Kind::Number, SnapshotField::State),
    ("vm_id", Kind::Number, SnapshotField::VmId),
    ("vm__project_id", Kind::Number, SnapshotField::ProjectId),
    ("vm__server_id", Kind::Number, SnapshotField::HostId),
    (
        "vm__project__address_id",
        Kind::Number,
        SnapshotField::Unrecorded,
    ),
    (
        "vm__project__region_id",
        Kind::Number,
        SnapshotField::Unrecorded,
    ),
];

const SNAPSHOT_ORDERS: &[(&str, SnapshotField)] = &[
    ("id", SnapshotField::Id),
    ("name", SnapshotField::Name),
    ("active", SnapshotField::Active),
    ("created", SnapshotField::Created),
    ("parent_id", SnapshotField::ParentId),
    ("state", SnapshotField::State),
    ("vm_id", SnapshotField::VmId),
];

/// The history list's fields: every one takes number operators (times too).
const HISTORY_FIELDS: &Fields<HistoryField> = &[
    ("created", Kind::Time, HistoryField::Created),
    ("customer_address", Kind::Number, HistoryField::Unrecorded),
    ("id", Kind::Number, HistoryField::Id),
    ("modified_by", Kind::Number, HistoryField::Unrecorded),
    ("project_id", Kind::Number, HistoryField::ProjectId),
    ("snapshot_id", Kind::Number, HistoryField::SnapshotId),
    ("vm_id", Kind::Number, HistoryField::VmId),
];

const HISTORY_ORDERS: &[(&str, HistoryField)] = &[("created", HistoryField::Created)];

/// The page with its `_metadata`.
fn page<F>(content: Vec<Value>, params: &ListParams<F>, total: i64) -> Response {
    (
        StatusCode::OK,
        Json(json!({
            "content": content,
            "_metadata": {
                "page": params.page,
                "limit": params.listing.limit,
                "order": params.order,
                "total_records": total,
                "warnings": params.warnings,
            },
        })),
    )
        .into_response()
}

/// The list parameters of `query`, or the list's refusal (`code`) of a value its field
/// cannot hold.
fn read<F: Copy>(
    query: Option<String>,
    fields: &Fields<F>,
    orders: &[(&'static str, F)],
    code: &str,
) -> Result<ListParams<F>, Box<Response>> {
    params::parse(query.as_deref().unwrap_or(""), fields, orders)
        .map_err(|detail| Box::new(wire::coded(StatusCode::BAD_REQUEST, code, &detail)))
}

/// `GET snapshot/` (and HEAD). Deleted (CLOSED) snapshots are listed unless filtered
/// out (`exclude[state]=99`), as in CloudCIX.
pub async fn snapshots(
    State(service): State<Service>,
    RestCaller(caller): RestCaller,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match read(
        query,
        SNAPSHOT_FIELDS,
        SNAPSHOT_ORDERS,
        "iaas_snapshot_list_001",
    ) {
        Ok(params) => params,
        Err(refused) => return *refused,
    };
    match snapshot_page(&service, &caller, &params).await {
        Ok((content, total)) => page(content, &params, total),
        Err(err) => general(err),
    }
}

async fn snapshot_page(
    service: &Service,
    caller: &Caller,
    params: &ListParams<SnapshotField>,
) -> AppResult<(Vec<Value>, i64)> {
    let reads = service.reads();
    let (rows, total) = reads.snapshot_list(caller, &params.listing).await?;
    let mut vm_ids: Vec<i64> = rows.iter().map(|s| s.vm_id).collect();
    vm_ids.sort_unstable();
    vm_ids.dedup();
    let vms: HashMap<i64, Vm> = reads
        .vms_by_ids(&vm_ids)
        .await?
        .into_iter()
        .map(|vm| (vm.id, vm))
        .collect();
    let ids: Vec<i64> = rows.iter().map(|s| s.id).collect();
    let history = reads
        .recent_history_of_snapshots(&ids, super::snapshot::HISTORY_EMBEDDED)
        .await?;
    let content = rows
        .iter()
        .filter_map(|s| Some(snapshot_json(s, vms.get(&s.vm_id)?, &history)))
        .collect();
    Ok((content, total))
}

/// `GET snapshot_history/` (and HEAD): state changes, oldest first unless
/// `order=-created`.
pub async fn history(
    State(service): State<Service>,
    RestCaller(caller): RestCaller,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match read(
        query,
        HISTORY_FIELDS,
        HISTORY_ORDERS,
        "iaas_snapshot_history_list_001",
    ) {
        Ok(params) => params,
        Err(refused) => return *refused,
    };
    match service.reads().history_list(&caller, &params.listing).await {
        Ok((rows, total)) => page(rows.iter().map(history_json).collect(), &params, total),
        Err(err) => general(err),
    }
}
