//! The HTTP side: `/mutate` and `/validate` answer AdmissionReviews; a body that is not one gets
//! a 400 with the reason. Consumer storage a decision asks for is created before the answer, so
//! the claim exists when the pod is stored.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::{DynamicObject, Status};
use sv_common::telemetry::Health;

use crate::cluster::ClusterView;
use crate::metrics::WebhookMetrics;
use crate::mutate::{Decision, MutateSettings, Storage, mutate, mutate_pod, requested_names};
use crate::review::{self, BadReview, MAX_BODY_BYTES, decode, decode_as, encode, operation_name};
use crate::validate::validate;

/// How long creating one consumer PV/PVC pair may take: the API server gives the whole review
/// `timeoutSeconds` (at most 5).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the objects a decision asks for go.
#[derive(Clone)]
pub enum Creator {
    /// Created through the API.
    Api(kube::Client),
    /// Recorded only (`review`, tests).
    Record(Arc<Mutex<Vec<Storage>>>),
}

impl Creator {
    async fn create(&self, storage: &Storage) -> Result<(), String> {
        match self {
            Creator::Record(list) => {
                list.lock().unwrap_or_else(|e| e.into_inner()).push(storage.clone());
                Ok(())
            }
            Creator::Api(client) => {
                let pvs: Api<PersistentVolume> = Api::all(client.clone());
                let ns = storage.claim.namespace().unwrap_or_default();
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
                let params = PostParams { field_manager: Some(FIELD_MANAGER.to_string()), ..PostParams::default() };
                let work = async {
                    // Many pods of one namespace arrive at once: whoever is second finds the
                    // objects there, which is success.
                    for result in [
                        pvs.create(&params, &storage.volume).await.map(|_| ()),
                        pvcs.create(&params, &storage.claim).await.map(|_| ()),
                    ] {
                        match result {
                            Ok(()) => {}
                            Err(kube::Error::Api(status)) if status.code == 409 => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(())
                };
                tokio::time::timeout(CREATE_TIMEOUT, work)
                    .await
                    .map_err(|_| format!("no answer from the API server within {CREATE_TIMEOUT:?}"))?
            }
        }
    }
}

/// The field manager of objects the webhook creates.
pub const FIELD_MANAGER: &str = "sv-webhook";

/// What the handlers share.
pub struct Webhook<C> {
    pub cluster: C,
    pub settings: MutateSettings,
    pub creator: Creator,
    pub metrics: WebhookMetrics,
    pub health: Health,
}

/// `/mutate`, `/validate`, `/healthz`, `/readyz`.
pub fn router<C: ClusterView + Send + Sync + 'static>(webhook: Arc<Webhook<C>>) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler::<C>))
        .route("/validate", post(validate_handler::<C>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<C>))
        .layer(DefaultBodyLimit::disable())
        .with_state(webhook)
}

async fn readyz<C>(State(webhook): State<Arc<Webhook<C>>>) -> impl IntoResponse {
    if webhook.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn mutate_handler<C: ClusterView + Send + Sync + 'static>(
    State(webhook): State<Arc<Webhook<C>>>,
    body: Body,
) -> Response {
    handle(&webhook, "mutate", body).await
}

async fn validate_handler<C: ClusterView + Send + Sync + 'static>(
    State(webhook): State<Arc<Webhook<C>>>,
    body: Body,
) -> Response {
    handle(&webhook, "validate", body).await
}

fn bad_request(status: StatusCode, why: &BadReview) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{why}\n")).into_response()
}

