//! Every rule of the v1alpha1 API as pure functions. The operator reports the result on the volume's
//! status and Events; the admission webhook answers with the same messages. Each message names the
//! field and says how to fix it.

use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::names::{MAX_REFERENCE_LEN, is_dns1123_label, is_dns1123_subdomain, is_valid_reference_value};
use crate::redact::{has_userinfo, scrub_userinfo, userinfo};
use crate::units::{format_duration, parse_duration, parse_quantity_bytes};
use crate::{
    AccessMode, GitSource, HttpSource, NfsServerSpec, S3Source, SecretKeySelector, SourceSpec, SshSource, VolumeKind,
    VolumeSpec,
};

/// Default `syncInterval` when a source is set.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Default `syncTimeout`, lowered to half the interval when the interval is shorter than twice this.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Shortest accepted `syncInterval` and `syncTimeout`.
pub const MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);

/// The kind of a field error, worded as the Kubernetes API server words them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    Invalid,
    Forbidden,
    Immutable,
}

impl ErrorKind {
    /// The `reason` of a `StatusCause`.
    pub fn cause_reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid | ErrorKind::Immutable => "FieldValueInvalid",
            ErrorKind::Forbidden => "FieldValueForbidden",
        }
    }
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.source.git.url`.
    pub field: String,
    pub kind: ErrorKind,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            ErrorKind::Required => "Required value: ",
            ErrorKind::Invalid => "Invalid value: ",
            ErrorKind::Forbidden => "Forbidden: ",
            ErrorKind::Immutable => "Invalid value: field is immutable; ",
        };
        write!(f, "{}: {}{}", self.field, prefix, self.message)
    }
}

/// The outcome of validating one spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validation {
    pub errors: Vec<FieldError>,
    /// Allowed but unwise (inline credentials, credentials over plain HTTP).
    pub warnings: Vec<String>,
}

impl Validation {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors in one line, `[a, b]` style when there are several, as the API server does.
    pub fn summary(&self) -> String {
        summarize(&self.errors)
    }

    fn required(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, ErrorKind::Required, message);
    }

    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, ErrorKind::Invalid, message);
    }

    fn forbidden(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field, ErrorKind::Forbidden, message);
    }

    /// Every message passes here, and a URL it echoes loses its credentials: the messages reach
    /// status, Events, logs and admission answers.
    fn push(&mut self, field: impl Into<String>, kind: ErrorKind, message: impl Into<String>) {
        let message = message.into();
        let message = scrub_userinfo(&message).into_owned();
        self.errors.push(FieldError { field: field.into(), kind, message });
    }

    fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        self.warnings.push(scrub_userinfo(&message).into_owned());
    }
}

/// `a` or `[a, b]`.
pub fn summarize(errors: &[FieldError]) -> String {
    match errors {
        [] => String::new(),
        [one] => one.to_string(),
        many => format!("[{}]", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// The identity policy of a managed NFS server for the volume's consumers, from its annotations
/// (see `docs/nfs.md`, "Identity"). Values that do not parse fall back to the defaults here;
/// [`validate_nfs_annotations`] reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfsIdentity {
    /// `root`, `all` or `none`, as `sv-nfs --squash` takes it.
    pub squash: &'static str,
    pub anon_uid: u32,
    pub anon_gid: u32,
}

/// The anonymous id squashed consumers get unless the volume says otherwise.
pub const NFS_ANON_ID: u32 = 65534;

impl NfsIdentity {
    pub fn of(annotations: &std::collections::BTreeMap<String, String>) -> Self {
        use crate::{NFS_ANON_GID_ANNOTATION, NFS_ANON_UID_ANNOTATION, NFS_SQUASH_ANNOTATION};
        let id = |key: &str| annotations.get(key).and_then(|v| parse_nfs_id(v)).unwrap_or(NFS_ANON_ID);
        Self {
            squash: annotations.get(NFS_SQUASH_ANNOTATION).and_then(|v| parse_squash(v)).unwrap_or("root"),
            anon_uid: id(NFS_ANON_UID_ANNOTATION),
            anon_gid: id(NFS_ANON_GID_ANNOTATION),
        }
    }
}

fn parse_squash(value: &str) -> Option<&'static str> {
    match value.trim() {
        "root" => Some("root"),
        "all" => Some("all"),
        "none" => Some("none"),
        _ => None,
    }
}

fn parse_nfs_id(value: &str) -> Option<u32> {
    value.trim().parse().ok()
}

/// Errors in the annotations that set a managed NFS server's identity policy.
pub fn validate_nfs_annotations(annotations: &std::collections::BTreeMap<String, String>) -> Vec<FieldError> {
    use crate::{NFS_ANON_GID_ANNOTATION, NFS_ANON_UID_ANNOTATION, NFS_SQUASH_ANNOTATION};
    let mut v = Validation::default();
    let field = |key: &str| format!("metadata.annotations[{key}]");
    if let Some(value) = annotations.get(NFS_SQUASH_ANNOTATION)
        && parse_squash(value).is_none()
    {
        v.invalid(field(NFS_SQUASH_ANNOTATION), format!("{value:?}: use root (the default), all or none"));
    }
    for key in [NFS_ANON_UID_ANNOTATION, NFS_ANON_GID_ANNOTATION] {
        if let Some(value) = annotations.get(key)
            && parse_nfs_id(value).is_none()
        {
            v.invalid(field(key), format!("{value:?}: must be a numeric id from 0 to 4294967295, e.g. 65534"));
        }
    }
    v.errors
}

/// The syncer container's memory limit: the volume's annotation if it is a valid quantity of at
/// least [`crate::MIN_SYNCER_MEMORY_LIMIT_BYTES`], else the default ([`validate_syncer_annotations`]
/// reports a bad one).
pub fn syncer_memory_limit(annotations: &std::collections::BTreeMap<String, String>) -> String {
    annotations
        .get(crate::SYNCER_MEMORY_LIMIT_ANNOTATION)
        .map(|v| v.trim())
        .filter(|v| crate::units::parse_quantity_bytes(v).is_ok_and(|b| b >= crate::MIN_SYNCER_MEMORY_LIMIT_BYTES))
        .unwrap_or(crate::DEFAULT_SYNCER_MEMORY_LIMIT)
        .to_string()
}

/// Errors in the annotations that set the syncer's resources.
pub fn validate_syncer_annotations(annotations: &std::collections::BTreeMap<String, String>) -> Vec<FieldError> {
    let mut v = Validation::default();
    let key = crate::SYNCER_MEMORY_LIMIT_ANNOTATION;
    if let Some(value) = annotations.get(key) {
        match crate::units::parse_quantity_bytes(value) {
            Ok(bytes) if bytes >= crate::MIN_SYNCER_MEMORY_LIMIT_BYTES => {}
            Ok(_) => v.invalid(
                format!("metadata.annotations[{key}]"),
                format!("{value:?}: at least 64Mi, e.g. 2Gi for a git repository with files up to about 1.9 GiB"),
            ),
            Err(_) => v.invalid(
                format!("metadata.annotations[{key}]"),
                format!("{value:?}: must be a quantity such as 1Gi or 1536Mi"),
            ),
        }
    }
    v.errors
}

/// Sync schedule after defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSchedule {
    pub interval: Duration,
    pub timeout: Duration,
}

/// The schedule a valid spec with a source runs on; `None` without a source or with unparsable
/// durations (validation reports those).
pub fn effective_sync(spec: &VolumeSpec) -> Option<SyncSchedule> {
    if !spec.has_source() {
        return None;
    }
    let interval = match spec.sync_interval.as_deref() {
        Some(s) => parse_duration(s).ok()?,
        None => DEFAULT_SYNC_INTERVAL,
    };
    let timeout = match spec.sync_timeout.as_deref() {
        Some(s) => parse_duration(s).ok()?,
        None => default_timeout(interval),
    };
    Some(SyncSchedule { interval, timeout })
}

fn default_timeout(interval: Duration) -> Duration {
    DEFAULT_SYNC_TIMEOUT.min(interval / 2)
}

/// Where the volume's data is served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMode {
    /// The operator runs an NFS server for the volume.
    Managed { image: Option<String> },
    /// An NFS server outside the cluster (or addressed by host name).
    ExternalUrl { host: String, path: String },
    /// The Service of an NFS server in the cluster; its ClusterIP is used.
    ExternalService { name: String, namespace: Option<String>, path: String },
}

/// How the spec's `nfsServer` block is read: `url` set means an external server at that address;
/// otherwise `name` (and `namespace`) name the Service of an existing in-cluster server; otherwise
/// the operator manages a server, with `image` if given.
pub fn server_mode(spec: &VolumeSpec) -> ServerMode {
    let nfs = spec.nfs_server.clone().unwrap_or_default();
    let path = non_empty(&nfs.path).unwrap_or("/").to_string();
    if let Some(url) = non_empty(&nfs.url) {
        return ServerMode::ExternalUrl { host: url.to_string(), path };
    }
    if let Some(name) = non_empty(&nfs.name) {
        return ServerMode::ExternalService {
            name: name.to_string(),
            namespace: non_empty(&nfs.namespace).map(str::to_string),
            path,
        };
    }
    ServerMode::Managed { image: non_empty(&nfs.image).map(str::to_string) }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// What is validated of one volume.
#[derive(Clone, Copy, Debug)]
pub struct VolumeInput<'a> {
    pub kind: VolumeKind,
    /// The object's namespace (None for a ClusterSharedVolume).
    pub namespace: Option<&'a str>,
    pub spec: &'a VolumeSpec,
    pub namespace_selector: Option<&'a LabelSelector>,
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> VolumeInput<'a> {
    pub fn of<V: crate::Volume>(volume: &'a V) -> Self {
        VolumeInput {
            kind: V::KIND,
            namespace: volume.meta().namespace.as_deref(),
            spec: volume.volume_spec(),
            namespace_selector: volume.namespace_selector(),
            annotations: kube::ResourceExt::annotations(volume),
        }
    }
}

/// The one validation of a volume that the operator (every reconcile), the webhook (before the
/// volume is stored) and `sv-operator validate` all run: the spec, the annotations the operator
/// reads, and, on an update, immutability against the stored spec `old`.
pub fn validate_volume(volume: VolumeInput<'_>, old: Option<&VolumeSpec>) -> Validation {
    let mut v = match old {
        None => validate_spec(volume.kind, volume.namespace, volume.spec, volume.namespace_selector),
        Some(old) => validate_update(volume.kind, volume.namespace, old, volume.spec, volume.namespace_selector),
    };
    v.errors.extend(validate_nfs_annotations(volume.annotations));
    v.errors.extend(validate_syncer_annotations(volume.annotations));
    v
}

/// Validates a spec on its own (create, or the new side of an update).
///
/// `namespace` is the object's namespace (None for a ClusterSharedVolume).
pub fn validate_spec(
    kind: VolumeKind,
    namespace: Option<&str>,
    spec: &VolumeSpec,
    namespace_selector: Option<&LabelSelector>,
) -> Validation {
    let mut v = Validation::default();
    validate_mount_path(&mut v, &spec.mount_path);
    validate_storage(&mut v, spec);
    validate_server(&mut v, spec);
    validate_resource_namespace(&mut v, kind, namespace, spec.resource_namespace.as_deref());
    if let Some(reference) = spec.reference_value.as_deref().filter(|r| !r.is_empty())
        && !is_valid_reference_value(reference)
    {
        v.invalid(
            "spec.referenceValue",
            format!(
                "{reference:?}: must be a lowercase RFC 1123 label of at most {MAX_REFERENCE_LEN} characters; \
                 remove the field and the operator derives one"
            ),
        );
    }
    if let Some(source) = &spec.source {
        validate_source(&mut v, kind, source);
    }
    validate_sync(&mut v, spec);
    if let Some(selector) = namespace_selector {
        validate_selector(&mut v, "spec.namespaceSelector", selector);
    }
    v
}

/// Validates an update: the new spec on its own, plus immutability. After creation only `source`,
/// `syncInterval` and `syncTimeout` may change; `referenceValue` may be set once.
pub fn validate_update(
    kind: VolumeKind,
    namespace: Option<&str>,
    old: &VolumeSpec,
    new: &VolumeSpec,
    namespace_selector: Option<&LabelSelector>,
) -> Validation {
    let mut v = validate_spec(kind, namespace, new, namespace_selector);
    let mut immutable = |field: &str, changed: bool| {
        if changed {
            v.push(
                field,
                ErrorKind::Immutable,
                "only source, syncInterval and syncTimeout may change after creation; \
                 create a new volume to change this",
            );
        }
    };
    immutable("spec.mountPath", old.mount_path != new.mount_path);
    immutable("spec.storage", old.storage != new.storage);
    immutable("spec.storageClassName", old.storage_class_name != new.storage_class_name);
    immutable("spec.nfsServer", old.nfs_server != new.nfs_server);
    immutable("spec.resourceNamespace", old.resource_namespace != new.resource_namespace);
    let old_ref = old.reference_value.as_deref().filter(|r| !r.is_empty());
    let new_ref = new.reference_value.as_deref().filter(|r| !r.is_empty());
    if old_ref.is_some() && old_ref != new_ref {
        v.push(
            "spec.referenceValue",
            ErrorKind::Immutable,
            "it names every object of the volume and cannot change once set; restore the previous value",
        );
    }
    v
}

fn validate_mount_path(v: &mut Validation, path: &str) {
    const FIELD: &str = "spec.mountPath";
    if path.trim().is_empty() {
        v.required(FIELD, "the path at which pods see the volume; set it, e.g. /opt/mnt/data");
        return;
    }
    if !path.starts_with('/') {
        v.invalid(FIELD, format!("{path:?}: must be an absolute path, e.g. /opt/mnt/data"));
    } else if path == "/" {
        v.invalid(FIELD, "\"/\": cannot mount over the container's root; use a directory such as /opt/mnt/data");
    }
    if path.split('/').any(|c| c == "..") {
        v.invalid(FIELD, format!("{path:?}: must not contain '..'"));
    }
    if path.contains('\0') || path.contains(':') {
        v.invalid(FIELD, format!("{path:?}: must not contain ':' or NUL"));
    }
}

fn validate_storage(v: &mut Validation, spec: &VolumeSpec) {
    let Some(storage) = &spec.storage else {
        v.required("spec.storage", "set storage.capacity, e.g. storage: {capacity: 1Gi}");
        return;
    };
    if storage.capacity.trim().is_empty() {
        v.required("spec.storage.capacity", "the size of the volume; set it, e.g. 1Gi");
    } else {
        match parse_quantity_bytes(&storage.capacity) {
            Ok(0) => v.invalid("spec.storage.capacity", "must be greater than zero, e.g. 1Gi"),
            Ok(_) => {}
            Err(e) => v.invalid("spec.storage.capacity", e.to_string()),
        }
    }
    if AccessMode::parse(storage.access_mode.as_deref()).is_none() {
        v.invalid(
            "spec.storage.accessMode",
            format!(
                "{:?}: supported values are \"ReadWrite\" and \"ReadOnly\" (the default)",
                storage.access_mode.as_deref().unwrap_or_default()
            ),
        );
    }
}

fn validate_server(v: &mut Validation, spec: &VolumeSpec) {
    let mode = server_mode(spec);
    if let ServerMode::Managed { .. } = mode {
        match non_empty(&spec.storage_class_name) {
            None => v.required(
                "spec.storageClassName",
                "the StorageClass backing the managed NFS server's disk; set it (e.g. standard), \
                 or set nfsServer.url to use an existing server",
            ),
            Some(sc) if !is_dns1123_subdomain(sc) => {
                v.invalid("spec.storageClassName", format!("{sc:?}: must be a lowercase RFC 1123 subdomain"))
            }
            Some(_) => {}
        }
    }
    let Some(nfs) = &spec.nfs_server else {
        return;
    };
    let NfsServerSpec { name, namespace, url, image, path } = nfs;
    if let Some(url) = non_empty(url) {
        validate_nfs_host(v, url);
        if non_empty(image).is_some() {
            v.forbidden(
                "spec.nfsServer.image",
                "the image applies only to a managed server; remove it or remove nfsServer.url",
            );
        }
    }
    if let Some(name) = non_empty(name)
        && !is_dns1123_label(name)
    {
        v.invalid("spec.nfsServer.name", format!("{name:?}: must be the name of a Service (an RFC 1123 label)"));
    }
    if let Some(ns) = non_empty(namespace) {
        if !is_dns1123_label(ns) {
            v.invalid("spec.nfsServer.namespace", format!("{ns:?}: must be a namespace name (an RFC 1123 label)"));
        }
        if non_empty(name).is_none() && non_empty(url).is_none() {
            v.forbidden("spec.nfsServer.namespace", "needs nfsServer.name; set the Service name or remove it");
        }
    }
    if let Some(image) = non_empty(image)
        && (image.chars().any(char::is_whitespace) || image.len() > 512)
    {
        v.invalid("spec.nfsServer.image", format!("{image:?}: must be a container image reference"));
    }
    if let Some(path) = non_empty(path)
        && (!path.starts_with('/') || path.split('/').any(|c| c == ".."))
    {
        v.invalid("spec.nfsServer.path", format!("{path:?}: must be an absolute export path without '..'"));
    }
}

fn validate_nfs_host(v: &mut Validation, url: &str) {
    const FIELD: &str = "spec.nfsServer.url";
    if url.contains("://") {
        v.invalid(FIELD, format!("{url:?}: give a host name or IP address without a scheme, e.g. nfs.example.com"));
        return;
    }
    if url.contains('/') {
        v.invalid(FIELD, format!("{url:?}: give only the host; put the export path in nfsServer.path"));
        return;
    }
    let host = url.trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    if !is_ip && !is_dns1123_subdomain(&host.to_ascii_lowercase()) {
        v.invalid(FIELD, format!("{url:?}: must be a host name or IP address"));
    }
}

fn validate_resource_namespace(
    v: &mut Validation,
    kind: VolumeKind,
    namespace: Option<&str>,
    resource_namespace: Option<&str>,
) {
    const FIELD: &str = "spec.resourceNamespace";
    let Some(rns) = resource_namespace.filter(|s| !s.is_empty()) else {
        return;
    };
    if !is_dns1123_label(rns) {
        v.invalid(FIELD, format!("{rns:?}: must be a namespace name (an RFC 1123 label)"));
        return;
    }
    if kind == VolumeKind::SharedVolume
        && let Some(ns) = namespace
        && ns != rns
    {
        v.forbidden(
            FIELD,
            format!(
                "a SharedVolume keeps its NFS server and syncer in its own namespace {ns:?}; \
                 remove the field, or use a ClusterSharedVolume"
            ),
        );
    }
}

fn validate_source(v: &mut Validation, kind: VolumeKind, source: &SourceSpec) {
    let kinds = source.kinds();
    if kinds.len() > 1 {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        v.invalid(
            "spec.source",
            format!("at most one source type may be set, found {}; keep one of them", names.join(" and ")),
        );
    }
    if let Some(git) = &source.git {
        validate_git(v, kind, git);
    }
    if let Some(ssh) = &source.ssh {
        validate_ssh(v, kind, ssh);
    }
    if let Some(http) = &source.http {
        validate_http(v, http);
    }
    if let Some(s3) = &source.s3 {
        validate_s3(v, kind, s3);
    }
}

/// Whether a `scheme://user:password@host` URL carries a password.
fn url_has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|u| u.contains(':'))
}

