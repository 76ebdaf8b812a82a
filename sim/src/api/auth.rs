//! Authentication by ServiceAccount token and authorization by RBAC, as kube-apiserver v1.36 does
//! them with `--authorization-mode=RBAC`.
//!
//! What a request is *about* comes from its path alone, before any routing (the real server's
//! `RequestInfo`): a request for a resource that does not exist is still 403 when the caller may
//! not touch it. Rules are evaluated as `k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac` does:
//! the union of every ClusterRole bound cluster-wide and every Role or ClusterRole bound in the
//! request's namespace; a binding to a missing role adds `RBAC: ... not found` to the refusal.
//! Creating or updating a Role, ClusterRole or binding is checked for escalation as the RBAC
//! registry does (`escalate` and `bind` verbs, or the creator holds every right it grants).
//!
//! Not modelled: ClusterRole aggregation (`aggregationRule`), the Node authorizer, webhook
//! authorizers, impersonation, `SelfSubjectAccessReview`, and the bootstrap roles
//! (`cluster-admin`, `view`, ...): callers inside the server (the built-in controllers, the
//! harness) act as `system:masters`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::errors::ApiError;
use super::{Request, State};

/// Who made a request, as authentication found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The group whose members every authorizer allows everything.
pub const MASTERS: &str = "system:masters";

impl UserInfo {
    /// A ServiceAccount's user, with the groups the token authenticator gives it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }

    /// Anything that reached the server without credentials.
    pub fn anonymous() -> Self {
        Self { username: "system:anonymous".into(), uid: String::new(), groups: vec!["system:unauthenticated".into()] }
    }

    /// The server itself and the controllers that run inside it.
    pub fn internal(name: &str) -> Self {
        Self { username: name.to_string(), uid: String::new(), groups: vec![MASTERS.into()] }
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// `userInfo` of an AdmissionReview.
    pub fn to_json(&self) -> Value {
        let mut info = json!({"username": self.username, "groups": self.groups});
        if !self.uid.is_empty() {
            info["uid"] = json!(self.uid);
        }
        info
    }
}

/// The token of the cluster's administrator, as in the kubeconfig a cluster installer writes
/// (kind's `kubernetes-admin`, a member of `system:masters`): a static token, as the real
/// server's `--token-auth-file` holds them. Clients outside the cluster's pods present it.
pub const ADMIN_TOKEN: &str = "sv-sim-admin-token";

/// Whom a token names.
#[derive(Clone, Debug)]
pub enum TokenBinding {
    /// A ServiceAccount token (TokenRequest), bound to a pod (name, uid) when given: it stops
    /// working when that pod is gone.
    /// It stops working at `expires`, when set (a TokenRequest's `expirationSeconds`).
    ServiceAccount {
        namespace: String,
        service_account: String,
        pod: Option<(String, String)>,
        expires: Option<k8s_openapi::jiff::Timestamp>,
    },
    /// A static token of a user.
    User(UserInfo),
}

/// The tokens the server accepts. Real ServiceAccount tokens are signed JWTs the server
/// verifies; these are opaque, drawn from the seed, and looked up.
#[derive(Debug)]
pub struct Tokens {
    issued: BTreeMap<String, TokenBinding>,
}

impl Default for Tokens {
    fn default() -> Self {
        let admin = UserInfo {
            username: "kubernetes-admin".into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), "system:authenticated".into()],
        };
        Self { issued: BTreeMap::from([(ADMIN_TOKEN.to_string(), TokenBinding::User(admin))]) }
    }
}

impl Tokens {
    pub fn issue(
        &mut self,
        seed: u64,
        namespace: &str,
        service_account: &str,
        pod: Option<(&str, &str)>,
        expires: Option<k8s_openapi::jiff::Timestamp>,
    ) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(&(self.issued.len() as u64).to_le_bytes());
        hasher.update(format!("{namespace}/{service_account}").as_bytes());
        let token = format!("sv-sim.{}", &hasher.finalize().to_hex()[..40]);
        let binding = TokenBinding::ServiceAccount {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            pod: pod.map(|(name, uid)| (name.to_string(), uid.to_string())),
            expires,
        };
        self.issued.insert(token.clone(), binding);
        token
    }

    pub fn get(&self, token: &str) -> Option<TokenBinding> {
        self.issued.get(token).cloned()
    }
}

