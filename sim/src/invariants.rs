//! The system's invariants on what the API server stores, checked by the [`World`] after every
//! simulated step on the writes committed since the last check, so every write is looked at once:
//!
//! - a volume's NFS address (`status.nfsServerAddress`, which consumers mount) never changes once
//!   reported, and does not vanish while the volume exists;
//! - no value of a Secret (as written, before or after a rotation) appears in a volume's status or
//!   in an Event of either API (they share one storage, as on a real server; the whole object is
//!   searched);
//! - no pod is created that mounts a ClusterSharedVolume's claim in a namespace the volume's
//!   `namespaceSelector` does not allow (checked with the simulation's own selector code, not the
//!   webhook's).
//!
//! The consumers' invariants over NFS are in [`crate::programs::consumer`]; both stop the run.
//!
//! [`World`]: crate::world::World

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use crate::api::selector::LabelSelector;
use crate::api::store::{ChangeKind, Store};

/// Values shorter than this are not searched for (a `"true"` or a port would match anything).
const SHORTEST_SECRET: usize = 6;

/// What is checked, and how often.
#[derive(Clone, Debug, Default)]
pub struct Invariants {
    /// The store's resource version up to which every write was checked.
    checked_up_to: u64,
    /// The first NFS address each volume reported.
    addresses: BTreeMap<String, String>,
    /// Every Secret value written so far.
    secrets: Vec<String>,
    /// Each invariant and how many objects it looked at.
    counts: BTreeMap<&'static str, u64>,
    /// Events looked at (the Secret invariant's main ground).
    events_checked: u64,
}

pub const ADDRESS: &str = "a volume's NFS address never changes (volume writes)";
pub const SECRETS: &str = "no Secret value in a volume status or an Event (volume and Event writes)";
pub const NAMESPACES: &str = "no pod mounts a ClusterSharedVolume outside its namespaces (pod creations)";

impl Invariants {
    /// Each invariant with how many writes it looked at.
    pub fn counts(&self) -> Vec<(String, u64)> {
        [ADDRESS, SECRETS, NAMESPACES]
            .iter()
            .map(|i| (i.to_string(), self.counts.get(i).copied().unwrap_or(0)))
            .collect()
    }

    /// How many distinct Secret values the run wrote, and how many Events were searched for them:
    /// Secrets without a single Event checked mean the invariant had nothing to look at.
    pub fn secret_coverage(&self) -> (usize, u64) {
        (self.secrets.len(), self.events_checked)
    }

    fn count(&mut self, invariant: &'static str) {
        *self.counts.entry(invariant).or_default() += 1;
    }