/// Whether a git URL is reached over SSH (`ssh://…` or scp-like `user@host:path`).
pub fn git_url_is_ssh(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme == "ssh" || scheme == "git+ssh";
    }
    // scp-like: `[user@]host:path`, with no slash before the colon.
    match url.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/'),
        None => false,
    }
}

fn validate_git(v: &mut Validation, kind: VolumeKind, git: &GitSource) {
    const BASE: &str = "spec.source.git";
    let url = git.url.trim();
    let is_ssh = git_url_is_ssh(url);
    if url.is_empty() {
        v.required(format!("{BASE}.url"), "the repository to mirror; set it, e.g. https://github.com/org/repo.git");
    } else if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git+ssh" | "git") {
            v.invalid(
                format!("{BASE}.url"),
                format!("{url:?}: scheme {scheme:?} is not supported; use https://, ssh:// or user@host:path"),
            );
        } else if rest.is_empty() || rest.starts_with('/') {
            v.invalid(format!("{BASE}.url"), format!("{url:?}: has no host"));
        }
        if (scheme == "https" || scheme == "http") && has_userinfo(url) {
            v.invalid(
                format!("{BASE}.url"),
                "must not carry credentials; put the user in git.user and the password in git.passwordFromSecret",
            );
        } else if url_has_password(url) {
            v.invalid(
                format!("{BASE}.url"),
                "must not carry a password; put the private key in git.privateKeyFromSecret",
            );
        }
    } else if !is_ssh {
        v.invalid(
            format!("{BASE}.url"),
            format!("{url:?}: use https://host/repo.git, ssh://host/repo.git or user@host:repo.git"),
        );
    }
    if let Some(branch) = git.branch.as_deref().filter(|b| !b.is_empty())
        && !is_valid_branch(branch)
    {
        v.invalid(format!("{BASE}.branch"), format!("{branch:?}: is not a valid git branch name"));
    }
    let has_password = one_of(v, BASE, "password", &git.password, "passwordFromSecret", &git.password_from_secret);
    let has_key = one_of(v, BASE, "privateKey", &git.private_key, "privateKeyFromSecret", &git.private_key_from_secret);
    check_selector(v, kind, &format!("{BASE}.passwordFromSecret"), git.password_from_secret.as_ref());
    check_selector(v, kind, &format!("{BASE}.privateKeyFromSecret"), git.private_key_from_secret.as_ref());
    if has_password && has_key {
        v.invalid(BASE, "set either password authentication or a private key, not both");
    }
    if has_password && non_empty(&git.user).is_none() {
        v.required(format!("{BASE}.user"), "a password or token needs the user it belongs to; set git.user");
    }
    if !url.is_empty() && has_key && !is_ssh {
        v.invalid(
            format!("{BASE}.privateKey"),
            "key authentication needs an SSH URL (ssh://host/repo.git or git@host:repo.git)",
        );
    }
    if !url.is_empty() && has_password && is_ssh {
        v.invalid(
            format!("{BASE}.password"),
            "password authentication needs an https:// URL; for SSH use privateKey or privateKeyFromSecret",
        );
    }
    if has_password && url.starts_with("http://") {
        v.warn(format!("{BASE}: the password is sent over plain http://; use https://"));
    }
    warn_inline(v, BASE, &[("password", &git.password), ("privateKey", &git.private_key)]);
}

