//! Admission webhooks: writes that arrive over HTTP (create, replace, patch, apply, delete) pass
//! the MutatingWebhookConfigurations, then the ValidatingWebhookConfigurations, whose rules,
//! `namespaceSelector` and `objectSelector` match them. Each webhook is called over HTTPS on the
//! simulated network (or on loopback when the server runs outside a simulation) with a real
//! `admission.k8s.io/v1` AdmissionReview, trusting only the configuration's `caBundle`; a mutating
//! webhook's JSONPatch is applied before the next one sees the object; `failurePolicy` decides
//! what an unreachable or broken webhook means.
//!
//! How a write is admitted: the server first runs it as a dry run to learn the object it would
//! store (defaults, patches and server-side apply resolved), sends that to the webhooks, and then
//! writes either the original request (nothing was mutated) or the mutated object, provided the
//! object did not change meanwhile (else it starts over, three times at most, then answers 409).
//!
//! `matchConditions` are CEL expressions over `object`, `oldObject`, `request` and
//! `namespaceObject`, evaluated with the `cel` crate: the webhook is called when all hold, skipped
//! when one is false, and an expression that fails (`authorizer` is not modelled) counts as the
//! webhook failing, for its `failurePolicy` to decide.
//!
//! The simulation's own controllers write in-process; of their writes, the pods that ReplicaSets
//! and StatefulSets create are admitted (they are what webhooks mutate in practice): while any
//! webhook applies to pods, a controller's pod waits in [`State::pending_pods`] and is admitted
//! and created between passes. Their other writes are not admitted.
//!
//! A mutating webhook with `reinvocationPolicy: IfNeeded` is called once more after the first pass
//! when a webhook after it changed the object. Not modelled: the built-in plugins' reinvocation,
//! `sideEffects` checks for dry runs, delete-collection.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use sv_operator::clock::SharedClock;
use tokio::io::{AsyncRead, AsyncWrite};

use super::errors::{self, ApiError};
use super::objects::{DeleteOptions, WriteOptions};
use super::{ApiServer, Request, Response, State, Target};

/// Finds the simulated host running a pod (by uid), to reach a webhook Service's endpoints.
pub type PodHosts = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }
}

/// One webhook of a configuration, as it applies to a request.
#[derive(Clone, Debug)]
struct Webhook {
    name: String,
    mutating: bool,
    client: Value,
    fail_closed: bool,
    timeout: Duration,
    namespace_selector: Value,
    object_selector: Value,
    /// `matchConditions`: (name, CEL expression).
    match_conditions: Vec<(String, String)>,
    /// `reinvocationPolicy: IfNeeded`.
    reinvoke: bool,
}

/// Whether a webhook could apply to pods created in `namespace` (selectors are checked when the
/// pod is admitted): then the simulation's controllers queue their pods for admission.
pub(crate) fn pods_need_admission(state: &State, rt: &super::ResourceType) -> bool {
    let target = Target { rt: rt.clone(), namespace: None, name: None, sub: None };
    !webhooks(state, &target, Operation::Create).is_empty()
}

/// Whether a webhook could apply to deletes of pods: then the controllers' and kubelets' deletes
/// of pods wait for admission too.
pub(crate) fn pod_deletes_need_admission(state: &State, rt: &super::ResourceType) -> bool {
    let target = Target { rt: rt.clone(), namespace: None, name: None, sub: None };
    !webhooks(state, &target, Operation::Delete).is_empty()
}

/// Who asks for a write, and how, as a review tells the webhooks.
#[derive(Clone, Copy)]
struct Asker<'a> {
    /// `userInfo`.
    user: &'a Value,
    /// `options`: the request's Create, Update or DeleteOptions.
    options: &'a Value,
    /// The object is named by `generateName`: mutating webhooks see it without a name.
    name_generated: bool,
}

/// Attempts at writing an admitted object before a concurrent change makes it a conflict.
const ADMISSION_ATTEMPTS: usize = 3;

/// `userInfo` of a request by a built-in controller (its ServiceAccount in `kube-system`), a
/// kubelet (`system:node:<node>`), or a client without a token.
fn user_named(user: &str) -> Value {
    if let Some(account) = user.strip_prefix("system:serviceaccount:") {
        let namespace = account.split(':').next().unwrap_or_default();
        let groups = ["system:serviceaccounts", &format!("system:serviceaccounts:{namespace}"), "system:authenticated"];
        return json!({"username": user, "groups": groups});
    }
    if user.starts_with("system:node:") {
        return json!({"username": user, "groups": ["system:nodes", "system:authenticated"]});
    }
    json!({"username": user, "groups": ["system:authenticated"]})
}

impl ApiServer {
    /// Sets how webhook Services reach their pods (the simulation's pod runtime knows the hosts).
    pub fn set_pod_hosts(&self, hosts: PodHosts) {
        *self.inner.pod_hosts.write().unwrap_or_else(|e| e.into_inner()) = Some(hosts);
    }

