//! A pod as its container sees it: arguments, environment, and where each mount path is on disk.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use sv_nfs_client::ClientConfig;

use crate::cluster::{ClusterView, StartError};

/// A pod as its program sees it.
#[derive(Clone, Debug)]
pub struct PodContext {
    pub name: String,
    pub namespace: String,
    /// The pod's uid: a pod that replaces another of the same name has a new one.
    pub uid: String,
    /// The container's `command` and `args` after the image's entrypoint.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Mount path in the container, and the directory behind it; longest paths first.
    mounts: Vec<(String, PathBuf)>,
    /// The mounts whose volume is an NFS PersistentVolume, as the kubelet would mount them.
    nfs: Vec<(String, NfsMount)>,
    /// The container's `securityContext.runAsUser` / `runAsGroup` (or the pod's).
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    /// A directory standing in for the container's own writable layer (what it writes outside
    /// its volumes, lost with the pod).
    pub scratch: PathBuf,
}

/// An NFS mount as the kubelet makes one from a PersistentVolume (`mount -t nfs -o <options>
/// <server>:<path> <mountPath>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfsMount {
    /// The PV's `spec.nfs.server`: for a managed volume, its Service's ClusterIP.
    pub server: String,
    /// The exported path, with the mount's `subPath` under it.
    pub path: String,
    /// The PV's `spec.mountOptions`.
    pub options: Vec<String>,
    /// The pod's claim or the container's mount is read-only (`mount -o ro`).
    pub read_only: bool,
    /// The server is outside the cluster: a directory stands in for it, nobody speaks NFS to it.
    pub external: bool,
}

impl NfsMount {
    /// The NFS client's settings for this mount as the kernel would take them from the mount
    /// options (`nfsvers`, `port`, `mountport`), with the container's identity (`runAsUser`,
    /// `runAsGroup`; 0 by default, which the server squashes by policy).
    pub fn client_config(&self, pod: &PodContext) -> Result<ClientConfig, String> {
        let mut port = 2049u16;
        let mut mount_port = None;
        for option in &self.options {
            let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
            let number = || value.parse::<u16>().map_err(|_| format!("mount option {option:?}: not a port"));
            match key {
                "nfsvers" | "vers" if value != "3" => {
                    return Err(format!(
                        "mount.nfs: Protocol not supported (mount option {option}: the server speaks NFSv3)"
                    ));
                }
                "port" => port = number()?,
                "mountport" => mount_port = Some(number()?),
                _ => {}
            }
        }
        let ip = self.server.parse::<IpAddr>().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut config = ClientConfig::new(SocketAddr::new(ip, port), self.path.clone());
        config.mount_port = mount_port;
        config.machine_name = pod.name.clone();
        config.uid = pod.run_as_user.unwrap_or(0);
        config.gid = pod.run_as_group.unwrap_or(config.uid);
        Ok(config)
    }
}

fn config_error(message: String) -> StartError {
    StartError { reason: "CreateContainerConfigError".into(), message }
}