/// Git's ref-name rules, restricted to what a branch name may be.
fn is_valid_branch(branch: &str) -> bool {
    !branch.starts_with('-')
        && !branch.starts_with('/')
        && !branch.ends_with('/')
        && !branch.ends_with(".lock")
        && !branch.ends_with('.')
        && !branch.contains("..")
        && !branch.contains("//")
        && !branch.contains("@{")
        && branch.len() <= 255
        && branch.chars().all(|c| !c.is_control() && !" ~^:?*[\\".contains(c))
}

fn validate_ssh(v: &mut Validation, kind: VolumeKind, ssh: &SshSource) {
    const BASE: &str = "spec.source.ssh";
    let host = ssh.host.trim();
    if host.is_empty() {
        v.required(format!("{BASE}.host"), "the SSH server to copy from; set it, e.g. files.example.com");
    } else if host.contains("://") || host.contains('/') || host.chars().any(char::is_whitespace) {
        v.invalid(format!("{BASE}.host"), format!("{host:?}: give only a host name or IP; the port goes in ssh.port"));
    }
    match non_empty(&ssh.path) {
        None => v.required(format!("{BASE}.path"), "the remote directory to mirror; set it, e.g. /srv/data"),
        Some(path) if path.contains('\0') => v.invalid(format!("{BASE}.path"), "must not contain NUL"),
        Some(_) => {}
    }
    if let Some(port) = ssh.port
        && !(1..=65535).contains(&port)
    {
        v.invalid(format!("{BASE}.port"), format!("{port}: must be between 1 and 65535 (default 22)"));
    }
    if let Some(user) = non_empty(&ssh.user)
        && (user.contains('@') || user.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        v.invalid(format!("{BASE}.user"), format!("{user:?}: must be a plain login name"));
    }
    let methods = [
        non_empty(&ssh.password).is_some(),
        ssh.password_from_secret.is_some(),
        non_empty(&ssh.private_key).is_some(),
        ssh.private_key_from_secret.is_some(),
    ];
    match methods.iter().filter(|m| **m).count() {
        0 => v.required(
            BASE,
            "exactly one authentication method is needed: password, passwordFromSecret, privateKey or \
             privateKeyFromSecret; set one",
        ),
        1 => {}
        _ => v.invalid(
            BASE,
            "exactly one authentication method may be set (password, passwordFromSecret, privateKey, \
             privateKeyFromSecret); keep one",
        ),
    }
    check_selector(v, kind, &format!("{BASE}.passwordFromSecret"), ssh.password_from_secret.as_ref());
    check_selector(v, kind, &format!("{BASE}.privateKeyFromSecret"), ssh.private_key_from_secret.as_ref());
    warn_inline(v, BASE, &[("password", &ssh.password), ("privateKey", &ssh.private_key)]);
}

