//! Reading an AdmissionReview and writing its answer. Anything that is not an
//! `admission.k8s.io/v1` AdmissionReview with a request is refused here with a reason (the
//! server answers 400), so the handlers only ever see well-formed requests.

use base64::Engine as _;
use kube::core::DynamicObject;
use kube::core::TypeMeta;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
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

/// The review as it arrives. kube's `AdmissionReview` flattens its type fields, which makes serde
/// buffer the whole body before reading it; this reads it in one pass.
#[derive(serde::Deserialize)]
#[serde(bound = "K: serde::de::DeserializeOwned")]
struct Envelope<K: kube::Resource> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<AdmissionRequest<K>>,
}

/// Decodes a review body whose object is read as a `K` (a `DynamicObject` reads any object).
/// One parse in the common case; a body that does not parse is parsed again only to say why.
pub fn decode_as<K>(body: &[u8]) -> Result<AdmissionRequest<K>, BadReview>
where
    K: kube::Resource + serde::de::DeserializeOwned,
{
    if body.len() > MAX_BODY_BYTES {
        return Err(BadReview::TooLarge(body.len()));
    }
    let review: Envelope<K> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => return Err(why_not(body, error)),
    };
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadReview::WrongType { api_version: review.api_version, kind: review.kind });
    }
    let mut request = review.request.ok_or(BadReview::NoRequest)?;
    // The answer is typed after the request.
    request.types = TypeMeta { api_version: API_VERSION.to_string(), kind: KIND.to_string() };
    if request.uid.is_empty() {
        return Err(BadReview::NoUid);
    }
    Ok(request)
}

/// Decodes a review body, any object.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, BadReview> {
    decode_as(body)
}

/// Why a body did not parse as a review: not JSON, not a review, no request, or a request whose
/// fields do not read.
fn why_not(body: &[u8], error: serde_json::Error) -> BadReview {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return BadReview::NotJson(e.to_string()),
    };
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    if api_version != API_VERSION || kind != KIND {
        return BadReview::WrongType { api_version: api_version.to_string(), kind: kind.to_string() };
    }
    if value.get("request").is_none_or(Value::is_null) {
        return BadReview::NoRequest;
    }
    BadReview::Malformed(error.to_string())
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
pub fn is_dry_run<K: kube::Resource>(request: &AdmissionRequest<K>) -> bool {
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
