//! The install manifests' RBAC against the API calls the programs really make: the whole system
//! runs in a world whose API server authorizes every request by RBAC (the operator with the
//! rights of `deploy/base/operator.yaml`, the webhook with those of `deploy/base/webhook.yaml`, each syncer
//! with the Role the operator made for it), and
//! - no request of ours is refused (a missing verb shows as a 403 here, as on a cluster);
//! - every right the manifests grant was used by some request (least privilege: a right nothing
//!   uses is a right to remove), except the few listed with the reason they are kept.
//!
//! Plus the authenticator and authorizer themselves against the real server's answers: 401 for
//! tokens it does not accept, the 403 wording, and the escalation check on roles and bindings.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use sv_sim::api::auth::{ADMIN_TOKEN, Attributes, Rule};
use sv_sim::api::{ApiError, ApiServer, AuditEntry, Request, Response, WriteOptions};
use sv_sim::examples::{self, EXTERNAL_NFS};
use sv_sim::install::documents;
use sv_sim::world::{World, WorldConfig};

const OPERATOR_USER: &str = "system:serviceaccount:shared-volume-controller-system:sharedvolume-operator";
const WEBHOOK_USER: &str = "system:serviceaccount:shared-volume-controller-system:sharedvolume-webhook";
const OPERATOR_MANIFEST: &str = include_str!("../../deploy/base/operator.yaml");
const WEBHOOK_MANIFEST: &str = include_str!("../../deploy/base/webhook.yaml");

/// Rights a manifest grants that the run below does not exercise, each with why it stays.
const KEPT_UNUSED: &[(&str, &str)] = &[
    (
        "update sharedvolumes/finalizers.sv.sharedvolume.io",
        "children point at their volume with blockOwnerDeletion, which clusters with the OwnerReferencesPermissionEnforcement admission plugin (not modelled) authorize as this",
    ),
    ("update clustersharedvolumes/finalizers.sv.sharedvolume.io", "as for sharedvolumes/finalizers"),
    ("get namespaces.", "the operator reads a namespace its cache has not seen yet (controller/cache.rs)"),
    ("get storageclasses.storage.k8s.io", "the operator reads a StorageClass its cache has not seen yet"),
    ("update secrets. [\"sv-webhook-tls\"]", "the webhook rotates its certificate after months, not within a run"),
];

/// Creates and then deletes annotated consumer pods through the API server, as `kubectl` does.
fn consumers(world: &mut World, pods: Vec<(&'static str, &'static str, Value)>, delete: bool) {
    let results: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = results.clone();
    let count = pods.len();
    world.sim.client(format!("kubectl-{}", if delete { "delete" } else { "create" }), async move {
        let client = sv_sim::net::kube_client("api", sv_sim::world::API_PORT)?;
        for (namespace, name, annotations) in pods {
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let result = if delete {
                api.delete(name, &DeleteParams::default()).await.map(|_| ())
            } else {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "annotations": annotations},
                    "spec": {"containers": [{"name": "app", "image": "busybox"}]},
                }))?;
                api.create(&PostParams::default(), &pod).await.map(|_| ())
            };
            record.lock().map_err(|e| e.to_string())?.push(format!("{namespace}/{name}: {result:?}"));
        }
        Ok(())
    });
    let done = results.clone();
    let finished = world.run_until(Duration::from_secs(120), |_| done.lock().map(|r| r.len() == count).unwrap_or(true));
    assert!(finished.expect("run"), "the client did not finish");
    for line in results.lock().expect("lock").iter() {
        assert!(line.ends_with("Ok(())"), "{line}");
    }
}

/// The example that names an NFS Service this cluster does not have, and fails by design.
const FAILS_BY_DESIGN: &str = "http-nfs-service-csv";

/// A volume is where the main job leaves it: Ready, or Failed for the one example that must.
fn settled(volume: &Value) -> bool {
    let expected = if volume["metadata"]["name"] == FAILS_BY_DESIGN { "Failed" } else { "Ready" };
    volume["status"]["phase"] == expected
}