/// The bootstrap ClusterRoles and bindings a real server creates that the simulation's callers
/// meet: `cluster-admin` for `system:masters`, discovery for every authenticated user, health
/// and version for everyone.
pub fn bootstrap_policy() -> Vec<Value> {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Value| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name), "rules": rules});
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": meta(name),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": subjects})
    };
    let public = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let mut discovery = vec!["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"];
    discovery.extend(public);
    discovery.sort();
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                     {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        binding("cluster-admin", &[MASTERS]),
        role("system:discovery", json!([{"nonResourceURLs": discovery, "verbs": ["get"]}])),
        binding("system:discovery", &["system:authenticated"]),
        role("system:public-info-viewer", json!([{"nonResourceURLs": public, "verbs": ["get"]}])),
        binding("system:public-info-viewer", &["system:authenticated", "system:unauthenticated"]),
    ]
}

/// What a request asks to do, from its method, path and query (kube-apiserver's `RequestInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The path, for non-resource requests (`/version`, `/apis`, `/healthz`).
    pub path: String,
}

/// Namespace subresources: `namespaces/x/status` is the namespace's status, not a resource
/// called `status` in namespace `x`.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl Attributes {
    pub fn of(request: &Request) -> Self {
        let path = request.path.clone();
        let parts: Vec<&str> = request.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let verb = match request.method {
            ::http::Method::GET | ::http::Method::HEAD => "get",
            ::http::Method::POST => "create",
            ::http::Method::PUT => "update",
            ::http::Method::PATCH => "patch",
            ::http::Method::DELETE => "delete",
            _ => "",
        };
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            // A non-resource request's verb is its method, lower-cased.
            _ => return Self { verb: request.method.as_str().to_ascii_lowercase(), path, ..Self::default() },
        };
        let mut attrs = Self {
            verb: verb.to_string(),
            resource_request: true,
            api_group: group.to_string(),
            api_version: version.to_string(),
            path,
            ..Self::default()
        };
        let mut rest = rest;
        if rest[0] == "namespaces" && rest.len() > 1 {
            attrs.namespace = rest[1].to_string();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        attrs.resource = rest[0].to_string();
        attrs.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        attrs.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        if attrs.name.is_empty() {
            match attrs.verb.as_str() {
                "delete" => attrs.verb = "deletecollection".into(),
                "get" => {
                    let watch = request.query.get("watch").is_some_and(|w| w == "true" || w == "1");
                    attrs.verb = if watch { "watch" } else { "list" }.into();
                    // A list or watch of one object by name is authorized as that name.
                    if let Some(name) = request.query.get("fieldSelector").and_then(|s| exact_name(s)) {
                        attrs.name = name;
                    }
                }
                _ => {}
            }
        }
        attrs
    }

    /// `pods`, `sharedvolumes/status`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The name a field selector pins, when it is exactly `metadata.name=<name>` (among others).
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (key, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (key.trim() == "metadata.name" && !key.ends_with('!') && !value.is_empty()).then(|| value.trim().to_string())
    })
}

/// One `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

impl Rule {
    pub fn from_json(rule: &Value) -> Self {
        Self {
            verbs: strings(&rule["verbs"]),
            api_groups: strings(&rule["apiGroups"]),
            resources: strings(&rule["resources"]),
            resource_names: strings(&rule["resourceNames"]),
            non_resource_urls: strings(&rule["nonResourceURLs"]),
        }
    }