fn validate_http(v: &mut Validation, http: &HttpSource) {
    const FIELD: &str = "spec.source.http.url";
    let url = http.url.trim();
    if url.is_empty() {
        v.required(FIELD, "the file to download; set it, e.g. https://example.com/data.tar.gz");
        return;
    }
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => v.invalid(FIELD, format!("{url:?}: must be an http:// or https:// URL with a host")),
    }
}

fn validate_s3(v: &mut Validation, kind: VolumeKind, s3: &S3Source) {
    const BASE: &str = "spec.source.s3";
    match non_empty(&s3.endpoint_url) {
        None => v.required(format!("{BASE}.endpointUrl"), "the S3 endpoint; set it, e.g. https://s3.amazonaws.com"),
        Some(url) => match url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() && !rest.starts_with('/') => {
                if url.starts_with("http://") {
                    v.warn(format!("{BASE}: credentials are signed over plain http://; use https://"));
                }
            }
            _ => v.invalid(format!("{BASE}.endpointUrl"), format!("{url:?}: must be an http:// or https:// URL")),
        },
    }
    match non_empty(&s3.bucket_name) {
        None => v.required(format!("{BASE}.bucketName"), "the bucket to mirror; set it"),
        Some(bucket) if !is_valid_bucket(bucket) => v.invalid(
            format!("{BASE}.bucketName"),
            format!("{bucket:?}: bucket names are 3-63 lowercase letters, digits, '.' or '-'"),
        ),
        Some(_) => {}
    }
    if non_empty(&s3.region).is_none() {
        v.required(format!("{BASE}.region"), "the bucket's region; set it, e.g. us-east-1");
    }
    if let Some(path) = non_empty(&s3.path)
        && path.split('/').any(|c| c == "..")
    {
        v.invalid(format!("{BASE}.path"), format!("{path:?}: the key prefix must not contain '..'"));
    }
    for (inline, from_secret, inline_name, secret_name) in [
        (&s3.access_key, &s3.access_key_from_secret, "accessKey", "accessKeyFromSecret"),
        (&s3.secret_key, &s3.secret_key_from_secret, "secretKey", "secretKeyFromSecret"),
    ] {
        let set = one_of(v, BASE, inline_name, inline, secret_name, from_secret);
        if !set {
            v.required(
                format!("{BASE}.{secret_name}"),
                format!("one of {inline_name} or {secret_name} is required; set {secret_name}"),
            );
        }
        check_selector(v, kind, &format!("{BASE}.{secret_name}"), from_secret.as_ref());
    }
    warn_inline(v, BASE, &[("accessKey", &s3.access_key), ("secretKey", &s3.secret_key)]);
}