/// What `kubectl apply -k deploy/` installs, as `kubectl kustomize` renders it (the CRDs aside:
/// the world has them already, as generated, which `tests/install.rs` shows are the same); the
/// raw manifests of the base where kubectl is missing.
fn install_objects() -> Vec<Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rendered = std::process::Command::new("kubectl").arg("kustomize").arg(&root).output();
    let text = match rendered {
        Ok(output) if output.status.success() => String::from_utf8(output.stdout).expect("UTF-8"),
        Ok(output) => panic!("kubectl kustomize deploy: {}", String::from_utf8_lossy(&output.stderr)),
        Err(e) => {
            common::skip(&format!("kubectl is not installed ({e}): installing the raw manifests of deploy/base"));
            let mut objects = documents(OPERATOR_MANIFEST).expect("deploy/base/operator.yaml parses");
            objects.extend(documents(WEBHOOK_MANIFEST).expect("deploy/base/webhook.yaml parses"));
            return objects;
        }
    };
    documents(&text)
        .expect("the render parses")
        .into_iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .collect()
}

/// The operator's pods (of its Deployment).
fn operator_pods(api: &ApiServer) -> Vec<String> {
    let state = api.state();
    let Some(rt) = state.registry.find("", "v1", "pods") else { return Vec::new() };
    state
        .store
        .list(&rt.id, Some("shared-volume-controller-system"))
        .filter(|(_, pod)| pod["metadata"]["labels"]["app.kubernetes.io/name"] == "sharedvolume-operator")
        .map(|((_, name), _)| name.clone())
        .collect()
}

/// Answers a request made in process, as (code, body).
fn answer(api: &ApiServer, request: Request) -> (u16, Value) {
    match futures::executor::block_on(api.handle(request)) {
        Response::Json { code, body, .. } => (code, body),
        Response::Error(ApiError::Status { code, body }) => (code, body),
        other => (other.code(), Value::Null),
    }
}

/// Stores `object` in place of the one of its name, or as a new one.
fn put(api: &ApiServer, object: Value) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (kind, name) = (text(&object["kind"]), text(&object["metadata"]["name"]));
    let mut state = api.state();
    let rt = state.registry.types().find(|t| t.kind == kind).cloned().unwrap_or_else(|| panic!("no kind {kind}"));
    let (namespace, _) = sv_sim::api::store::object_key(&object);
    let result = if state.store.get(&rt.id, &namespace, &name).is_some() {
        api.update_in(&mut state, &rt, object, &WriteOptions::controller("kubectl"))
    } else {
        drop(state);
        api.create_object(object, "kubectl")
    };
    result.unwrap_or_else(|e| panic!("{kind} {namespace}/{name}: {e:?}"));
}

