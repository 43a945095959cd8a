//! Apollo's automatic persisted queries over HTTP (POST, and GET for queries): a request
//! whose `extensions.persistedQuery` holds `{version: 1, sha256Hash}` and no document
//! is run with the document stored for that hash, or answered
//! `PERSISTED_QUERY_NOT_FOUND`, upon which the client sends the document with its hash.
//! A document sent with a hash must have that hash. What runs goes through the gate as
//! any document does; [`crate::service::persisted`] stores it once admitted.

use async_graphql::{Request, Value};

use crate::error::{AppError, AppResult};
use crate::service::persisted::hash_of;
use crate::service::{Caller, Service};

/// Fills `request`'s document from its persisted query's hash when it has no document
/// of its own; returns the hash of a document sent with one, to be stored once
/// admitted. A request without `extensions.persistedQuery` is left as it is.
pub(super) async fn resolve(
    service: &Service,
    caller: &Caller,
    request: &mut Request,
) -> AppResult<Option<String>> {
    let Some(asked) = request.extensions.0.get("persistedQuery") else {
        return Ok(None);
    };
    let hash = hash_asked(asked)?;
    if !request.query.is_empty() {
        let keep = service.limits().trusted_documents.is_none();
        return match hash_of(&request.query) == hash {
            true => Ok(keep.then_some(hash)),
            false => Err(AppError::validation("provided sha does not match query")),
        };
    }
    // A barred token costs no lookup; an unknown hash counts as a refused document.
    let throttle = service.throttle();
    throttle.may_send(caller)?;
    let found = match &service.limits().trusted_documents {
        // Only the trusted documents run: they are the store.
        Some(trusted) => trusted.get(&hash).map(|d| d.as_str().into()),
        None => service.persisted_query(&hash).await?,
    };
    match found {
        Some(document) => {
            request.query = document.to_string();
            Ok(None)
        }
        None => {
            throttle.refused(caller);
            Err(AppError::PersistedQueryNotFound { hash })
        }
    }
}

/// The hash of `{version: 1, sha256Hash}`: 64 hexadecimal digits, in lower case.
fn hash_asked(asked: &Value) -> AppResult<String> {
    let Value::Object(fields) = asked else {
        return Err(AppError::validation(
            "extensions.persistedQuery must be an object: {version: 1, sha256Hash}.",
        ));
    };
    match fields.get("version") {
        Some(Value::Number(v)) if v.as_i64() == Some(1) => {}
        _ => {
            return Err(AppError::PersistedQueryNotSupported(
                "Only version 1 of automatic persisted queries is supported.".into(),
            ));
        }
    }
    match fields.get("sha256Hash") {
        Some(Value::String(hash))
            if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(hash.to_ascii_lowercase())
        }
        _ => Err(AppError::validation(
            "extensions.persistedQuery.sha256Hash must be a SHA-256 in hexadecimal (64 digits).",
        )),
    }
}
