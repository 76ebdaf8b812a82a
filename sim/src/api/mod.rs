//! The simulated Kubernetes API server.
//!
//! [`ApiServer`] holds the cluster's state and answers [`Request`]s; [`http`] serves it over
//! HTTP/1.1 on any stream (a turmoil socket in the simulation, a loopback TCP port for local use
//! and `kubectl`). Storage lives in the `ApiServer` value, not in the serving task, so a simulated
//! crash of the API server host loses connections and watches but no data.

mod admission;
pub mod auth;
pub mod builtin;
mod cel;
pub mod errors;
pub mod fields;
pub mod http;
mod objects;
mod protobuf;
pub mod proxy;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod store;
mod strategic;
mod submitted;
mod table;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use sv_operator::clock::SharedClock;

pub use admission::PodHosts;
pub(crate) use admission::{pod_deletes_need_admission, pods_need_admission};
pub use errors::ApiError;
pub use objects::{DeleteOptions, WriteOptions};
pub use registry::{Registry, ResourceId, ResourceType};
pub use store::{Change, ChangeKind, Store};
pub use submitted::Answer;
pub use watch::WatchStream;

use selector::{FieldSelector, LabelSelector};

/// Limits and knobs of the server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest request body accepted (the real server's limit is 3 MiB).
    pub max_body_bytes: usize,
    /// Changes kept for watches; a watch from an older version gets `410 Expired`.
    pub watch_cache: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Seed of the names and uids the server makes up.
    pub seed: u64,
    /// What `/api` reports as the server address.
    pub address: String,
    /// Authorize every request by RBAC (`--authorization-mode=RBAC`); off, every caller may do
    /// everything (`AlwaysAllow`), which suits quick experiments.
    pub authorization: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            watch_cache: 10_000,
            bookmark_interval: Duration::from_secs(60),
            seed: 1,
            address: "127.0.0.1:6443".into(),
            authorization: false,
        }
    }
}

/// Faults injected into API requests (the simulation's fault controls).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction of requests (not watch streams already open) answered with `fail_code`.
    pub fail_rate: f64,
    pub fail_code: u16,
    /// Added before every answer.
    pub delay: Duration,
    /// Fraction of writes that are committed and then answered with a 504 timeout, as a server
    /// whose reply was lost or came too late: the client cannot tell whether its write happened.
    pub lost_reply_rate: f64,
}

/// A small deterministic generator (SplitMix64) for names and uids.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        sv_common::entropy::splitmix64(&mut self.0)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// Five characters from the alphabet the real server uses for `generateName`.
    pub fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5).map(|_| ALPHABET[(self.next_u64() % ALPHABET.len() as u64) as usize] as char).collect()
    }
}

/// Everything the server stores, behind one lock.
pub struct State {
    pub store: Store,
    pub registry: Registry,
    pub rng: Rng,
    pub ips: builtin::IpAllocator,
    pub faults: Faults,
    fault_rng: Rng,
    /// Pods the simulation's controllers want created while admission webhooks apply to pods:
    /// they are admitted and created between controller passes.
    pub pending_pods: Vec<PendingPod>,
    /// Pods the controllers and kubelets want deleted while webhooks apply to pod deletes.
    pub pending_pod_deletes: Vec<PendingPodDelete>,
}

/// A controller's pod waiting for admission: the pod, the field manager, and the user asking
/// (the controller's ServiceAccount, as the real controller-manager's clients are).
#[derive(Clone, Debug)]
pub struct PendingPod {
    pub pod: Value,
    pub manager: String,
    pub user: String,
}

/// A delete of a pod waiting for admission (a kubelet removing a stopped pod, the garbage
/// collector, a workload controller), and who asks.
#[derive(Clone, Debug)]
pub struct PendingPodDelete {
    pub pod: Value,
    pub options: objects::DeleteOptions,
    pub user: String,
}

struct Inner {
    state: Mutex<State>,
    changes: tokio::sync::watch::Sender<u64>,
    /// Bumped to end every open watch (a restart or an injected watch drop).
    epoch: tokio::sync::watch::Sender<u64>,
    clock: SharedClock,
    options: Options,
    /// How webhook Services reach their pods (set by the simulation's pod runtime).
    pod_hosts: std::sync::RwLock<Option<PodHosts>>,
    /// Requests served, by client address, verb and resource: what each client costs the server.
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    /// Every request in order, once a test turned it on (see [`ApiServer::start_audit`]).
    audit: Mutex<Option<Vec<AuditEntry>>>,
    /// Failures injected for chosen requests only (see [`ApiServer::set_request_fault`]).
    request_fault: std::sync::RwLock<Option<RequestFault>>,
    /// The tokens the server accepts: the static admin token and the ServiceAccount tokens issued.
    tokens: Mutex<auth::Tokens>,
    /// How late, and from what, watches deliver events (see [`ApiServer::set_watch_lag`],
    /// [`ApiServer::stall_watches`], [`ApiServer::set_stale_replica`]).
    watch_view: Mutex<WatchView>,
    /// Requests the harness submitted for the administrator, not yet answered (see
    /// [`ApiServer::submit`]).
    submitted: Mutex<std::collections::VecDeque<(Request, submitted::Answer)>>,
    submitted_ready: tokio::sync::Notify,
}