impl PodContext {
    /// The pod's arguments and environment (values, field references, Secret and ConfigMap keys).
    pub(super) fn new(pod: &Value, container: &Value, cluster: &dyn ClusterView) -> Result<Self, StartError> {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
        };
        // Our images have an entrypoint; a `command` replaces it and is not modelled beyond
        // passing its words on.
        let mut args = strings(&container["command"]);
        args.extend(strings(&container["args"]));
        let mut env = BTreeMap::new();
        // envFrom first: `env` entries override what it brings, as the kubelet orders them.
        for source in container["envFrom"].as_array().into_iter().flatten() {
            let prefix = source["prefix"].as_str().unwrap_or_default();
            for (plural, field, kind) in
                [("configmaps", "configMapRef", "configmap"), ("secrets", "secretRef", "secret")]
            {
                let Some(object_name) = source[field]["name"].as_str() else { continue };
                let Some(object) = cluster.get("", plural, &namespace, object_name) else {
                    if source[field]["optional"] == true {
                        continue;
                    }
                    return Err(config_error(format!("{kind} {object_name:?} not found")));
                };
                for key in object["data"].as_object().into_iter().flat_map(|d| d.keys()) {
                    let selector = serde_json::json!({"key": key});
                    if let Some(value) =
                        key_of(cluster, plural, &namespace, object_name, &selector, plural == "secrets")?
                    {
                        env.insert(format!("{prefix}{key}"), value);
                    }
                }
            }
        }
        for var in container["env"].as_array().into_iter().flatten() {
            let Some(key) = var["name"].as_str() else { continue };
            let from = &var["valueFrom"];
            let value = if let Some(value) = var["value"].as_str() {
                Some(value.to_string())
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                Some(
                    field(pod, path)
                        .ok_or_else(|| config_error(format!("env {key}: unsupported fieldPath {path:?}")))?,
                )
            } else if let Some(secret) = from["secretKeyRef"]["name"].as_str() {
                let selector = &from["secretKeyRef"];
                key_of(cluster, "secrets", &namespace, secret, selector, true)?
            } else if let Some(config_map) = from["configMapKeyRef"]["name"].as_str() {
                let selector = &from["configMapKeyRef"];
                key_of(cluster, "configmaps", &namespace, config_map, selector, false)?
            } else {
                Some(String::new())
            };
            if let Some(value) = value {
                env.insert(key.to_string(), value);
            }
        }
        // The kubelet tells every container where the API server is (in-cluster config). A real
        // one names the `kubernetes` Service; here it is the simulation's API host.
        env.entry("KUBERNETES_SERVICE_HOST".to_string()).or_insert_with(|| crate::world::API_HOST.to_string());
        env.entry("KUBERNETES_SERVICE_PORT".to_string()).or_insert_with(|| crate::world::API_PORT.to_string());
        let security = |key: &str| {
            container["securityContext"][key]
                .as_u64()
                .or_else(|| pod["spec"]["securityContext"][key].as_u64())
                .and_then(|id| u32::try_from(id).ok())
        };
        let (run_as_user, run_as_group) = (security("runAsUser"), security("runAsGroup"));
        Ok(Self {
            name,
            namespace,
            uid,
            args,
            env,
            mounts: Vec::new(),
            nfs: Vec::new(),
            run_as_user,
            run_as_group,
            scratch: PathBuf::new(),
        })
    }

    /// A pod with nothing mounted and no arguments, for unit tests.
    #[cfg(test)]
    pub(super) fn for_test(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
            uid: format!("uid-of-{name}"),
            args: Vec::new(),
            env: BTreeMap::new(),
            mounts: Vec::new(),
            nfs: Vec::new(),
            run_as_user: None,
            run_as_group: None,
            scratch: PathBuf::new(),
        }
    }

    /// Records the container's volume mounts, given the directory of each pod volume and the NFS
    /// mount of those that are NFS PersistentVolumes.
    pub(super) fn mount(
        &mut self,
        container: &Value,
        volumes: &BTreeMap<String, PathBuf>,
        nfs: &BTreeMap<String, NfsMount>,
    ) -> Result<(), StartError> {
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(name), Some(path)) = (mount["name"].as_str(), mount["mountPath"].as_str()) else { continue };
            let dir = volumes
                .get(name)
                .ok_or_else(|| config_error(format!("volumeMounts: no volume named {name:?} in the pod")))?;
            let dir = match mount["subPath"].as_str().filter(|s| !s.is_empty()) {
                Some(sub) if sub.split('/').any(|c| c == "..") || sub.starts_with('/') => {
                    return Err(config_error(format!(
                        "volumeMounts {name}: subPath {sub:?} must be relative, without '..'"
                    )));
                }
                Some(sub) => dir.join(sub),
                None => dir.clone(),
            };
            let path = path.trim_end_matches('/').to_string();
            if let Some(export) = nfs.get(name) {
                let sub = mount["subPath"].as_str().unwrap_or_default().trim_matches('/');
                let mut export = export.clone();
                if !sub.is_empty() {
                    export.path = format!("{}/{sub}", export.path.trim_end_matches('/'));
                }
                export.read_only |= mount["readOnly"] == true;
                self.nfs.push((path.clone(), export));
            }
            self.mounts.push((path, dir));
        }
        self.mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Ok(())
    }

    /// The NFS mount at `path` in the container, if the volume mounted there is NFS.
    pub fn nfs_mount(&self, path: &str) -> Option<&NfsMount> {
        let path = path.trim_end_matches('/');
        self.nfs.iter().find(|(p, _)| p == path).map(|(_, m)| m)
    }

    /// Where `path` inside the container is on disk: under the deepest mount that holds it.
    /// Anything else is the image's read-only root file system, which the simulation does not have.
    /// A client of the API server as a program in this pod makes one (in-cluster config): the
    /// address from `KUBERNETES_SERVICE_HOST`/`PORT`, the token from the ServiceAccount volume
    /// when the pod has one (none: the program is `system:anonymous`).
    pub fn in_cluster_client(&self) -> Result<kube::Client, String> {
        let host = self.env.get("KUBERNETES_SERVICE_HOST").cloned().unwrap_or_default();
        let port = self.env.get("KUBERNETES_SERVICE_PORT").and_then(|p| p.parse().ok()).unwrap_or(443);
        let token_file = format!("{}/token", crate::api::builtin::SERVICE_ACCOUNT_MOUNT_PATH);
        let token = self.host_path(token_file).ok().and_then(|file| std::fs::read_to_string(file).ok());
        crate::net::kube_client_with_token(&host, port, token.as_deref().map(str::trim)).map_err(|e| e.to_string())
    }

    pub fn host_path(&self, path: impl AsRef<Path>) -> Result<PathBuf, String> {
        let path = path.as_ref().to_string_lossy();
        let path = path.trim_end_matches('/');
        for (mount, dir) in &self.mounts {
            if path == mount {
                return Ok(dir.clone());
            }
            if let Some(rest) = path.strip_prefix(mount.as_str()).and_then(|r| r.strip_prefix('/')) {
                if rest.split('/').any(|c| c == "..") {
                    break;
                }
                return Ok(dir.join(rest));
            }
        }
        Err(format!("{path} is not on a mounted volume (the container's root file system is read-only)"))
    }

    /// The program's command line as its own parser would see it in the container: the pod's
    /// arguments, then `--flag=value` for every flag of `C` (global, or of the subcommand named
    /// first) that the pod's environment sets and the arguments do not. Clap reads `env` from the
    /// process, which a simulated pod does not have; arguments win over the environment, as they
    /// do for the real program, and empty values count as unset.
    pub fn argv_with_env<C: clap::CommandFactory>(&self, program: &str) -> Vec<String> {
        let command = C::command();
        let subcommand = self.args.first().and_then(|name| command.find_subcommand(name));
        let mut argv: Vec<String> = std::iter::once(program.to_string()).chain(self.args.iter().cloned()).collect();
        for arg in command.get_arguments().chain(subcommand.into_iter().flat_map(|c| c.get_arguments())) {
            let (Some(long), Some(key)) = (arg.get_long(), arg.get_env().and_then(|k| k.to_str())) else { continue };
            let Some(value) = self.env.get(key).filter(|v| !v.is_empty()) else { continue };
            let flag = format!("--{long}");
            if self.args.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}="))) {
                continue;
            }
            if arg.get_action().takes_values() {
                argv.push(format!("{flag}={value}"));
            } else if matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on") {
                argv.push(flag);
            }
        }
        argv
    }
}

