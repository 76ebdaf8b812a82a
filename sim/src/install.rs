//! What `deploy/` installs that the simulation needs before anything runs: the operator's
//! ServiceAccount and the RBAC of its manifest, read from the manifest itself so that the
//! simulated operator has exactly the rights a cluster would give it.

use serde_json::Value;

use crate::api::ApiServer;

/// `deploy/base/operator.yaml`, as `kubectl apply -k deploy/` installs it.
pub const OPERATOR_MANIFEST: &str = include_str!("../../deploy/base/operator.yaml");

/// The kinds that make up a program's identity and rights.
const IDENTITY_KINDS: [&str; 6] =
    ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

/// The documents of a manifest.
pub fn documents(manifest: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(manifest).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The Namespace, ServiceAccount, roles and bindings of a manifest.
pub fn identity_objects(manifest: &str) -> Result<Vec<Value>, String> {
    Ok(documents(manifest)?.into_iter().filter(|d| IDENTITY_KINDS.iter().any(|k| d["kind"] == *k)).collect())
}

/// Creates the operator's namespace, ServiceAccount, roles and bindings (those already there are
/// kept).
pub fn operator_identity(api: &ApiServer) -> Result<(), String> {
    for object in identity_objects(OPERATOR_MANIFEST)? {
        match api.create_object(object, "kubectl") {
            Ok(_) => {}
            Err(e) if e.code() == 409 => {}
            Err(e) => return Err(format!("installing the operator's identity: {e:?}")),
        }
    }
    Ok(())
}

/// The operator's ServiceAccount: (namespace, name).
pub fn operator_service_account() -> (String, String) {
    let account = identity_objects(OPERATOR_MANIFEST)
        .unwrap_or_default()
        .into_iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (text(&account["metadata"]["namespace"]), text(&account["metadata"]["name"]))
}

/// A token of the operator's ServiceAccount (see [`operator_identity`]).
pub fn operator_token(api: &ApiServer) -> String {
    let (namespace, name) = operator_service_account();
    api.issue_token(&namespace, &name, None)
}

/// The object `group/plural` `namespace/name` as stored, if any.
pub fn stored(api: &ApiServer, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let state = api.state();
    let rt = state.registry.by_plural(group, plural)?.clone();
    state.store.get(&rt.id, namespace, name).map(|o| (**o).clone())
}

/// The webhook of `deploy/base/webhook.yaml` has published its CA in both of its configurations.
pub fn webhook_ca_published(api: &ApiServer) -> bool {
    ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"].iter().all(|plural| {
        stored(api, "admissionregistration.k8s.io", plural, "", "sharedvolume-webhook")
            .is_some_and(|c| c["webhooks"][0]["clientConfig"]["caBundle"].as_str().is_some_and(|b| !b.is_empty()))
    })
}

/// The webhook answers: its CA is published and its Service has a ready endpoint.
pub fn webhook_serving(api: &ApiServer) -> bool {
    let namespace = sv_operator::plan::DEFAULT_OPERATOR_NAMESPACE;
    webhook_ca_published(api)
        && stored(api, "", "endpoints", namespace, "sv-webhook").is_some_and(|e| {
            e["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["addresses"].as_array().is_some_and(|a| !a.is_empty()))
        })
}