/// The whole system from install to uninstall, with the audit log on: the operator and the
/// webhook as the pods of their manifests, every example volume, consumer pods in three
/// namespaces, the operator's pods replaced, then every volume deleted. `tamper` edits the
/// manifests' objects before they are installed. Returns the audit log, or why the volumes did
/// not settle with the requests refused on the way.
fn run_system(tamper: impl Fn(&mut Vec<Value>)) -> Result<Vec<AuditEntry>, String> {
    sv_sim::init_test_logging();
    // The operator is not the world's own: it runs as the pods of its Deployment, installed
    // from its manifest with the webhook's.
    let config = WorldConfig {
        external_nfs: EXTERNAL_NFS.map(String::from).to_vec(),
        operator: false,
        ..WorldConfig::default()
    };
    assert!(config.authorization, "the default world authorizes by RBAC");
    let mut world = World::new(config).expect("a world");
    world.api.start_audit();
    assert!(examples::install(&world).expect("install").is_empty());
    let mut objects = install_objects();
    tamper(&mut objects);
    for object in objects {
        put(&world.api, object);
    }
    let mut documents = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-c"}}),
    ];
    for (file, _) in examples::EXAMPLES {
        documents.extend(examples::example(file).expect("example"));
    }
    for result in world.create_all(documents) {
        result.expect("create");
    }
    let up = world.run_until(Duration::from_secs(600), |api| {
        let volumes = examples::volumes(api);
        sv_sim::install::webhook_serving(api) && !volumes.is_empty() && volumes.iter().all(settled)
    });
    if !up.expect("run") {
        let summary: Vec<String> = examples::volumes(&world.api)
            .iter()
            .map(|v| format!("{} {}", v["metadata"]["name"], v["status"]["phase"]))
            .collect();
        let refused: Vec<String> = world.api.audit().iter().filter(|e| e.code == 403).map(describe).collect();
        return Err(format!("the volumes did not settle: {summary:?}; refused: {refused:#?}"));
    }
    // Consumers through the webhook: a SharedVolume of the pod's namespace, and
    // ClusterSharedVolumes in two other namespaces.
    let sv = |names: &str| json!({"sharedvolume.sv": names});
    let csv = |names: &str| json!({"sharedvolume.csv": names});
    let pods = vec![
        ("default", "reader", sv("http-sv")),
        ("team-b", "reader", csv("http-csv")),
        ("team-c", "reader", csv("nosource-csv")),
    ];
    consumers(&mut world, pods.clone(), false);
    let mounted = world.run_until(Duration::from_secs(120), |api| {
        ["default", "team-b", "team-c"].iter().all(|ns| {
            sv_sim::install::stored(api, "", "pods", ns, "reader").is_some_and(|p| p["status"]["phase"] == "Running")
        })
    });
    assert!(mounted.expect("run"), "the consumer pods did not start");
    consumers(&mut world, pods, true);
    // A restarted operator reads each child once to check it still holds its plan: both of its
    // pods are deleted, and their replacements elect a new leader.
    for pod in operator_pods(&world.api) {
        let path = format!("/api/v1/namespaces/shared-volume-controller-system/pods/{pod}");
        let (code, body) = answer(&world.api, Request::new(::http::Method::DELETE, &path));
        assert_eq!(code, 200, "deleting {pod}: {body}");
    }
    let still = world.run_until(Duration::from_secs(180), |api| {
        examples::volumes(api).iter().all(settled)
            && api
                .audit()
                .iter()
                .rev()
                .take(2_000)
                .any(|e| e.user == OPERATOR_USER && e.verb == "get" && e.resource == "statefulsets")
    });
    assert!(
        still.expect("run"),
        "after a restart the operator re-read its children and the volumes stayed as they were"
    );
    // Uninstall: every volume deleted, everything the operator made removed.
    for volume in examples::volumes(&world.api) {
        let plural = if volume["kind"] == "SharedVolume" { "sharedvolumes" } else { "clustersharedvolumes" };
        let name = volume["metadata"]["name"].as_str().unwrap_or_default();
        let path = match volume["metadata"]["namespace"].as_str() {
            Some(ns) => format!("/apis/sv.sharedvolume.io/v1alpha1/namespaces/{ns}/{plural}/{name}"),
            None => format!("/apis/sv.sharedvolume.io/v1alpha1/{plural}/{name}"),
        };
        let (code, body) = answer(&world.api, Request::new(::http::Method::DELETE, &path));
        assert_eq!(code, 200, "deleting {name}: {body}");
    }
    let cleaned = world.run_until(Duration::from_secs(300), |api| {
        examples::volumes(api).is_empty() && examples::managed_objects(api).is_empty()
    });
    assert!(cleaned.expect("run"), "left: {:?}", examples::managed_objects(&world.api));
    Ok(world.api.audit())
}

fn describe(entry: &AuditEntry) -> String {
    let a = &entry.attributes;
    format!(
        "{} {} {} {}.{} ns={:?} name={:?} -> {}",
        entry.at,
        entry.user,
        a.verb,
        a.combined_resource(),
        a.api_group,
        a.namespace,
        a.name,
        entry.code
    )
}