/// The files of a projected volume, as the kubelet writes them: a ServiceAccount token bound to
/// the pod (TokenRequest), ConfigMap and Secret keys, downward API fields. A missing object, or a
/// path that leaves the volume, fails the mount.
pub(super) fn projected_files(
    pod: &Value,
    sources: &[Value],
    cluster: &dyn ClusterView,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let mut files = Vec::new();
    let mut add = |path: &str, content: String| {
        if path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(format!("projected path {path:?} must be relative and must not contain '..'"));
        }
        files.push((path.to_string(), content));
        Ok(())
    };
    for source in sources {
        if let Some(path) = source["serviceAccountToken"]["path"].as_str() {
            let account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
            let token = cluster
                .service_account_token(pod)
                .ok_or_else(|| format!("failed to fetch token: serviceaccounts {account:?} not found"))?;
            add(path, token)?;
        }
        for (plural, field, kind) in [("configmaps", "configMap", "configmap"), ("secrets", "secret", "secret")] {
            let Some(name) = source[field]["name"].as_str() else { continue };
            let Some(object) = cluster.get("", plural, namespace, name) else {
                if source[field]["optional"] == true {
                    continue;
                }
                return Err(format!("{kind} {name:?} not found"));
            };
            let value = |key: &str| -> Option<String> {
                let raw = object["data"][key].as_str()?;
                if plural == "configmaps" {
                    return Some(raw.to_string());
                }
                let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            };
            match source[field]["items"].as_array() {
                Some(items) => {
                    for item in items {
                        let (Some(key), Some(path)) = (item["key"].as_str(), item["path"].as_str()) else { continue };
                        add(path, value(key).ok_or_else(|| format!("{kind} {name:?} has no key {key:?}"))?)?;
                    }
                }
                None => {
                    for key in object["data"].as_object().into_iter().flat_map(|d| d.keys()) {
                        add(key, value(key).unwrap_or_default())?;
                    }
                }
            }
        }
        for item in source["downwardAPI"]["items"].as_array().into_iter().flatten() {
            let (Some(path), Some(field_path)) = (item["path"].as_str(), item["fieldRef"]["fieldPath"].as_str()) else {
                continue;
            };
            add(path, field(pod, field_path).ok_or_else(|| format!("unsupported fieldPath {field_path:?}"))?)?;
        }
    }
    Ok(files)
}

