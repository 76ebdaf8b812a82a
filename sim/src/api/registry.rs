//! The resource types the simulated API server serves: a fixed table of the built-in kinds the
//! system and `kubectl` touch, plus every CustomResourceDefinition created at run time.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::schema::Schema;

/// Identifies a collection: group ("" for core), version and plural resource name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl ResourceId {
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Self { group: group.into(), version: version.into(), plural: plural.into() }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// Where objects of this resource are stored: the version does not matter (no conversion is
    /// simulated), and `events.k8s.io` Events share the core Events' storage.
    pub fn storage(&self) -> (&str, &str) {
        if self.group == "events.k8s.io" && self.plural == "events" {
            ("", "events")
        } else {
            (&self.group, &self.plural)
        }
    }

    /// `sharedvolumes.sv.sharedvolume.io`, or `configmaps` for core: the form error messages use.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

#[derive(Clone, Debug)]
pub struct ResourceType {
    pub id: ResourceId,
    pub kind: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `status` subresource: main writes keep the stored status, `/status` writes keep the rest.
    pub status: bool,
    /// Has a `scale` subresource.
    pub scale: bool,
    /// `metadata.generation` is kept and bumped on changes outside metadata and status.
    pub generation: bool,
    /// Defined by a CustomResourceDefinition (schema-validated, pruned, defaulted).
    pub custom: bool,
    pub schema: Option<Schema>,
    /// `additionalPrinterColumns` of the CRD version: what `kubectl get` shows.
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    /// The URL path of the collection in `namespace` (ignored for a cluster-scoped type), or of
    /// the object `name` in it.
    pub fn path(&self, namespace: &str, name: Option<&str>) -> String {
        let mut path = match self.id.group.as_str() {
            "" => format!("/api/{}", self.id.version),
            group => format!("/apis/{group}/{}", self.id.version),
        };
        if self.namespaced {
            path.push_str(&format!("/namespaces/{namespace}"));
        }
        path.push_str(&format!("/{}", self.id.plural));
        if let Some(name) = name {
            path.push_str(&format!("/{name}"));
        }
        path
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `SharedVolume.sv.sharedvolume.io`, or `ConfigMap` for core: the form Invalid messages use.
    pub fn qualified_kind(&self) -> String {
        if self.id.group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, self.id.group) }
    }

    fn storage_version_hash(&self) -> String {
        let (group, _) = self.id.storage();
        version_hash(&format!("{group}/{}/{}", self.id.version, self.kind))
    }

    /// Whether this is the kind with the TokenRequest subresource (`serviceaccounts/token`).
    pub fn token_request(&self) -> bool {
        self.id.group.is_empty() && self.id.plural == "serviceaccounts"
    }

    fn discovery_entry(&self) -> Vec<Value> {
        let mut verbs = vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
        if self.id.plural == "namespaces" {
            verbs.retain(|v| *v != "deletecollection");
        }
        let mut main = json!({
            "name": self.id.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": verbs,
            "storageVersionHash": self.storage_version_hash(),
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut entries = vec![main];
        if self.status {
            entries.push(json!({
                "name": format!("{}/status", self.id.plural), "singularName": "", "namespaced": self.namespaced,
                "kind": self.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if self.token_request() {
            entries.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"],
            }));
        }
        if self.scale {
            entries.push(json!({
                "name": format!("{}/scale", self.id.plural), "singularName": "", "namespaced": self.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
        entries
    }
}

/// The real server's digest of a storage version (`group/version/Kind`), base64 of the first 8
/// bytes of its SHA-256.
fn version_hash(storage_version: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(storage_version.as_bytes());
    base64_standard(&digest[..8])
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// group, version, plural, kind, namespaced, short names, status subresource, generation.
type Builtin = (&'static str, &'static str, &'static str, &'static str, bool, &'static [&'static str], bool, bool);

const BUILTINS: &[Builtin] = &[
    ("", "v1", "namespaces", "Namespace", false, &["ns"], true, false),
    ("", "v1", "nodes", "Node", false, &["no"], true, false),
    ("", "v1", "pods", "Pod", true, &["po"], true, true),
    ("", "v1", "services", "Service", true, &["svc"], true, false),
    ("", "v1", "endpoints", "Endpoints", true, &["ep"], false, false),
    ("", "v1", "configmaps", "ConfigMap", true, &["cm"], false, false),
    ("", "v1", "secrets", "Secret", true, &[], false, false),
    ("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"], false, false),
    ("", "v1", "persistentvolumes", "PersistentVolume", false, &["pv"], true, false),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, &["pvc"], true, false),
    ("", "v1", "events", "Event", true, &["ev"], false, false),
    ("apps", "v1", "deployments", "Deployment", true, &["deploy"], true, true),
    ("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"], true, true),
    ("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"], true, true),
    ("apps", "v1", "controllerrevisions", "ControllerRevision", true, &[], false, false),
    ("coordination.k8s.io", "v1", "leases", "Lease", true, &[], false, false),
    ("events.k8s.io", "v1", "events", "Event", true, &["ev"], false, false),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        true,
        true,
    ),
    ("storage.k8s.io", "v1", "storageclasses", "StorageClass", false, &["sc"], false, false),
    ("storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", false, &[], true, false),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true, &[], false, false),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, &[], false, false),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, &[], false, false),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false, &[], false, false),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true, &["netpol"], false, true),
    // Stored only: nothing evicts pods in the simulation, so no budget is ever consulted.
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, &["pdb"], true, true),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        false,
        true,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        false,
        true,
    ),
];