    /// Whether this rule allows the request (the RBAC authorizer's `RuleAllows`).
    pub fn allows(&self, attrs: &Attributes) -> bool {
        let verb = has(&self.verbs, "*") || has(&self.verbs, &attrs.verb);
        if !attrs.resource_request {
            let url = self.non_resource_urls.iter().any(|u| {
                u == "*" || *u == attrs.path || u.strip_suffix('*').is_some_and(|prefix| attrs.path.starts_with(prefix))
            });
            return verb && url;
        }
        let group = has(&self.api_groups, "*") || has(&self.api_groups, &attrs.api_group);
        let combined = attrs.combined_resource();
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!attrs.subresource.is_empty() && r.strip_prefix("*/") == Some(attrs.subresource.as_str()))
        });
        let name = self.resource_names.is_empty() || has(&self.resource_names, &attrs.name);
        verb && group && resource && name
    }

    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`, as the escalation
    /// refusal lists a right (`rbacv1helpers.CompactString`).
    fn compact(&self) -> String {
        let list = |label: &str, items: &[String]| {
            (!items.is_empty()).then(|| {
                let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
                format!("{label}:[{}]", quoted.join(", "))
            })
        };
        let fields: Vec<String> = [
            list("APIGroups", &self.api_groups),
            list("Resources", &self.resources),
            list("ResourceNames", &self.resource_names),
            list("NonResourceURLs", &self.non_resource_urls),
            list("Verbs", &self.verbs),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("{{{}}}", fields.join(", "))
    }
}

/// Every rule that applies to `user` in `namespace` (cluster-wide bindings first), and the
/// bindings whose role is missing, worded as the RBAC authorizer words them.
pub fn rules_for(state: &State, user: &UserInfo, namespace: &str) -> (Vec<Rule>, Vec<String>) {
    let (mut rules, mut errors) = (Vec::new(), Vec::new());
    let mut visit = |binding: &Value, binding_namespace: &str| {
        let applies =
            binding["subjects"].as_array().into_iter().flatten().any(|s| subject_matches(s, user, binding_namespace));
        if !applies {
            return;
        }
        let role_ref = &binding["roleRef"];
        let role_name = role_ref["name"].as_str().unwrap_or_default();
        match role_rules(state, role_ref["kind"].as_str().unwrap_or_default(), binding_namespace, role_name) {
            Ok(found) => rules.extend(found),
            Err(e) => errors.push(e),
        }
    };
    for (_, binding) in objects(state, "clusterrolebindings", None) {
        visit(&binding, "");
    }
    if !namespace.is_empty() {
        for (_, binding) in objects(state, "rolebindings", Some(namespace)) {
            visit(&binding, namespace);
        }
    }
    (rules, errors)
}

/// The rules of the role a binding refers to, or the lister's NotFound message.
fn role_rules(state: &State, kind: &str, namespace: &str, name: &str) -> Result<Vec<Rule>, String> {
    let (plural, singular, ns) = match kind {
        "Role" => ("roles", "role", Some(namespace)),
        "ClusterRole" => ("clusterroles", "clusterrole", None),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    objects(state, plural, ns)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, role)| role["rules"].as_array().into_iter().flatten().map(Rule::from_json).collect())
        .ok_or_else(|| format!("{singular}.rbac.authorization.k8s.io {name:?} not found"))
}

fn objects(state: &State, plural: &str, namespace: Option<&str>) -> Vec<(String, std::sync::Arc<Value>)> {
    let Some(rt) = state.registry.find("rbac.authorization.k8s.io", "v1", plural) else { return Vec::new() };
    state.store.list(&rt.id, namespace).map(|((_, name), o)| (name.clone(), o.clone())).collect()
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.username == name,
        "Group" => has(&user.groups, name),
        "ServiceAccount" => {
            let namespace = subject["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_namespace);
            !namespace.is_empty() && user.username == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

/// Allows the request, or refuses it with the real server's 403.
pub fn authorize(state: &State, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
    authorize_quietly(state, user, attrs).map_err(|reason| forbidden(user, attrs, &reason))
}

/// The RBAC decision alone: allowed, or the authorizer's reason for not allowing (empty unless
/// a binding names a role that does not exist).
pub fn authorize_quietly(state: &State, user: &UserInfo, attrs: &Attributes) -> Result<(), String> {
    if user.is_master() {
        return Ok(());
    }
    let (rules, errors) = rules_for(state, user, &attrs.namespace);
    if rules.iter().any(|r| r.allows(attrs)) {
        return Ok(());
    }
    Err(match errors.as_slice() {
        [] => String::new(),
        [one] => format!("RBAC: {one}"),
        many => format!("RBAC: [{}]", many.join(", ")),
    })
}

/// kube-apiserver's `responsewriters.Forbidden`: `pods "x" is forbidden: User "u" cannot get
/// resource "pods" in API group "" in the namespace "n"`.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> ApiError {
    let what = if !attrs.resource_request {
        format!("User {:?} cannot {} path {:?}", user.username, attrs.verb, attrs.path)
    } else {
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", attrs.namespace)
        };
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            user.username,
            attrs.verb,
            attrs.combined_resource(),
            attrs.api_group
        )
    };
    let what = if reason.is_empty() { what } else { format!("{what}: {reason}") };
    let qualified = match (attrs.resource_request, attrs.api_group.as_str()) {
        (false, _) => String::new(),
        (true, "") => attrs.resource.clone(),
        (true, group) => format!("{}.{group}", attrs.resource),
    };
    forbidden_object(&qualified, &attrs.api_group, &attrs.resource, &attrs.name, &what)
}

