//! Writes: create, replace, the three patch types, delete and deletecollection, all through one
//! commit path that applies the status-subresource split, schema pruning/defaulting/validation,
//! admission defaults, field ownership, generation and finalizer rules.

use std::sync::Arc;

use serde_json::{Value, json};

use super::errors::{self, ApiError};
use super::fields::{self, Owner, Ownership};
use super::registry::{ResourceId, ResourceType};
use super::schema::Cause;
use super::{ApiServer, Request, Response, State, Target, builtin};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Options every write takes.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// The field manager of the write.
    pub manager: String,
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// `Some("status")` for writes to the status subresource.
    pub subresource: Option<String>,
    /// For a create after admission: what the dry run drew for the object.
    pub identity: Option<Identity>,
    /// For a write after admission: the managed fields its dry run recorded, before mutating
    /// admission changed the object (what admission adds is owned by nobody, as on a real server).
    pub fields: Option<Ownership>,
}

/// What the server draws for a new object before validating admission (`BeforeCreate`): its name
/// when `generateName` names it, its uid and creation time. A create through admission keeps the
/// dry run's, so that validating webhooks are shown what is stored, as on a real server.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub uid: String,
    pub created: String,
}

impl Identity {
    /// The identity a dry-run create answered with.
    pub fn of(object: &Value) -> Option<Self> {
        let meta = &object["metadata"];
        let text = |key: &str| meta[key].as_str().map(str::to_string);
        Some(Self { name: text("name")?, uid: text("uid")?, created: text("creationTimestamp")? })
    }
}

impl WriteOptions {
    /// A write by one of the simulation's own controllers.
    pub fn controller(manager: &str) -> Self {
        Self {
            manager: manager.into(),
            dry_run: false,
            validation: FieldValidation::Ignore,
            subresource: None,
            identity: None,
            fields: None,
        }
    }

    pub(super) fn from_request(request: &Request, target: &Target) -> Result<Self, ApiError> {
        let validation = match request.param("fieldValidation") {
            None | Some("" | "Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(errors::bad_request(format!(
                    "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {other:?}"
                )));
            }
        };
        let agent = request.user_agent.split('/').next().unwrap_or_default();
        let manager = request
            .param("fieldManager")
            .map(String::from)
            .unwrap_or_else(|| if agent.is_empty() { "unknown".into() } else { agent.to_string() });
        Ok(Self {
            manager,
            dry_run: request.param("dryRun") == Some("All"),
            validation,
            subresource: target.sub.clone(),
            identity: request.planned.clone(),
            fields: request.planned_fields.clone(),
        })
    }
}

/// Options of a delete (the `DeleteOptions` body and query parameters).
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
    /// `Some(0)` removes a pod at once instead of waiting for its kubelet.
    pub grace_period: Option<i64>,
}

impl DeleteOptions {
    pub(super) fn from_request(request: &Request) -> Result<Self, ApiError> {
        let body: Value = if request.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&request.body)
                .map_err(|e| errors::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let text = |v: &Value| v.as_str().map(String::from);
        Ok(Self {
            propagation: request
                .param("propagationPolicy")
                .map(String::from)
                .or_else(|| text(&body["propagationPolicy"])),
            uid: text(&body["preconditions"]["uid"]),
            resource_version: text(&body["preconditions"]["resourceVersion"]),
            dry_run: request.param("dryRun") == Some("All")
                || body["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All")),
            grace_period: request
                .param("gracePeriodSeconds")
                .and_then(|g| g.parse().ok())
                .or_else(|| body["gracePeriodSeconds"].as_i64()),
        })
    }
}

/// How a commit changes field ownership.
enum FieldOp {
    Update(Owner),
    Applied(Ownership),
}

const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Why `name` cannot name an object of `rt`. RBAC objects only need a valid path segment
/// (`ValidateRBACName`), which is how `system:discovery` is a valid ClusterRole name; the others
/// modelled here are DNS subdomains.
fn name_problem(rt: &ResourceType, name: &str) -> Option<String> {
    if rt.id.group != "rbac.authorization.k8s.io" {
        return (!is_dns_subdomain(name)).then(|| DNS_SUBDOMAIN_MESSAGE.to_string());
    }
    match name {
        "." | ".." => Some(format!("may not be '{name}'")),
        _ => ["/", "%"].iter().find(|c| name.contains(**c)).map(|c| format!("may not contain '{c}'")),
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|f| f.iter().filter_map(|s| s.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Parses a body as JSON, or YAML when it is not JSON.
fn parse_body(request: &Request, rt: &ResourceType) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(&request.body).map_err(|_| errors::bad_request("the request body is not UTF-8"))?;
    let parsed = match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok(value),
        Err(e) if request.content_type.contains("yaml") => {
            serde_saphyr::from_str::<Value>(text).map_err(|y| format!("yaml: {y}")).or(Err(e.to_string()))
        }
        Err(e) if e.is_eof() => Err("unexpected end of JSON input".to_string()),
        Err(e) => Err(e.to_string()),
    };
    match parsed {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) | Err(_) => {
            let head: String = text.chars().take(30).collect();
            let reason = parsed.err().unwrap_or_else(|| "not an object".into());
            Err(errors::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {reason} ({head} ...)",
                rt.kind
            )))
        }
    }
}

