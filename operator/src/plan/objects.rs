//! Builders of the objects a volume needs. Each returns complete desired state for server-side
//! apply: fields we do not set are left to their owners (the API server's defaults, other tools).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    ReplicaSet, ReplicaSetSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume as PodVolume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    CREDENTIALS_DIR, Desired, NFS_EXPORT_DIR, NFS_PORT, NFS_WRITER_DIR, ObjectKey, PROBE_PORT, PlanContext,
    SYNCER_DATA_DIR,
};
use crate::api::{CONSUMER_POD_LABEL, VolumeKind, components, labels};
use crate::names::NFS_WRITER_TOKEN_KEY;
use crate::units::parse_quantity_bytes;
use crate::validation::NfsIdentity;
use crate::validation::ServerMode;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;

use sv_api::consumer::{Owner, StorageTarget, consumer_read_only, storage_pair};
pub use sv_api::consumer_label_key;

impl PlanContext<'_> {
    fn owner(&self) -> Owner {
        Owner {
            kind: self.observed.kind,
            name: self.observed.name.clone(),
            namespace: self.observed.namespace.clone(),
            uid: self.observed.uid.clone(),
            reference: self.names.reference().to_string(),
        }
    }

    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        self.owner().labels(component)
    }

    /// Labels that select the pods of one component; a subset of [`Self::labels`], and stable, since
    /// a workload's selector is immutable.
    fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::COMPONENT.to_string(), component.to_string()),
            (labels::REFERENCE.to_string(), self.names.reference().to_string()),
        ])
    }

    /// Metadata of a child (see [`Owner::meta`]).
    fn meta(&self, name: String, namespace: Option<&str>, component: &str) -> ObjectMeta {
        self.owner().meta(name, namespace, component)
    }

    fn capacity(&self) -> Quantity {
        Quantity(self.observed.spec.storage.as_ref().map(|s| s.capacity.trim().to_string()).unwrap_or_default())
    }

    /// `storage.accessMode` as consumers get it, read as the webhook reads it.
    fn consumers_read_only(&self) -> bool {
        consumer_read_only(&self.observed.spec)
    }

    /// Data PVC, Service, StatefulSet and NetworkPolicy of a managed server; nothing for an
    /// external one.
    pub(crate) fn server_objects(&self) -> Vec<Desired> {
        let ServerMode::Managed { image } = &self.mode else {
            return Vec::new();
        };
        let mut out = vec![Desired::PersistentVolumeClaim(self.nfs_data_claim()), Desired::Service(self.nfs_service())];
        // The server reads its writer token from this Secret; it comes before the server's pod.
        if let Some(token) = self.writer_token() {
            let data = BTreeMap::from([(NFS_WRITER_TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec()))]);
            out.push(self.opaque_secret(self.names.nfs_writer(), components::NFS_SERVER, data));
        }
        out.push(Desired::StatefulSet(self.nfs_statefulset(image.as_deref())));
        if self.settings.network_policy {
            out.push(Desired::NetworkPolicy(self.nfs_network_policy()));
        }
        out
    }

    fn nfs_data_claim(&self) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: self.meta(self.names.nfs_data_claim(), Some(&self.resource_namespace), components::NFS_SERVER),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: self.observed.spec.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), self.capacity())])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nfs_service(&self) -> Service {
        // Pin the address the volume's PVs already point at, so a Service deleted by someone comes
        // back on the same IP.
        let pinned_ip =
            self.observed.nfs.service_ip.clone().or_else(|| self.observed.status.nfs_server_address.clone());
        Service {
            metadata: self.meta(self.names.nfs_server(), Some(&self.resource_namespace), components::NFS_SERVER),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_string()),
                cluster_ip: pinned_ip,
                selector: Some(self.selector(components::NFS_SERVER)),
                ports: Some(vec![ServicePort {
                    name: Some("nfs".to_string()),
                    port: NFS_PORT,
                    target_port: Some(IntOrString::Int(NFS_PORT)),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nfs_statefulset(&self, image: Option<&str>) -> StatefulSet {
        let capacity_bytes =
            self.observed.spec.storage.as_ref().and_then(|s| parse_quantity_bytes(&s.capacity).ok()).unwrap_or(0);
        let identity = NfsIdentity::of(&self.observed.annotations);
        let mut args = vec![
            "serve".to_string(),
            format!("--export={NFS_EXPORT_DIR}"),
            format!("--port={NFS_PORT}"),
            format!("--http-port={PROBE_PORT}"),
            format!("--capacity-bytes={capacity_bytes}"),
            format!("--squash={}", identity.squash),
            format!("--anon-uid={}", identity.anon_uid),
            format!("--anon-gid={}", identity.anon_gid),
            format!("--writer-token-file={NFS_WRITER_DIR}/{NFS_WRITER_TOKEN_KEY}"),
        ];
        if self.consumers_read_only() {
            args.push("--consumer-access=read-only".to_string());
        } else {
            // Squashed consumers must be able to create entries at the root; the sticky bit keeps
            // them from removing the syncer's links and each other's entries.
            args.push("--consumer-access=read-write".to_string());
            args.push("--root-mode=1777".to_string());
        }
        let container = Container {
            name: "nfs".to_string(),
            image: Some(image.unwrap_or(&self.settings.nfs_image).to_string()),
            image_pull_policy: self.settings.image_pull_policy.clone(),
            args: Some(args),
            ports: Some(vec![container_port("nfs", NFS_PORT), container_port("http", PROBE_PORT)]),
            // Ready once the self-probe passes; live while the process answers, including while it
            // counts a large export at start.
            readiness_probe: Some(http_probe("/readyz", 2, 3)),
            liveness_probe: Some(http_probe("/healthz", 10, 6)),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "export".to_string(),
                    mount_path: NFS_EXPORT_DIR.to_string(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "writer".to_string(),
                    mount_path: NFS_WRITER_DIR.to_string(),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            resources: Some(resources("100m", "64Mi", "512Mi")),
            // Serving files for every client uid needs chown and DAC override, persistent handles
            // need DAC_READ_SEARCH (open_by_handle_at), binding 2049 needs NET_BIND_SERVICE.
            // Everything else is dropped.
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_string()]),
                    add: Some(
                        ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "NET_BIND_SERVICE"]
                            .map(String::from)
                            .to_vec(),
                    ),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod_labels = self.labels(components::NFS_SERVER);
        StatefulSet {
            metadata: self.meta(self.names.nfs_server(), Some(&self.resource_namespace), components::NFS_SERVER),
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                service_name: Some(self.names.nfs_server()),
                selector: LabelSelector {
                    match_labels: Some(self.selector(components::NFS_SERVER)),
                    ..Default::default()
                },
                persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_string()),
                    when_scaled: Some("Retain".to_string()),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
                    spec: Some(PodSpec {
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        termination_grace_period_seconds: Some(30),
                        security_context: Some(PodSecurityContext {
                            seccomp_profile: Some(runtime_default_seccomp()),
                            ..Default::default()
                        }),
                        containers: vec![container],
                        volumes: Some(vec![
                            PodVolume {
                                name: "export".to_string(),
                                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                    claim_name: self.names.nfs_data_claim(),
                                    read_only: Some(false),
                                }),
                                ..Default::default()
                            },
                            PodVolume {
                                name: "writer".to_string(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(self.names.nfs_writer()),
                                    default_mode: Some(0o400),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Admits NFS traffic only from the syncer, from this volume's consumer pods, and from the
    /// nodes (the kubelet mounts NFS volumes from the node's address, not the pod's). Probes and
    /// metrics stay open.
    fn nfs_network_policy(&self) -> NetworkPolicy {
        let reference = self.names.reference();
        let consumer_namespaces = match self.observed.kind {
            VolumeKind::SharedVolume => None,
            VolumeKind::ClusterSharedVolume => Some(self.observed.namespace_selector.clone().unwrap_or_default()),
        };
        let mut peers = vec![
            NetworkPolicyPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(self.selector(components::SYNCER)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            NetworkPolicyPeer {
                namespace_selector: consumer_namespaces,
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        (consumer_label_key(reference), "true".to_string()),
                        (CONSUMER_POD_LABEL.to_string(), "true".to_string()),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        // The kubelet mounts an NFS volume for a pod from its node: the connection comes from the
        // node's address, which no pod selector matches. So the nodes that run this volume's
        // consumers or its syncer are admitted (and only those; the policy follows the pods as
        // they are scheduled, and a mount the kubelet retries meanwhile succeeds once it does).
        let mounting_nodes: BTreeSet<&str> = self
            .observed
            .consumer_pods
            .iter()
            .filter(|p| self.observed.namespace_allowed(&p.namespace))
            .filter_map(|p| p.node.as_deref())
            .chain(self.observed.syncer_nodes.iter().map(String::as_str))
            .collect();
        let addresses: BTreeSet<&String> =
            mounting_nodes.iter().filter_map(|node| self.observed.node_addresses.get(*node)).flatten().collect();
        peers.extend(addresses.into_iter().map(|ip| NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: host_cidr(ip), except: None }),
            ..Default::default()
        }));
        NetworkPolicy {
            metadata: self.meta(self.names.nfs_server(), Some(&self.resource_namespace), components::NFS_SERVER),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(self.selector(components::NFS_SERVER)),
                    ..Default::default()
                }),
                policy_types: Some(vec!["Ingress".to_string()]),
                ingress: Some(vec![
                    NetworkPolicyIngressRule { from: Some(peers), ports: Some(vec![np_port(NFS_PORT)]) },
                    NetworkPolicyIngressRule { from: None, ports: Some(vec![np_port(PROBE_PORT)]) },
                ]),
                ..Default::default()
            }),
        }
    }

    /// Where the PV and PVC for one consumer namespace (or, with `None`, the syncer's) live.
    fn storage_location(&self, consumer_namespace: Option<&str>) -> (String, String, &'static str) {
        match consumer_namespace {
            None => (self.names.syncer_storage(), self.resource_namespace.clone(), components::SYNCER_STORAGE),
            Some(ns) => (self.names.consumer_storage(ns), ns.to_string(), components::CONSUMER_STORAGE),
        }
    }

    pub(crate) fn storage_keys(&self, consumer_namespace: Option<&str>) -> Vec<ObjectKey> {
        let (name, namespace, _) = self.storage_location(consumer_namespace);
        vec![
            ObjectKey { kind: "PersistentVolume", namespace: None, name: name.clone() },
            ObjectKey { kind: "PersistentVolumeClaim", namespace: Some(namespace), name },
        ]
    }

    /// A PV pointing at the server and a PVC pre-bound to it. The syncer's pair (`None`) is always
    /// read-write; a consumer pair follows `storage.accessMode`.
    pub(crate) fn storage(&self, consumer_namespace: Option<&str>, server: &str) -> Vec<Desired> {
        let (name, namespace, component) = self.storage_location(consumer_namespace);
        let target = StorageTarget {
            server: server.to_string(),
            path: match consumer_namespace {
                Some(_) => self.export_path(),
                None => self.syncer_export_path().unwrap_or_else(|| self.export_path()),
            },
            mount_options: self.mount_options(),
            capacity: self.capacity().0,
            read_only: consumer_namespace.is_some() && self.consumers_read_only(),
        };
        let (pv, pvc) = storage_pair(&self.owner(), &name, &namespace, component, consumer_namespace, &target);
        vec![Desired::PersistentVolume(pv), Desired::PersistentVolumeClaim(pvc)]
    }

    /// Credentials Secret (when the source needs any), ServiceAccount, RBAC and ReplicaSet.
    pub(crate) fn syncer_objects(&self) -> Vec<Desired> {
        let ns = self.resource_namespace.as_str();
        let name = self.names.syncer();
        let mut out = Vec::new();
        let files = self.credential_files();
        let has_credentials = !files.is_empty();
        if has_credentials {
            out.push(self.opaque_secret(self.names.credentials(), components::SYNCER, files));
        }
        out.push(Desired::ServiceAccount(ServiceAccount {
            metadata: self.meta(name.clone(), Some(ns), components::SYNCER),
            ..Default::default()
        }));
        let kind = self.observed.kind;
        // Exactly what the syncer does (sim/tests/rbac.rs checks it): it watches its volume by a
        // `metadata.name` field selector, which the API server authorizes as that name, and
        // applies its sync results to the volume's status.
        let rules = vec![
            PolicyRule {
                api_groups: Some(vec![crate::api::GROUP.to_string()]),
                resources: Some(vec![kind.plural().to_string()]),
                resource_names: Some(vec![self.observed.name.clone()]),
                verbs: ["list", "watch"].map(String::from).to_vec(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![crate::api::GROUP.to_string()]),
                resources: Some(vec![format!("{}/status", kind.plural())]),
                resource_names: Some(vec![self.observed.name.clone()]),
                verbs: vec!["patch".to_string()],
                ..Default::default()
            },
        ];
        let subject = Subject {
            kind: "ServiceAccount".to_string(),
            name: name.clone(),
            namespace: Some(ns.to_string()),
            ..Default::default()
        };
        // Only the syncer pod holding this Lease publishes. The operator creates it, so the
        // syncer needs no right to create Leases (create cannot be limited to a name), only to
        // read and renew this one.
        out.push(Desired::Lease(Lease { metadata: self.meta(name.clone(), Some(ns), components::SYNCER), spec: None }));
        let lease_rule = PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".to_string()]),
            resources: Some(vec!["leases".to_string()]),
            resource_names: Some(vec![name.clone()]),
            verbs: ["get", "update"].map(String::from).to_vec(),
            ..Default::default()
        };
        match kind {
            // A SharedVolume's syncer lives in the volume's namespace: a Role suffices.
            VolumeKind::SharedVolume => {
                let mut rules = rules;
                rules.push(lease_rule);
                out.extend(self.syncer_role(rules, subject));
            }
            // A ClusterSharedVolume is cluster-scoped, so its status needs a ClusterRole, still
            // limited to this one object by resourceNames.
            VolumeKind::ClusterSharedVolume => {
                out.push(Desired::ClusterRole(ClusterRole {
                    metadata: self.meta(name.clone(), None, components::SYNCER),
                    rules: Some(rules),
                    ..Default::default()
                }));
                out.push(Desired::ClusterRoleBinding(ClusterRoleBinding {
                    metadata: self.meta(name.clone(), None, components::SYNCER),
                    role_ref: RoleRef {
                        api_group: Some("rbac.authorization.k8s.io".to_string()),
                        kind: "ClusterRole".to_string(),
                        name: name.clone(),
                    },
                    subjects: Some(vec![subject.clone()]),
                }));
                // The Lease is namespaced: its right stays in the syncer's namespace.
                out.extend(self.syncer_role(vec![lease_rule], subject));
            }
        }
        out.push(Desired::ReplicaSet(self.syncer_replicaset(has_credentials)));
        out
    }

    /// A Secret of the volume in its resource namespace.
    fn opaque_secret(&self, name: String, component: &str, data: BTreeMap<String, ByteString>) -> Desired {
        Desired::Secret(Secret {
            metadata: self.meta(name, Some(&self.resource_namespace), component),
            type_: Some("Opaque".to_string()),
            data: Some(data),
            immutable: Some(false),
            ..Default::default()
        })
    }

    /// The syncer's Role in its namespace, and the binding to its ServiceAccount.
    fn syncer_role(&self, rules: Vec<PolicyRule>, subject: Subject) -> [Desired; 2] {
        let (name, ns) = (self.names.syncer(), self.resource_namespace.as_str());
        [
            Desired::Role(Role { metadata: self.meta(name.clone(), Some(ns), components::SYNCER), rules: Some(rules) }),
            Desired::RoleBinding(RoleBinding {
                metadata: self.meta(name.clone(), Some(ns), components::SYNCER),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".to_string()),
                    kind: "Role".to_string(),
                    name,
                },
                subjects: Some(vec![subject]),
            }),
        ]
    }

    fn syncer_replicaset(&self, has_credentials: bool) -> ReplicaSet {
        let ns = self.resource_namespace.as_str();
        let o = self.observed;
        let mut env = vec![
            env_var("SV_VOLUME_KIND", o.kind.as_str()),
            env_var("SV_VOLUME_NAME", &o.name),
            env_var("SV_DATA_DIR", SYNCER_DATA_DIR),
            env_var("SV_HTTP_PORT", &PROBE_PORT.to_string()),
            field_env("SV_POD_NAME", "metadata.name"),
            field_env("SV_POD_NAMESPACE", "metadata.namespace"),
            env_var("SV_LEASE_NAME", &self.names.syncer()),
        ];
        if let Some(vol_ns) = &o.namespace {
            env.push(env_var("SV_VOLUME_NAMESPACE", vol_ns));
        }
        let mut mounts = vec![
            VolumeMount { name: "data".to_string(), mount_path: SYNCER_DATA_DIR.to_string(), ..Default::default() },
            VolumeMount { name: "tmp".to_string(), mount_path: "/tmp".to_string(), ..Default::default() },
        ];
        let mut volumes = vec![
            PodVolume {
                name: "data".to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: self.names.syncer_storage(),
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            PodVolume {
                name: "tmp".to_string(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
        ];
        if has_credentials {
            env.push(env_var("SV_CREDENTIALS_DIR", CREDENTIALS_DIR));
            mounts.push(VolumeMount {
                name: "credentials".to_string(),
                mount_path: CREDENTIALS_DIR.to_string(),
                read_only: Some(true),
                ..Default::default()
            });
            volumes.push(PodVolume {
                name: "credentials".to_string(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(self.names.credentials()),
                    default_mode: Some(0o400),
                    optional: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let container = Container {
            name: "syncer".to_string(),
            image: Some(self.settings.syncer_image.clone()),
            image_pull_policy: self.settings.image_pull_policy.clone(),
            args: Some(vec!["run".to_string()]),
            env: Some(env),
            ports: Some(vec![container_port("http", PROBE_PORT)]),
            readiness_probe: Some(http_probe("/readyz", 5, 3)),
            liveness_probe: Some(http_probe("/healthz", 15, 4)),
            volume_mounts: Some(mounts),
            resources: Some(resources("50m", "64Mi", &sv_api::validation::syncer_memory_limit(&o.annotations))),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(self.labels(components::SYNCER)),
                // Names the volume, so that the operator's watch of syncer pods (their nodes are
                // admitted by the NFS server's NetworkPolicy) finds it.
                annotations: Some(BTreeMap::from([(
                    crate::api::annotations::OWNER.to_string(),
                    self.owner().owner_annotation(),
                )])),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                service_account_name: Some(self.names.syncer()),
                // The syncer reports results on the volume's status.
                automount_service_account_token: Some(true),
                enable_service_links: Some(false),
                termination_grace_period_seconds: Some(30),
                security_context: Some(PodSecurityContext {
                    seccomp_profile: Some(runtime_default_seccomp()),
                    ..Default::default()
                }),
                containers: vec![container],
                volumes: Some(volumes),
                ..Default::default()
            }),
        };
        // A ReplicaSet does not replace its pods when its template changes, so a new image or new
        // settings would never reach a running syncer: each template gets a ReplicaSet of its own,
        // named after the template's hash, and the plan deletes the one before (its pod goes with
        // it; the syncer Lease keeps the two from publishing at once while both run).
        let hash = template_hash(&template);
        let mut selector = self.selector(components::SYNCER);
        selector.insert(labels::TEMPLATE_HASH.to_string(), hash.clone());
        if let Some(pod_labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            pod_labels.insert(labels::TEMPLATE_HASH.to_string(), hash.clone());
        }
        ReplicaSet {
            metadata: self.meta(self.names.syncer_replicaset(&hash), Some(ns), components::SYNCER),
            spec: Some(ReplicaSetSpec {
                replicas: Some(1),
                selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
                template: Some(template),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// 10 hex digits of the SHA-256 of a pod template's JSON (field order is fixed by the types, map
/// keys are sorted), so equal templates hash alike in every process and run.
fn template_hash(template: &PodTemplateSpec) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(template).unwrap_or_default();
    Sha256::digest(&json).iter().take(5).map(|b| format!("{b:02x}")).collect()
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.to_string()), ..Default::default() }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// An environment variable from a field of the pod (the downward API).
fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.to_string(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory_request: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.to_string())),
            ("memory".to_string(), Quantity(memory_request.to_string())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity(memory_limit.to_string()))])),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_string(), localhost_profile: None }
}

fn np_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort { port: Some(IntOrString::Int(port)), protocol: Some("TCP".to_string()), end_port: None }
}

/// `/32` or `/128` for a host address.
fn host_cidr(ip: &str) -> String {
    if ip.contains(':') { format!("{ip}/128") } else { format!("{ip}/32") }
}