/// `apierrors.NewForbidden`.
pub fn forbidden_object(qualified: &str, group: &str, resource: &str, name: &str, error: &str) -> ApiError {
    let message = match (qualified.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {error}"),
        (false, true) => format!("{qualified} is forbidden: {error}"),
        (false, false) => format!("{qualified} {name:?} is forbidden: {error}"),
    };
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    if name.is_empty() {
        details.as_object_mut().map(|d| d.remove("name"));
    }
    super::errors::forbidden(message, details)
}

/// The rights a rule grants, one verb, group, resource and name at a time: the unit the
/// escalation check compares (`validation.Covers` breaks rules down the same way).
fn atoms(rule: &Rule) -> Vec<Rule> {
    let one = |v: &[String]| -> Vec<Vec<String>> {
        if v.is_empty() { vec![Vec::new()] } else { v.iter().map(|s| vec![s.clone()]).collect() }
    };
    let mut out = Vec::new();
    if !rule.non_resource_urls.is_empty() {
        for verb in &rule.verbs {
            for url in &rule.non_resource_urls {
                out.push(Rule { verbs: vec![verb.clone()], non_resource_urls: vec![url.clone()], ..Rule::default() });
            }
        }
        return out;
    }
    for verb in &rule.verbs {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for name in one(&rule.resource_names) {
                    out.push(Rule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        resource_names: name,
                        non_resource_urls: Vec::new(),
                    });
                }
            }
        }
    }
    out
}

/// Whether `owner` grants every right of the single-right rule `atom` (`ruleCovers`).
fn covers(owner: &Rule, atom: &Rule) -> bool {
    let all = |set: &[String], items: &[String]| has(set, "*") || items.iter().all(|i| has(set, i));
    let verbs = all(&owner.verbs, &atom.verbs);
    if !atom.non_resource_urls.is_empty() {
        let urls = atom.non_resource_urls.iter().all(|u| {
            owner
                .non_resource_urls
                .iter()
                .any(|o| o == "*" || o == u || o.strip_suffix('*').is_some_and(|p| u.starts_with(p)))
        });
        return verbs && urls;
    }
    let groups = all(&owner.api_groups, &atom.api_groups);
    let resources = has(&owner.resources, "*")
        || atom.resources.iter().all(|r| {
            has(&owner.resources, r)
                || r.split_once('/').is_some_and(|(_, sub)| has(&owner.resources, &format!("*/{sub}")))
        });
    let names = owner.resource_names.is_empty()
        || (!atom.resource_names.is_empty() && atom.resource_names.iter().all(|n| has(&owner.resource_names, n)));
    verbs && groups && resources && names
}

/// Refuses a Role, ClusterRole or binding that would grant `user` rights it does not hold in
/// `namespace` (`ConfirmNoEscalation`): the message lists the missing rights.
pub fn confirm_no_escalation(state: &State, user: &UserInfo, namespace: &str, granted: &[Rule]) -> Result<(), String> {
    if user.is_master() {
        return Ok(());
    }
    let (owned, errors) = rules_for(state, user, namespace);
    let missing: BTreeSet<String> = granted
        .iter()
        .flat_map(atoms)
        .filter(|atom| !owned.iter().any(|o| covers(o, atom)))
        .map(|atom| atom.compact())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.username,
        groups.join(" "),
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", errors.join(", ")));
    }
    Err(message)
}