    /// A write request, through admission when a webhook could apply to it.
    pub(super) async fn admitted_write(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let applying = request.method == ::http::Method::PATCH
            && request.content_type.starts_with("application/apply-patch")
            && target.sub.is_none();
        let operation = match request.method {
            ::http::Method::POST => Operation::Create,
            ::http::Method::DELETE => Operation::Delete,
            // A server-side apply of an object that does not exist creates it, and is reviewed as
            // a CREATE (recorded).
            _ if applying && self.current(&self.state(), target).is_err() => Operation::Create,
            _ => Operation::Update,
        };
        let delete_options = match operation {
            Operation::Delete => Some(DeleteOptions::from_request(request)?),
            _ => None,
        };
        let dry_run = request.param("dryRun") == Some("All") || delete_options.as_ref().is_some_and(|d| d.dry_run);
        for _ in 0..ADMISSION_ATTEMPTS {
            let old = {
                let state = self.state();
                if webhooks(&state, target, operation).is_empty() {
                    drop(state);
                    return self.write(target, request);
                }
                match operation {
                    Operation::Create => None,
                    _ => Some((*self.current(&state, target)?).clone()),
                }
            };
            // The object the write would store, without storing it.
            let planned = match operation {
                Operation::Delete => Value::Null,
                _ => {
                    let mut dry = request.clone();
                    dry.query.insert("dryRun".into(), "All".into());
                    match self.write(target, &dry)? {
                        Response::Json { body, .. } => body,
                        other => return Ok(other),
                    }
                }
            };
            // A caller with a token is who the token names; without one the User-Agent stands
            // in for the kubeconfig user the simulation does not model yet.
            let user = match request.user.as_ref().filter(|_| request.bearer.is_some()) {
                Some(user) => user.to_json(),
                None => user_named(request.user_agent.split('/').next().unwrap_or("anonymous")),
            };
            let options = review_options(operation, request, delete_options.as_ref(), old.as_ref(), dry_run);
            let asker = Asker { user: &user, options: &options, name_generated: name_generated(request) };
            let (object, mut warnings) = self.admit(target, operation, planned.clone(), old.as_ref(), &asker).await?;
            // The validating webhooks were shown the dry run's name, uid and creation time: the
            // create stores those. What the mutating webhooks changed is owned by nobody: the
            // write keeps the managed fields the dry run recorded before them.
            let mut request = request.clone();
            if operation == Operation::Create {
                request.planned = super::objects::Identity::of(&planned);
            }
            if operation != Operation::Delete {
                request.planned_fields = Some(super::fields::Ownership::read(&planned));
            }
            let result = if object == planned {
                self.unchanged_since(target, old.as_ref()).then(|| self.write(target, &request))
            } else {
                self.write_mutated(target, &request, object, old.as_ref())
            };
            match result {
                Some(Ok(Response::Json { code, body, warnings: own })) => {
                    warnings.extend(own);
                    return Ok(Response::Json { code, body, warnings });
                }
                Some(other) => return other,
                // The object changed while the webhooks looked at it: start over.
                None => continue,
            }
        }
        Err(errors::conflict(&target.rt.id, target.name.as_deref().unwrap_or_default()))
    }

    /// Runs the webhooks that select `object` (the object a write would store; null for a
    /// delete): returns it as the mutating webhooks left it, and their warnings, or why the write
    /// is refused.
    async fn admit(
        &self,
        target: &Target,
        operation: Operation,
        mut object: Value,
        old: Option<&Value>,
        asker: &Asker<'_>,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let hooks = webhooks(&self.state(), target, operation);
        let mut warnings = Vec::new();
        // Reinvocation, as the real dispatcher does it: after the first pass, a mutating webhook
        // with `reinvocationPolicy: IfNeeded` is called once more if a webhook after it changed
        // the object. `changes` counts the mutations; `seen` is the count each webhook saw.
        let mut changes = 0u32;
        let mut seen: Vec<Option<u32>> = vec![None; hooks.len()];
        for (index, hook) in hooks.iter().enumerate() {
            if let Some(changed) =
                self.run_hook(hook, target, operation, &mut object, old, asker, &mut warnings).await?
            {
                seen[index] = Some(changes);
                changes += u32::from(changed);
            }
        }
        for (index, hook) in hooks.iter().enumerate() {
            let changed_after = seen[index].is_some_and(|saw| saw < changes && hook.reinvoke);
            if changed_after && hook.mutating {
                self.run_hook(hook, target, operation, &mut object, old, asker, &mut warnings).await?;
            }
        }
        Ok((object, warnings))
    }

