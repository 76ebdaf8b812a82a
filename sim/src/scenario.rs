//! Scenarios: files under `scenarios/` that replay steps, faults and expectations against a whole
//! simulated cluster ([`World`]), checking the system's invariants after every step:
//!
//! - the NFS address a volume reports never changes once set (consumers mount it);
//! - no value of any Secret created during the run appears in a volume's status or an Event.
//!
//! ```yaml
//! description: what the scenario shows
//! seed: 1                 # optional; the run is replayed from it
//! steps:
//!   - install: true       # the operator's namespace, a default StorageClass, the CRDs
//!   - example: 13-http.yaml
//!   - apply: |            # any manifests
//!       apiVersion: v1 ...
//!   - waitFor: {volume: default/http-sv, phase: Ready, within: 5m}
//!   - loseNode: {podOf: {volume: default/http-sv, component: nfs-server}}
//!   - source: {identity: "http https://...", revision: r2, files: {README.md: "new"}}
//!   - partition: [operator, api]
//!   - runFor: 30s
//!   - delete: {kind: SharedVolume, namespace: default, name: http-sv}
//!   - expectClean: {within: 5m}
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::api::ApiServer;
use crate::examples::{example, install, managed_objects, volumes};
use crate::programs::{SimFile, SourceState};
use crate::world::{World, WorldConfig};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Run the operator (default true).
    #[serde(default)]
    pub operator: Option<bool>,
    /// NFS servers outside the cluster (see [`WorldConfig::external_nfs`]).
    #[serde(default)]
    pub external_nfs: Vec<String>,
    pub steps: Vec<Step>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Step {
    Install(bool),
    Example(String),
    Apply(String),
    RunFor(String),
    WaitFor(Wait),
    Source(SourceStep),
    SourceFailing {
        identity: String,
        status: u16,
        message: String,
    },
    Partition([HostRef; 2]),
    Repair([HostRef; 2]),
    Crash(HostRef),
    Bounce(HostRef),
    /// The node a pod runs on (or a node by name) is lost with its pods' processes.
    LoseNode(HostRef),
    NodeBack(String),
    ApiFaults {
        fail_rate: f64,
        code: u16,
    },
    Delete {
        kind: String,
        namespace: Option<String>,
        name: String,
    },
    ExpectClean {
        within: String,
    },
}

/// A condition on a volume, waited for up to `within` (default: it must hold now).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Wait {
    /// `namespace/name` of a SharedVolume, or `name` of a ClusterSharedVolume.
    pub volume: String,
    pub phase: Option<String>,
    /// `Type=Status` or `Type=Status/Reason`, e.g. `Synced=False/SyncFailed`.
    pub condition: Option<String>,
    /// The published revision (`status.sync.revision`).
    pub revision: Option<String>,
    pub within: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceStep {
    pub identity: String,
    pub revision: String,
    pub files: BTreeMap<String, String>,
    pub credential: Option<String>,
}

/// A host: a name (`api`, `operator`, `sources`, a node for `loseNode`), or the pod of a volume's
/// component (`nfs-server`, `syncer`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HostRef {
    Name(String),
    PodOf {
        #[serde(rename = "podOf")]
        pod_of: PodOf,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodOf {
    pub volume: String,
    pub component: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("step {step} ({what}): {message}")]
    Step { step: usize, what: String, message: String },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Parse { file: file.clone(), message: e.to_string() })?;
        serde_saphyr::from_str(&text).map_err(|e| ScenarioError::Parse { file, message: e.to_string() })
    }

    /// Replays the steps; returns the trace hash of the run.
    pub fn run(&self) -> Result<String, ScenarioError> {
        let config = WorldConfig {
            seed: self.seed,
            operator: self.operator.unwrap_or(true),
            external_nfs: self.external_nfs.clone(),
            ..WorldConfig::default()
        };
        let mut run = Run {
            world: World::new(config).map_err(|e| step_error(0, "world", e))?,
            addresses: BTreeMap::new(),
            secrets: Vec::new(),
            events_checked: 0,
        };
        for (index, step) in self.steps.iter().enumerate() {
            let number = index + 1;
            let what = format!("{step:?}").chars().take(80).collect::<String>();
            run.step(step).map_err(|message| ScenarioError::Step { step: number, what: what.clone(), message })?;
            run.check_invariants().map_err(|message| ScenarioError::Step { step: number, what, message })?;
        }
        run.check_coverage().map_err(|message| step_error(self.steps.len(), "end", message))?;
        Ok(run.world.trace_hash())
    }
}