/// Every resource type the server knows, keyed by id.
#[derive(Clone, Debug)]
pub struct Registry {
    types: BTreeMap<ResourceId, ResourceType>,
    /// The ids of each kind and of each plural, in the order of `types`: the garbage collector
    /// and the controllers look types up by these on every pass.
    kinds: BTreeMap<String, Vec<ResourceId>>,
    plurals: BTreeMap<String, Vec<ResourceId>>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut types = BTreeMap::new();
        for &(group, version, plural, kind, namespaced, short, status, generation) in BUILTINS {
            let id = ResourceId::new(group, version, plural);
            types.insert(
                id.clone(),
                ResourceType {
                    id,
                    kind: kind.into(),
                    singular: kind.to_ascii_lowercase(),
                    namespaced,
                    short_names: short.iter().map(|s| s.to_string()).collect(),
                    categories: if matches!(
                        plural,
                        "pods" | "services" | "deployments" | "replicasets" | "statefulsets"
                    ) {
                        vec!["all".into()]
                    } else {
                        Vec::new()
                    },
                    status,
                    scale: matches!(plural, "deployments" | "replicasets" | "statefulsets"),
                    generation,
                    custom: false,
                    schema: None,
                    printer_columns: Vec::new(),
                },
            );
        }
        let mut registry = Self { types, kinds: BTreeMap::new(), plurals: BTreeMap::new() };
        registry.reindex();
        registry
    }
}

impl Registry {
    fn reindex(&mut self) {
        self.kinds.clear();
        self.plurals.clear();
        for (id, t) in &self.types {
            self.kinds.entry(t.kind.clone()).or_default().push(id.clone());
            self.plurals.entry(id.plural.clone()).or_default().push(id.clone());
        }
    }