fn is_valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
}

/// Reports both of a pair being set; returns whether at least one is.
fn one_of(
    v: &mut Validation,
    base: &str,
    inline_name: &str,
    inline: &Option<String>,
    secret_name: &str,
    from_secret: &Option<SecretKeySelector>,
) -> bool {
    let has_inline = non_empty(inline).is_some();
    let has_secret = from_secret.is_some();
    if has_inline && has_secret {
        v.invalid(
            format!("{base}.{inline_name}"),
            format!("set only one of {inline_name} or {secret_name}; prefer {secret_name}"),
        );
    }
    has_inline || has_secret
}

fn check_selector(v: &mut Validation, kind: VolumeKind, field: &str, selector: Option<&SecretKeySelector>) {
    let Some(sel) = selector else {
        return;
    };
    if sel.name.trim().is_empty() {
        v.required(format!("{field}.name"), "the Secret's name; set it");
    } else if !is_dns1123_subdomain(&sel.name) {
        v.invalid(format!("{field}.name"), format!("{:?}: must be a Secret name (RFC 1123 subdomain)", sel.name));
    }
    if sel.key.trim().is_empty() {
        v.required(format!("{field}.key"), "the key inside the Secret; set it");
    } else if !sel.key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) || sel.key.len() > 253 {
        v.invalid(
            format!("{field}.key"),
            format!("{:?}: must be a Secret key (letters, digits, '-', '_', '.')", sel.key),
        );
    }
    let namespace = sel.namespace.as_deref().filter(|s| !s.is_empty());
    match (kind, namespace) {
        (VolumeKind::SharedVolume, Some(_)) => v.forbidden(
            format!("{field}.namespace"),
            "a SharedVolume reads Secrets from its own namespace; remove namespace",
        ),
        (VolumeKind::ClusterSharedVolume, None) => v.required(
            format!("{field}.namespace"),
            "a ClusterSharedVolume must say which namespace holds the Secret; set namespace",
        ),
        (VolumeKind::ClusterSharedVolume, Some(ns)) if !is_dns1123_label(ns) => {
            v.invalid(format!("{field}.namespace"), format!("{ns:?}: must be a namespace name"))
        }
        _ => {}
    }
}