    /// Calls one webhook if it selects the request, and applies a mutating one's patch: returns
    /// None if it was not called, else whether it changed the object.
    #[allow(clippy::too_many_arguments)]
    async fn run_hook(
        &self,
        hook: &Webhook,
        target: &Target,
        operation: Operation,
        object: &mut Value,
        old: Option<&Value>,
        asker: &Asker<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<bool>, ApiError> {
        let Asker { user, options, name_generated } = *asker;
        let namespace = self.namespace_object(target, object, old);
        if !hook_selects(hook, namespace.as_ref(), object, old) {
            return Ok(None);
        }
        // Mutating webhooks run before the server finishes a new object (its name from
        // generateName, uid, creation time, generation, a pod's status); validating ones after.
        let shown = match operation {
            Operation::Create if hook.mutating => before_create(object, name_generated),
            _ => object.clone(),
        };
        let review = review(target, operation, &shown, old, user, options);
        let called = match conditions_hold(hook, &review, namespace.as_ref()) {
            Ok(true) => self.call(hook, &review).await,
            Ok(false) => return Ok(None),
            // The real server refuses with 403 here, not the 500 of a failed call.
            Err(why) if hook.fail_closed => {
                let name = object["metadata"]["name"].as_str().or_else(|| old?["metadata"]["name"].as_str());
                return Err(conditions_forbidden(target, name.unwrap_or_default(), &why));
            }
            Err(why) => Err(why),
        };
        let verdict = match called {
            Ok(verdict) => verdict,
            Err(why) if hook.fail_closed => {
                return Err(errors::internal(format!(
                    "Internal error occurred: failed calling webhook \"{}\": {why}",
                    hook.name
                )));
            }
            Err(why) => {
                tracing::warn!(webhook = %hook.name, %why, "webhook failed; ignored by its failurePolicy");
                return Ok(None);
            }
        };
        warnings.extend(verdict.warnings);
        if !verdict.allowed {
            return Err(denied(&hook.name, &verdict.status));
        }
        let Some(patch) = verdict.patch.filter(|_| hook.mutating && operation != Operation::Delete) else {
            return Ok(Some(false));
        };
        let before = object.clone();
        json_patch::patch(object, &patch).map_err(|e| {
            errors::internal(format!(
                "Internal error occurred: the patch of webhook \"{}\" does not apply: {e}",
                hook.name
            ))
        })?;
        Ok(Some(*object != before))
    }

    /// Deletes the pods the controllers and kubelets asked to delete while webhooks applied to
    /// pod deletes, each through admission as the real clients' requests go (a kubelet's final
    /// delete of a stopped pod is the second DELETE review of a graceful delete). A refused
    /// delete is asked for again on the next pass.
    pub async fn delete_pending_pods(&self) {
        let pending = std::mem::take(&mut self.state().pending_pod_deletes);
        let Some(rt) = self.state().registry.find("", "v1", "pods").cloned() else { return };
        for super::PendingPodDelete { pod, options: delete, user } in pending {
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let target =
                Target { rt: rt.clone(), namespace: Some(namespace.clone()), name: Some(name.clone()), sub: None };
            let Some(old) = self.state().store.get(&rt.id, &namespace, &name).map(|p| (*p).clone()) else { continue };
            if old["metadata"]["uid"] != pod["metadata"]["uid"] {
                continue;
            }
            let mut options = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
            add_delete_options(&mut options, &delete, Some(&old));
            let user = user_named(&user);
            let asker = Asker { user: &user, options: &options, name_generated: false };
            let deleted = match self.admit(&target, Operation::Delete, Value::Null, Some(&old), &asker).await {
                Ok(_) => {
                    let mut state = self.state();
                    self.delete_in(&mut state, &rt, &namespace, &name, &delete).map(|_| ())
                }
                Err(e) => Err(e),
            };
            if let Err(error) = deleted {
                tracing::info!(%namespace, %name, ?error, "a pod delete of the cluster's own was refused");
            }
        }
    }

    /// Creates the pods the simulation's controllers asked for while webhooks applied to pods
    /// (see [`State::pending_pods`]), each through admission as the real controllers' requests
    /// would go; a refused pod becomes a `FailedCreate` Warning on its owner, and the controller
    /// asks again on its next pass.
    pub async fn create_pending_pods(&self) {
        let pending = std::mem::take(&mut self.state().pending_pods);
        let Some(rt) = self.state().registry.find("", "v1", "pods").cloned() else { return };
        for super::PendingPod { pod, manager, user } in pending {
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let target = Target { rt: rt.clone(), namespace: Some(namespace.clone()), name: None, sub: None };
            // A controller's create names no field manager (the recorded generateName case).
            let options = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
            // The webhooks see the pod as the real server has it by then: decoded with its
            // defaults, and the ServiceAccount plugin's token volume added (the dry run's pod).
            let dry_run = Request::new(
                ::http::Method::POST,
                &format!("/api/v1/namespaces/{namespace}/pods?dryRun=All&fieldManager={manager}"),
            )
            .with_json("application/json", &pod);
            let planned = match self.write(&target, &dry_run) {
                Ok(Response::Json { body, .. }) => Ok(body),
                Ok(_) => Ok(pod.clone()),
                Err(e) => Err(e),
            };
            let admitted = match planned {
                Ok(planned) => {
                    let user = user_named(&user);
                    let generated = pod["metadata"]["name"].as_str().is_none_or(str::is_empty);
                    let asker = Asker { user: &user, options: &options, name_generated: generated };
                    let identity = super::objects::Identity::of(&planned);
                    let fields = Some(super::fields::Ownership::read(&planned));
                    match self.admit(&target, Operation::Create, planned, None, &asker).await {
                        Ok((admitted, _)) => {
                            let mut state = self.state();
                            let opts = WriteOptions { identity, fields, ..WriteOptions::controller(&manager) };
                            self.create_in(&mut state, &rt, admitted, &opts).map(|_| ())
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(error) = admitted {
                let message = match &error {
                    ApiError::Status { body, .. } => body["message"].as_str().unwrap_or_default().to_string(),
                    ApiError::PlainNotFound => "not found".to_string(),
                };
                tracing::info!(%namespace, %message, "a controller's pod was not created");
                self.owner_event(&pod, &namespace, &format!("Error creating: {message}"));
            }
        }
    }

    /// A `FailedCreate` Warning on the controller that owns `pod`, as kube-controller-manager
    /// records one.
    fn owner_event(&self, pod: &Value, namespace: &str, message: &str) {
        let Some(owner) = pod["metadata"]["ownerReferences"].as_array().and_then(|o| o.first()) else { return };
        let now = self.now();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{}.", owner["name"].as_str().unwrap_or("pod")), "namespace": namespace},
            "involvedObject": {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["name"],
                               "namespace": namespace, "uid": owner["uid"]},
            "reason": "FailedCreate", "message": message, "type": "Warning",
            "source": {"component": "replicaset-controller"}, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
        });
        let mut state = self.state();
        let Some(rt) = state.registry.find("", "v1", "events").cloned() else { return };
        if let Err(error) = self.create_in(&mut state, &rt, event, &WriteOptions::controller("kube-controller-manager"))
        {
            tracing::debug!(?error, "recording a FailedCreate event");
        }
    }

    /// Create, replace, patch or delete, without admission.
    pub(super) fn write(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        match request.method {
            ::http::Method::POST => self.create(target, request),
            ::http::Method::PUT => self.replace(target, request),
            ::http::Method::PATCH => self.patch(target, request),
            ::http::Method::DELETE => self.delete(target, request),
            ref method => Err(errors::method_not_allowed(method.as_str())),
        }
    }

    /// Whether the stored object is still the one the webhooks were shown.
    fn unchanged_since(&self, target: &Target, old: Option<&Value>) -> bool {
        let Some(old) = old else { return true };
        let state = self.state();
        self.current(&state, target)
            .is_ok_and(|now| now["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"])
    }

    /// Stores what the mutating webhooks made of the request's object; None if the stored object
    /// changed meanwhile.
    fn write_mutated(
        &self,
        target: &Target,
        request: &Request,
        mut object: Value,
        old: Option<&Value>,
    ) -> Option<Result<Response, ApiError>> {
        let opts = match WriteOptions::from_request(request, target) {
            Ok(opts) => opts,
            Err(e) => return Some(Err(e)),
        };
        let mut state = self.state();
        match old {
            None => {
                // The create takes the dry run's name, uid and creation time from the request.
                if let Some(meta) = object["metadata"].as_object_mut() {
                    for generated in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"] {
                        meta.remove(generated);
                    }
                }
                Some(self.create_in(&mut state, &target.rt, object, &opts).map(|(body, warnings)| Response::Json {
                    code: 201,
                    body,
                    warnings,
                }))
            }
            Some(old) => {
                let now = self.current(&state, target).ok()?;
                if now["metadata"]["resourceVersion"] != old["metadata"]["resourceVersion"] {
                    return None;
                }
                object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                Some(self.update_in(&mut state, &target.rt, object, &opts).map(|body| Response::Json {
                    code: 200,
                    body,
                    warnings: Vec::new(),
                }))
            }
        }
    }

    /// The namespace a `namespaceSelector` is matched against: the object's namespace, or a
    /// Namespace itself; None for other cluster-scoped objects (the selector does not apply).
    fn namespace_object(&self, target: &Target, object: &Value, old: Option<&Value>) -> Option<Value> {
        let subject = if object.is_null() { old.unwrap_or(&Value::Null) } else { object };
        if target.rt.id.group.is_empty() && target.rt.id.plural == "namespaces" {
            return Some(subject.clone());
        }
        if !target.rt.namespaced {
            return None;
        }
        let namespace = target.namespace.as_deref().unwrap_or_default();
        let state = self.state();
        let namespaces = state.registry.find("", "v1", "namespaces")?;
        Some(state.store.get(&namespaces.id, "", namespace).map(|n| (**n).clone()).unwrap_or_default())
    }

    /// Sends the review to the webhook and reads its answer.
    async fn call(&self, hook: &Webhook, review: &Value) -> Result<Verdict, String> {
        // As the real dispatcher words a request that got no answer: the URL it posted to, then
        // the transport's error.
        let url = webhook_url(&hook.client, hook.timeout);
        let unanswered = |why: String| format!("failed to call webhook: Post \"{url}\": {why}");
        let (host, port, path, server_name) = self.endpoint(&hook.client).map_err(unanswered)?;
        let ca = hook.client["caBundle"].as_str().unwrap_or_default();
        let pem = base64::engine::general_purpose::STANDARD.decode(ca).map_err(|e| format!("caBundle: {e}"))?;
        let tls = tls_config(&pem, self.clock().clone())?;
        let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
        let exchange = async {
            let stream = connect(&host, port).await.map_err(|e| unanswered(format!("dial tcp {host}:{port}: {e}")))?;
            let name = rustls::pki_types::ServerName::try_from(server_name.clone()).map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, stream)
                .await
                .map_err(|e| unanswered(format!("tls: {e}")))?;
            // As a real v1.36 server calls (shared/admission): the timeout in the query, its
            // User-Agent and Accept. It also asks for gzip, which is not modelled.
            let separator = if path.contains('?') { '&' } else { '?' };
            let path = format!("{path}{separator}timeout={}s", hook.timeout.as_secs());
            let request = ::http::Request::post(path.as_str())
                .header(::http::header::HOST, server_name.as_str())
                .header(::http::header::USER_AGENT, "kube-apiserver-admission")
                .header(::http::header::CONTENT_TYPE, "application/json")
                .header(::http::header::ACCEPT, "application/json, */*")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let (status, bytes) = crate::net::http_exchange(stream, request).await?;
            if !status.is_success() {
                return Err(format!("the webhook answered {status}"));
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(hook.timeout, exchange)
            .await
            .map_err(|_| format!("context deadline exceeded (timeoutSeconds {})", hook.timeout.as_secs()))??;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
        Verdict::read(&answer, &review["request"]["uid"])
    }

    /// Host, port, path and TLS server name of a webhook's `clientConfig`.
    fn endpoint(&self, client: &Value) -> Result<(String, u16, String, String), String> {
        if let Some(url) = client["url"].as_str() {
            let uri: ::http::Uri = url.parse().map_err(|e| format!("clientConfig.url: {e}"))?;
            if uri.scheme_str() != Some("https") {
                return Err("clientConfig.url: only https:// is allowed".to_string());
            }
            let host = uri.host().ok_or("clientConfig.url: no host")?.to_string();
            let path = uri.path_and_query().map_or("/".to_string(), |p| p.to_string());
            return Ok((host.clone(), uri.port_u16().unwrap_or(443), path, host));
        }
        let service = &client["service"];
        let (Some(namespace), Some(name)) = (service["namespace"].as_str(), service["name"].as_str()) else {
            return Err("clientConfig names neither a url nor a service".to_string());
        };
        let port = service["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(443);
        let path = service["path"].as_str().unwrap_or("/").to_string();
        let server_name = format!("{name}.{namespace}.svc");
        let backend = self.service_backend(namespace, name, port).map_err(|e| e.to_string())?;
        let (host, port) = (backend.host, backend.port);
        Ok((host, port, path, server_name))
    }
}

/// The URL the real server posts a review to: `clientConfig.url`, or the Service's DNS name and
/// port with its path; with the timeout in the query.
fn webhook_url(client: &Value, timeout: std::time::Duration) -> String {
    let base = match client["url"].as_str() {
        Some(url) => url.to_string(),
        None => {
            let service = &client["service"];
            format!(
                "https://{}.{}.svc:{}{}",
                service["name"].as_str().unwrap_or_default(),
                service["namespace"].as_str().unwrap_or_default(),
                service["port"].as_u64().unwrap_or(443),
                service["path"].as_str().unwrap_or("/")
            )
        }
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}timeout={}s", timeout.as_secs())
}

/// The webhooks of every configuration that could apply to a request: mutating ones first, each
/// kind in configuration name order, then in their order within it.
fn webhooks(state: &State, target: &Target, operation: Operation) -> Vec<Webhook> {
    let mut out = Vec::new();
    for (plural, mutating) in [("mutatingwebhookconfigurations", true), ("validatingwebhookconfigurations", false)] {
        let Some(rt) = state.registry.find("admissionregistration.k8s.io", "v1", plural) else { continue };
        for (_, config) in state.store.list(&rt.id, None) {
            for hook in config["webhooks"].as_array().into_iter().flatten() {
                let applies =
                    hook["rules"].as_array().into_iter().flatten().any(|rule| rule_matches(rule, target, operation));
                if !applies {
                    continue;
                }
                out.push(Webhook {
                    name: hook["name"].as_str().unwrap_or_default().to_string(),
                    mutating,
                    client: hook["clientConfig"].clone(),
                    fail_closed: hook["failurePolicy"].as_str() != Some("Ignore"),
                    timeout: Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30)),
                    namespace_selector: hook["namespaceSelector"].clone(),
                    object_selector: hook["objectSelector"].clone(),
                    match_conditions: hook["matchConditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| Some((c["name"].as_str()?.to_string(), c["expression"].as_str()?.to_string())))
                        .collect(),
                    reinvoke: mutating && hook["reinvocationPolicy"] == "IfNeeded",
                });
            }
        }
    }
    out
}

fn listed(list: &Value, value: &str) -> bool {
    list.as_array().is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
}

fn rule_matches(rule: &Value, target: &Target, operation: Operation) -> bool {
    let id = &target.rt.id;
    let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => !target.rt.namespaced,
        "Namespaced" => target.rt.namespaced,
        _ => true,
    };
    let resource_ok = rule["resources"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|r| {
        match (r.split_once('/'), target.sub.as_deref()) {
            _ if r == "*/*" => true,
            (None, None) => r == "*" || r == id.plural,
            (None, Some(_)) => false,
            (Some((resource, sub)), Some(wanted)) => {
                (resource == "*" || resource == id.plural) && (sub == "*" || sub == wanted)
            }
            (Some(_), None) => false,
        }
    });
    scope_ok
        && resource_ok
        && listed(&rule["operations"], operation.as_str())
        && listed(&rule["apiGroups"], &id.group)
        && listed(&rule["apiVersions"], &id.version)
}

fn hook_selects(hook: &Webhook, namespace: Option<&Value>, object: &Value, old: Option<&Value>) -> bool {
    let namespace_ok = namespace.is_none_or(|n| selector_matches(&hook.namespace_selector, &n["metadata"]["labels"]));
    let object_ok = [Some(object), old]
        .into_iter()
        .flatten()
        .filter(|o| !o.is_null())
        .any(|o| selector_matches(&hook.object_selector, &o["metadata"]["labels"]));
    namespace_ok && object_ok
}

/// Whether every `matchCondition` holds: false as soon as one is false; an error if one cannot be
/// evaluated and none is false.
fn conditions_hold(hook: &Webhook, review: &Value, namespace: Option<&Value>) -> Result<bool, String> {
    if hook.match_conditions.is_empty() {
        return Ok(true);
    }
    let request = &review["request"];
    let variables = [
        ("object", &request["object"]),
        ("oldObject", &request["oldObject"]),
        ("request", request),
        ("namespaceObject", namespace.unwrap_or(&Value::Null)),
    ];
    let context = super::cel::context(&variables).map_err(|e| format!("matchConditions: {e}"))?;
    let mut failures = Vec::new();
    for (_, expression) in &hook.match_conditions {
        match super::cel::evaluate(expression, &context) {
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(cel::Value::Bool(true)) => {}
            Ok(other) => {
                failures.push(format!("expression '{expression}' resulted in error: not a boolean: {other:?}"))
            }
            Err(e) => failures.push(format!("expression '{expression}' resulted in error: {e}")),
        }
    }
    // Worded as the real server aggregates the errors: one as it is, several in brackets.
    match failures.len() {
        0 => Ok(true),
        1 => Err(failures.remove(0)),
        _ => Err(format!("[{}]", failures.join(", "))),
    }
}

/// The refusal of a write whose webhook's `matchConditions` cannot be evaluated under
/// `failurePolicy: Fail`: 403 Forbidden naming the resource and the object, with the errors.
fn conditions_forbidden(target: &Target, name: &str, why: &str) -> ApiError {
    let id = &target.rt.id;
    let resource = id.qualified();
    let message = if name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} {name:?} is forbidden: {why}")
    };
    let mut details = json!({"name": name, "kind": id.plural});
    if !id.group.is_empty() {
        details["group"] = json!(id.group);
    }
    errors::forbidden(message, details)
}