async fn handle<C: ClusterView>(webhook: &Webhook<C>, endpoint: &str, body: Body) -> Response {
    let started = Instant::now();
    let bytes = match to_bytes(body, MAX_BODY_BYTES + 1).await {
        Ok(bytes) => bytes,
        Err(_) => {
            webhook.metrics.review(endpoint, "", "", "error", started.elapsed());
            return bad_request(StatusCode::PAYLOAD_TOO_LARGE, &BadReview::TooLarge(MAX_BODY_BYTES + 1));
        }
    };
    match answer_body(webhook, endpoint, &bytes).await {
        Ok(answered) => {
            webhook.metrics.review(endpoint, answered.operation, &answered.kind, answered.result, started.elapsed());
            let body = serde_json::to_vec(&encode(answered.response)).unwrap_or_default();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(why) => {
            tracing::warn!(endpoint, error = %why, "refused a body that is not an AdmissionReview");
            webhook.metrics.review(endpoint, "", "", "error", started.elapsed());
            let status = if matches!(why, BadReview::TooLarge(_)) {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            bad_request(status, &why)
        }
    }
}

/// One body answered.
pub struct Answered {
    pub response: AdmissionResponse,
    pub operation: &'static str,
    pub kind: String,
    /// `allowed`, `patched`, `denied` or `error`.
    pub result: &'static str,
}

/// Decodes and answers one body. A pod review is read as a pod in one pass; anything else (or
/// a pod review that does not read as one) as a dynamic object.
pub async fn answer_body<C: ClusterView>(
    webhook: &Webhook<C>,
    endpoint: &str,
    body: &[u8],
) -> Result<Answered, BadReview> {
    if endpoint == "mutate"
        && let Ok(request) = decode_as::<Pod>(body)
    {
        let decision = mutate_pod(&request, &webhook.cluster, &webhook.settings);
        let (response, result) = finish(webhook, endpoint, &request, decision).await;
        return Ok(Answered {
            response,
            operation: operation_name(&request.operation),
            kind: request.kind.kind,
            result,
        });
    }
    let request = decode(body)?;
    let (response, result) = answer(webhook, endpoint, &request).await;
    Ok(Answered { response, operation: operation_name(&request.operation), kind: request.kind.kind, result })
}

/// Decides one request and carries out its side effects; returns the answer and its result label.
pub async fn answer<C: ClusterView>(
    webhook: &Webhook<C>,
    endpoint: &str,
    request: &AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, &'static str) {
    let decision: Decision = match endpoint {
        "mutate" => mutate(request, &webhook.cluster, &webhook.settings),
        _ => validate(request),
    };
    finish(webhook, endpoint, request, decision).await
}

/// Carries out a decision's side effects and writes its answer.
async fn finish<C: ClusterView, K: kube::Resource>(
    webhook: &Webhook<C>,
    endpoint: &str,
    request: &AdmissionRequest<K>,
    mut decision: Decision,
) -> (AdmissionResponse, &'static str) {
    for storage in std::mem::take(&mut decision.create) {
        match webhook.creator.create(&storage).await {
            Ok(()) => {
                webhook.metrics.storage_created();
                tracing::info!(claim = %storage.claim.name_any(), namespace = ?storage.claim.namespace(), "created consumer storage");
            }
            Err(error) => {
                // The pod is still admitted: the operator creates the storage once it sees the
                // consumer, and the pod waits for its claim meanwhile.
                webhook.metrics.storage_error();
                tracing::warn!(claim = %storage.claim.name_any(), %error, "creating consumer storage; the operator will retry");
                decision.warnings.push(format!(
                    "claim {:?} could not be created yet ({error}); the operator creates it",
                    storage.claim.name_any()
                ));
            }
        }
    }
    let pod = request.object.as_ref().map(|o| o.name_any()).filter(|n| !n.is_empty());
    let volumes = request.object.as_ref().map(|o| requested_names(o.annotations())).unwrap_or_default();
    let mut response = AdmissionResponse::from(request);
    if !decision.warnings.is_empty() {
        response.warnings = Some(decision.warnings.clone());
    }
    let result = if let Some(denial) = &decision.denied {
        webhook.metrics.denial(endpoint, denial.reason);
        tracing::info!(
            endpoint, operation = operation_name(&request.operation), kind = %request.kind.kind,
            namespace = ?request.namespace, name = ?pod, reason = denial.reason, message = %denial.message,
            "denied"
        );
        let code = if endpoint == "validate" { 422 } else { 403 };
        response.allowed = false;
        response.result = Status::failure(&denial.message, denial.reason).with_code(code);
        "denied"
    } else if decision.patch.is_empty() {
        "allowed"
    } else {
        tracing::info!(namespace = ?request.namespace, name = ?pod, %volumes, dry_run = review::is_dry_run(request), "mounted volumes");
        match serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(decision.patch))
            .map_err(|e| e.to_string())
            .and_then(|p| response.clone().with_patch(p).map_err(|e| e.to_string()))
        {
            Ok(patched) => {
                response = patched;
                "patched"
            }
            Err(error) => {
                response.allowed = false;
                response.result =
                    Status::failure(&format!("building the patch: {error}"), "InternalError").with_code(500);
                "error"
            }
        }
    };
    (response, result)
}
