//! CloudCIX's wire format: the envelopes, the three error shapes and the encodings
//! (naive UTC timestamps without `Z`, the fraction left out when it is zero).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDateTime, Timelike};
use serde_json::{Map, Value, json};

/// Python's `datetime.isoformat()` of a naive UTC time, as CloudCIX writes it.
pub fn timestamp(at: NaiveDateTime) -> String {
    if at.nanosecond() / 1000 == 0 {
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// `{"content": ...}` with `status`.
pub fn content(status: StatusCode, content: Value) -> Response {
    (status, Json(json!({ "content": content }))).into_response()
}

/// An error with one code: `{"error_code": ..., "detail": ...}`.
pub fn coded(status: StatusCode, code: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({ "error_code": code, "detail": detail })),
    )
        .into_response()
}

/// A failed field validation, 400: `{"errors": {field: {error_code, detail}}, "detail":
/// "Bad request."}`.
pub fn fields(errors: &[(&str, String, String)]) -> Response {
    let mut by_field = Map::new();
    for (field, code, detail) in errors {
        by_field.insert(
            (*field).to_owned(),
            json!({ "error_code": code, "detail": detail }),
        );
    }
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "errors": by_field, "detail": "Bad request." })),
    )
        .into_response()
}

/// An error with a `detail` only, as Django REST framework writes its own.
pub fn detail(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({ "detail": detail }))).into_response()
}

/// 401 as CloudCIX answers it: the header names the scheme a client should use.
pub fn unauthorized(detail: &str) -> Response {
    let mut response = self::detail(StatusCode::UNAUTHORIZED, detail);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("X-Auth-Token"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_naive_and_drop_a_zero_fraction() {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 11, 5)
            .unwrap()
            .and_hms_micro_opt(12, 7, 47, 123_456)
            .unwrap();
        assert_eq!(timestamp(at), "2024-11-05T12:07:47.123456");
        assert_eq!(
            timestamp(at.with_nanosecond(0).unwrap()),
            "2024-11-05T12:07:47"
        );
    }
}