    /// Checks the writes committed since the last call; the first broken invariant is returned
    /// as (invariant, what broke it).
    pub fn check(&mut self, store: &Store) -> Result<(), (&'static str, String)> {
        // Versions start above 1, as on a real server: the first write is the first after that.
        self.checked_up_to = self.checked_up_to.max(crate::api::store::FIRST_RESOURCE_VERSION);
        let changes: Vec<_> = match store.changes_since(self.checked_up_to) {
            Ok(changes) => changes.cloned().collect(),
            // The log no longer holds them all: a checker that skips writes would pass wrongly.
            Err(oldest) => {
                return Err((
                    "every write is checked",
                    format!(
                        "writes after {} were compacted before they were checked (oldest {oldest})",
                        self.checked_up_to
                    ),
                ));
            }
        };
        for change in changes {
            self.checked_up_to = change.rv;
            let (group, plural) = change.resource.storage();
            let object = &change.object;
            match (group, plural) {
                ("", "secrets") if change.kind != ChangeKind::Deleted => self.learn_secret(object),
                ("sv.sharedvolume.io", "sharedvolumes" | "clustersharedvolumes") => {
                    self.check_volume(object, change.kind)?;
                }
                ("", "events") => {
                    self.count(SECRETS);
                    self.events_checked += 1;
                    let text = object.to_string();
                    if let Some(secret) = self.secrets.iter().find(|s| text.contains(s.as_str())) {
                        let reason = object["reason"].as_str().unwrap_or_default();
                        return Err((
                            SECRETS,
                            format!("an Event ({reason}) shows a Secret value ({} characters)", secret.len()),
                        ));
                    }
                }
                ("", "pods") if change.kind == ChangeKind::Added => self.check_pod(store, object)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn learn_secret(&mut self, secret: &Value) {
        // Certificates are public; their keys are not.
        let public = |key: &str| key.ends_with(".crt") || key.ends_with(".pem") && !key.contains("key");
        let decoded =
            secret["data"].as_object().into_iter().flatten().filter(|(k, _)| !public(k)).filter_map(|(_, v)| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
                String::from_utf8(bytes).ok()
            });
        let plain = secret["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !public(k))
            .filter_map(|(_, v)| v.as_str().map(str::to_string));
        for value in decoded.chain(plain) {
            // A multi-line value (a private key) is searched for line by line: a message quoting
            // part of it is as bad.
            for piece in value.lines().map(str::trim).filter(|l| l.len() >= SHORTEST_SECRET && !l.starts_with("-----"))
            {
                if !self.secrets.iter().any(|s| s == piece) {
                    self.secrets.push(piece.to_string());
                }
            }
        }
    }

    fn check_volume(&mut self, volume: &Value, kind: ChangeKind) -> Result<(), (&'static str, String)> {
        let key = volume_key(volume);
        self.count(ADDRESS);
        let address = volume["status"]["nfsServerAddress"].as_str().filter(|a| !a.is_empty());
        match (self.addresses.get(&key), address) {
            (Some(first), Some(now)) if first != now => {
                return Err((ADDRESS, format!("the NFS address of {key} changed from {first} to {now}")));
            }
            // A deleted volume's last write may carry its status as it was; a live one must not lose it.
            (Some(first), None) if kind != ChangeKind::Deleted && volume["metadata"]["deletionTimestamp"].is_null() => {
                return Err((ADDRESS, format!("the NFS address {first} of {key} vanished while the volume exists")));
            }
            (None, Some(now)) => {
                self.addresses.insert(key.clone(), now.to_string());
            }
            _ => {}
        }
        if kind == ChangeKind::Deleted {
            self.addresses.remove(&key);
        }
        self.count(SECRETS);
        let status = volume["status"].to_string();
        if let Some(secret) = self.secrets.iter().find(|s| status.contains(s.as_str())) {
            return Err((SECRETS, format!("the status of {key} shows a Secret value ({} characters)", secret.len())));
        }
        Ok(())
    }

    /// A new pod that mounts a ClusterSharedVolume's consumer claim: its namespace must be one
    /// the volume allows.
    fn check_pod(&mut self, store: &Store, pod: &Value) -> Result<(), (&'static str, String)> {
        use sv_operator::api::labels;
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let claims = crate::api::ResourceId::new("", "v1", "persistentvolumeclaims");
        let volumes = crate::api::ResourceId::new("sv.sharedvolume.io", "v1alpha1", "clustersharedvolumes");
        let namespaces = crate::api::ResourceId::new("", "v1", "namespaces");
        for claim_name in pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
        {
            let Some(claim) = store.get(&claims, namespace, claim_name) else { continue };
            // A consumer's claim (the NFS server's own disk claim carries the volume's labels too).
            let claim_labels = &claim["metadata"]["labels"];
            if claim_labels[labels::VOLUME_KIND] != "ClusterSharedVolume"
                || claim_labels[labels::CONSUMER_NAMESPACE].is_null()
            {
                continue;
            }
            self.count(NAMESPACES);
            let reference = &claim["metadata"]["labels"][labels::REFERENCE];
            let Some((_, volume)) = store.list(&volumes, None).find(|(_, v)| &v["spec"]["referenceValue"] == reference)
            else {
                continue;
            };
            let Some(selector) = selector_text(&volume["spec"]["namespaceSelector"]) else { continue };
            let selector =
                LabelSelector::parse(&selector).map_err(|e| (NAMESPACES, format!("namespaceSelector: {e}")))?;
            let ns = store.get(&namespaces, "", namespace).map(|n| (**n).clone()).unwrap_or_default();
            if !selector.matches(&ns) {
                let name = volume["metadata"]["name"].as_str().unwrap_or_default();
                let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
                return Err((
                    NAMESPACES,
                    format!(
                        "pod {namespace}/{pod_name} mounts ClusterSharedVolume {name}, which does not allow namespace {namespace}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn volume_key(volume: &Value) -> String {
    let name = volume["metadata"]["name"].as_str().unwrap_or_default();
    match volume["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// A `LabelSelector` object (`matchLabels`, `matchExpressions`) as selector text; None for no
/// selector (everything matches).
fn selector_text(selector: &Value) -> Option<String> {
    if selector.is_null() {
        return None;
    }
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> =
            expression["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        parts.push(match expression["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::ResourceId;

    fn secret(value: &str) -> Value {
        let data = base64::engine::general_purpose::STANDARD.encode(value);
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"}, "data": {"password": data}})
    }

    fn event(api_version: &str, text_field: &str, text: &str) -> Value {
        let mut event = json!({"apiVersion": api_version, "kind": "Event",
            "metadata": {"name": format!("e-{}", api_version.len()), "namespace": "default"}, "reason": "SyncFailed"});
        event[text_field] = json!(text);
        event
    }

    #[test]
    fn a_secret_value_in_an_event_of_either_api_or_a_status_is_caught() {
        for (api_version, field) in [("events.k8s.io/v1", "note"), ("v1", "message")] {
            let mut store = Store::new(1000);
            let mut invariants = Invariants::default();
            store.put(&ResourceId::new("", "v1", "secrets"), secret("hunter2-token"));
            store.put(&ResourceId::new("", "v1", "events"), event(api_version, field, "pulled without it"));
            assert_eq!(invariants.check(&store), Ok(()));
            store.put(&ResourceId::new("", "v1", "events"), event(api_version, field, "pulled with hunter2-token"));
            let found = invariants.check(&store).unwrap_err();
            assert_eq!(found.0, SECRETS, "{api_version}: {found:?}");
        }
        let mut store = Store::new(1000);
        let mut invariants = Invariants::default();
        store.put(&ResourceId::new("", "v1", "secrets"), secret("hunter2-token"));
        let volume = json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
                            "metadata": {"name": "v", "namespace": "default"}, "status": {"message": "hunter2-token"}});
        store.put(&ResourceId::new("sv.sharedvolume.io", "v1alpha1", "sharedvolumes"), volume);
        assert_eq!(invariants.check(&store).unwrap_err().0, SECRETS);
    }

    #[test]
    fn an_nfs_address_that_changes_or_vanishes_is_caught() {
        let id = ResourceId::new("sv.sharedvolume.io", "v1alpha1", "sharedvolumes");
        let volume = |address: Option<&str>| json!({"kind": "SharedVolume", "metadata": {"name": "v", "namespace": "default"}, "status": {"nfsServerAddress": address}});
        let mut store = Store::new(1000);
        let mut invariants = Invariants::default();
        store.put(&id, volume(None));
        store.put(&id, volume(Some("10.96.0.10")));
        assert_eq!(invariants.check(&store), Ok(()));
        store.put(&id, volume(Some("10.96.0.11")));
        assert_eq!(invariants.check(&store).unwrap_err().0, ADDRESS);
        let mut invariants = Invariants::default();
        let mut store = Store::new(1000);
        store.put(&id, volume(Some("10.96.0.10")));
        store.put(&id, volume(None));
        assert!(invariants.check(&store).unwrap_err().1.contains("vanished"));
    }

    #[test]
    fn selectors_become_selector_text() {
        let selector = json!({"matchLabels": {"team": "a"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]}, {"key": "legacy", "operator": "DoesNotExist"}]});
        assert_eq!(selector_text(&selector).as_deref(), Some("team=a,tier in (x,y),!legacy"));
        assert_eq!(selector_text(&Value::Null), None);
    }
}
