//! Kubernetes `Status` errors with the codes, reasons, details and messages of kube-apiserver
//! v1.36 (see `../shared/kube-api/NOTES.md`).

use serde_json::{Value, json};

use super::registry::{ResourceId, ResourceType};
use super::schema::Cause;

/// An error answer. Most are a JSON `Status`; unknown API paths are the Go mux's plain-text 404.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiError {
    Status { code: u16, body: Value },
    PlainNotFound,
}

impl ApiError {
    pub fn status(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message.into(), "reason": reason, "code": code,
        });
        if let Some(details) = details {
            body["details"] = details;
        }
        ApiError::Status { code, body }
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::Status { code, .. } => *code,
            ApiError::PlainNotFound => 404,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ApiError::Status { body, .. } => body["reason"].as_str().unwrap_or_default(),
            ApiError::PlainNotFound => "NotFound",
        }
    }
}

/// `details` naming an object by its plural resource, as NotFound, AlreadyExists and optimistic
/// lock conflicts do.
pub fn resource_details(id: &ResourceId, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": id.plural});
    if !id.group.is_empty() {
        details["group"] = json!(id.group);
    }
    details
}

fn kind_details(rt: &ResourceType, name: &str) -> Value {
    let mut details = json!({"name": name, "kind": rt.kind});
    if !rt.id.group.is_empty() {
        details["group"] = json!(rt.id.group);
    }
    details
}

pub fn not_found(id: &ResourceId, name: &str) -> ApiError {
    ApiError::status(
        404,
        "NotFound",
        format!("{} {name:?} not found", id.qualified()),
        Some(resource_details(id, name)),
    )
}

pub fn namespace_not_found(namespace: &str) -> ApiError {
    not_found(&ResourceId::new("", "v1", "namespaces"), namespace)
}

pub fn already_exists(id: &ResourceId, name: &str) -> ApiError {
    ApiError::status(
        409,
        "AlreadyExists",
        format!("{} {name:?} already exists", id.qualified()),
        Some(resource_details(id, name)),
    )
}

pub fn conflict(id: &ResourceId, name: &str) -> ApiError {
    ApiError::status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            id.qualified()
        ),
        Some(resource_details(id, name)),
    )
}

/// 422 naming the object by its plural resource (the real server's form for an update
/// without a resourceVersion).
pub fn invalid_resource(id: &ResourceId, name: &str, causes: &[Cause]) -> ApiError {
    invalid_named(&id.qualified(), resource_details(id, name), name, causes)
}

pub fn precondition_failed(rt: &ResourceType, name: &str, what: &str) -> ApiError {
    ApiError::status(
        409,
        "Conflict",
        format!("Operation cannot be fulfilled on {} {name:?}: {what}", rt.qualified_kind()),
        Some(kind_details(rt, name)),
    )
}

pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::status(400, "BadRequest", message, None)
}

/// 422 with one cause per violation; the message lists them like the real server.
pub fn invalid(rt: &ResourceType, name: &str, causes: &[Cause]) -> ApiError {
    invalid_named(&rt.qualified_kind(), kind_details(rt, name), name, causes)
}

pub fn invalid_named(qualified_kind: &str, mut details: Value, name: &str, causes: &[Cause]) -> ApiError {
    let mut parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    // The real server's aggregate message drops repeated errors even where `causes` repeats them.
    parts.dedup();
    let summary = match parts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    details["causes"] = Value::Array(
        causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect(),
    );
    ApiError::status(422, "Invalid", format!("{qualified_kind} {name:?} is invalid: {summary}"), Some(details))
}

pub fn forbidden(message: impl Into<String>, details: Value) -> ApiError {
    ApiError::status(403, "Forbidden", message, Some(details))
}

/// A request whose credentials the server does not accept.
pub fn unauthorized() -> ApiError {
    ApiError::status(401, "Unauthorized", "Unauthorized", None)
}

pub fn unsupported_media_type() -> ApiError {
    ApiError::status(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        None,
    )
}

pub fn method_not_allowed(method: &str) -> ApiError {
    ApiError::status(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
        None,
    )
}

pub fn too_large(limit: usize) -> ApiError {
    ApiError::status(413, "RequestEntityTooLarge", format!("Request entity too large: limit is {limit}"), None)
}

pub fn server_timeout(message: impl Into<String>, details: Value) -> ApiError {
    ApiError::status(504, "Timeout", message, Some(details))
}

pub fn internal(message: impl Into<String>) -> ApiError {
    ApiError::status(500, "InternalError", message, None)
}

/// A write the server carried out and whose answer was lost: what a real server says when a
/// request outlives its timeout (the write may still have happened).
pub fn reply_lost() -> ApiError {
    ApiError::status(
        504,
        "Timeout",
        "Timeout: request did not complete within requested timeout - context deadline exceeded",
        Some(json!({})),
    )
}

/// A fault the simulation injected into this request.
pub fn injected(code: u16) -> ApiError {
    let reason = match code {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    ApiError::status(code, reason, "the simulation injected this failure", Some(json!({"retryAfterSeconds": 1})))
}
