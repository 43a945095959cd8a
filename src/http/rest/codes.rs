//! snaptree's refusals in CloudCIX's codes. Each request has its own codes in CloudCIX
//! (`iaas_snapshot_create_103`, `iaas_snapshot_read_001`, ...); a refusal CloudCIX does
//! not have (the per-host limit, a description) keeps snaptree's GraphQL code as its
//! `error_code`, so that a script can tell every case apart.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::wire;
use crate::domain::Rejection;
use crate::error::AppError;

/// The request a refusal answers.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Create,
    Read,
    Update,
    Tree,
}

/// `err` as CloudCIX would answer `op`.
/// Long because it is a table: one arm per request and error, each with CloudCIX's code.
pub fn refusal(op: Op, err: AppError) -> Response {
    let message = err.public_message();
    // A name or a description, refused the same way by a create and an update.
    let text_codes = match op {
        Op::Create => Some(("iaas_snapshot_create_106", "iaas_snapshot_create_107")),
        Op::Update => Some(("iaas_snapshot_update_101", "iaas_snapshot_update_102")),
        Op::Read | Op::Tree => None,
    };
    if let (Some(codes), AppError::Rejected(rejection)) = (text_codes, &err)
        && let Some((field, code)) = text_field(rejection, codes, err.code())
    {
        return wire::fields(&[(field, code.into(), message)]);
    }
    match (op, &err) {
        (Op::Create, AppError::Rejected(rejection)) => match rejection {
            Rejection::VmState { .. } => {
                wire::fields(&[("vm_id", "iaas_snapshot_create_103".into(), message)])
            }
            _ => wire::coded(StatusCode::BAD_REQUEST, err.code(), &message),
        },
        (Op::Create, AppError::NotFound(_)) => {
            wire::fields(&[("vm_id", "iaas_snapshot_create_102".into(), message)])
        }
        // A role that may not act (CloudCIX: a user who may not); another project's VM
        // does not exist (`_102`).
        (Op::Create, AppError::Forbidden(_)) => {
            wire::coded(StatusCode::FORBIDDEN, "iaas_snapshot_create_202", &message)
        }
        // Busy: one of the VM's snapshots is on its way to another state.
        (Op::Create, AppError::VmBusy { .. }) => wire::coded(
            StatusCode::BAD_REQUEST,
            "iaas_snapshot_create_001",
            &message,
        ),
        (Op::Update, AppError::Rejected(rejection)) => match rejection {
            Rejection::VmState { .. } => {
                wire::fields(&[("state", "iaas_snapshot_update_107".into(), message)])
            }
            // A state the caller can move nowhere from.
            Rejection::Closed { .. } | Rejection::NotDeletable { .. } => {
                wire::fields(&[("state", "iaas_snapshot_update_105".into(), message)])
            }
            Rejection::NotApplicable { .. } | Rejection::NoActiveSnapshot => {
                wire::fields(&[("state", "iaas_snapshot_update_106".into(), message)])
            }
            _ => wire::coded(StatusCode::BAD_REQUEST, err.code(), &message),
        },
        (Op::Update, AppError::NotFound(_)) => {
            wire::coded(StatusCode::NOT_FOUND, "iaas_snapshot_update_001", &message)
        }
        (Op::Update, AppError::Forbidden(_)) => {
            wire::coded(StatusCode::FORBIDDEN, "iaas_snapshot_update_203", &message)
        }
        (Op::Update, AppError::VmBusy { .. }) => wire::coded(
            StatusCode::BAD_REQUEST,
            "iaas_snapshot_update_002",
            &message,
        ),
        (Op::Read, AppError::NotFound(_)) => {
            wire::coded(StatusCode::NOT_FOUND, "iaas_snapshot_read_001", &message)
        }
        (Op::Tree, AppError::NotFound(_)) => wire::coded(
            StatusCode::NOT_FOUND,
            "iaas_snapshot_tree_read_001",
            &message,
        ),
        _ => general(err),
    }
}

/// The field and code of a refusal of a name or a description: `invalid` for a name
/// CloudCIX would refuse as such, `taken` for one in use; a description, snaptree's own
/// field, keeps snaptree's code (`own`). `None` for any other refusal.
fn text_field(
    rejection: &Rejection,
    (invalid, taken): (&'static str, &'static str),
    own: &'static str,
) -> Option<(&'static str, &'static str)> {
    match rejection {
        Rejection::EmptyName { .. }
        | Rejection::LongName { .. }
        | Rejection::ControlInName { .. } => Some(("name", invalid)),
        Rejection::NameTaken { .. } => Some(("name", taken)),
        Rejection::ControlInDescription | Rejection::LongDescription { .. } => {
            Some(("description", own))
        }
        _ => None,
    }
}

/// What any request answers for errors no route has a code of its own for.
pub fn general(err: AppError) -> Response {
    let message = err.public_message();
    match &err {
        AppError::Unauthenticated(_) => wire::unauthorized(&message),
        AppError::Forbidden(_) => wire::detail(StatusCode::FORBIDDEN, &message),
        AppError::NotFound(_) => wire::detail(StatusCode::NOT_FOUND, "Not Found."),
        AppError::RateLimited {
            retry_after_seconds,
            ..
        } => {
            let mut response = wire::detail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Request was throttled. Expected available in {retry_after_seconds} seconds."
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            response
        }
        AppError::Timeout(_) => wire::detail(StatusCode::SERVICE_UNAVAILABLE, &message),
        AppError::Internal(cause) => {
            tracing::error!(%cause, "internal error answered to a REST client");
            wire::detail(StatusCode::INTERNAL_SERVER_ERROR, &message)
        }
        _ => wire::coded(StatusCode::BAD_REQUEST, err.code(), &message),
    }
}