fn step_error(step: usize, what: &str, e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::Step { step, what: what.to_string(), message: e.to_string() }
}

struct Run {
    world: World,
    /// The first NFS address each volume reported.
    addresses: BTreeMap<String, String>,
    /// Every Secret value the scenario created.
    secrets: Vec<String>,
    /// Events the Secret-value invariant looked at, over the whole run.
    events_checked: usize,
}

fn duration(text: &str) -> Result<Duration, String> {
    sv_operator::units::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))
}

fn volume_key(volume: &Value) -> String {
    let name = volume["metadata"]["name"].as_str().unwrap_or_default();
    match volume["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

fn find_volume(api: &ApiServer, key: &str) -> Option<Value> {
    volumes(api).into_iter().find(|v| volume_key(v) == key)
}

impl Wait {
    fn holds(&self, api: &ApiServer) -> Result<bool, String> {
        let Some(volume) = find_volume(api, &self.volume) else { return Ok(false) };
        let status = &volume["status"];
        let phase_ok = self.phase.as_ref().is_none_or(|p| status["phase"] == p.as_str());
        let revision_ok = self.revision.as_ref().is_none_or(|r| status["sync"]["revision"] == r.as_str());
        let condition_ok = match &self.condition {
            None => true,
            Some(wanted) => {
                let (kind, rest) =
                    wanted.split_once('=').ok_or(format!("condition {wanted:?}: write Type=Status[/Reason]"))?;
                let (value, reason) = rest.split_once('/').map_or((rest, None), |(v, r)| (v, Some(r)));
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == kind && c["status"] == value && reason.is_none_or(|r| c["reason"] == r))
            }
        };
        Ok(phase_ok && revision_ok && condition_ok)
    }
}

impl Run {
    fn step(&mut self, step: &Step) -> Result<(), String> {
        let world = &mut self.world;
        let run = |world: &mut World, d: Duration| world.run_for(d).map_err(|e| format!("the simulation failed: {e}"));
        match step {
            Step::Install(_) => {
                let errors = install(world)?;
                if !errors.is_empty() {
                    return Err(format!("installing: {errors:?}"));
                }
            }
            Step::Example(file) => {
                let documents = example(file).map_err(|e| e.to_string())?;
                self.create(documents)?;
            }
            Step::Apply(text) => {
                let documents: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
                self.create(documents.into_iter().filter(|d| !d.is_null()).collect())?;
            }
            Step::RunFor(text) => run(world, duration(text)?)?,
            Step::WaitFor(wait) => {
                let within = wait.within.as_deref().map(duration).transpose()?.unwrap_or_default();
                let mut failure = None;
                let held = world
                    .run_until(within, |api| match wait.holds(api) {
                        Ok(held) => held,
                        Err(e) => {
                            failure = Some(e);
                            true
                        }
                    })
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if let Some(e) = failure {
                    return Err(e);
                }
                if !held {
                    let status = find_volume(&world.api, &wait.volume).map(|v| v["status"].clone());
                    return Err(format!("not reached within {within:?}; the volume's status: {status:#?}"));
                }
            }
            Step::Source(source) => world.sources().set(
                &source.identity,
                SourceState::Tree {
                    revision: source.revision.clone(),
                    files: source.files.iter().map(|(p, c)| SimFile::new(p, c)).collect(),
                    credential: source.credential.clone(),
                },
            ),
            Step::SourceFailing { identity, status, message } => {
                world.sources().set(identity, SourceState::Failing { status: *status, message: message.clone() });
            }
            Step::Partition([a, b]) => {
                let (a, b) = (self.host(a)?, self.host(b)?);
                self.world.partition(&a, &b);
            }
            Step::Repair([a, b]) => {
                let (a, b) = (self.host(a)?, self.host(b)?);
                self.world.repair(&a, &b);
            }
            Step::Crash(host) => {
                let host = self.host(host)?;
                self.world.crash(&host);
            }
            Step::Bounce(host) => {
                let host = self.host(host)?;
                self.world.bounce(&host);
            }
            Step::LoseNode(host) => {
                let node = match host {
                    HostRef::Name(node) => {
                        self.node_exists(node)?;
                        node.clone()
                    }
                    HostRef::PodOf { pod_of } => {
                        self.pod_of(pod_of)?["spec"]["nodeName"].as_str().ok_or("the pod is not scheduled")?.to_string()
                    }
                };
                self.world.set_node_ready(&node, false);
            }
            Step::NodeBack(node) => {
                self.node_exists(node)?;
                self.world.set_node_ready(node, true)
            }
            Step::ApiFaults { fail_rate, code } => world.set_api_faults(crate::api::Faults {
                fail_rate: *fail_rate,
                fail_code: *code,
                ..crate::api::Faults::default()
            }),
            Step::Delete { kind, namespace, name } => {
                let mut state = world.api.state();
                let rt = state
                    .registry
                    .types()
                    .find(|t| t.kind == *kind)
                    .cloned()
                    .ok_or(format!("no kind {kind} is served"))?;
                let namespace = namespace.as_deref().unwrap_or_default();
                world
                    .api
                    .delete_in(&mut state, &rt, namespace, name, &Default::default())
                    .map_err(|e| format!("{e:?}"))?;
            }
            Step::ExpectClean { within } => {
                let within = duration(within)?;
                let clean = world
                    .run_until(within, |api| volumes(api).is_empty() && managed_objects(api).is_empty())
                    .map_err(|e| format!("the simulation failed: {e}"))?;
                if !clean {
                    let left: Vec<String> =
                        volumes(&world.api).iter().map(volume_key).chain(managed_objects(&world.api)).collect();
                    return Err(format!("left after {within:?}: {left:?}"));
                }
            }
        }
        Ok(())
    }

    fn create(&mut self, documents: Vec<Value>) -> Result<(), String> {
        for document in &documents {
            if document["kind"] == "Secret" {
                let decoded = document["data"].as_object().into_iter().flatten().filter_map(|(_, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
                    String::from_utf8(bytes).ok()
                });
                let plain = document["stringData"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, v)| v.as_str().map(str::to_string));
                self.secrets.extend(decoded.chain(plain).filter(|s| s.len() >= 4));
            }
        }
        let errors: Vec<String> =
            self.world.create_all(documents).into_iter().filter_map(|r| r.err()).map(|e| format!("{e:?}")).collect();
        if errors.is_empty() { Ok(()) } else { Err(format!("creating: {errors:?}")) }
    }

    /// The newest live pod of a volume's component.
    fn pod_of(&self, pod_of: &PodOf) -> Result<Value, String> {
        let volume = find_volume(&self.world.api, &pod_of.volume).ok_or(format!("no volume {}", pod_of.volume))?;
        let owner = match volume["metadata"]["namespace"].as_str() {
            Some(namespace) => format!(
                "{}/{namespace}/{}",
                volume["kind"].as_str().unwrap_or_default(),
                volume["metadata"]["name"].as_str().unwrap_or_default()
            ),
            None => format!(
                "{}/{}",
                volume["kind"].as_str().unwrap_or_default(),
                volume["metadata"]["name"].as_str().unwrap_or_default()
            ),
        };
        let state = self.world.api.state();
        let owner_key = sv_operator::api::annotations::OWNER;
        let component_key = sv_operator::api::labels::COMPONENT;
        let workloads =
            ["statefulsets", "replicasets"].into_iter().filter_map(|p| state.registry.find("apps", "v1", p).cloned());
        let selector = workloads
            .flat_map(|rt| state.store.list(&rt.id, None).map(|(_, o)| o.clone()).collect::<Vec<_>>())
            .find(|w| {
                w["metadata"]["annotations"][owner_key] == owner.as_str()
                    && w["metadata"]["labels"][component_key] == pod_of.component.as_str()
            })
            .map(|w| w["spec"]["selector"]["matchLabels"].clone())
            .ok_or(format!("no {} workload for {owner}", pod_of.component))?;
        let pods = state.registry.find("", "v1", "pods").cloned().ok_or("no pods")?;
        state
            .store
            .list(&pods.id, None)
            .map(|(_, p)| p)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| selector.as_object().is_some_and(|s| s.iter().all(|(k, v)| &p["metadata"]["labels"][k] == v)))
            .max_by_key(|p| p["metadata"]["creationTimestamp"].as_str().map(str::to_string))
            .map(|p| (**p).clone())
            .ok_or(format!("no live {} pod for {owner}", pod_of.component))
    }

    fn host(&self, host: &HostRef) -> Result<String, String> {
        match host {
            HostRef::Name(name) if self.world.has_host(name) => Ok(name.clone()),
            HostRef::Name(name) => Err(format!("no host named {name:?} (hosts: api, sources, operator, or pod_of)")),
            HostRef::PodOf { pod_of } => {
                let pod = self.pod_of(pod_of)?;
                let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
                let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                self.world.pod_host(namespace, name).ok_or(format!("pod {namespace}/{name} runs no program"))
            }
        }
    }

    fn check_invariants(&mut self) -> Result<(), String> {
        for volume in volumes(&self.world.api) {
            let key = volume_key(&volume);
            if let Some(address) = volume["status"]["nfsServerAddress"].as_str() {
                let first = self.addresses.entry(key.clone()).or_insert_with(|| address.to_string());
                if first != address {
                    return Err(format!("the NFS address of {key} changed from {first} to {address}"));
                }
            }
            let status = volume["status"].to_string();
            if let Some(secret) = self.secrets.iter().find(|s| status.contains(s.as_str())) {
                return Err(format!("the status of {key} shows a Secret value ({} characters)", secret.len()));
            }
        }
        // Events of both APIs share one storage (as on a real server): the operator writes
        // events.k8s.io (`note`), others core v1 (`message`); the whole object is searched, so no
        // field is missed.
        let state = self.world.api.state();
        if let Some(rt) = state.registry.find("", "v1", "events") {
            for (_, event) in state.store.list(&rt.id, None) {
                self.events_checked += 1;
                let text = event.to_string();
                if self.secrets.iter().any(|s| text.contains(s.as_str())) {
                    return Err(format!("an Event shows a Secret value: reason {}", event["reason"]));
                }
            }
        }
        Ok(())
    }

    /// Once the steps are done: an invariant that had nothing to look at says so.
    fn check_coverage(&self) -> Result<(), String> {
        if !self.secrets.is_empty() && self.events_checked == 0 {
            return Err("the scenario made Secrets but no Event was ever there to check for their values".into());
        }
        Ok(())
    }

    fn node_exists(&self, node: &str) -> Result<(), String> {
        let state = self.world.api.state();
        let nodes = state.registry.find("", "v1", "nodes").ok_or("no nodes")?;
        match state.store.get(&nodes.id, "", node) {
            Some(_) => Ok(()),
            None => Err(format!("no node named {node:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_secret(secret: &str) -> Run {
        let world =
            World::new(WorldConfig { operator: false, programs: false, ..WorldConfig::default() }).expect("a world");
        Run { world, addresses: BTreeMap::new(), secrets: vec![secret.to_string()], events_checked: 0 }
    }

    fn event(api_version: &str, text_field: &str, text: &str) -> serde_json::Value {
        let mut event = serde_json::json!({
            "apiVersion": api_version, "kind": "Event",
            "metadata": {"name": format!("e-{}", api_version.len()), "namespace": "default"},
            "eventTime": "2026-12-06T10:00:00.000000Z", "reportingController": "test", "reportingInstance": "test-0",
            "action": "Sync", "reason": "SyncFailed", "type": "Warning",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        });
        event[text_field] = serde_json::json!(text);
        event
    }

    #[test]
    fn a_secret_value_in_an_event_of_either_api_is_caught() {
        for (api_version, field) in [("events.k8s.io/v1", "note"), ("v1", "message")] {
            let mut run = run_with_secret("hunter2-token");
            assert!(run.check_coverage().is_err(), "nothing was checked yet, and the run says so");
            run.world.create_all([event(api_version, field, "pulled with hunter2-token")]).into_iter().for_each(|r| {
                r.expect("an Event");
            });
            let found = run.check_invariants();
            assert!(found.as_ref().is_err_and(|e| e.contains("Secret value")), "{api_version}: {found:?}");
            assert!(run.check_coverage().is_ok());
        }
    }

    #[test]
    fn a_misspelt_host_or_node_is_an_error() {
        let mut run = run_with_secret("unused-value");
        assert!(run.host(&HostRef::Name("api".into())).is_ok());
        assert!(run.host(&HostRef::Name("apii".into())).is_err());
        assert!(run.step(&Step::NodeBack("node-9".into())).is_err());
    }
}
