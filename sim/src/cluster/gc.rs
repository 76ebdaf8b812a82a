//! The namespace controller and the garbage collector.

use serde_json::{Value, json};

use super::{Pass, deleting, name, namespace, uid};
use crate::api::DeleteOptions;

const MANAGER: &str = "kube-controller-manager";
const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";
const GARBAGE_COLLECTOR: &str = "system:serviceaccount:kube-system:generic-garbage-collector";

/// New namespaces get their `default` ServiceAccount and `kube-root-ca.crt`; a terminating
/// namespace has its content deleted, reports what remains, and goes once it is empty.
pub(super) fn namespaces(pass: &mut Pass) {
    let namespaced: Vec<(String, String)> = pass
        .state
        .registry
        .types()
        .filter(|t| t.namespaced)
        .map(|t| (t.id.group.clone(), t.id.plural.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for ns in pass.list("", "namespaces", None) {
        let ns_name = name(&ns).to_string();
        if !deleting(&ns) {
            if pass.get("", "serviceaccounts", &ns_name, "default").is_none() {
                let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns_name}});
                pass.create("", "serviceaccounts", sa, MANAGER);
            }
            if pass.get("", "configmaps", &ns_name, "kube-root-ca.crt").is_none() {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "kube-root-ca.crt", "namespace": ns_name},
                    "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nsimulated\n-----END CERTIFICATE-----\n"}});
                pass.create("", "configmaps", cm, MANAGER);
            }
            continue;
        }
        let mut remaining: Vec<(String, usize)> = Vec::new();
        let mut finalizers: std::collections::BTreeMap<String, usize> = Default::default();
        for (group, plural) in &namespaced {
            let objects = pass.list(group, plural, Some(&ns_name));
            for object in &objects {
                if !deleting(object) {
                    pass.delete_as(group, plural, object, DeleteOptions::default(), NAMESPACE_CONTROLLER);
                }
            }
            let left = pass.list(group, plural, Some(&ns_name));
            if !left.is_empty() {
                let resource = if group.is_empty() { format!("{plural}.") } else { format!("{plural}.{group}") };
                remaining.push((resource, left.len()));
                for object in &left {
                    for f in object["metadata"]["finalizers"].as_array().into_iter().flatten().filter_map(Value::as_str)
                    {
                        *finalizers.entry(f.to_string()).or_default() += 1;
                    }
                }
            }
        }
        if remaining.is_empty() {
            let mut done = (*ns).clone();
            done["spec"]["finalizers"] = json!([]);
            pass.update("", "namespaces", done, MANAGER);
            continue;
        }
        let now = ns["status"]["conditions"]
            .as_array()
            .and_then(|c| c.first())
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(String::from)
            .unwrap_or_else(|| pass.now());
        let condition = |kind: &str, status: &str, reason: &str, message: String| json!({"type": kind, "status": status, "lastTransitionTime": now, "reason": reason, "message": message});
        let content: Vec<String> = remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        let mut conditions = vec![
            condition(
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
            condition(
                "NamespaceDeletionGroupVersionParsingFailure",
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".into(),
            ),
            condition(
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            ),
            condition(
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", content.join(", ")),
            ),
        ];
        if !finalizers.is_empty() {
            let list: Vec<String> = finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
            conditions.push(condition(
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                format!("Some content in the namespace has finalizers remaining: {}", list.join(", ")),
            ));
        }
        let status = json!({"phase": "Terminating", "conditions": conditions});
        pass.set_status("", "namespaces", &ns, status, MANAGER);
    }
}

/// Deletes dependents whose owners are gone or deleted in the foreground, strips references to
/// owners deleted with `Orphan`, and releases owners whose dependents are all gone.
pub(super) fn collect_garbage(pass: &mut Pass) {
    let kinds: Vec<(String, String, bool)> = pass
        .state
        .registry
        .types()
        .map(|t| (t.id.group.clone(), t.id.plural.clone(), t.namespaced))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut referenced = std::collections::BTreeSet::new();
    for (group, plural, _) in &kinds {
        for object in pass.list(group, plural, None) {
            let Some(refs) = object["metadata"]["ownerReferences"].as_array() else { continue };
            let mut alive = false;
            let mut foreground = false;
            let mut orphaned = Vec::new();
            for reference in refs {
                referenced.insert(reference["uid"].as_str().unwrap_or_default().to_string());
                let known = reference["apiVersion"]
                    .as_str()
                    .zip(reference["kind"].as_str())
                    .is_some_and(|(v, k)| pass.state.registry.by_kind(v, k).is_some());
                if !known {
                    // An owner of a kind the server does not serve is never assumed gone.
                    alive = true;
                    continue;
                }
                if let Some(owner) = owner_of(pass, &object, reference) {
                    alive = true;
                    let held_by =
                        |f: &str| owner["metadata"]["finalizers"].as_array().is_some_and(|l| l.iter().any(|x| x == f));
                    if deleting(&owner) && held_by("foregroundDeletion") {
                        foreground = true;
                    }
                    if deleting(&owner) && held_by("orphan") {
                        orphaned.push(reference["uid"].clone());
                    }
                }
            }
            if !orphaned.is_empty() {
                let mut stripped = (*object).clone();
                let kept: Vec<Value> = refs.iter().filter(|r| !orphaned.contains(&r["uid"])).cloned().collect();
                if let Some(meta) = stripped["metadata"].as_object_mut() {
                    if kept.is_empty() {
                        meta.remove("ownerReferences");
                    } else {
                        meta.insert("ownerReferences".into(), json!(kept));
                    }
                }
                pass.update(group, plural, stripped, MANAGER);
            } else if (!alive || foreground) && !deleting(&object) {
                // As the real collector (recorded): preconditions on the uid and version it saw,
                // and no grace period, so a pod on a node gets its own and ends through its
                // kubelet, which stops its containers first.
                let options = DeleteOptions {
                    uid: Some(super::uid(&object).to_string()),
                    resource_version: object["metadata"]["resourceVersion"].as_str().map(str::to_string),
                    propagation: Some("Background".to_string()),
                    ..DeleteOptions::default()
                };
                pass.delete_as(group, plural, &object, options, GARBAGE_COLLECTOR);
            }
        }
    }
    for (group, plural, _) in &kinds {
        for object in pass.list(group, plural, None) {
            if !deleting(&object) {
                continue;
            }
            let Some(list) = object["metadata"]["finalizers"].as_array() else { continue };
            let release = ["foregroundDeletion", "orphan"];
            if !list.iter().any(|f| release.iter().any(|r| f == r)) || referenced.contains(uid(&object)) {
                continue;
            }
            let kept: Vec<Value> = list.iter().filter(|f| !release.iter().any(|r| *f == r)).cloned().collect();
            let mut released = (*object).clone();
            released["metadata"]["finalizers"] = json!(kept);
            pass.update(group, plural, released, MANAGER);
        }
    }
}

/// The live owner a reference points to (same uid), if any.
fn owner_of(pass: &Pass, dependent: &Value, reference: &Value) -> Option<std::sync::Arc<Value>> {
    let rt = pass.state.registry.by_kind(reference["apiVersion"].as_str()?, reference["kind"].as_str()?)?;
    let ns = if rt.namespaced { namespace(dependent) } else { "" };
    let owner = pass.state.store.get(&rt.id, ns, reference["name"].as_str()?)?.clone();
    (owner["metadata"]["uid"] == reference["uid"]).then_some(owner)
}