/// The RBAC registry's check on a write of a role or binding: refused with 403 unless the user
/// may `escalate` (roles) or `bind` (bindings) it, or already holds every right it grants.
pub fn check_rbac_write(state: &State, user: &UserInfo, attrs: &Attributes, object: &Value) -> Result<(), ApiError> {
    let namespace = attrs.namespace.as_str();
    let name = object["metadata"]["name"].as_str().unwrap_or(&attrs.name).to_string();
    let special = |verb: &str, resource: &str, name: &str| {
        let attrs = Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: "rbac.authorization.k8s.io".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Attributes::default()
        };
        authorize(state, user, &attrs).is_ok()
    };
    let qualified = format!("{}.rbac.authorization.k8s.io", attrs.resource);
    let refuse =
        |message: &str| forbidden_object(&qualified, "rbac.authorization.k8s.io", &attrs.resource, &name, message);
    let granted: Vec<Rule> = match attrs.resource.as_str() {
        "roles" | "clusterroles" => {
            if special("escalate", &attrs.resource, &name) {
                return Ok(());
            }
            object["rules"].as_array().into_iter().flatten().map(Rule::from_json).collect()
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = &object["roleRef"];
            let (kind, role) =
                (role_ref["kind"].as_str().unwrap_or_default(), role_ref["name"].as_str().unwrap_or_default());
            let plural = if kind == "Role" { "roles" } else { "clusterroles" };
            if special("bind", plural, role) {
                return Ok(());
            }
            // A binding to a role that does not exist cannot be confirmed as no escalation.
            role_rules(state, kind, namespace, role).map_err(|e| refuse(&e))?
        }
        _ => return Ok(()),
    };
    confirm_no_escalation(state, user, namespace, &granted).map_err(|message| refuse(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: ::http::Method, path: &str) -> Request {
        Request::new(method, path)
    }

    #[test]
    fn request_attributes_follow_the_path_as_the_real_request_info_does() {
        let a = Attributes::of(&request(::http::Method::GET, "/api/v1/namespaces/team/pods/web/log"));
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("get", "team", "pods", "web", "log")
        );
        let a = Attributes::of(&request(::http::Method::GET, "/api/v1/namespaces/team"));
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.namespace.as_str()), ("namespaces", "team", "team"));
        let a = Attributes::of(&request(::http::Method::PUT, "/api/v1/namespaces/team/finalize"));
        assert_eq!(
            (a.resource.as_str(), a.subresource.as_str(), a.verb.as_str()),
            ("namespaces", "finalize", "update")
        );
        let a = Attributes::of(&request(::http::Method::DELETE, "/apis/apps/v1/namespaces/team/replicasets"));
        assert_eq!((a.verb.as_str(), a.api_group.as_str()), ("deletecollection", "apps"));
        let a = Attributes::of(&request(
            ::http::Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/x/leases?watch=true&fieldSelector=metadata.name%3Dmine",
        ));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "mine"));
        let a = Attributes::of(&request(::http::Method::GET, "/version"));
        assert!(!a.resource_request);
        assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", "/version"));
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let rule = Rule::from_json(&json!({"apiGroups": ["sv.sharedvolume.io"], "resources": ["sharedvolumes/status"],
            "resourceNames": ["a"], "verbs": ["patch"]}));
        let mut attrs = Attributes {
            verb: "patch".into(),
            resource_request: true,
            api_group: "sv.sharedvolume.io".into(),
            resource: "sharedvolumes".into(),
            subresource: "status".into(),
            namespace: "n".into(),
            name: "a".into(),
            ..Attributes::default()
        };
        assert!(rule.allows(&attrs));
        attrs.name = "b".into();
        assert!(!rule.allows(&attrs), "another name");
        attrs.name = "a".into();
        attrs.subresource.clear();
        assert!(!rule.allows(&attrs), "the main resource is not its status");
        let any_status = Rule::from_json(&json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}));
        attrs.subresource = "status".into();
        assert!(any_status.allows(&attrs));
        let urls = Rule::from_json(&json!({"nonResourceURLs": ["/healthz*"], "verbs": ["get"]}));
        let probe = Attributes { verb: "get".into(), path: "/healthz/ready".into(), ..Attributes::default() };
        assert!(urls.allows(&probe));
    }

    #[test]
    fn escalation_compares_single_rights() {
        let owner =
            Rule::from_json(&json!({"apiGroups": [""], "resources": ["secrets", "pods"], "verbs": ["get", "create"]}));
        let ok = Rule::from_json(
            &json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s"], "verbs": ["get"]}),
        );
        assert!(atoms(&ok).iter().all(|a| covers(&owner, a)));
        let more = Rule::from_json(&json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "delete"]}));
        let missing: Vec<String> = atoms(&more).iter().filter(|a| !covers(&owner, a)).map(Rule::compact).collect();
        assert_eq!(missing, [r#"{APIGroups:[""], Resources:["secrets"], Verbs:["delete"]}"#]);
        let named_owner = Rule::from_json(
            &json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s"], "verbs": ["get"]}),
        );
        let unnamed = Rule::from_json(&json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
        assert!(!covers(&named_owner, &atoms(&unnamed)[0]), "a right on one name does not cover every name");
    }
}