fn warn_inline(v: &mut Validation, base: &str, fields: &[(&str, &Option<String>)]) {
    for (name, value) in fields {
        if non_empty(value).is_some() {
            v.warn(format!(
                "{base}.{name}: an inline credential is readable by anyone who can read the volume; \
                 use {name}FromSecret"
            ));
        }
    }
}

fn validate_sync(v: &mut Validation, spec: &VolumeSpec) {
    let interval_text = spec.sync_interval.as_deref().filter(|s| !s.is_empty());
    let timeout_text = spec.sync_timeout.as_deref().filter(|s| !s.is_empty());
    if !spec.has_source() {
        for (field, value) in [("spec.syncInterval", interval_text), ("spec.syncTimeout", timeout_text)] {
            // A warning, not an error: the Go project's own no-source example sets both, and
            // its manifests must apply unchanged.
            if value.is_some() {
                v.warn(format!("{field} has no effect on a volume without a source; remove it or add a source"));
            }
        }
        return;
    }
    let parse = |v: &mut Validation, field: &str, text: Option<&str>| -> Option<Option<Duration>> {
        let Some(text) = text else {
            return Some(None);
        };
        match parse_duration(text) {
            Ok(d) if d < MIN_SYNC_PERIOD => {
                v.invalid(field, format!("{text:?}: must be at least {}", format_duration(MIN_SYNC_PERIOD)));
                None
            }
            Ok(d) => Some(Some(d)),
            Err(e) => {
                v.invalid(field, e.to_string());
                None
            }
        }
    };
    let interval = parse(v, "spec.syncInterval", interval_text);
    let timeout = parse(v, "spec.syncTimeout", timeout_text);
    let (Some(interval), Some(timeout)) = (interval, timeout) else {
        return;
    };
    let interval = interval.unwrap_or(DEFAULT_SYNC_INTERVAL);
    let Some(timeout) = timeout else {
        return; // the default timeout is always below the interval
    };
    if timeout >= interval {
        let interval_shown = match interval_text {
            Some(t) => t.to_string(),
            None => format!("{} (the default)", format_duration(DEFAULT_SYNC_INTERVAL)),
        };
        v.invalid(
            "spec.syncTimeout",
            format!(
                "{:?}: must be smaller than syncInterval {interval_shown}; lower syncTimeout or raise syncInterval",
                timeout_text.unwrap_or_default()
            ),
        );
    }
}

fn validate_selector(v: &mut Validation, field: &str, selector: &LabelSelector) {
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let f = format!("{field}.matchExpressions[{i}]");
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if expr.values.as_ref().is_none_or(Vec::is_empty) {
                    v.required(format!("{f}.values"), "In and NotIn need at least one value");
                }
            }
            "Exists" | "DoesNotExist" => {
                if expr.values.as_ref().is_some_and(|vals| !vals.is_empty()) {
                    v.forbidden(format!("{f}.values"), "Exists and DoesNotExist take no values; remove them");
                }
            }
            other => v.invalid(
                format!("{f}.operator"),
                format!("{other:?}: supported operators are In, NotIn, Exists and DoesNotExist"),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