/// What the watch cache serves, when it is not the store as it is now.
#[derive(Default)]
struct WatchView {
    lag: Duration,
    stalled: bool,
    /// Watches cannot resume from a version below this (history compacted after a stall).
    window_start: u64,
    /// Replicas whose cache stopped at a copy of the store, by the client they are for, and
    /// whether they serve it yet (from its next start).
    stale_replicas: BTreeMap<std::net::IpAddr, (Arc<store::Store>, bool)>,
}

impl WatchView {
    /// The stale replica that serves `peer` now, if one does.
    fn serving(&self, peer: Option<std::net::IpAddr>) -> Option<&Arc<store::Store>> {
        self.stale_replicas.get(&peer?).filter(|(_, serving)| *serving).map(|(copy, _)| copy)
    }
}

/// How one watch is served at this moment (see [`ApiServer::watch_view`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WatchViewNow {
    pub lag: Duration,
    pub stalled: bool,
    pub window_start: u64,
    /// The version the client's replica stopped at, while it lags.
    pub frozen_at: Option<u64>,
}

/// One request as the server saw it: like a line of a real server's audit log.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// When it arrived, on the server's clock.
    pub at: Timestamp,
    pub peer: Option<std::net::IpAddr>,
    pub verb: String,
    /// `leases`, `sharedvolumes/status`, ...
    pub resource: String,
    /// The object's name; empty for lists and creates by body.
    pub name: String,
    /// The status code answered.
    pub code: u16,
    /// Who made it, as authentication found it.
    pub user: String,
    /// What it asked, as the authorizer saw it.
    pub attributes: auth::Attributes,
}

/// Whether a request with this (audit) verb changes, or tries to change, stored state.
pub fn is_write_verb(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

impl AuditEntry {
    /// Whether the request changed (or tried to change) stored state.
    pub fn is_write(&self) -> bool {
        is_write_verb(&self.verb)
    }

    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Chooses requests to fail, given the client's address, the verb and the resource; returns the
/// status code to answer with.
pub type RequestFault = Arc<dyn Fn(Option<std::net::IpAddr>, &str, &str) -> Option<u16> + Send + Sync>;

/// A kind of request one client made: its address, the verb (`get`, `list`, `watch`, `create`,
/// `update`, `patch`, `delete`) and the resource (`leases`, `sharedvolumes/status`, ...).
pub type RequestKey = (std::net::IpAddr, String, String);

/// The simulated API server: cheap to clone, shared by the serving tasks and the built-in
/// controllers.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

/// An API request, independent of the transport.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: ::http::Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub user_agent: String,
    pub accept: String,
    pub body: Bytes,
    /// The client's address, when it came over a network.
    pub peer: Option<std::net::IpAddr>,
    /// The bearer token of its `Authorization` header.
    pub bearer: Option<String>,
    /// Who sent it, once authenticated.
    pub user: Option<auth::UserInfo>,
    /// For a create that passed admission: the name, uid and creation time its dry run drew.
    pub planned: Option<objects::Identity>,
    /// For a write that passed admission: the managed fields its dry run recorded.
    pub planned_fields: Option<fields::Ownership>,
}

impl Request {
    pub fn new(method: ::http::Method, path_and_query: &str) -> Self {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        Self {
            method,
            path: path.to_string(),
            query: parse_query(query),
            content_type: "application/json".into(),
            user_agent: String::new(),
            accept: String::new(),
            body: Bytes::new(),
            peer: None,
            bearer: None,
            user: None,
            planned: None,
            planned_fields: None,
        }
    }

    pub fn with_json(mut self, content_type: &str, body: &Value) -> Self {
        self.content_type = content_type.to_string();
        self.body = Bytes::from(body.to_string());
        self
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }
}

pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to a [`Request`].
pub enum Response {
    Json {
        code: u16,
        body: Value,
        warnings: Vec<String>,
    },
    /// Aggregated discovery (`apidiscovery.k8s.io/v2`), which has its own content type.
    Discovery(Value),
    /// A `meta.k8s.io/v1` Table (server-side printing for `kubectl get`).
    Table(Value),
    Error(ApiError),
    Watch(WatchStream),
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Json { code, body, .. } => write!(f, "Json({code}, {body})"),
            Response::Discovery(body) => write!(f, "Discovery({body})"),
            Response::Table(body) => write!(f, "Table({body})"),
            Response::Error(e) => write!(f, "Error({e:?})"),
            Response::Watch(_) => write!(f, "Watch"),
        }
    }
}

impl Response {
    fn ok(body: Value) -> Self {
        Response::Json { code: 200, body, warnings: Vec::new() }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Response::Json { code, .. } => *code,
            Response::Discovery(_) | Response::Table(_) | Response::Watch(_) => 200,
            Response::Error(e) => e.code(),
        }
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Self {
        Response::Error(e)
    }
}

