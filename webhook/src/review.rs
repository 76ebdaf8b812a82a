//! Reading an AdmissionReview and writing its answer. Anything that is not an
//! `admission.k8s.io/v1` AdmissionReview with a request is refused here with a reason (the
//! server answers 400), so the handlers only ever see well-formed requests.

use base64::Engine as _;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

/// The largest body accepted. The API server's own limit on an object is 3 MiB, and a review of
/// an UPDATE carries two.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a review we can answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadReview {
    #[error("the body is {0} bytes; at most {MAX_BODY_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error(
        "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got {api_version:?} and {kind:?}; set admissionReviewVersions: [\"v1\"] in the webhook configuration"
    )]
    WrongType { api_version: String, kind: String },
    #[error("the review has no request")]
    NoRequest,
    #[error("request.uid is empty")]
    NoUid,
    #[error("the request cannot be read: {0}")]
    Malformed(String),
}

/// Decodes a review body.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, BadReview> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BadReview::TooLarge(body.len()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| BadReview::NotJson(e.to_string()))?;
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version != API_VERSION || kind != KIND {
        return Err(BadReview::WrongType { api_version: api_version.to_string(), kind: kind.to_string() });
    }
    if value.get("request").is_none_or(Value::is_null) {
        return Err(BadReview::NoRequest);
    }
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(value).map_err(|e| BadReview::Malformed(e.to_string()))?;
    // The conversion copies the review's apiVersion and kind into the request, for the answer.
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| BadReview::NoRequest)?;
    if request.uid.is_empty() {
        return Err(BadReview::NoUid);
    }
    Ok(request)
}

/// The review that carries `response`, as JSON. The patch is a base64 string, as the API server's
/// `[]byte` field is written and as real webhooks send it (kube's type would write an array of
/// numbers).
pub fn encode(response: AdmissionResponse) -> Value {
    let mut review = serde_json::to_value(response.into_review()).unwrap_or_else(|e| {
        // Every field of a response serialises; this is unreachable in practice, and a denial is
        // still the safe answer.
        serde_json::json!({"apiVersion": API_VERSION, "kind": KIND,
            "response": {"uid": "", "allowed": false, "status": {"message": format!("encoding the answer: {e}")}}})
    });
    if let Some(bytes) = review["response"]["patch"].as_array() {
        let bytes: Vec<u8> = bytes.iter().filter_map(Value::as_u64).filter_map(|b| u8::try_from(b).ok()).collect();
        review["response"]["patch"] = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    review
}

/// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`, as metrics and logs name them.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Whether the request is a dry run: the review's `dryRun`, or `options.dryRun` (the API server
/// sets both; either one is enough to make no side effect).
pub fn is_dry_run(request: &AdmissionRequest<DynamicObject>) -> bool {
    request.dry_run
        || request
            .options
            .as_ref()
            .and_then(|o| o.0.get("dryRun"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_named() {
        assert!(matches!(decode(b"{"), Err(BadReview::NotJson(_))));
        assert!(matches!(decode(b"[]"), Err(BadReview::WrongType { .. })));
        let v1beta1 = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#;
        let err = decode(v1beta1).unwrap_err();
        assert!(err.to_string().contains("admissionReviewVersions"), "{err}");
        assert_eq!(
            decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).err(),
            Some(BadReview::NoRequest)
        );
        let no_uid = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"",
            "kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
            "operation":"CREATE","userInfo":{},"object":null,"oldObject":null}}"#;
        assert_eq!(decode(no_uid).err(), Some(BadReview::NoUid));
        let wrong_op = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",
            "kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
            "operation":"MERGE","userInfo":{}}}"#;
        assert!(matches!(decode(wrong_op), Err(BadReview::Malformed(_))));
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(decode(&huge).err(), Some(BadReview::TooLarge(MAX_BODY_BYTES + 1)));
    }
}