/// Every single right (verb, group, resource, name) the roles bound to `user` in a manifest
/// grant, with the rule it came from.
fn granted(manifest: &str, account: &str) -> Vec<Rule> {
    let objects = documents(manifest).expect("manifest parses");
    let bound: BTreeSet<String> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .filter(|o| o["subjects"].as_array().into_iter().flatten().any(|s| s["name"] == account))
        .filter_map(|o| o["roleRef"]["name"].as_str().map(String::from))
        .collect();
    let mut atoms = Vec::new();
    for role in objects.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
        if !bound.contains(role["metadata"]["name"].as_str().unwrap_or_default()) {
            continue;
        }
        for rule in role["rules"].as_array().into_iter().flatten() {
            let rule = Rule::from_json(rule);
            for verb in &rule.verbs {
                for group in &rule.api_groups {
                    for resource in &rule.resources {
                        atoms.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: rule.resource_names.clone(),
                            non_resource_urls: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    atoms
}

/// An apply that created its object was authorized as a create too (kube-apiserver's
/// `withAuthorization` on the patch handler's create path).
fn created_by_apply(entry: &AuditEntry) -> Attributes {
    let mut attrs = entry.attributes.clone();
    if attrs.verb == "patch" && entry.code == 201 {
        attrs.verb = "create".into();
    }
    attrs
}

fn right(rule: &Rule) -> String {
    let names = if rule.resource_names.is_empty() { String::new() } else { format!(" {:?}", rule.resource_names) };
    format!("{} {}.{}{names}", rule.verbs[0], rule.resources[0], rule.api_groups[0])
}

#[test]
fn every_request_of_the_system_is_allowed_and_every_granted_right_is_used() {
    let audit = run_system(|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(audit.len() > 1_000, "the audit log recorded the run ({} requests)", audit.len());
    // The uninstall included: the operator deletes a volume's workloads first, and its syncer's
    // ServiceAccount, Role and Lease only once the syncer's pods are gone (plan::workloads_first);
    // a replaced pod's last requests carry a token that is still valid while it drains.
    let refused: Vec<String> = audit.iter().filter(|e| e.code == 401 || e.code == 403).map(describe).collect();
    assert!(refused.is_empty(), "requests refused: {refused:#?}");

    let (mut unused, mut kept) = (Vec::new(), BTreeSet::new());
    for (manifest, account, user) in [
        (OPERATOR_MANIFEST, "sharedvolume-operator", OPERATOR_USER),
        (WEBHOOK_MANIFEST, "sharedvolume-webhook", WEBHOOK_USER),
    ] {
        let requests: Vec<&AuditEntry> = audit.iter().filter(|e| e.user == user).collect();
        assert!(requests.len() > 10, "{user} made {} requests: is it authenticated?", requests.len());
        for atom in granted(manifest, account) {
            if !requests.iter().any(|e| atom.allows(&e.attributes) || atom.allows(&created_by_apply(e))) {
                let right = right(&atom);
                match KEPT_UNUSED.iter().find(|(listed, _)| *listed == right) {
                    Some((listed, _)) => {
                        kept.insert(*listed);
                    }
                    None => unused.push(format!("{account}: {right}")),
                }
            }
        }
    }
    assert!(unused.is_empty(), "granted but never used (remove, or keep in KEPT_UNUSED with the reason): {unused:#?}");
    // The list of kept rights cannot rot: each is still granted, and still unused.
    let stale: Vec<&str> = KEPT_UNUSED.iter().map(|(right, _)| *right).filter(|r| !kept.contains(r)).collect();
    assert!(stale.is_empty(), "KEPT_UNUSED names rights now used or no longer granted: {stale:?}");
    let syncer_requests = audit.iter().filter(|e| e.user.contains("-syncer")).count();
    assert!(syncer_requests > 10, "the syncers ran as their ServiceAccounts ({syncer_requests} requests)");
}

#[test]
fn a_verb_taken_from_the_operators_role_stops_what_needs_it_with_the_real_refusal() {
    // Services keep every verb of their rule but create.
    let take_service_create = |objects: &mut Vec<Value>| {
        let role = objects
            .iter_mut()
            .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "sharedvolume-operator")
            .expect("the operator's ClusterRole");
        let rules = role["rules"].as_array_mut().expect("rules");
        let rule = rules
            .iter_mut()
            .find(|r| r["resources"].as_array().is_some_and(|r| r.iter().any(|r| r == "services")))
            .expect("a rule on services");
        let mut without = rule.clone();
        rule["resources"].as_array_mut().expect("resources").retain(|r| r != "services");
        without["resources"] = json!(["services"]);
        without["verbs"].as_array_mut().expect("verbs").retain(|v| v != "create");
        rules.push(without);
    };
    let refusal = run_system(take_service_create).expect_err("the system ran without the right to create Services");
    assert!(
        refusal.contains(&format!("{OPERATOR_USER} patch services. ns=")),
        "the refusal names the operator and the verb: {refusal}"
    );
}

/// A request from a client on the network, with a bearer token or none.
fn call(api: &ApiServer, method: ::http::Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = Request::new(method, path);
    if let Some(body) = body {
        request = request.with_json("application/json", &body);
    }
    request.bearer = token.map(String::from);
    request.peer = Some(std::net::IpAddr::from([10, 0, 0, 9]));
    answer(api, request)
}

#[test]
fn tokens_are_checked_and_refusals_read_as_the_real_servers() {
    let world =
        World::new(WorldConfig { operator: false, programs: false, ..WorldConfig::default() }).expect("a world");
    let api = &world.api;
    let create = |o: Value| api.create_object(o, "kubectl").expect("create");
    create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "team"}}));
    create(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "roles", "namespace": "team"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
                  {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create"]}]}),
    );
    create(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "app", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "roles"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team"}]}),
    );
    let token = api.issue_token("team", "app", None);
    let get = ::http::Method::GET;

    assert_eq!(call(api, get.clone(), "/api/v1/namespaces/team/configmaps", Some(&token), None).0, 200);
    let (code, body) = call(api, get.clone(), "/api/v1/namespaces/team/secrets/s", Some(&token), None);
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        r#"secrets "s" is forbidden: User "system:serviceaccount:team:app" cannot get resource "secrets" in API group "" in the namespace "team""#
    );
    assert_eq!(body["details"], json!({"name": "s", "kind": "secrets"}));
    let (code, body) = call(api, get.clone(), "/apis/apps/v1/deployments", Some(&token), None);
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        r#"deployments.apps is forbidden: User "system:serviceaccount:team:app" cannot list resource "deployments" in API group "apps" at the cluster scope"#
    );
    // Without credentials: anonymous, which may read the version and nothing else.
    assert_eq!(call(api, get.clone(), "/version", None, None).0, 200);
    let (code, body) = call(api, get.clone(), "/api/v1/namespaces", None, None);
    assert_eq!(
        (code, body["message"].as_str()),
        (
            403,
            Some(
                r#"namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" at the cluster scope"#
            )
        )
    );
    // Discovery is every authenticated user's.
    assert_eq!(call(api, get.clone(), "/apis", Some(&token), None).0, 200);
    assert_eq!(call(api, get.clone(), "/apis", Some(ADMIN_TOKEN), None).0, 200);

    // A Role granting what its creator does not hold is an escalation.
    let role = |verbs: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "more", "namespace": "team"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]})
    };
    let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles";
    let (code, body) = call(api, ::http::Method::POST, roles, Some(&token), Some(role(json!(["get", "delete"]))));
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "roles.rbac.authorization.k8s.io \"more\" is forbidden: user \"system:serviceaccount:team:app\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:team\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"configmaps\"], Verbs:[\"delete\"]}"
    );
    assert_eq!(call(api, ::http::Method::POST, roles, Some(&token), Some(role(json!(["get"])))).0, 201);
    // Binding a role whose rights the creator lacks is one too.
    let binding = |role: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("to-{role}"), "namespace": "team"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "team"}]})
    };
    let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/team/rolebindings";
    let (code, body) = call(api, ::http::Method::POST, bindings, Some(&token), Some(binding("cluster-admin")));
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("is attempting to grant RBAC permissions not currently held"))
    );

    // Tokens: unknown, and of a ServiceAccount since deleted, are 401.
    let (code, body) = call(api, get.clone(), "/api/v1/namespaces/team/configmaps", Some("forged"), None);
    assert_eq!(
        (code, body["reason"].as_str(), body["message"].as_str()),
        (401, Some("Unauthorized"), Some("Unauthorized"))
    );
    answer(api, Request::new(::http::Method::DELETE, "/api/v1/namespaces/team/serviceaccounts/app"));
    assert_eq!(call(api, get.clone(), "/api/v1/namespaces/team/configmaps", Some(&token), None).0, 401);
    // The administrator's static token is a member of system:masters.
    let (code, body) = call(api, get, "/api/v1/namespaces/team/configmaps", Some(ADMIN_TOKEN), None);
    assert_eq!(code, 200, "{body}");
}