/// A `LabelSelector` against an object's labels, as the operator matches them; an absent selector
/// matches everything, one that does not parse matches nothing.
pub(super) fn selector_matches(selector: &Value, labels: &Value) -> bool {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    let selector: Option<LabelSelector> = match selector {
        Value::Null => Some(LabelSelector::default()),
        other => serde_json::from_value(other.clone()).ok(),
    };
    let labels: std::collections::BTreeMap<String, String> = serde_json::from_value(labels.clone()).unwrap_or_default();
    selector.is_some_and(|s| sv_operator::plan::selector_matches(&s, &labels))
}

/// The AdmissionReview sent for a request.
fn review(
    target: &Target,
    operation: Operation,
    object: &Value,
    old: Option<&Value>,
    user: &Value,
    options: &Value,
) -> Value {
    let id = &target.rt.id;
    let dry_run = options["dryRun"].as_array().is_some_and(|d| !d.is_empty());
    let subject = if object.is_null() { old.unwrap_or(&Value::Null) } else { object };
    let name =
        target.name.clone().unwrap_or_else(|| subject["metadata"]["name"].as_str().unwrap_or_default().to_string());
    let uid = blake3::hash(
        format!("{}{}{}{}", operation.as_str(), id.plural, name, subject["metadata"]["resourceVersion"]).as_bytes(),
    )
    .to_hex()
    .chars()
    .take(32)
    .collect::<String>();
    let kind = json!({"group": id.group, "version": id.version, "kind": target.rt.kind});
    let resource = json!({"group": id.group, "version": id.version, "resource": id.plural});
    let mut review_request = json!({
        "uid": format!("{}-{}-{}-{}-{}", &uid[..8], &uid[8..12], &uid[12..16], &uid[16..20], &uid[20..32]),
        "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "operation": operation.as_str(),
        "userInfo": user,
        "object": object, "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": dry_run,
        "options": options,
    });
    // A name generated from generateName does not exist yet: the key is absent, not empty.
    if !name.is_empty() {
        review_request["name"] = json!(name);
    }
    if let Some(namespace) = &target.namespace {
        review_request["namespace"] = json!(namespace);
    }
    if let Some(sub) = &target.sub {
        review_request["subResource"] = json!(sub);
        review_request["requestSubResource"] = json!(sub);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": review_request})
}

/// Whether a create names its object by `generateName` (the server picks the name).
fn name_generated(request: &Request) -> bool {
    if request.method != ::http::Method::POST {
        return false;
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    body["metadata"]["name"].as_str().is_none_or(str::is_empty)
        && body["metadata"]["generateName"].as_str().is_some_and(|g| !g.is_empty())
}

/// A new object as mutating webhooks see it: before the server's `BeforeCreate`, which draws its
/// name from `generateName`, its uid and creation time, sets its generation and resets a pod's
/// status (recorded: `metadata` holds only name, namespace and managedFields, `status` is `{}`).
fn before_create(object: &Value, name_generated: bool) -> Value {
    let mut shown = object.clone();
    if let Some(meta) = shown["metadata"].as_object_mut() {
        for key in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            meta.remove(key);
        }
        if name_generated {
            meta.remove("name");
        }
    }
    if shown["kind"] == "Pod" && shown["apiVersion"] == "v1" {
        shown["status"] = json!({});
    }
    shown
}

/// The `options` of a review: what the request asked for, as the real server passes it on. A
/// create or an update (a patch too, server-side apply included) carries the field manager, the
/// field validation and the dry run the client gave; a delete its grace period (for a pod, its
/// own when the client gave none), propagation policy, preconditions and dry run.
fn review_options(
    operation: Operation,
    request: &Request,
    delete: Option<&DeleteOptions>,
    old: Option<&Value>,
    dry_run: bool,
) -> Value {
    let kind = match operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    let mut options = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if dry_run {
        options["dryRun"] = json!(["All"]);
    }
    match delete {
        None => {
            for key in ["fieldManager", "fieldValidation"] {
                if let Some(value) = request.param(key).filter(|v| !v.is_empty()) {
                    options[key] = json!(value);
                }
            }
        }
        Some(delete) => add_delete_options(&mut options, delete, old),
    }
    options
}

/// A delete's part of a review's `options`.
fn add_delete_options(options: &mut Value, delete: &DeleteOptions, old: Option<&Value>) {
    let pod_grace = old.filter(|o| o["kind"] == "Pod").map(|pod| {
        pod["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
    });
    if let Some(grace) = delete.grace_period.or(pod_grace) {
        options["gracePeriodSeconds"] = json!(grace);
    }
    if delete.uid.is_some() || delete.resource_version.is_some() {
        options["preconditions"] = json!({"uid": delete.uid, "resourceVersion": delete.resource_version});
    }
    if let Some(policy) = &delete.propagation {
        options["propagationPolicy"] = json!(policy);
    }
}

/// What a webhook answered.
struct Verdict {
    allowed: bool,
    status: Value,
    patch: Option<json_patch::Patch>,
    warnings: Vec<String>,
}

impl Verdict {
    fn read(answer: &Value, uid: &Value) -> Result<Self, String> {
        if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
            return Err(format!(
                "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
                answer["apiVersion"].as_str().unwrap_or_default(),
                answer["kind"].as_str().unwrap_or_default()
            ));
        }
        let response = &answer["response"];
        if &response["uid"] != uid {
            return Err(format!("expected response.uid={uid}, got {}", response["uid"]));
        }
        let patch = match response["patch"].as_str() {
            None => None,
            Some(_) if response["patchType"] != "JSONPatch" => {
                return Err("webhook returned a patch without patchType JSONPatch".to_string());
            }
            Some(encoded) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("response.patch: {e}"))?;
                Some(serde_json::from_slice(&bytes).map_err(|e| format!("response.patch: {e}"))?)
            }
        };
        Ok(Self {
            allowed: response["allowed"] == true,
            status: response["status"].clone(),
            patch,
            warnings: response["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect(),
        })
    }
}