/// Checks apiVersion and kind of a body, filling them in when absent.
fn check_type(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(errors::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: not an object",
            rt.kind
        )));
    }
    let expected = rt.id.api_version();
    match object["apiVersion"].as_str() {
        None | Some("") => object["apiVersion"] = json!(expected),
        Some(found) if found != expected => {
            return Err(errors::bad_request(format!(
                "the API version in the data ({found}) does not match the expected API version ({expected})"
            )));
        }
        Some(_) => {}
    }
    match object["kind"].as_str() {
        None | Some("") => object["kind"] = json!(rt.kind),
        Some(found) if found != rt.kind => {
            let name = name_of(object).to_string();
            let cause = Cause {
                field: "kind".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {found:?}: must be {}", rt.kind),
            };
            let mut details = json!({"name": name, "kind": found});
            if !rt.id.group.is_empty() {
                details["group"] = json!(rt.id.group);
            }
            return Err(errors::invalid_named(&format!("{found}.{}", rt.id.group), details, &name, &[cause]));
        }
        Some(_) => {}
    }
    if object["metadata"].is_null() {
        object["metadata"] = json!({});
    }
    builtin::check_shapes(rt, object)
}

impl ApiServer {
    pub(super) fn create(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let opts = WriteOptions::from_request(request, target)?;
        let mut body = parse_body(request, &target.rt)?;
        check_type(&target.rt, &mut body)?;
        if let Some(url_namespace) = &target.namespace {
            match body["metadata"]["namespace"].as_str() {
                Some(ns) if !ns.is_empty() && ns != url_namespace => {
                    return Err(errors::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => body["metadata"]["namespace"] = json!(url_namespace),
            }
        }
        let mut state = self.state();
        let (object, warnings) = self.create_in(&mut state, &target.rt, body, &opts)?;
        Ok(Response::Json { code: 201, body: object, warnings })
    }

    /// Creates an object given by its apiVersion and kind, in `default` when a namespaced object
    /// names no namespace (what `kubectl create -f` does), on behalf of `manager`.
    pub fn create_object(&self, mut object: Value, manager: &str) -> Result<Value, ApiError> {
        let mut state = self.state();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let rt = state
            .registry
            .by_kind(&api_version, &kind)
            .cloned()
            .ok_or_else(|| errors::bad_request(format!("no resource serves {kind} in {api_version}")))?;
        if rt.namespaced && object["metadata"]["namespace"].as_str().is_none_or(str::is_empty) {
            object["metadata"]["namespace"] = json!("default");
        }
        self.create_in(&mut state, &rt, object, &WriteOptions::controller(manager)).map(|(created, _)| created)
    }

    /// Creates an object (for requests and for the built-in controllers).
    pub fn create_in(
        &self,
        state: &mut State,
        rt: &ResourceType,
        mut object: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let meta = &mut object["metadata"];
        if !rt.namespaced
            && let Some(m) = meta.as_object_mut()
        {
            m.remove("namespace");
        }
        let namespace = meta["namespace"].as_str().unwrap_or_default().to_string();
        if rt.namespaced {
            if namespace.is_empty() {
                return Err(errors::bad_request("the namespace of the object is required for a namespaced resource"));
            }
            let namespaces = ResourceId::new("", "v1", "namespaces");
            let Some(ns) = state.store.get(&namespaces, "", &namespace) else {
                return Err(errors::namespace_not_found(&namespace));
            };
            if !ns["metadata"]["deletionTimestamp"].is_null() {
                let name = meta["name"].as_str().unwrap_or_default();
                return Err(errors::forbidden(
                    format!(
                        "{} {name:?} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        rt.id.qualified()
                    ),
                    json!({"name": name, "kind": rt.id.plural, "causes": [{"reason": "NamespaceTerminating",
                        "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace"}]}),
                ));
            }
        }
        // Admission runs before the name is drawn: refusals then name the object by its prefix.
        let mut shown_name = meta["name"].as_str().unwrap_or_default().to_string();
        if meta["name"].as_str().is_none_or(str::is_empty) {
            match meta["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    shown_name = prefix.to_string();
                    let name = match &opts.identity {
                        Some(identity) => identity.name.clone(),
                        None => format!("{prefix}{}", state.rng.name_suffix()),
                    };
                    meta["name"] = json!(name);
                }
                _ => {
                    let cause = Cause {
                        field: "metadata.name".into(),
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                    };
                    return Err(errors::invalid(rt, "", &[cause]));
                }
            }
        }
        let name = meta["name"].as_str().unwrap_or_default().to_string();
        if let Some(problem) = name_problem(rt, &name) {
            let cause = Cause {
                field: "metadata.name".into(),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {name:?}: {problem}"),
            };
            return Err(errors::invalid(rt, &name, &[cause]));
        }
        if state.store.get(&rt.id, &namespace, &name).is_some() {
            return Err(errors::already_exists(&rt.id, &name));
        }
        if let Some(m) = meta.as_object_mut() {
            for server_field in
                ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"]
            {
                m.remove(server_field);
            }
        }
        let (uid, created) = match &opts.identity {
            Some(identity) => (identity.uid.clone(), identity.created.clone()),
            None => (state.rng.uid(), self.now()),
        };
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(created);
        if rt.generation {
            meta["generation"] = json!(1);
        }
        if rt.status && opts.subresource.is_none() && !matches!(rt.id.plural.as_str(), "pods" | "services") {
            // On create, status is the server's to set: a client's status is dropped.
            if let Some(o) = object.as_object_mut() {
                o.remove("status");
            }
        }
        let warnings = self.prune_and_validate(rt, &name, &mut object, None, opts)?;
        builtin::scheme_defaults(rt, &mut object);
        let ownership = match &opts.fields {
            Some(planned) => planned.clone(),
            None => self.creator_owns(rt, &object, opts),
        };
        let taken = |ip: &str| cluster_ip_taken(&state.store, ip);
        let mut ips = state.ips.clone();
        builtin::on_create(rt, &mut object, &mut ips, &taken)?;
        if rt.id.group.is_empty() && rt.id.plural == "pods" {
            let account = object["spec"]["serviceAccountName"].as_str().unwrap_or("default").to_string();
            // The ServiceAccount plugin refuses a pod whose account does not exist (yet: the
            // controller that makes a namespace's `default` account may not have run).
            let Some(found) = state
                .registry
                .find("", "v1", "serviceaccounts")
                .and_then(|sa| state.store.get(&sa.id, &namespace, &account))
            else {
                return Err(errors::forbidden(
                    format!(
                        "pods {shown_name:?} is forbidden: error looking up service account {namespace}/{account}: \
                         serviceaccount {account:?} not found"
                    ),
                    json!({"name": shown_name, "kind": "pods"}),
                ));
            };
            let automount = found["automountServiceAccountToken"].as_bool();
            builtin::mount_service_account_token(&mut object, automount);
        }
        if rt.id.group.is_empty()
            && rt.id.plural == "persistentvolumeclaims"
            && object["spec"]["storageClassName"].is_null()
        {
            // The DefaultStorageClass plugin: a claim that names no class (not even "") gets the
            // default one, the newest if several say they are.
            let classes = state.registry.find("storage.k8s.io", "v1", "storageclasses");
            let default = classes
                .into_iter()
                .flat_map(|rt| state.store.list(&rt.id, None))
                .map(|(_, class)| class)
                .filter(|class| builtin::is_default_class(class))
                .max_by(|a, b| {
                    let created =
                        |c: &Value| c["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_string();
                    let named = |c: &Value| c["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    (created(a), std::cmp::Reverse(named(a))).cmp(&(created(b), std::cmp::Reverse(named(b))))
                });
            if let Some(class) = default {
                object["spec"]["storageClassName"] = class["metadata"]["name"].clone();
            }
        }
        builtin::validate(rt, None, &object)?;
        state.ips = ips;
        ownership.write(&mut object);
        drop_empty_metadata(&mut object);
        if opts.dry_run {
            return Ok((object, warnings));
        }
        let stored = state.store.put(&rt.id, object);
        if rt.id.plural == "customresourcedefinitions" {
            self.establish_crd(state, &stored);
        }
        self.notify(state.store.resource_version());
        Ok(((*stored).clone(), warnings))
    }

    /// What the creator of `object` owns: the object as decoded and defaulted, before admission
    /// plugins, mutating webhooks and the registry add to it (the real server records managed
    /// fields before mutating admission), and without the status of a kind that has a status
    /// subresource (the field manager resets it).
    fn creator_owns(&self, rt: &ResourceType, object: &Value, opts: &WriteOptions) -> Ownership {
        let mut ownership = Ownership::default();
        let keys = fields::ListKeys::of_type(rt);
        let owner = self.owner(opts, false);
        let (api_version, now) = (rt.id.api_version(), self.now());
        if rt.status && opts.subresource.is_none() && object.get("status").is_some() {
            let mut without_status = object.clone();
            if let Some(o) = without_status.as_object_mut() {
                o.remove("status");
            }
            ownership.record_update(owner, None, &without_status, keys, &api_version, &now);
        } else {
            ownership.record_update(owner, None, object, keys, &api_version, &now);
        }
        ownership
    }

    fn owner(&self, opts: &WriteOptions, apply: bool) -> Owner {
        Owner { manager: opts.manager.clone(), apply, subresource: opts.subresource.clone() }
    }

    /// Registers a new CRD's resources and marks it Established, as the apiextensions
    /// controllers do.
    fn establish_crd(&self, state: &mut State, crd: &Value) {
        state.registry.register_crd(crd);
        let mut established = crd.clone();
        let names = &crd["spec"]["names"];
        let mut accepted = json!({"plural": names["plural"], "kind": names["kind"]});
        for key in ["singular", "listKind", "shortNames", "categories"] {
            if !names[key].is_null() {
                accepted[key] = names[key].clone();
            }
        }
        if accepted.get("listKind").is_none() {
            accepted["listKind"] = json!(format!("{}List", names["kind"].as_str().unwrap_or_default()));
        }
        if accepted.get("singular").is_none() {
            accepted["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_ascii_lowercase());
        }
        let now = self.now();
        established["status"]["acceptedNames"] = accepted;
        established["status"]["conditions"] = json!([
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ]);
        state.store.put(&ResourceId::new("apiextensions.k8s.io", "v1", "customresourcedefinitions"), established);
    }

    /// Prunes unknown fields (reporting them per `fieldValidation`), fills defaults and validates
    /// a custom resource against its schema. Returns the warnings.
    fn prune_and_validate(
        &self,
        rt: &ResourceType,
        name: &str,
        object: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<Vec<String>, ApiError> {
        let Some(schema) = &rt.schema else { return Ok(Vec::new()) };
        let mut unknown = schema.prune(object);
        unknown.extend(prune_metadata(object));
        unknown.sort();
        if !unknown.is_empty() && opts.validation == FieldValidation::Strict {
            let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
            return Err(errors::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                rt.kind,
                rt.id.version,
                rt.kind,
                list.join(", ")
            )));
        }
        schema.default(object);
        let mut causes = schema.validate(object);
        if causes.is_empty() {
            causes = schema.validate_rules(object, old);
        }
        if let Some(old) = old
            && old.get("status") == object.get("status")
        {
            // Unchanged status is not re-validated (the real server ratchets validation).
            causes.retain(|c| !c.field.starts_with("status"));
        }
        if !causes.is_empty() {
            return Err(errors::invalid(rt, name, &causes));
        }
        Ok(if opts.validation == FieldValidation::Warn {
            unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect()
        } else {
            Vec::new()
        })
    }

    /// The shared tail of every update: subresource split, server metadata, admission, schema,
    /// ownership, no-op detection, generation, finalizer rules; then stores (or removes, when
    /// the last finalizer of a deleted object went away).
    fn commit(
        &self,
        state: &mut State,
        rt: &ResourceType,
        old: &Arc<Value>,
        mut object: Value,
        op: FieldOp,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let name = name_of(old).to_string();
        let namespace = old["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        match opts.subresource.as_deref() {
            Some("status") => {
                let status = object.get("status").cloned();
                object = (**old).clone();
                match status {
                    Some(status) => object["status"] = status,
                    None => {
                        if let Some(o) = object.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            _ if rt.status => match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            },
            _ => {}
        }
        let old_meta = &old["metadata"];
        let meta = &mut object["metadata"];
        for key in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
            "namespace",
        ] {
            match old_meta.get(key) {
                Some(value) => meta[key] = value.clone(),
                None => {
                    if let Some(m) = meta.as_object_mut() {
                        m.remove(key);
                    }
                }
            }
        }
        if !old_meta["deletionTimestamp"].is_null() {
            let before = finalizers(old);
            let added: Vec<String> = finalizers(&object).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                let list: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
                let cause = Cause {
                    field: "metadata.finalizers".into(),
                    reason: "FieldValueForbidden",
                    message: format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        list.join(", ")
                    ),
                };
                // The real server reports this cause twice (two validators find it).
                return Err(errors::invalid(rt, &name, &[cause.clone(), cause]));
            }
        }
        let warnings = self.prune_and_validate(rt, &name, &mut object, Some(old), opts)?;
        // An update is decoded, so defaulted, as a create is (a status write keeps the stored
        // spec, which has them).
        if opts.subresource.is_none() {
            builtin::scheme_defaults(rt, &mut object);
        }
        builtin::on_update(rt, old, &mut object)?;
        builtin::validate(rt, Some(old), &object)?;
        let now = self.now();
        let ownership = match op {
            FieldOp::Update(owner) => match &opts.fields {
                // A write through admission keeps what its dry run recorded, before the webhooks.
                Some(planned) => planned.clone(),
                None => {
                    let mut ownership = Ownership::read(old);
                    ownership.record_update(
                        owner,
                        Some(old),
                        &object,
                        fields::ListKeys::of_type(rt),
                        &rt.id.api_version(),
                        &now,
                    );
                    ownership
                }
            },
            FieldOp::Applied(ownership) => ownership,
        };
        ownership.write(&mut object);
        drop_empty_metadata(&mut object);
        object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if same_ignoring_managed_times(old, &object) {
            return Ok(((**old).clone(), warnings));
        }
        if rt.generation && spec_changed(old, &object) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            object["metadata"]["generation"] = json!(generation + 1);
        }
        if opts.dry_run {
            return Ok((object, warnings));
        }
        let grace = object["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        if !object["metadata"]["deletionTimestamp"].is_null()
            && finalizers(&object).is_empty()
            && grace == 0
            && !namespace_pending(rt, &object)
        {
            // The last finalizer went: the object is gone; the answer shows its last stored version.
            state.store.remove(&rt.id, &namespace, &name);
            self.after_removal(state, rt, &object);
            self.notify(state.store.resource_version());
            return Ok((object, warnings));
        }
        let stored = state.store.put(&rt.id, object);
        if rt.id.plural == "customresourcedefinitions" {
            state.registry.register_crd(&stored);
        }
        self.notify(state.store.resource_version());
        Ok(((*stored).clone(), warnings))
    }

    /// An unconditional update by one of the simulation's controllers (`opts.subresource`
    /// `Some("status")` writes the status).
    pub fn update_in(
        &self,
        state: &mut State,
        rt: &ResourceType,
        object: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let (namespace, name) = super::store::object_key(&object);
        let old =
            state.store.get(&rt.id, &namespace, &name).cloned().ok_or_else(|| errors::not_found(&rt.id, &name))?;
        let owner = self.owner(opts, false);
        self.commit(state, rt, &old, object, FieldOp::Update(owner), opts).map(|(object, _)| object)
    }

    pub(super) fn replace(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let opts = WriteOptions::from_request(request, target)?;
        let mut body = parse_body(request, &target.rt)?;
        check_type(&target.rt, &mut body)?;
        let url_name = target.name.as_deref().unwrap_or_default();
        let body_name = name_of(&body).to_string();
        if body_name != url_name {
            return Err(errors::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
        let mut state = self.state();
        let old = self.current(&state, target)?;
        match body["metadata"]["resourceVersion"].as_str().filter(|rv| !rv.is_empty()) {
            None if target.rt.custom => {
                let cause = Cause {
                    field: "metadata.resourceVersion".into(),
                    reason: "FieldValueInvalid",
                    message: "Invalid value: 0: must be specified for an update".into(),
                };
                return Err(errors::invalid_resource(&target.rt.id, url_name, &[cause]));
            }
            Some(rv) if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default() => {
                return Err(errors::conflict(&target.rt.id, url_name));
            }
            _ => {}
        }
        let owner = self.owner(&opts, false);
        let (object, warnings) = self.commit(&mut state, &target.rt, &old, body, FieldOp::Update(owner), &opts)?;
        Ok(Response::Json { code: 200, body: object, warnings })
    }

    pub(super) fn current(&self, state: &State, target: &Target) -> Result<Arc<Value>, ApiError> {
        let name = target.name.as_deref().unwrap_or_default();
        state
            .store
            .get(&target.rt.id, target.namespace.as_deref().unwrap_or_default(), name)
            .cloned()
            .ok_or_else(|| errors::not_found(&target.rt.id, name))
    }

    pub(super) fn patch(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let opts = WriteOptions::from_request(request, target)?;
        let media = request.content_type.split(';').next().unwrap_or_default().trim().to_string();
        let name = target.name.as_deref().unwrap_or_default().to_string();
        let supported = matches!(
            media.as_str(),
            "application/merge-patch+json" | "application/json-patch+json" | "application/apply-patch+yaml"
        ) || (media == "application/strategic-merge-patch+json" && !target.rt.custom);
        if !supported {
            return Err(errors::unsupported_media_type());
        }
        if media == "application/apply-patch+yaml" {
            return self.apply(target, request, opts);
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| errors::bad_request(format!("error decoding patch: {e}")))?;
        let mut state = self.state();
        let old = self.current(&state, target)?;
        let mut object = (*old).clone();
        match media.as_str() {
            "application/merge-patch+json" => json_patch::merge(&mut object, &body),
            "application/strategic-merge-patch+json" if !target.rt.custom => {
                super::strategic::apply(&mut object, &body)
            }
            "application/json-patch+json" => {
                let patch: json_patch::Patch = serde_json::from_value(body.clone()).map_err(|_| {
                    let found = if body.is_object() { "object" } else { super::schema::type_name(&body) };
                    errors::bad_request(format!(
                        "error decoding patch: json: cannot unmarshal {found} into Go value of type []handlers.jsonPatchOp"
                    ))
                })?;
                apply_json_patch(&mut object, patch).map_err(|_| {
                    ApiError::status(
                        422,
                        "Invalid",
                        "the server rejected our request due to an error in our request",
                        Some(json!({})),
                    )
                })?;
            }
            _ => return Err(errors::unsupported_media_type()),
        }
        check_type(&target.rt, &mut object)?;
        let stored_rv = old["metadata"]["resourceVersion"].as_str().unwrap_or_default();
        if object["metadata"]["resourceVersion"].as_str().is_some_and(|rv| rv != stored_rv) {
            return Err(errors::conflict(&target.rt.id, &name));
        }
        object["metadata"]["name"] = json!(name);
        let owner = self.owner(&opts, false);
        let (object, warnings) = self.commit(&mut state, &target.rt, &old, object, FieldOp::Update(owner), &opts)?;
        Ok(Response::Json { code: 200, body: object, warnings })
    }

    fn apply(&self, target: &Target, request: &Request, opts: WriteOptions) -> Result<Response, ApiError> {
        if request.param("fieldManager").is_none_or(str::is_empty) {
            let cause = Cause {
                field: "fieldManager".into(),
                reason: "FieldValueRequired",
                message: "Required value: is required for apply patch".into(),
            };
            return Err(errors::invalid_named(
                "PatchOptions.meta.k8s.io",
                json!({"group": "meta.k8s.io", "kind": "PatchOptions"}),
                "",
                &[cause],
            ));
        }
        let mut config = parse_body(request, &target.rt)?;
        check_type(&target.rt, &mut config)?;
        let name = target.name.as_deref().unwrap_or_default().to_string();
        if name_of(&config).is_empty() {
            config["metadata"]["name"] = json!(name);
        }
        if name_of(&config) != name {
            return Err(errors::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&config)
            )));
        }
        if let Some(namespace) = &target.namespace {
            config["metadata"]["namespace"] = json!(namespace);
        }
        if let Some(schema) = &target.rt.schema {
            let mut typed = config.clone();
            schema.prune(&mut typed);
            let wrong_type = schema.validate(&typed).into_iter().find(|c| c.reason == "FieldValueTypeInvalid");
            if let Some(cause) = wrong_type {
                let path: Vec<String> = cause.field.split('.').map(String::from).collect();
                let got = fields::get(&config, &path).map(|v| v.to_string()).unwrap_or_default();
                let expected = cause
                    .message
                    .rsplit("must be of type ")
                    .next()
                    .unwrap_or_default()
                    .split(':')
                    .next()
                    .unwrap_or_default();
                let message = format!(
                    "failed to create typed patch object (/{name}; {}, Kind={}): .{}: expected {expected}, got &value.valueUnstructured{{Value:{got}}}",
                    target.rt.id.api_version(),
                    target.rt.kind,
                    cause.field,
                );
                // This answer of the real server has no reason.
                let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "code": 500});
                return Err(ApiError::Status { code: 500, body });
            }
        }
        let force = request.flag("force");
        let owner = self.owner(&opts, true);
        let mut state = self.state();
        let live = state.store.get(&target.rt.id, target.namespace.as_deref().unwrap_or_default(), &name).cloned();
        let api_version = target.rt.id.api_version();
        let now = self.now();
        let keys = fields::ListKeys::of_type(&target.rt);
        let Some(live) = live else {
            // A subresource (status) cannot create its object: the real server answers NotFound.
            if opts.subresource.is_some() {
                return Err(errors::not_found(&target.rt.id, &name));
            }
            // An apply that creates is a create too: the caller needs that verb as well.
            self.authorize_create_by_patch(&state, request, target, &name)?;
            let mut ownership = Ownership::default();
            let object = ownership
                .apply(owner, None, &config, force, keys, &api_version, &now)
                .map_err(|c| apply_conflict(&c))?;
            let (mut created, warnings) =
                self.create_in(&mut state, &target.rt, object, &WriteOptions { dry_run: true, ..opts.clone() })?;
            ownership.write(&mut created);
            if opts.dry_run {
                return Ok(Response::Json { code: 201, body: created, warnings });
            }
            let stored = state.store.put(&target.rt.id, created);
            if target.rt.id.plural == "customresourcedefinitions" {
                self.establish_crd(&mut state, &stored);
            }
            self.notify(state.store.resource_version());
            return Ok(Response::Json { code: 201, body: (*stored).clone(), warnings });
        };
        let mut ownership = Ownership::read(&live);
        let scoped_live = match opts.subresource.as_deref() {
            Some("status") => json!({"status": live.get("status").cloned().unwrap_or(json!({}))}),
            _ => (*live).clone(),
        };
        let scoped_config = match opts.subresource.as_deref() {
            Some("status") => json!({"status": config.get("status").cloned().unwrap_or(json!({}))}),
            _ => config.clone(),
        };
        let merged = ownership
            .apply(owner, Some(&scoped_live), &scoped_config, force, keys, &api_version, &now)
            .map_err(|c| apply_conflict(&c))?;
        let object = match opts.subresource.as_deref() {
            Some("status") => {
                let mut object = (*live).clone();
                object["status"] = merged["status"].clone();
                object
            }
            _ => merged,
        };
        let (object, warnings) =
            self.commit(&mut state, &target.rt, &live, object, FieldOp::Applied(ownership), &opts)?;
        Ok(Response::Json { code: 200, body: object, warnings })
    }

    pub(super) fn delete(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let options = DeleteOptions::from_request(request)?;
        let mut state = self.state();
        let name = target.name.as_deref().unwrap_or_default();
        self.delete_in(&mut state, &target.rt, target.namespace.as_deref().unwrap_or_default(), name, &options)
            .map(Response::ok)
    }

    /// Deletes an object: at once (answering a `Status`), or by marking it (answering the object)
    /// while finalizers or a propagation policy hold it.
    pub fn delete_in(
        &self,
        state: &mut State,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let old = state.store.get(&rt.id, namespace, name).cloned().ok_or_else(|| errors::not_found(&rt.id, name))?;
        if let Some(uid) = &options.uid
            && old["metadata"]["uid"].as_str() != Some(uid)
        {
            return Err(errors::precondition_failed(
                rt,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    old["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &options.resource_version
            && old["metadata"]["resourceVersion"].as_str() != Some(rv)
        {
            return Err(errors::precondition_failed(
                rt,
                name,
                &format!(
                    "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({}). The object might have been modified",
                    old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
                ),
            ));
        }
        let mut held = finalizers(&old);
        let is_crd = rt.id == crd_resource_id();
        let policy_finalizer = match options.propagation.as_deref() {
            _ if is_crd => Some(CRD_CLEANUP_FINALIZER),
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        if let Some(f) = policy_finalizer
            && old["metadata"]["deletionTimestamp"].is_null()
            && !held.iter().any(|h| h == f)
        {
            held.push(f.to_string());
        }
        let is_namespace = rt.id.group.is_empty() && rt.id.plural == "namespaces";
        // A pod on a node ends through its kubelet, which stops the containers and then removes it.
        let graceful_pod = rt.id.group.is_empty()
            && rt.id.plural == "pods"
            && !old["spec"]["nodeName"].is_null()
            && options.grace_period != Some(0);
        if held.is_empty() && !is_namespace && !graceful_pod {
            if options.dry_run {
                return Ok(success_status(rt, &old));
            }
            state.store.remove(&rt.id, namespace, name);
            self.after_removal(state, rt, &old);
            self.notify(state.store.resource_version());
            return Ok(success_status(rt, &old));
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            return Ok((*old).clone());
        }
        let mut object = (*old).clone();
        object["metadata"]["deletionTimestamp"] = json!(self.now());
        let grace = if is_namespace {
            None
        } else if graceful_pod {
            Some(options.grace_period.or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30))
        } else {
            Some(0)
        };
        if let Some(grace) = grace {
            object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
        if !held.is_empty() {
            object["metadata"]["finalizers"] = json!(held);
        }
        if rt.generation && rt.id.plural != "customresourcedefinitions" {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            object["metadata"]["generation"] = json!(generation + 1);
        }
        if is_namespace {
            object["status"]["phase"] = json!("Terminating");
        }
        if options.dry_run {
            return Ok(object);
        }
        let stored = state.store.put(&rt.id, object);
        if is_crd {
            self.clean_up_crd(state, &stored);
        }
        self.notify(state.store.resource_version());
        Ok((*stored).clone())
    }

    /// Side effects of an object leaving storage.
    fn after_removal(&self, state: &mut State, rt: &ResourceType, object: &Value) {
        if rt.id.plural == "customresourcedefinitions" {
            for id in crd_resources(state, object) {
                state.store.drop_collection(&id);
            }
            state.registry.unregister_crd(object);
        } else if rt.custom {
            // The last custom resource of a deleted CRD lets the CRD go.
            let crd_name = format!("{}.{}", rt.id.plural, rt.id.group);
            let crd = state.store.get(&crd_resource_id(), "", &crd_name).cloned();
            if let Some(crd) = crd.filter(|c| !c["metadata"]["deletionTimestamp"].is_null()) {
                self.clean_up_crd(state, &crd);
            }
        }
    }

    /// What the apiextensions finalizer does for a deleted CRD: deletes its custom resources and,
    /// once none is left, removes `customresourcecleanup.apiextensions.k8s.io` so the CRD goes.
    fn clean_up_crd(&self, state: &mut State, crd: &Value) {
        let mut left = 0;
        for id in crd_resources(state, crd) {
            let Some(rt) = state.registry.get(&id).cloned() else { continue };
            let keys: Vec<(String, String)> = state.store.list(&id, None).map(|(k, _)| k.clone()).collect();
            for (namespace, name) in keys {
                let _ = self.delete_in(state, &rt, &namespace, &name, &DeleteOptions::default());
                if state.store.get(&id, &namespace, &name).is_some() {
                    left += 1;
                }
            }
        }
        let current = state.store.get(&crd_resource_id(), "", name_of(crd)).cloned();
        if left == 0
            && let Some(current) = current
        {
            let kept: Vec<String> = finalizers(&current).into_iter().filter(|f| f != CRD_CLEANUP_FINALIZER).collect();
            let mut released = (*current).clone();
            released["metadata"]["finalizers"] = json!(kept);
            if let Some(rt) = state.registry.get(&crd_resource_id()).cloned() {
                let owner = Owner { manager: "kube-apiserver".into(), apply: false, subresource: None };
                let opts = WriteOptions::controller("kube-apiserver");
                if let Err(e) = self.commit(state, &rt, &current, released, FieldOp::Update(owner), &opts) {
                    tracing::warn!(error = ?e, "releasing a deleted CRD");
                }
            }
        }
    }

    pub(super) fn delete_collection(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let options = DeleteOptions::from_request(request)?;
        let labels = super::selector::LabelSelector::parse(request.param("labelSelector").unwrap_or_default())
            .map_err(errors::bad_request)?;
        let mut state = self.state();
        let keys: Vec<(String, String)> = state
            .store
            .list(&target.rt.id, target.namespace.as_deref())
            .filter(|(_, o)| labels.matches(o))
            .map(|(k, _)| k.clone())
            .collect();
        let mut items = Vec::new();
        for (namespace, name) in keys {
            let before = state.store.get(&target.rt.id, &namespace, &name).cloned();
            self.delete_in(&mut state, &target.rt, &namespace, &name, &options)?;
            if let Some(before) = before {
                items.push((*before).clone());
            }
        }
        let mut list = json!({
            "kind": target.rt.list_kind(), "apiVersion": target.rt.id.api_version(),
            "metadata": {"resourceVersion": state.store.resource_version().to_string()}, "items": items,
        });
        if target.rt.custom {
            list["metadata"]["continue"] = json!("");
        }
        Ok(Response::ok(list))
    }
}

const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn crd_resource_id() -> ResourceId {
    ResourceId::new("apiextensions.k8s.io", "v1", "customresourcedefinitions")
}

/// The served resources a CRD defines.
fn crd_resources(state: &State, crd: &Value) -> Vec<ResourceId> {
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
    state
        .registry
        .types()
        .filter(|t| t.custom && t.id.group == group && t.id.plural == plural)
        .map(|t| t.id.clone())
        .collect()
}

/// A namespace with `spec.finalizers` left is still held by the namespace controller.
fn namespace_pending(rt: &ResourceType, object: &Value) -> bool {
    rt.id.group.is_empty()
        && rt.id.plural == "namespaces"
        && object["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty())
}

fn success_status(rt: &ResourceType, object: &Value) -> Value {
    let mut details = super::errors::resource_details(&rt.id, name_of(object));
    details["uid"] = object["metadata"]["uid"].clone();
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn apply_conflict(conflicts: &[(String, Vec<String>)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .flat_map(|(owner, paths)| {
            paths.iter().map(move |p| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {owner}"), "field": p}))
        })
        .collect();
    ApiError::status(409, "Conflict", fields::conflict_message(conflicts), Some(json!({"causes": causes})))
}

/// Applies a JSON patch with the Go library's semantics the API server has: a `test` that a
/// missing path is `null` passes (kube's finalizer helpers rely on it).
fn apply_json_patch(object: &mut Value, patch: json_patch::Patch) -> Result<(), json_patch::PatchError> {
    let mut working = object.clone();
    for operation in patch.0 {
        if let json_patch::PatchOperation::Test(test) = &operation
            && test.value.is_null()
            && working.pointer(test.path.as_str()).is_none()
        {
            continue;
        }
        json_patch::patch(&mut working, &[operation])?;
    }
    *object = working;
    Ok(())
}

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Drops fields ObjectMeta does not have, returning their paths.
fn prune_metadata(object: &mut Value) -> Vec<String> {
    let Some(meta) = object["metadata"].as_object_mut() else { return Vec::new() };
    let unknown: Vec<String> = meta.keys().filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str())).cloned().collect();
    for key in &unknown {
        meta.remove(key);
    }
    unknown.into_iter().map(|k| format!("metadata.{k}")).collect()
}

/// Empty metadata maps and lists are not stored (Go's `omitempty`).
fn drop_empty_metadata(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.retain(|key, value| {
            !(matches!(key.as_str(), "labels" | "annotations" | "finalizers" | "ownerReferences")
                && (value.is_null()
                    || value.as_object().is_some_and(|m| m.is_empty())
                    || value.as_array().is_some_and(|a| a.is_empty())))
        });
    }
}

fn without_managed_times(object: &Value) -> Value {
    let mut copy = object.clone();
    for entry in copy["metadata"]["managedFields"].as_array_mut().into_iter().flatten() {
        if let Some(e) = entry.as_object_mut() {
            e.remove("time");
        }
    }
    copy
}

fn same_ignoring_managed_times(a: &Value, b: &Value) -> bool {
    without_managed_times(a) == without_managed_times(b)
}

/// Anything outside metadata and status changed.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut copy = v.clone();
        if let Some(o) = copy.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        copy
    };
    strip(old) != strip(new)
}

fn cluster_ip_taken(store: &super::Store, ip: &str) -> bool {
    store
        .list(&ResourceId::new("", "v1", "services"), None)
        .any(|(_, s)| s["spec"]["clusterIPs"].as_array().is_some_and(|ips| ips.iter().any(|i| i == ip)))
}