/// The TokenRequest API (`kubectl create token`): a token for a ServiceAccount, valid until its
/// expiry and, when bound to a pod, while that pod lives; its validation and its own RBAC right.
#[test]
fn token_requests_issue_tokens_that_expire_and_die_with_their_pod() {
    let mut world =
        World::new(WorldConfig { operator: false, programs: false, ..WorldConfig::default() }).expect("a world");
    let create = |api: &ApiServer, o: Value| api.create_object(o, "kubectl").expect("create");
    create(&world.api, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    create(
        &world.api,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "team"}}),
    );
    let post = ::http::Method::POST;
    let get = ::http::Method::GET;
    let path = "/api/v1/namespaces/team/serviceaccounts/app/token";
    let request = |seconds: Value, bound: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds, "boundObjectRef": bound}})
    };

    let (code, body) = call(&world.api, post.clone(), path, Some(ADMIN_TOKEN), Some(request(json!(600), Value::Null)));
    assert_eq!(code, 201, "{body}");
    assert_eq!((body["kind"].as_str(), body["spec"]["expirationSeconds"].as_i64()), (Some("TokenRequest"), Some(600)));
    let token = body["status"]["token"].as_str().expect("a token").to_string();
    let issued_at = world.api.clock().now();
    let expires: k8s_openapi::jiff::Timestamp =
        body["status"]["expirationTimestamp"].as_str().expect("expiry").parse().expect("a time");
    assert_eq!(expires.duration_since(issued_at).as_secs(), 600);
    // Authenticated (a 403 for a right it lacks, not a 401), as its ServiceAccount.
    let (code, body) = call(&world.api, get.clone(), "/api/v1/namespaces/team/configmaps", Some(&token), None);
    assert_eq!(code, 403, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains(r#"User "system:serviceaccount:team:app""#)), "{body}");
    // Asking for a token is a right of its own.
    let (code, body) = call(&world.api, post.clone(), path, Some(&token), Some(request(json!(600), Value::Null)));
    assert_eq!(code, 403);
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(r#"cannot create resource "serviceaccounts/token""#)),
        "{body}"
    );

    let (code, body) = call(&world.api, post.clone(), path, Some(ADMIN_TOKEN), Some(request(json!(599), Value::Null)));
    assert_eq!(code, 422);
    assert_eq!(
        body["message"],
        r#"TokenRequest.authentication.k8s.io "app" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"#
    );
    let missing = "/api/v1/namespaces/team/serviceaccounts/nobody/token";
    assert_eq!(
        call(&world.api, post.clone(), missing, Some(ADMIN_TOKEN), Some(request(json!(600), Value::Null))).0,
        404
    );

    // Bound to a pod: it dies with the pod.
    let pod = create(
        &world.api,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team"},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "c", "image": "busybox"}]}}),
    );
    let bound = json!({"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod["metadata"]["uid"]});
    let (code, body) = call(&world.api, post.clone(), path, Some(ADMIN_TOKEN), Some(request(json!(3600), bound)));
    assert_eq!(code, 201, "{body}");
    let pod_token = body["status"]["token"].as_str().expect("a token").to_string();
    assert_eq!(call(&world.api, get.clone(), "/api/v1/namespaces/team/configmaps", Some(&pod_token), None).0, 403);
    let mut state = world.api.state();
    let pods = state.registry.find("", "v1", "pods").cloned().expect("pods");
    let gone = sv_sim::api::DeleteOptions { grace_period: Some(0), ..Default::default() };
    world.api.delete_in(&mut state, &pods, "team", "p", &gone).expect("delete the pod");
    drop(state);
    assert_eq!(call(&world.api, get.clone(), "/api/v1/namespaces/team/configmaps", Some(&pod_token), None).0, 401);

    // Past its expiry, the first token is refused.
    world.run_for(Duration::from_secs(601)).expect("run");
    assert_eq!(call(&world.api, get.clone(), "/api/v1/namespaces/team/configmaps", Some(&token), None).0, 401);

    let (_, discovery) = call(&world.api, get, "/api/v1", Some(ADMIN_TOKEN), None);
    let token_entry =
        discovery["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "serviceaccounts/token");
    assert_eq!(token_entry.map(|r| r["kind"].clone()), Some(json!("TokenRequest")), "discovery lists the subresource");
}

/// The recorded request of `../shared/admission/requests/004-pod-create-multi-container.json`:
/// the pod a real v1.36.2 server showed its webhooks, after its built-in admission.
const RECORDED_MULTI_CONTAINER: &str =
    include_str!("../../webhook/tests/admission/requests/004-pod-create-multi-container.json");

#[test]
fn pods_get_the_service_account_token_volume_as_the_recorded_server_adds_it() {
    let world =
        World::new(WorldConfig { operator: false, programs: false, ..WorldConfig::default() }).expect("a world");
    let api = &world.api;
    api.create_object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}), "kubectl")
        .expect("ns");
    let recorded: Value = serde_json::from_str(RECORDED_MULTI_CONTAINER).expect("recorded request");
    let recorded = &recorded["request"]["object"];
    let manifest = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "multi-container", "namespace": "team-a", "labels": {"app": "multi"}},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox:1.36", "volumeMounts": [{"name": "scratch", "mountPath": "/work"}]}],
            "containers": [{"name": "app", "image": "busybox:1.36", "volumeMounts": [{"name": "scratch", "mountPath": "/work"}]},
                           {"name": "sidecar", "image": "busybox:1.36"}],
            "volumes": [{"name": "scratch", "emptyDir": {}}]}});
    // Before the namespace's `default` ServiceAccount exists, the plugin refuses the pod.
    let early = api.create_object(manifest.clone(), "kubectl").expect_err("no ServiceAccount yet");
    assert_eq!(early.code(), 403);
    assert!(
        format!("{early:?}").contains("pods \\\"multi-container\\\" is forbidden: error looking up service account team-a/default: serviceaccount \\\"default\\\" not found"),
        "{early:?}"
    );
    // What the ServiceAccount controller does a moment after the namespace appears.
    api.create_object(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "team-a"}}),
        "kube-controller-manager",
    )
    .expect("the namespace's default ServiceAccount");
    let stored = api.create_object(manifest.clone(), "kubectl").expect("pod");
    // The volume's name ends in a random suffix on a real server.
    let suffix_free = |pod: &Value| {
        let text = pod.to_string();
        let name = pod["spec"]["volumes"][1]["name"].as_str().unwrap_or_default().to_string();
        assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5, "{name}");
        serde_json::from_str::<Value>(&text.replace(&name, "kube-api-access-XXXXX")).expect("json")
    };
    let (ours, mut theirs) = (suffix_free(&stored), suffix_free(recorded));
    // The recording's server adds a fourth source, OpenShift's service CA, which upstream
    // kube-apiserver does not (plugin/pkg/admission/serviceaccount, TokenVolumeSource).
    let sources = theirs["spec"]["volumes"][1]["projected"]["sources"].as_array_mut().expect("sources");
    assert_eq!(sources.pop().expect("a fourth source")["configMap"]["name"], "openshift-service-ca.crt");
    assert_eq!(ours["spec"]["volumes"], theirs["spec"]["volumes"]);
    for key in ["initContainers", "containers"] {
        let mounts = |pod: &Value| -> Vec<Value> {
            pod["spec"][key].as_array().expect("containers").iter().map(|c| c["volumeMounts"].clone()).collect()
        };
        assert_eq!(mounts(&ours), mounts(&theirs), "{key}");
    }
    // Turned off by the pod (or its ServiceAccount): no volume, no mounts.
    let mut quiet = manifest;
    quiet["metadata"]["name"] = json!("quiet");
    quiet["spec"]["automountServiceAccountToken"] = json!(false);
    let stored = api.create_object(quiet, "kubectl").expect("pod");
    assert_eq!(stored["spec"]["volumes"].as_array().map(Vec::len), Some(1));
    assert_eq!(stored["spec"]["containers"][1].get("volumeMounts"), None);
}