/// The error a denial becomes, as the real server words it (a code below 400 becomes 400).
fn denied(webhook: &str, status: &Value) -> ApiError {
    let code = status["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400) as u16;
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("admission webhook \"{webhook}\" denied the request: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("admission webhook \"{webhook}\" denied the request: {r}"),
        _ => format!("admission webhook \"{webhook}\" denied the request without explanation"),
    };
    let reason = status["reason"].as_str().filter(|r| !r.is_empty()).unwrap_or("BadRequest");
    ApiError::status(code, reason, &message, None)
}

/// Certificates are checked at the simulation's time, as a real API server checks them at its
/// own: a webhook certificate that expires in simulated time is refused.
struct SimTime(SharedClock);

impl std::fmt::Debug for SimTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimTime({})", self.0.now())
    }
}

impl rustls::time_provider::TimeProvider for SimTime {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        let seconds = u64::try_from(self.0.now().as_second()).ok()?;
        Some(rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)))
    }
}

fn tls_config(ca_pem: &[u8], clock: SharedClock) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| format!("caBundle: {e}"))?).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the webhook's caBundle holds no certificate; the simulation trusts nothing else".to_string());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_details(provider, Arc::new(SimTime(clock)))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection on the simulated network inside a simulation, on the real one outside.
async fn connect(host: &str, port: u16) -> std::io::Result<Box<dyn Stream>> {
    if turmoil::sim_elapsed().is_some() {
        Ok(Box::new(crate::net::SimStream::connect((host, port)).await?))
    } else {
        Ok(Box::new(tokio::net::TcpStream::connect((host, port)).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(selector_matches(&Value::Null, &labels));
        assert!(selector_matches(&json!({}), &Value::Null));
        assert!(selector_matches(&json!({"matchLabels": {"app": "web"}}), &labels));
        assert!(!selector_matches(&json!({"matchLabels": {"app": "db"}}), &labels));
        let expr = |op: &str, values: &[&str]| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(selector_matches(&expr("In", &["front", "back"]), &labels));
        assert!(!selector_matches(&expr("NotIn", &["front"]), &labels));
        assert!(selector_matches(&expr("Exists", &[]), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", &[]), &labels));
        assert!(!selector_matches(&expr("Bogus", &[]), &labels));
    }

    fn hook(conditions: &[(&str, &str)]) -> Webhook {
        Webhook {
            name: "w".into(),
            mutating: false,
            client: Value::Null,
            fail_closed: true,
            timeout: Duration::from_secs(1),
            namespace_selector: Value::Null,
            object_selector: Value::Null,
            match_conditions: conditions.iter().map(|(n, e)| (n.to_string(), e.to_string())).collect(),
            reinvoke: false,
        }
    }

    #[test]
    fn match_conditions_are_cel_over_the_review() {
        let review = json!({"request": {"operation": "CREATE", "userInfo": {"username": "kubectl"},
            "object": {"metadata": {"name": "a", "labels": {"exempt": "yes"}}}, "oldObject": null}});
        let holds = |expression: &str| conditions_hold(&hook(&[("c", expression)]), &review, None);
        assert_eq!(holds("request.operation == 'CREATE'"), Ok(true));
        assert_eq!(holds("'exempt' in object.metadata.labels"), Ok(true));
        assert_eq!(holds("!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"), Ok(false));
        assert_eq!(holds("oldObject == null"), Ok(true));
        assert!(holds("authorizer.group('').resource('pods').check('get').allowed()").is_err());
        assert!(holds("object.metadata.name").is_err(), "not a boolean");
        // A false condition wins over one that cannot be evaluated.
        let mixed = hook(&[("broken", "nonsense.field"), ("no", "false")]);
        assert_eq!(conditions_hold(&mixed, &review, None), Ok(false));
    }

    #[test]
    fn denials_are_worded_as_the_real_server_words_them() {
        let e = denied("pods.example.com", &json!({"message": "no", "code": 200}));
        match e {
            ApiError::Status { code, body } => {
                assert_eq!(code, 400);
                assert_eq!(body["message"], "admission webhook \"pods.example.com\" denied the request: no");
            }
            other => panic!("{other:?}"),
        }
    }
}