/// A pod field a `fieldRef` may name.
fn field(pod: &Value, path: &str) -> Option<String> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match path {
        "metadata.name" => Some(text(&pod["metadata"]["name"])),
        "metadata.namespace" => Some(text(&pod["metadata"]["namespace"])),
        "metadata.uid" => Some(text(&pod["metadata"]["uid"])),
        "spec.nodeName" => Some(text(&pod["spec"]["nodeName"])),
        "spec.serviceAccountName" => Some(text(&pod["spec"]["serviceAccountName"])),
        "status.podIP" => Some(text(&pod["status"]["podIP"])),
        "status.hostIP" => Some(text(&pod["status"]["hostIP"])),
        _ => {
            let (map, key) = path.strip_suffix("']")?.split_once("['")?;
            match map {
                "metadata.labels" => Some(text(&pod["metadata"]["labels"][key])),
                "metadata.annotations" => Some(text(&pod["metadata"]["annotations"][key])),
                _ => None,
            }
        }
    }
}

/// One key of a Secret (base64 data) or ConfigMap; None when it is optional and missing.
fn key_of(
    cluster: &dyn ClusterView,
    plural: &str,
    namespace: &str,
    name: &str,
    selector: &Value,
    base64: bool,
) -> Result<Option<String>, StartError> {
    let key = selector["key"].as_str().unwrap_or_default();
    let optional = selector["optional"] == true;
    let kind = if base64 { "secret" } else { "configmap" };
    let Some(object) = cluster.get("", plural, namespace, name) else {
        return if optional { Ok(None) } else { Err(config_error(format!("{kind} {name:?} not found"))) };
    };
    let Some(value) = object["data"][key].as_str() else {
        return if optional {
            Ok(None)
        } else {
            Err(config_error(format!("couldn't find key {key} in {kind} {namespace}/{name}")))
        };
    };
    if !base64 {
        return Ok(Some(value.to_string()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| config_error(format!("{kind} {namespace}/{name} key {key}: {e}")))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A Secret or ConfigMap volume: the kubelet writes the object's keys as files, and writes them
/// again when the object changes (a rotated Secret reaches running pods without a restart).
#[derive(Debug)]
pub(super) struct Projection {
    dir: PathBuf,
    plural: &'static str,
    namespace: String,
    name: String,
    /// The volume's `secret` or `configMap` field: `items`, `defaultMode`.
    source: Value,
    /// resourceVersion of what was written.
    written: Option<String>,
}

impl Projection {
    pub fn new(dir: &Path, plural: &'static str, namespace: &str, name: &str, source: &Value) -> Self {
        Self {
            dir: dir.to_path_buf(),
            plural,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: source.clone(),
            written: None,
        }
    }

    /// Writes the object's keys if it changed since the last time; returns whether it exists.
    pub fn refresh(&mut self, cluster: &dyn ClusterView) -> bool {
        let Some(object) = cluster.get("", self.plural, &self.namespace, &self.name) else { return false };
        let version = object["metadata"]["resourceVersion"].as_str().map(str::to_string);
        if version.is_some() && version == self.written {
            return true;
        }
        match self.write(&object["data"]) {
            Ok(()) => self.written = version,
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "projecting {} {}/{}", self.plural, self.namespace, self.name)
            }
        }
        true
    }

    /// Every key, or only `items` (key → path), with `defaultMode` (or an item's `mode`).
    fn write(&self, data: &Value) -> std::io::Result<()> {
        let base64 = self.plural == "secrets";
        let default_mode = self.source["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        // Keys that are gone disappear, as with the kubelet's atomic swap of the whole directory.
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)?;
        }
        std::fs::create_dir_all(&self.dir)?;
        let Some(data) = data.as_object() else { return Ok(()) };
        let items: Vec<(String, String, u32)> = match self.source["items"].as_array() {
            Some(items) => items
                .iter()
                .filter_map(|i| {
                    let mode = i["mode"].as_u64().map_or(default_mode, |m| m as u32);
                    Some((i["key"].as_str()?.to_string(), i["path"].as_str()?.to_string(), mode))
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone(), default_mode)).collect(),
        };
        for (key, path, mode) in items {
            let Some(value) = data.get(&key).and_then(Value::as_str) else { continue };
            // Keys are validated by the API server; a path must stay in the volume all the same.
            if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
                continue;
            }
            let bytes = if base64 {
                base64::engine::general_purpose::STANDARD.decode(value).map_err(std::io::Error::other)?
            } else {
                value.as_bytes().to_vec()
            };
            let target = self.dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&target)?;
            file.write_all(&bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(mounts: &[(&str, &str)]) -> PodContext {
        let mut c = PodContext::for_test("p", "n");
        c.mounts = mounts.iter().map(|(m, d)| (m.to_string(), PathBuf::from(d))).collect();
        c.mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        c
    }

    #[test]
    fn paths_resolve_under_the_deepest_mount_and_never_above_it() {
        let c = context(&[("/data", "/v/data"), ("/data/creds", "/v/creds")]);
        assert_eq!(c.host_path("/data"), Ok(PathBuf::from("/v/data")));
        assert_eq!(c.host_path("/data/x/y"), Ok(PathBuf::from("/v/data/x/y")));
        assert_eq!(c.host_path("/data/creds/password"), Ok(PathBuf::from("/v/creds/password")));
        assert!(c.host_path("/datafile").is_err());
        assert!(c.host_path("/data/../etc").is_err());
        assert!(c.host_path("/etc/passwd").is_err());
    }

    fn with(args: &[&str], env: &[(&str, &str)]) -> PodContext {
        let mut c = context(&[]);
        c.args = args.iter().map(|a| a.to_string()).collect();
        c.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        c
    }

    #[test]
    fn the_environment_fills_the_flags_it_backs_and_arguments_win() {
        let c = with(
            &["run", "--name=from-args"],
            &[
                ("SV_VOLUME_KIND", "SharedVolume"),
                ("SV_VOLUME_NAME", "from-env"),
                ("SV_LOG_FORMAT", "json"),
                ("SV_CREDENTIALS_DIR", ""),
                ("UNRELATED", "x"),
            ],
        );
        let argv = c.argv_with_env::<sv_syncer::program::Cli>("sv-syncer");
        assert_eq!(argv, ["sv-syncer", "run", "--name=from-args", "--log-format=json", "--kind=SharedVolume"]);
    }

    #[test]
    fn flags_of_other_subcommands_are_not_filled() {
        // `once` has no env-backed flags; the syncer's `run` variables must not leak into it.
        let c = with(&["once"], &[("SV_VOLUME_KIND", "SharedVolume")]);
        assert_eq!(c.argv_with_env::<sv_syncer::program::Cli>("sv-syncer"), ["sv-syncer", "once"]);
    }

    /// A cluster of a few objects, for what the kubelet reads.
    struct Objects(Vec<(&'static str, Value)>);

    impl ClusterView for Objects {
        fn get(&self, _group: &str, plural: &str, namespace: &str, name: &str) -> Option<std::sync::Arc<Value>> {
            self.0
                .iter()
                .find(|(p, o)| *p == plural && o["metadata"]["namespace"] == namespace && o["metadata"]["name"] == name)
                .map(|(_, o)| std::sync::Arc::new(o.clone()))
        }
        fn list(&self, _group: &str, _plural: &str, _namespace: Option<&str>) -> Vec<std::sync::Arc<Value>> {
            Vec::new()
        }
        fn service_account_token(&self, _pod: &Value) -> Option<String> {
            Some("t0ken".into())
        }
    }

    #[test]
    fn env_from_brings_every_key_under_its_prefix_and_env_wins() {
        let cluster = Objects(vec![
            (
                "configmaps",
                serde_json::json!({"metadata": {"name": "images", "namespace": "n"}, "data": {"A": "1", "B": "2"}}),
            ),
            ("secrets", serde_json::json!({"metadata": {"name": "s", "namespace": "n"}, "data": {"K": "dg=="}})),
        ]);
        let pod = serde_json::json!({"metadata": {"name": "p", "namespace": "n"}});
        let container = serde_json::json!({"envFrom": [{"configMapRef": {"name": "images"}}, {"secretRef": {"name": "s"}, "prefix": "S_"},
                                                       {"configMapRef": {"name": "absent", "optional": true}}],
                                           "env": [{"name": "B", "value": "mine"}]});
        let c = PodContext::new(&pod, &container, &cluster).expect("starts");
        assert_eq!((c.env["A"].as_str(), c.env["B"].as_str(), c.env["S_K"].as_str()), ("1", "mine", "v"));
        assert_eq!(c.env["KUBERNETES_SERVICE_HOST"], crate::world::API_HOST);
        let missing = serde_json::json!({"envFrom": [{"configMapRef": {"name": "absent"}}]});
        let error = PodContext::new(&pod, &missing, &cluster).expect_err("a missing ConfigMap");
        assert_eq!(
            (error.reason.as_str(), error.message.as_str()),
            ("CreateContainerConfigError", r#"configmap "absent" not found"#)
        );
    }

    #[test]
    fn projected_volumes_hold_the_token_keys_and_fields() {
        let cluster = Objects(vec![(
            "configmaps",
            serde_json::json!({"metadata": {"name": "kube-root-ca.crt", "namespace": "n"}, "data": {"ca.crt": "CA"}}),
        )]);
        let pod = serde_json::json!({"metadata": {"name": "p", "namespace": "n"}});
        let sources = crate::api::builtin::mount_service_account_token_volume()["projected"]["sources"].clone();
        let files = projected_files(&pod, sources.as_array().expect("sources"), &cluster).expect("mounts");
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
        assert_eq!(files, [("token", "t0ken"), ("ca.crt", "CA"), ("namespace", "n")]);
        let escape = serde_json::json!([{"downwardAPI": {"items": [{"path": "../x", "fieldRef": {"fieldPath": "metadata.name"}}]}}]);
        assert!(projected_files(&pod, escape.as_array().expect("sources"), &cluster).is_err());
    }

    #[test]
    fn field_references() {
        let pod = serde_json::json!({"metadata": {"name": "a", "namespace": "b", "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}});
        assert_eq!(field(&pod, "metadata.name").as_deref(), Some("a"));
        assert_eq!(field(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(field(&pod, "metadata.labels['app']").as_deref(), Some("x"));
        assert_eq!(field(&pod, "status.nonsense"), None);
    }
}