    /// The first type (in id order, so the earliest version) of `group` and `plural`.
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.plurals.get(plural)?.iter().find(|id| id.group == group).and_then(|id| self.types.get(id))
    }

    pub fn get(&self, id: &ResourceId) -> Option<&ResourceType> {
        self.types.get(id)
    }

    pub fn types(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// Registers (or refreshes) the served versions of an established CRD.
    pub fn register_crd(&mut self, crd: &Value) {
        self.unregister_crd(crd);
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let names = &spec["names"];
        let plural = names["plural"].as_str().unwrap_or_default();
        let kind = names["kind"].as_str().unwrap_or_default();
        if group.is_empty() || plural.is_empty() || kind.is_empty() {
            return;
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
        };
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"].as_bool() == Some(false) {
                continue;
            }
            let Some(name) = version["name"].as_str() else { continue };
            let id = ResourceId::new(group, name, plural);
            let subresources = &version["subresources"];
            self.types.insert(
                id.clone(),
                ResourceType {
                    id,
                    kind: kind.into(),
                    singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_ascii_lowercase()),
                    namespaced: spec["scope"].as_str() != Some("Cluster"),
                    short_names: strings(&names["shortNames"]),
                    categories: strings(&names["categories"]),
                    status: subresources.get("status").is_some(),
                    scale: subresources.get("scale").is_some(),
                    generation: true,
                    custom: true,
                    schema: version["schema"].get("openAPIV3Schema").map(Schema::new),
                    printer_columns: version["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
                },
            );
        }
        self.reindex();
    }

    pub fn unregister_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        self.types.retain(|id, t| !(t.custom && id.group == group && id.plural == plural));
        self.reindex();
    }

    /// Groups and their versions, core excluded.
    pub fn groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for id in self.types.keys().filter(|id| !id.group.is_empty()) {
            let versions = groups.entry(&id.group).or_default();
            if !versions.contains(&id.version.as_str()) {
                versions.push(&id.version);
            }
        }
        groups
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.get(&ResourceId::new(group, version, plural))
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types.keys().any(|id| id.group == group && id.version == version)
    }

    /// The resource type that stores objects of `apiVersion` + `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        // The garbage collector asks this for every ownerReference of every object on each pass.
        self.kinds
            .get(kind)?
            .iter()
            .find(|id| id.version == version && id.group == group)
            .and_then(|id| self.types.get(id))
    }

    pub fn api_versions_doc(&self, server_address: &str) -> Value {
        json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })
    }

    fn group_doc(group: &str, versions: &[&str]) -> Value {
        let versions: Vec<Value> =
            versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
        json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
    }

    pub fn group_list_doc(&self) -> Value {
        let groups: Vec<Value> = self.groups().iter().map(|(g, v)| Self::group_doc(g, v)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    pub fn group_doc_for(&self, group: &str) -> Option<Value> {
        let groups = self.groups();
        let versions = groups.get(group)?;
        let mut doc = Self::group_doc(group, versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    pub fn resource_list_doc(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let resources: Vec<Value> = self
            .types
            .values()
            .filter(|t| t.id.group == group && t.id.version == version)
            .flat_map(ResourceType::discovery_entry)
            .collect();
        let group_version = ResourceId::new(group, version, "").api_version();
        let mut doc = json!({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources});
        if !group.is_empty() {
            doc["apiVersion"] = json!("v1");
        }
        Some(doc)
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) of the core group (`core`) or of every
    /// other group.
    pub fn aggregated_doc(&self, core: bool) -> Value {
        let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
        for rt in self.types.values().filter(|t| t.id.group.is_empty() == core) {
            let verbs: Vec<Value> = rt.discovery_entry()[0]["verbs"].as_array().cloned().unwrap_or_default();
            let mut subresources = Vec::new();
            if rt.status {
                subresources.push(json!({"subresource": "status", "responseKind": {"group": rt.id.group, "version": rt.id.version, "kind": rt.kind}, "verbs": ["get", "patch", "update"]}));
            }
            if rt.scale {
                subresources.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
            }
            if rt.token_request() {
                subresources.push(json!({"subresource": "token", "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}, "verbs": ["create"]}));
            }
            let mut resource = json!({
                "resource": rt.id.plural,
                "responseKind": {"group": "", "version": "", "kind": rt.kind},
                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": rt.singular,
                "verbs": verbs,
            });
            if !rt.short_names.is_empty() {
                resource["shortNames"] = json!(rt.short_names);
            }
            if !rt.categories.is_empty() {
                resource["categories"] = json!(rt.categories);
            }
            if !subresources.is_empty() {
                resource["subresources"] = json!(subresources);
            }
            groups.entry(&rt.id.group).or_default().entry(&rt.id.version).or_default().push(resource);
        }
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|(version, resources)| json!({"version": version, "resources": resources, "freshness": "Current"}))
                    .collect();
                json!({"metadata": {"name": group}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }

    /// `/openapi/v3`: where each group-version's document is. kubectl reads it to learn that the
    /// server validates fields itself (`fieldValidation`), so it does no client-side validation.
    pub fn openapi_root_doc(&self) -> Value {
        let mut paths = serde_json::Map::new();
        let mut group_versions: Vec<(String, String)> =
            self.types.keys().map(|id| (id.group.clone(), id.version.clone())).collect();
        group_versions.dedup();
        for (group, version) in group_versions {
            let path = if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") };
            let hash = version_hash(&path);
            paths.insert(path.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}));
        }
        json!({"paths": paths})
    }

    /// A group-version's OpenAPI v3 document, reduced to what clients look up: one PATCH
    /// operation per kind, tagged with its group-version-kind, taking `fieldValidation`.
    pub fn openapi_group_version_doc(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let mut paths = serde_json::Map::new();
        for rt in self.types.values().filter(|t| t.id.group == group && t.id.version == version) {
            let prefix = if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") };
            let scope = if rt.namespaced { "/namespaces/{namespace}" } else { "" };
            let path = format!("{prefix}{scope}/{}/{{name}}", rt.id.plural);
            let parameters: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
                .iter()
                .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
                .collect();
            let operation = json!({
                "operationId": format!("patch{}", rt.kind),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": rt.kind},
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
            });
            paths.insert(path, json!({"patch": operation}));
        }
        Some(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.36.2"},
            "paths": paths,
            "components": {"schemas": {}},
        }))
    }
}