/// What a resource path names.
#[derive(Clone, Debug)]
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl ApiServer {
    pub fn new(options: Options, clock: SharedClock) -> Self {
        let state = State {
            store: Store::new(options.watch_cache),
            registry: Registry::default(),
            rng: Rng::new(options.seed),
            ips: builtin::IpAllocator::default(),
            faults: Faults::default(),
            fault_rng: Rng::new(options.seed ^ 0xFA17),
            pending_pods: Vec::new(),
            pending_pod_deletes: Vec::new(),
        };
        let (changes, _) = tokio::sync::watch::channel(0);
        let (epoch, _) = tokio::sync::watch::channel(0);
        let server = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                changes,
                epoch,
                clock,
                options,
                pod_hosts: std::sync::RwLock::new(None),
                requests: Mutex::new(BTreeMap::new()),
                audit: Mutex::new(None),
                request_fault: std::sync::RwLock::new(None),
                tokens: Mutex::new(auth::Tokens::default()),
                watch_view: Mutex::new(WatchView::default()),
                submitted: Mutex::default(),
                submitted_ready: tokio::sync::Notify::new(),
            }),
        };
        server.create_system_namespaces();
        if server.inner.options.authorization {
            server.create_bootstrap_policy();
        }
        server
    }

    /// The bootstrap RBAC policy kube-apiserver writes at start-up (the part modelled).
    fn create_bootstrap_policy(&self) {
        for object in auth::bootstrap_policy() {
            if let Err(e) = self.create_object(object, "kube-apiserver") {
                tracing::error!(error = ?e, "creating the bootstrap RBAC policy");
            }
        }
    }

    /// The namespaces kube-apiserver creates for itself at start-up, with the `default`
    /// ServiceAccount the controller-manager gives each within a second of starting: a cluster
    /// that accepts pods has them (the ServiceAccount plugin refuses a pod whose account is
    /// missing). Namespaces made later get theirs from the simulated controller, a moment after.
    fn create_system_namespaces(&self) {
        let mut state = self.state();
        let (Some(namespaces), Some(accounts)) = (
            state.registry.find("", "v1", "namespaces").cloned(),
            state.registry.find("", "v1", "serviceaccounts").cloned(),
        ) else {
            return;
        };
        for name in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            if let Err(e) =
                self.create_in(&mut state, &namespaces, namespace, &WriteOptions::controller("kube-apiserver"))
            {
                tracing::error!(namespace = name, error = ?e, "creating a system namespace");
            }
            let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": "default", "namespace": name}});
            let manager = WriteOptions::controller("kube-controller-manager");
            if let Err(e) = self.create_in(&mut state, &accounts, account, &manager) {
                tracing::error!(namespace = name, error = ?e, "creating a system namespace's ServiceAccount");
            }
        }
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The state, locked. Keep the guard short: every request waits on it.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// Ends every open watch; clients must re-list or resume. Used for restarts and injected
    /// watch drops.
    pub fn drop_watches(&self) {
        self.inner.epoch.send_modify(|e| *e += 1);
    }

    /// Watches deliver each event `lag` after it was committed, from now on (zero ends it), with
    /// bookmarks no further than the last event delivered: a watch cache that lags behind its
    /// store, as one of several API servers behind a load balancer can. Reads stay current (they
    /// are consistent reads), so a client's cache is stale while its reads and writes are not;
    /// its writes from the stale cache meet `409 Conflict`.
    pub fn set_watch_lag(&self, lag: Duration) {
        self.watch_view_mut().lag = lag;
    }

    /// `true`: every watch stops delivering (events and bookmarks), as when the connections
    /// between clients and their API server stall. `false`: the stall ends after the history it
    /// covered was compacted, as etcd compacts while a client is away: every watch that missed an
    /// event ends with `410 Gone` and no watch can resume from before now, so clients re-list and
    /// never see the states in between (Sieve's unobserved states).
    pub fn stall_watches(&self, stalled: bool) {
        let rv = self.state().store.resource_version();
        {
            let mut view = self.watch_view_mut();
            if view.stalled && !stalled {
                view.window_start = rv;
            }
            view.stalled = stalled;
        }
        // Wake every watch to look again.
        self.notify(rv);
    }

    /// `true`: an API server replica's watch cache stops at the store as it is now, and the
    /// client at `peer` is served by it from its next start or reconnection
    /// ([`Self::serve_from_stale_replica`]);
    /// `false`: the replica catches up. A stale replica answers lists at `resourceVersion=0`
    /// (what informers ask for) with that copy, its watches deliver nothing newer, and a watch
    /// from a version it has not reached fails after 3 s with `Too large resource version`, as
    /// the watch cache answers; consistent reads and writes are current. A client that saw the
    /// cluster move on and restarts onto it sees the cluster travel back in time (Sieve's time
    /// travel).
    pub fn set_stale_replica(&self, peer: std::net::IpAddr, stale: bool) {
        let copy = stale.then(|| Arc::new(self.state().store.frozen_copy()));
        {
            let mut view = self.watch_view_mut();
            match copy {
                Some(copy) => view.stale_replicas.insert(peer, (copy, false)),
                None => view.stale_replicas.remove(&peer),
            };
        }
        let rv = self.state().store.resource_version();
        self.notify(rv);
    }

    /// The client at `peer` (re)starts or reconnects: a stale replica waiting for it serves it
    /// from now on.
    pub fn serve_from_stale_replica(&self, peer: std::net::IpAddr) {
        if let Some((_, serving)) = self.watch_view_mut().stale_replicas.get_mut(&peer) {
            *serving = true;
        }
    }

    /// The replica that serves `peer`'s cached reads, while it is a stale one.
    pub(crate) fn stale_replica(&self, peer: Option<std::net::IpAddr>) -> Option<Arc<store::Store>> {
        self.watch_view_mut().serving(peer).cloned()
    }

    /// How a watch of `peer` is served at this moment.
    pub(crate) fn watch_view(&self, peer: Option<std::net::IpAddr>) -> WatchViewNow {
        let view = self.watch_view_mut();
        WatchViewNow {
            lag: view.lag,
            stalled: view.stalled,
            window_start: view.window_start,
            frozen_at: view.serving(peer).map(|copy| copy.resource_version()),
        }
    }

    fn watch_view_mut(&self) -> MutexGuard<'_, WatchView> {
        self.inner.watch_view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes whenever a write is committed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn notify(&self, rv: u64) {
        self.inner.changes.send_replace(rv);
    }

    pub fn now(&self) -> String {
        self.inner.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// Answers one request.
    pub async fn handle(&self, mut request: Request) -> Response {
        let (verb, resource) = (verb_of(&request), resource_of(&request.path));
        let (request_peer, name) = (request.peer, resource_name_of(&request.path));
        if let Some(peer) = request.peer {
            let key = (peer, verb.to_string(), resource.clone());
            *self.inner.requests.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(0) += 1;
        }
        let auditing = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let mut entry = auditing.then(|| AuditEntry {
            at: self.inner.clock.now(),
            peer: request.peer,
            verb: verb.to_string(),
            resource: resource.clone(),
            name: name.clone(),
            code: 0,
            user: String::new(),
            attributes: auth::Attributes::of(&request),
        });
        let injected = self
            .inner
            .request_fault
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|fault| fault(request.peer, verb, &resource));
        let response = match injected {
            Some(code) => errors::injected(code).into(),
            None => match self.authenticate(&request) {
                Err(e) => e.into(),
                Ok(user) => {
                    if let Some(entry) = entry.as_mut() {
                        entry.user = user.username.clone();
                    }
                    request.user = Some(user);
                    match self.authorize(&request) {
                        Ok(()) => self.answer(request).await,
                        Err(e) => e.into(),
                    }
                }
            },
        };
        // Every answer, errors and injected faults included, goes into the trace: two runs that
        // answered differently do not replay each other even when they wrote the same.
        let peer = request_peer.map(|p| p.to_string()).unwrap_or_else(|| "in-process".into());
        let injected = if injected.is_some() { " injected" } else { "" };
        self.state().store.note(&format!("answer {peer} {verb} {resource} {name} {}{injected}", response.code()));
        if let Some(mut entry) = entry {
            entry.code = response.code();
            if let Some(log) = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                log.push(entry);
            }
        }
        response
    }

    /// Who sent `request`: the ServiceAccount of its bearer token; `system:anonymous` without
    /// one over a network; the harness itself (a member of `system:masters`) in process. A token
    /// the server did not issue, or whose ServiceAccount or pod is gone, is refused with 401.
    fn authenticate(&self, request: &Request) -> Result<auth::UserInfo, ApiError> {
        let Some(token) = request.bearer.as_deref() else {
            return Ok(match request.peer {
                Some(_) => auth::UserInfo::anonymous(),
                None => auth::UserInfo::internal("system:admin"),
            });
        };
        let binding = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(token);
        let (namespace, service_account, pod, expires) = match binding.ok_or_else(errors::unauthorized)? {
            auth::TokenBinding::User(user) => return Ok(user),
            auth::TokenBinding::ServiceAccount { namespace, service_account, pod, expires } => {
                (namespace, service_account, pod, expires)
            }
        };
        if expires.is_some_and(|at| self.inner.clock.now() >= at) {
            return Err(errors::unauthorized());
        }
        let state = self.state();
        let find = |plural: &str, name: &str| {
            let rt = state.registry.find("", "v1", plural)?;
            state.store.get(&rt.id, &namespace, name).cloned()
        };
        let account = find("serviceaccounts", &service_account).ok_or_else(errors::unauthorized)?;
        if let Some((pod, uid)) = &pod {
            let alive = find("pods", pod).is_some_and(|p| p["metadata"]["uid"].as_str() == Some(uid.as_str()));
            if !alive {
                return Err(errors::unauthorized());
            }
        }
        let uid = account["metadata"]["uid"].as_str().unwrap_or_default();
        Ok(auth::UserInfo::service_account(&namespace, &service_account, uid))
    }

    /// RBAC, when [`Options::authorization`] is on: the request as a whole, then a write of a
    /// role or binding for escalation.
    fn authorize(&self, request: &Request) -> Result<(), ApiError> {
        let Some(user) = request.user.as_ref().filter(|_| self.inner.options.authorization) else { return Ok(()) };
        let attrs = auth::Attributes::of(request);
        auth::authorize(&self.state(), user, &attrs)?;
        let grants_rights = attrs.api_group == "rbac.authorization.k8s.io"
            && matches!(attrs.verb.as_str(), "create" | "update" | "patch")
            && attrs.subresource.is_empty();
        if !grants_rights || user.is_master() {
            return Ok(());
        }
        let object = match request.method {
            ::http::Method::PATCH => {
                // What the patch would store.
                let state = self.state();
                let rt = state.registry.find(&attrs.api_group, &attrs.api_version, &attrs.resource).cloned();
                let current = rt.and_then(|rt| state.store.get(&rt.id, &attrs.namespace, &attrs.name).cloned());
                drop(state);
                let mut patched = current.map(|c| (*c).clone()).unwrap_or(Value::Null);
                match serde_json::from_slice::<Value>(&request.body) {
                    Ok(Value::Array(ops)) => {
                        if let Ok(ops) = serde_json::from_value::<json_patch::Patch>(Value::Array(ops)) {
                            let _ = json_patch::patch(&mut patched, &ops);
                        }
                    }
                    Ok(patch) => json_patch::merge(&mut patched, &patch),
                    Err(_) => {}
                }
                patched
            }
            _ => serde_json::from_slice(&request.body).unwrap_or(Value::Null),
        };
        auth::check_rbac_write(&self.state(), user, &attrs, &object)
    }

    /// kube-apiserver's `withAuthorization` on a patch that creates its object: the create is
    /// authorized on its own, and refused as `<resource> "<name>" is forbidden: <RBAC reason>`.
    fn authorize_create_by_patch(
        &self,
        state: &State,
        request: &Request,
        target: &Target,
        name: &str,
    ) -> Result<(), ApiError> {
        let Some(user) = request.user.as_ref().filter(|_| self.inner.options.authorization) else { return Ok(()) };
        let mut attrs = auth::Attributes::of(request);
        attrs.verb = "create".into();
        attrs.name = name.to_string();
        let id = &target.rt.id;
        auth::authorize_quietly(state, user, &attrs).map_err(|reason| {
            let qualified = if id.group.is_empty() { id.plural.clone() } else { format!("{}.{}", id.plural, id.group) };
            auth::forbidden_object(&qualified, &id.group, &id.plural, name, &reason)
        })
    }

    /// A token for ServiceAccount `namespace/service_account`, bound to a pod (name, uid) when
    /// given: the kubelet asks for one for each pod it starts (TokenRequest), the harness for
    /// programs it runs outside pods.
    pub fn issue_token(&self, namespace: &str, service_account: &str, pod: Option<(&str, &str)>) -> String {
        let seed = self.inner.options.seed;
        self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner()).issue(seed, namespace, service_account, pod, None)
    }

    /// `POST .../serviceaccounts/<name>/token`: a TokenRequest (`kubectl create token`). The token
    /// expires after `spec.expirationSeconds` (3600 by default; at least 600, as the real server
    /// requires) and, with a `boundObjectRef` to a pod, stops working when that pod is gone.
    fn token_request(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let namespace = target.namespace.as_deref().unwrap_or_default();
        let name = target.name.as_deref().unwrap_or_default();
        let body: Value = if request.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&request.body)
                .map_err(|e| errors::bad_request(format!("invalid TokenRequest: {e}")))?
        };
        let invalid = |field: &str, message: String| {
            let cause = schema::Cause { field: field.into(), reason: "FieldValueInvalid", message };
            let details = json!({"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest"});
            errors::invalid_named("TokenRequest.authentication.k8s.io", details, name, &[cause])
        };
        let seconds = match &body["spec"]["expirationSeconds"] {
            Value::Null => 3600,
            value => value.as_i64().ok_or_else(|| {
                invalid("spec.expirationSeconds", format!("Invalid value: {value}: must be an integer"))
            })?,
        };
        if seconds < 600 {
            return Err(invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
            ));
        }
        if seconds > 1 << 32 {
            return Err(invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"),
            ));
        }
        let pod = {
            let state = self.state();
            state.store.get(&target.rt.id, namespace, name).ok_or_else(|| errors::not_found(&target.rt.id, name))?;
            let bound = &body["spec"]["boundObjectRef"];
            match bound["kind"].as_str() {
                None => None,
                Some("Pod") => {
                    let pod_name = bound["name"].as_str().unwrap_or_default();
                    let pods = state.registry.find("", "v1", "pods").ok_or_else(|| errors::internal("no pods"))?;
                    let found = state
                        .store
                        .get(&pods.id, namespace, pod_name)
                        .ok_or_else(|| errors::not_found(&pods.id, pod_name))?;
                    let uid = found["metadata"]["uid"].as_str().unwrap_or_default().to_string();
                    if let Some(asked) = bound["uid"].as_str().filter(|u| !u.is_empty() && *u != uid) {
                        return Err(ApiError::status(
                            409,
                            "Conflict",
                            format!(
                                "the UID in the bound object reference ({asked}) does not match the UID in record. \
                                 The object might have been deleted and then recreated"
                            ),
                            None,
                        ));
                    }
                    Some((pod_name.to_string(), uid))
                }
                Some(other) => {
                    return Err(invalid(
                        "spec.boundObjectRef.kind",
                        format!(
                            "Unsupported value: {other:?}: supported values: \"Pod\" (Secret and Node are not modelled)"
                        ),
                    ));
                }
            }
        };
        let now = self.inner.clock.now();
        let expires = now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds)).unwrap_or(now);
        let pod_ref = pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str()));
        let seed = self.inner.options.seed;
        let token = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner()).issue(
            seed,
            namespace,
            name,
            pod_ref,
            Some(expires),
        );
        let audiences = match body["spec"]["audiences"].as_array() {
            Some(a) if !a.is_empty() => json!(a),
            _ => json!(["https://kubernetes.default.svc.cluster.local"]),
        };
        let spec = json!({"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": body["spec"]["boundObjectRef"]});
        Ok(Response::Json {
            code: 201,
            body: json!({
                "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
                "spec": spec,
                "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
            }),
            warnings: Vec::new(),
        })
    }

    /// Records every request from now on, for [`ApiServer::audit`].
    pub fn start_audit(&self) {
        let mut audit = self.inner.audit.lock().unwrap_or_else(|e| e.into_inner());
        audit.get_or_insert_with(Vec::new);
    }

    /// The requests recorded since [`ApiServer::start_audit`], in order of arrival.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.inner.audit.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
    }

    /// Fails the requests `fault` picks (None lifts it), before they reach storage.
    pub fn set_request_fault(&self, fault: Option<RequestFault>) {
        *self.inner.request_fault.write().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    async fn answer(&self, request: Request) -> Response {
        let write = request.method != ::http::Method::GET;
        let (fail, delay, lose_reply) = {
            let mut state = self.state();
            let faults = state.faults.clone();
            let fail = faults.fail_rate > 0.0 && state.fault_rng.next_f64() < faults.fail_rate;
            let lose = write && faults.lost_reply_rate > 0.0 && state.fault_rng.next_f64() < faults.lost_reply_rate;
            (fail.then_some(faults.fail_code), faults.delay, lose)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(code) = fail {
            return errors::injected(code).into();
        }
        let mut request = request;
        if request.content_type.starts_with("application/vnd.kubernetes.protobuf") {
            // The creates kubectl sends only as protobuf (`create token`, `create namespace`) are
            // read; other protobuf bodies get 415 (protobuf is not modelled).
            match protobuf::to_json(&request.body) {
                Ok(json) if request.method == ::http::Method::POST => {
                    request.content_type = "application/json".into();
                    request.body = Bytes::from(json.to_string());
                }
                _ => return errors::unsupported_media_type().into(),
            }
        }
        if request.body.len() > self.inner.options.max_body_bytes {
            return errors::too_large(self.inner.options.max_body_bytes).into();
        }
        match self.route(&request) {
            Ok(Route::Doc(_) | Route::Aggregated(_)) if request.method != ::http::Method::GET => {
                errors::method_not_allowed(request.method.as_str()).into()
            }
            Ok(Route::Doc(body)) => Response::ok(body),
            Ok(Route::Aggregated(body)) => Response::Discovery(body),
            Ok(Route::Resource(target)) => {
                let response = self.dispatch(*target, request).await;
                match lose_reply {
                    true => errors::reply_lost().into(),
                    false => response,
                }
            }
            Err(e) => e.into(),
        }
    }

    fn route(&self, request: &Request) -> Result<Route, ApiError> {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let state = self.state();
        let registry = &state.registry;
        let doc = |d: Option<Value>| d.map(Route::Doc).ok_or(ApiError::PlainNotFound);
        // client-go asks for aggregated discovery first and falls back to the legacy documents.
        // Only `v2` is served, as by a v1.36 server (`v2beta1` was removed in v1.33): a client that
        // asks for `v2beta1` alone (kubectl 1.27–1.29) gets the legacy documents it also accepts.
        let aggregated = request
            .accept
            .split(',')
            .any(|media| media.contains("as=APIGroupDiscoveryList") && media.split(';').any(|p| p.trim() == "v=v2"));
        match segments.as_slice() {
            ["version"] => Ok(Route::Doc(json!({
                "major": "1", "minor": "36", "gitVersion": "v1.36.2-sv-sim", "platform": "linux/amd64",
                "goVersion": "sim", "compiler": "sim", "buildDate": "2026-01-01T00:00:00Z",
                "gitCommit": "sim", "gitTreeState": "clean",
            }))),
            ["api"] if aggregated => Ok(Route::Aggregated(registry.aggregated_doc(true))),
            ["apis"] if aggregated => Ok(Route::Aggregated(registry.aggregated_doc(false))),
            ["api"] => Ok(Route::Doc(registry.api_versions_doc(&self.inner.options.address))),
            ["apis"] => Ok(Route::Doc(registry.group_list_doc())),
            ["api", version] => doc(registry.resource_list_doc("", version)),
            ["apis", group] => doc(registry.group_doc_for(group)),
            ["apis", group, version] => doc(registry.resource_list_doc(group, version)),
            ["openapi", "v3"] => Ok(Route::Doc(registry.openapi_root_doc())),
            ["openapi", "v3", "api", version] => doc(registry.openapi_group_version_doc("", version)),
            ["openapi", "v3", "apis", group, version] => doc(registry.openapi_group_version_doc(group, version)),
            ["api", version, rest @ ..] => resource_target(registry, "", version, rest),
            ["apis", group, version, rest @ ..] => resource_target(registry, group, version, rest),
            _ => Err(ApiError::PlainNotFound),
        }
    }

    async fn dispatch(&self, target: Target, request: Request) -> Response {
        use ::http::Method;
        let result = match (&request.method, target.name.is_some(), target.sub.as_deref()) {
            (&Method::GET, false, None) if request.flag("watch") => return self.watch(&target, &request).await,
            (&Method::GET, false, None) => self.list(&target, &request).await,
            (&Method::GET, true, Some("scale")) => self.get_scale(&target),
            (&Method::POST, true, Some("token")) => self.token_request(&target, &request),
            (_, true, Some("token")) => Err(errors::method_not_allowed(request.method.as_str())),
            (&Method::GET, true, _) => self.get(&target),
            (&Method::POST, _, None) | (&Method::PUT | &Method::PATCH, true, _) | (&Method::DELETE, true, None) => {
                self.admitted_write(&target, &request).await
            }
            (&Method::DELETE, false, None) => self.delete_collection(&target, &request),
            (method, _, _) => Err(errors::method_not_allowed(method.as_str())),
        };
        match result {
            Ok(Response::Json { code: 200, body, .. })
                if request.method == ::http::Method::GET && request.accept.contains("as=Table") =>
            {
                Response::Table(table::render(&target.rt, &body, &self.inner.clock.now()))
            }
            Ok(response) => response,
            Err(e) => e.into(),
        }
    }

    fn get(&self, target: &Target) -> Result<Response, ApiError> {
        let name = target.name.as_deref().unwrap_or_default();
        let state = self.state();
        let object = state
            .store
            .get(&target.rt.id, target.namespace.as_deref().unwrap_or_default(), name)
            .ok_or_else(|| errors::not_found(&target.rt.id, name))?;
        Ok(Response::ok(present(&target.rt, object)))
    }

    fn get_scale(&self, target: &Target) -> Result<Response, ApiError> {
        let Response::Json { body: object, .. } = self.get(target)? else {
            return Err(errors::internal("scale of a non-object"));
        };
        let selector = object["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
            })
            .unwrap_or_default();
        let meta = &object["metadata"];
        Ok(Response::ok(json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                         "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
            "spec": {"replicas": object["spec"]["replicas"]},
            "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
        })))
    }

    async fn list(&self, target: &Target, request: &Request) -> Result<Response, ApiError> {
        let labels =
            LabelSelector::parse(request.param("labelSelector").unwrap_or_default()).map_err(errors::bad_request)?;
        let fields = FieldSelector::parse(request.param("fieldSelector").unwrap_or_default(), target.rt.custom)
            .map_err(errors::bad_request)?;
        if request.param("resourceVersionMatch") == Some("NotOlderThan")
            && let Some(wanted) = request.param("resourceVersion").and_then(|v| v.parse::<u64>().ok())
        {
            let current = self.state().store.resource_version();
            if wanted > current {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let current = self.state().store.resource_version();
                return Err(too_large_resource_version(wanted, current));
            }
        }
        let limit = request.param("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let after = match request.param("continue").filter(|c| !c.is_empty()) {
            Some(token) => Some(decode_continue(token).ok_or_else(|| errors::bad_request("invalid continue token"))?),
            None => None,
        };
        // `resourceVersion=0` may be served from the watch cache, a stale replica's included.
        let replica = self.stale_replica(request.peer).filter(|_| request.param("resourceVersion") == Some("0"));
        let state = self.state();
        let store = replica.as_deref().unwrap_or(&state.store);
        let matching: Vec<(&store::ObjectKey, Value)> = store
            .list(&target.rt.id, target.namespace.as_deref())
            .filter(|(key, _)| after.as_ref().is_none_or(|a| *key > a))
            .map(|(key, o)| (key, present(&target.rt, o)))
            .filter(|(_, o)| labels.matches(o) && fields.matches(o))
            .collect();
        let page = limit.unwrap_or(matching.len()).min(matching.len());
        let items: Vec<Value> = matching[..page]
            .iter()
            .map(|(_, o)| {
                let mut item = o.clone();
                if !target.rt.custom
                    && let Some(map) = item.as_object_mut()
                {
                    // Built-in list items are typed by the list, as the real server encodes them.
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect();
        let remaining = matching.len() - page;
        let mut metadata = json!({"resourceVersion": store.resource_version().to_string()});
        if remaining > 0 && page > 0 {
            metadata["continue"] = json!(encode_continue(matching[page - 1].0));
            metadata["remainingItemCount"] = json!(remaining);
        } else if target.rt.custom {
            metadata["continue"] = json!("");
        }
        Ok(Response::ok(json!({
            "kind": target.rt.list_kind(),
            "apiVersion": target.rt.id.api_version(),
            "metadata": metadata,
            "items": items,
        })))
    }

    async fn watch(&self, target: &Target, request: &Request) -> Response {
        let requested = request.param("resourceVersion").and_then(|rv| rv.parse::<u64>().ok());
        if let (Some(wanted), Some(replica)) = (requested, self.stale_replica(request.peer))
            && wanted > replica.resource_version()
        {
            // The watch cache waits a while for its store to reach the version, then gives up.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let current = self.stale_replica(request.peer).map(|r| r.resource_version());
            if current.is_some_and(|current| wanted > current) {
                return too_large_resource_version(wanted, current.unwrap_or_default()).into();
            }
        }
        match watch::start(self, target, request) {
            Ok(stream) if request.accept.contains("as=Table") => {
                Response::Watch(watch::as_tables(stream, target.rt.clone(), self.inner.clock.clone()))
            }
            Ok(stream) => Response::Watch(stream),
            Err(e) => e.into(),
        }
    }
}

/// What the watch cache answers when it has not reached a version in time.
fn too_large_resource_version(wanted: u64, current: u64) -> ApiError {
    errors::server_timeout(
        format!("Timeout: Too large resource version: {wanted}, current: {current}"),
        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
    )
}

enum Route {
    Doc(Value),
    Aggregated(Value),
    Resource(Box<Target>),
}

fn resource_target(registry: &Registry, group: &str, version: &str, rest: &[&str]) -> Result<Route, ApiError> {
    let core = group.is_empty();
    let not_found = || {
        if core {
            ApiError::status(404, "NotFound", "the server could not find the requested resource", Some(json!({})))
        } else {
            ApiError::PlainNotFound
        }
    };
    let namespaced_path = rest.len() >= 3 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize");
    let (namespace, plural, name, sub, extra) = if namespaced_path {
        (Some(rest[1]), rest[2], rest.get(3), rest.get(4), rest.len() > 5)
    } else {
        (None, rest[0], rest.get(1), rest.get(2), rest.len() > 3)
    };
    let rt = registry.find(group, version, plural).ok_or_else(not_found)?;
    if extra || (namespace.is_some() && !rt.namespaced) {
        return Err(not_found());
    }
    if let Some(sub) = sub
        && !((*sub == "status" && rt.status)
            || (*sub == "scale" && rt.scale)
            || (*sub == "token" && rt.token_request()))
    {
        return Err(not_found());
    }
    Ok(Route::Resource(Box::new(Target {
        rt: rt.clone(),
        namespace: namespace.map(String::from),
        name: name.map(|n| n.to_string()),
        sub: sub.map(|s| s.to_string()),
    })))
}

/// An object as clients see it (CR defaults are applied on read too, as the real server does).
fn present(rt: &ResourceType, object: &Value) -> Value {
    if rt.id.plural == "events" {
        return builtin::convert_event(object, rt.id.group.is_empty());
    }
    let mut object = object.clone();
    if let Some(schema) = &rt.schema {
        schema.default(&mut object);
    }
    object
}

fn encode_continue(key: &store::ObjectKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([key.0, key.1]).to_string())
}

fn decode_continue(token: &str) -> Option<store::ObjectKey> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let (namespace, name): (String, String) = serde_json::from_slice(&bytes).ok()?;
    Some((namespace, name))
}

impl ApiServer {
    /// Requests served so far, by client address, verb and resource.
    pub fn request_counts(&self) -> BTreeMap<RequestKey, u64> {
        self.inner.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The Kubernetes verb of a request, as the audit log names it.
fn verb_of(request: &Request) -> &'static str {
    let named = !resource_name_of(&request.path).is_empty();
    match request.method {
        ::http::Method::GET if request.query.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        ::http::Method::GET if named => "get",
        ::http::Method::GET => "list",
        ::http::Method::POST => "create",
        ::http::Method::PUT => "update",
        ::http::Method::PATCH => "patch",
        ::http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Path segments after `/api/v1` or `/apis/<group>/<version>`, and after `namespaces/<ns>` when
/// what follows is a namespaced resource.
fn resource_segments(path: &str) -> Vec<&str> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let rest = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => return Vec::new(),
    };
    match rest {
        ["namespaces", _ns, resource, more @ ..] => std::iter::once(*resource).chain(more.iter().copied()).collect(),
        other => other.to_vec(),
    }
}

/// `plural` or `plural/subresource` of a request's path (`namespaces` for a namespace itself).
fn resource_of(path: &str) -> String {
    match resource_segments(path).as_slice() {
        [] => "(discovery)".to_string(),
        [resource] | [resource, _] => (*resource).to_string(),
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
    }
}

fn resource_name_of(path: &str) -> String {
    resource_segments(path).get(1).map(|s| (*s).to_string()).unwrap_or_default()
}
