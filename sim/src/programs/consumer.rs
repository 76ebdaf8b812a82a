//! The consumers of the test image [`CONSUMER_IMAGE`]: workloads that use a volume as a user's pod
//! does, over NFSv3 to the real `sv-nfs`, and check what they see.
//!
//! A consumer reaches its server as a kubelet's mount would: the pod's NFS PersistentVolume names
//! the server (the volume's Service ClusterIP) and the mount options (`port=`, `mountport=`,
//! `nfsvers=`); connections go through kube-proxy ([`crate::api::proxy`]) to whichever server pod
//! is ready when they open. The client is `sv-nfs-client` on simulated sockets, mounted `hard`:
//! a call that gets no answer is tried again until the pod stops, as a kernel client does.
//!
//! - `reader --mount P [--mount Q ...]`: each round resolves `.sharedvolume/current` once, reads that revision's
//!   manifest, walks the revision and reads every file: every file must be the manifest's (same
//!   names, and the content digest the manifest records), else the round saw a mixed revision.
//! - `writer --mount P [--stable file-sync|unstable]`: appends fixed-size records to
//!   `P/<pod>/records`, either each with FILE_SYNC or in batches of UNSTABLE writes and a COMMIT
//!   (sent again, as a kernel client does, when the write verifier changed before the COMMIT); a
//!   record is acknowledged once the server said it is stable. Each round reads the file back:
//!   every acknowledged record must be there.
//! - `holder --mount P [--mount Q ...]`: keeps the handles of the export's root, of `.sharedvolume/revisions` when
//!   there is one, and of a file of its own on a writable mount, and uses them every round: none
//!   may ever answer STALE (or BADHANDLE), whatever happens to the server.
//!
//! What they see is kept in [`Consumers`] (the test image's log): rounds, files, revisions,
//! acknowledged records, and every invariant violation, which the [`crate::world::World`] checks
//! after every simulated step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::Parser;
use nfs3_client::net::Connector;
use nfs3_types::nfs3::{ftype3, nfs_fh3, nfsstat3, stable_how};
use sv_nfs_client::client::Stream;
use sv_nfs_client::{ClientConfig, NfsClient, NfsError};
use sv_syncer::tree::{Entry, Manifest};
use tokio_util::sync::CancellationToken;

use super::pod::{NfsMount, PodContext};
use crate::api::proxy::ServiceProxy;

/// The test image whose pods run a consumer; its arguments choose which.
pub const CONSUMER_IMAGE: &str = "ghcr.io/sharedvolume/sv-sim-consumer";

/// One record of a writer: its sequence number and pod, padded to a fixed size so that record `n`
/// is at offset `n * RECORD_LEN`.
const RECORD_LEN: usize = 64;

/// How long one round may go without an answer before the consumer gives it up and starts the
/// next (the kernel client's `timeo=600`, a minute, before it reports "server not responding").
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(name = "sv-sim-consumer", about = "A pod that uses a SharedVolume over NFS and checks what it sees")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Role {
    /// Reads whole published revisions and checks each against its manifest.
    Reader(Common),
    /// Appends records and checks that every acknowledged one stays.
    Writer {
        #[command(flatten)]
        common: Common,
        /// How a record is made stable: a FILE_SYNC write each, or UNSTABLE writes and a COMMIT.
        #[arg(long, value_enum, default_value = "unstable")]
        stable: Stability,
        /// Records per UNSTABLE batch.
        #[arg(long, default_value_t = 4)]
        batch: u64,
    },
    /// Keeps file handles and uses them every round.
    Holder(Common),
}

#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// The container's mount path of a volume; a reader or holder may take several (one
    /// connection each, used in turn every round), a writer one.
    #[arg(long, required = true)]
    mount: Vec<String>,
    /// Time between rounds.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    every: Duration,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Stability {
    FileSync,
    Unstable,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    sv_operator::units::parse_duration(text).map_err(|e| e.to_string())
}

/// The invariants the consumers check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// A reader saw files of more than one revision, or files the revision does not hold.
    MixedRevision,
    /// A record the server acknowledged as stable is not there.
    LostWrite,
    /// A handle the holder kept answered STALE or BADHANDLE.
    StaleHandle,
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MixedRevision => "no reader sees a mixed revision",
            Self::LostWrite => "no acknowledged write is lost",
            Self::StaleHandle => "held handles never answer STALE",
        })
    }
}

/// One broken invariant, as the consumer that saw it reported it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub invariant: Invariant,
    /// `namespace/name` of the pod.
    pub pod: String,
    pub detail: String,
    /// What the pod did just before (its last operations).
    pub recent: Vec<String>,
}

/// What one consumer pod saw, over all its containers' runs.
#[derive(Clone, Debug, Default)]
pub struct PodRecord {
    /// `reader`, `writer` or `holder`.
    pub role: String,
    /// Rounds that completed and checked something.
    pub rounds: u64,
    /// Reader: files read and checked; holder: handles used.
    pub checked: u64,
    /// Reader: the revisions it read whole.
    pub revisions: BTreeSet<String>,
    /// Reader: rounds given up because the revision was retired under it (two publications
    /// during one walk; documented, not a violation).
    pub retired: u64,
    /// Writer: records acknowledged as stable (records `0..acknowledged` of its file).
    pub acknowledged: u64,
    /// Writer: UNSTABLE batches sent again because the verifier changed before their COMMIT.
    pub resent: u64,
    /// Rounds that failed without breaking an invariant (no answer during a failover, a mount
    /// that is not there yet), and the last such error.
    pub errors: u64,
    pub last_error: Option<String>,
    /// The simulated time at which each round completed (stamped by the world after every step).
    pub round_times: Vec<Duration>,
    recent: VecDeque<String>,
}

/// The consumers' log, shared by every consumer pod of a simulation.
#[derive(Clone, Default)]
pub struct Consumers {
    inner: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    pods: BTreeMap<String, PodRecord>,
    violations: Vec<Violation>,
    /// How many of `violations` the world has been told of.
    reported: usize,
}

/// Operations kept per pod for a violation's report.
const RECENT: usize = 12;

impl Consumers {
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What each consumer pod saw, by `namespace/name`.
    pub fn pods(&self) -> BTreeMap<String, PodRecord> {
        self.lock().pods.clone()
    }

    /// Every violation so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// The pods of `pods` that have completed no round after the simulated time `at`.
    pub fn unserved_since(&self, pods: &[String], at: Duration) -> Vec<String> {
        let log = self.lock();
        let served = |pod: &String| log.pods.get(pod).is_some_and(|r| r.round_times.iter().any(|t| *t > at));
        pods.iter().filter(|pod| !served(pod)).cloned().collect()
    }

    /// Stamps the rounds completed since the last call with the simulated time `now`.
    pub fn stamp(&self, now: Duration) {
        for record in self.lock().pods.values_mut() {
            let stamped = record.round_times.len() as u64;
            record.round_times.extend((stamped..record.rounds).map(|_| now));
        }
    }

    /// The first violation not returned before.
    pub fn take_new_violation(&self) -> Option<Violation> {
        let mut log = self.lock();
        let next = log.violations.get(log.reported).cloned()?;
        log.reported += 1;
        Some(next)
    }

    fn update<T>(&self, pod: &str, role: &str, change: impl FnOnce(&mut PodRecord) -> T) -> T {
        let mut log = self.lock();
        let record = log.pods.entry(pod.to_string()).or_default();
        record.role = role.to_string();
        change(record)
    }

    fn did(&self, pod: &str, role: &str, what: String) {
        self.update(pod, role, |r| {
            if r.recent.len() == RECENT {
                r.recent.pop_front();
            }
            r.recent.push_back(what);
        });
    }

    fn failed(&self, pod: &str, role: &str, error: String) {
        self.update(pod, role, |r| {
            r.errors += 1;
            r.last_error = Some(error);
        });
    }

    fn violated(&self, pod: &str, role: &str, invariant: Invariant, detail: String) {
        tracing::error!(%pod, %invariant, %detail, "a consumer saw an invariant broken");
        let recent = self.update(pod, role, |r| r.recent.iter().cloned().collect());
        self.lock().violations.push(Violation { invariant, pod: pod.to_string(), detail, recent });
    }
}

/// Connects to an NFS server as the node's network would: `server` (a ClusterIP or a Service's
/// name) through kube-proxy to a ready server pod's host.
#[derive(Clone)]
struct ProxyConnector {
    proxy: ServiceProxy,
    server: String,
}

impl Connector for ProxyConnector {
    type Connection = Stream<crate::net::SimStream>;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Connection> {
        let backend = self
            .proxy
            .route(&self.server, addr.port())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))?;
        Ok(Stream(crate::net::SimStream::connect((backend.host.as_str(), backend.port)).await?))
    }

    async fn connect_with_port(&self, addr: SocketAddr, _local_port: u16) -> std::io::Result<Self::Connection> {
        // Source ports are not modelled: sv-nfs does not ask for a privileged one.
        self.connect(addr).await
    }
}

type Client = NfsClient<ProxyConnector>;

/// The volumes a consumer mounts (comma-separated, as the annotation takes them): SharedVolumes
/// of its namespace, or ClusterSharedVolumes.
#[derive(Clone, Copy, Debug)]
pub enum Mounts<'a> {
    Shared(&'a str),
    Cluster(&'a str),
}

/// A StatefulSet of one consumer pod (`<name>-0`) in `namespace`, annotated for the webhook, which
/// adds the volume and mounts it at the volume's `mountPath`; `args` are the consumer's
/// (`reader --mount=/mnt/docs`, ...).
pub fn stateful_set(namespace: &str, name: &str, volume: Mounts<'_>, args: &[String]) -> serde_json::Value {
    let annotation = match volume {
        Mounts::Shared(volume) => (sv_operator::api::POD_ANNOTATION_SV, volume),
        Mounts::Cluster(volume) => (sv_operator::api::POD_ANNOTATION_CSV, volume),
    };
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {annotation.0: annotation.1}},
                "spec": {"containers": [{"name": "consumer", "image": format!("{CONSUMER_IMAGE}:test"), "args": args}]},
            },
        },
    })
}

/// What the kubelet would pass to `mount -t nfs`, read as the client must: NFSv3 only (sv-nfs
/// serves no other), with the NFS and MOUNT ports of the options.
fn client_config(mount: &NfsMount, pod: &PodContext) -> Result<ClientConfig, String> {
    let mut config = mount.client_config(pod)?;
    config.connections = 1;
    // `hard`: keep trying while the server is away (a failover takes minutes after a node loss);
    // each round is bounded by ROUND_TIMEOUT instead.
    config.retries = u32::MAX;
    config.retry_delay = Duration::from_secs(1);
    Ok(config)
}

/// Runs a consumer until `stop`.
pub(super) async fn run(
    context: PodContext,
    proxy: ServiceProxy,
    consumers: Consumers,
    stop: CancellationToken,
) -> Result<(), String> {
    let cli = Cli::try_parse_from(std::iter::once("sv-sim-consumer").chain(context.args.iter().map(String::as_str)))
        .map_err(|e| e.to_string())?;
    let (role, common) = match &cli.role {
        Role::Reader(c) => ("reader", c),
        Role::Writer { common, .. } => ("writer", common),
        Role::Holder(c) => ("holder", c),
    };
    let pod = format!("{}/{}", context.namespace, context.name);
    if role == "writer" && common.mount.len() > 1 {
        return Err("a writer takes one --mount (its records are counted per pod)".to_string());
    }
    consumers.update(&pod, role, |_| ());
    let mut mes = Vec::new();
    for path in &common.mount {
        let mount =
            context.nfs_mount(path).cloned().ok_or_else(|| format!("{path}: no NFS volume is mounted there"))?;
        let Some(client) = mount_export(&mount, &context, &proxy, &consumers, &pod, role, &stop).await? else {
            return Ok(());
        };
        let (consumers, pod) = (consumers.clone(), pod.clone());
        mes.push(Me {
            pod,
            role,
            consumers,
            client,
            read_only: mount.read_only,
            name: context.name.clone(),
            mount: path.clone(),
        });
    }
    let mut held: Vec<Option<Held>> = mes.iter().map(|_| None).collect();
    loop {
        for (me, held) in mes.iter().zip(held.iter_mut()) {
            let round = async {
                match &cli.role {
                    Role::Reader(_) => me.read_round().await,
                    Role::Writer { stable, batch, .. } => me.write_round(*stable, (*batch).max(1)).await,
                    Role::Holder(_) => me.hold_round(held).await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                result = tokio::time::timeout(ROUND_TIMEOUT, round) => match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => me.consumers.failed(&me.pod, me.role, format!("{}: {e}", me.mount)),
                    Err(_) => me.consumers.failed(&me.pod, me.role, format!("{}: no answer within the round's time", me.mount)),
                },
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(common.every) => {}
        }
    }
}

/// The mount: MOUNT to learn the export's root handle, tried again until it answers (a kernel
/// mount that cannot reach its server keeps the container waiting). None if the pod stopped
/// first.
async fn mount_export(
    mount: &NfsMount,
    context: &PodContext,
    proxy: &ServiceProxy,
    consumers: &Consumers,
    pod: &str,
    role: &str,
    stop: &CancellationToken,
) -> Result<Option<Client>, String> {
    let config = client_config(mount, context)?;
    let connector = ProxyConnector { proxy: proxy.clone(), server: mount.server.clone() };
    loop {
        let attempt = tokio::time::timeout(ROUND_TIMEOUT, Client::connect(connector.clone(), config.clone()));
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            result = attempt => match result {
                Ok(Ok(client)) => return Ok(Some(client)),
                Ok(Err(e)) => consumers.failed(pod, role, format!("mount: {e}")),
                Err(_) => consumers.failed(pod, role, "mount: no answer".to_string()),
            },
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One consumer at work on one of its mounts.
struct Me {
    pod: String,
    name: String,
    role: &'static str,
    consumers: Consumers,
    client: Client,
    read_only: bool,
    /// The mount path, which names the volume in what the consumer reports.
    mount: String,
}

/// The handles a holder keeps, and the content of its own file.
struct Held {
    handles: Vec<(String, nfs_fh3)>,
    own: Option<(nfs_fh3, Vec<u8>)>,
}

fn is_retired(e: &NfsError) -> bool {
    matches!(e.status(), Some(nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_NOENT))
}

impl Me {
    fn did(&self, what: String) {
        self.consumers.did(&self.pod, self.role, format!("{}: {what}", self.mount));
    }

    fn violated(&self, invariant: Invariant, detail: String) {
        self.consumers.violated(&self.pod, self.role, invariant, format!("{}: {detail}", self.mount));
    }

    /// One pass over the published revision.
    async fn read_round(&self) -> Result<(), NfsError> {
        let client = &self.client;
        let state = match client.lookup(&client.root(), b".sharedvolume").await {
            Ok((fh, _)) => fh,
            Err(e) if e.status() == Some(nfsstat3::NFS3ERR_NOENT) => {
                self.did("nothing published yet".to_string());
                return Ok(());
            }
            // The root's handle is the mount's, kept since the pod started.
            Err(e) if e.status() == Some(nfsstat3::NFS3ERR_STALE) => {
                self.violated(Invariant::StaleHandle, format!("the mount's root handle: {e}"));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // `current` is replaced (a rename over it) at every publication: the link looked up may be
        // gone before it is read, which is a retired revision, not a fault.
        let resolve = async {
            let (current, _) = client.lookup(&state, b"current").await?;
            client.readlink(&current).await
        };
        let target = match resolve.await {
            Ok(target) => String::from_utf8_lossy(&target).into_owned(),
            Err(e) if is_retired(&e) => {
                self.did(format!("current switched while it was resolved: {e}"));
                self.consumers.update(&self.pod, self.role, |r| r.retired += 1);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let id = target.strip_prefix("revisions/").unwrap_or(&target).to_string();
        self.did(format!("current -> {target}"));
        let walk = async {
            let (revisions, _) = client.lookup(&state, b"revisions").await?;
            let (manifest, _) = client.lookup(&revisions, format!("{id}.json").as_bytes()).await?;
            let manifest = client.read_all(&manifest).await?;
            let (dir, _) = client.lookup(&revisions, id.as_bytes()).await?;
            let mut seen = BTreeMap::new();
            self.walk(&dir, String::new(), &mut seen).await?;
            Ok::<_, NfsError>((manifest, seen))
        };
        let (manifest, seen) = match walk.await {
            Ok(found) => found,
            Err(e) if is_retired(&e) => {
                self.did(format!("revision {id} retired during the walk: {e}"));
                self.consumers.update(&self.pod, self.role, |r| r.retired += 1);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let manifest: Manifest = match serde_json::from_slice(&manifest) {
            Ok(m) => m,
            Err(e) => {
                self.violated(Invariant::MixedRevision, format!("revision {id}: its manifest does not parse: {e}"));
                return Ok(());
            }
        };
        if let Some(problem) = mismatch(&manifest, &seen) {
            self.violated(Invariant::MixedRevision, format!("revision {id} ({}): {problem}", manifest.revision));
            return Ok(());
        }
        let files = seen.values().filter(|s| matches!(s, Seen::File(_))).count() as u64;
        self.did(format!("read revision {id} whole: {files} files"));
        self.consumers.update(&self.pod, self.role, |r| {
            r.rounds += 1;
            r.checked += files;
            r.revisions.insert(manifest.revision.clone());
        });
        Ok(())
    }

    /// Reads everything under `dir`, by path relative to the revision.
    async fn walk(&self, dir: &nfs_fh3, prefix: String, seen: &mut BTreeMap<String, Seen>) -> Result<(), NfsError> {
        // Directories by a loop, not recursion: an async fn cannot call itself without boxing.
        let mut pending = vec![(dir.clone(), prefix)];
        while let Some((dir, prefix)) = pending.pop() {
            for entry in self.client.read_dir(&dir).await? {
                let name = String::from_utf8_lossy(&entry.name).into_owned();
                let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let fh = match entry.handle {
                    Some(fh) => fh,
                    None => self.client.lookup(&dir, &entry.name).await?.0,
                };
                let kind = match entry.attributes {
                    Some(a) => a.type_,
                    None => self.client.getattr(&fh).await?.type_,
                };
                match kind {
                    ftype3::NF3DIR => {
                        seen.insert(path.clone(), Seen::Dir);
                        pending.push((fh, path));
                    }
                    ftype3::NF3LNK => {
                        let target = self.client.readlink(&fh).await?;
                        seen.insert(path, Seen::Symlink(String::from_utf8_lossy(&target).into_owned()));
                    }
                    _ => {
                        let content = self.client.read_all(&fh).await?;
                        seen.insert(path, Seen::File(content));
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends records until one batch is acknowledged, then reads the file back.
    async fn write_round(&self, stable: Stability, batch: u64) -> Result<(), NfsError> {
        let client = &self.client;
        let dir = match client.mkdir(&client.root(), self.name.as_bytes(), 0o755).await {
            Ok((fh, _)) => fh,
            Err(e) if e.status() == Some(nfsstat3::NFS3ERR_EXIST) => {
                client.lookup(&client.root(), self.name.as_bytes()).await?.0
            }
            Err(e) => return Err(e),
        };
        let file = match client.lookup(&dir, b"records").await {
            Ok((fh, _)) => fh,
            Err(e) if e.status() == Some(nfsstat3::NFS3ERR_NOENT) => {
                client.create(&dir, b"records", 0o644, false).await?.0
            }
            Err(e) => return Err(e),
        };
        let first = self.consumers.update(&self.pod, self.role, |r| r.acknowledged);
        let records: Vec<(u64, Vec<u8>)> = match stable {
            Stability::FileSync => vec![(first, record(&self.pod, first))],
            Stability::Unstable => (first..first + batch).map(|seq| (seq, record(&self.pod, seq))).collect(),
        };
        // An UNSTABLE batch is stable once a COMMIT answers with the verifier every WRITE of it
        // got; otherwise the server restarted in between and may have lost them: send again.
        for attempt in 0..3 {
            let mut verifiers = BTreeSet::new();
            let mut all_stable = true;
            for (seq, data) in &records {
                let how = if stable == Stability::FileSync { stable_how::FILE_SYNC } else { stable_how::UNSTABLE };
                let written = client.write(&file, seq * RECORD_LEN as u64, data, how).await?;
                if written.count as usize != data.len() {
                    return Err(NfsError::Rpc(format!("short write: {} of {} bytes", written.count, data.len())));
                }
                verifiers.insert(written.verifier);
                all_stable &= written.committed == stable_how::FILE_SYNC;
            }
            let committed = if all_stable && verifiers.len() == 1 {
                true
            } else {
                let verifier = client.commit(&file).await?;
                verifiers.len() == 1 && verifiers.contains(&verifier)
            };
            if committed {
                let last = first + records.len() as u64;
                self.did(format!("records {first}..{last} acknowledged as stable"));
                self.consumers.update(&self.pod, self.role, |r| r.acknowledged = last);
                break;
            }
            self.did(format!("records from {first}: the verifier changed before COMMIT; sending again ({attempt})"));
            self.consumers.update(&self.pod, self.role, |r| r.resent += 1);
        }
        // Every acknowledged record must read back as written.
        let acknowledged = self.consumers.update(&self.pod, self.role, |r| r.acknowledged);
        let content = client.read_all(&file).await?;
        if let Some(seq) = (0..acknowledged).find(|&seq| {
            let at = (seq as usize) * RECORD_LEN;
            content.get(at..at + RECORD_LEN) != Some(record(&self.pod, seq).as_slice())
        }) {
            self.violated(
                Invariant::LostWrite,
                format!(
                    "record {seq} of {acknowledged} acknowledged is not in {}/records ({} bytes read)",
                    self.name,
                    content.len()
                ),
            );
            return Ok(());
        }
        self.consumers.update(&self.pod, self.role, |r| {
            r.rounds += 1;
            r.checked += acknowledged;
        });
        Ok(())
    }

    /// Uses every held handle (taking them first, once).
    async fn hold_round(&self, held: &mut Option<Held>) -> Result<(), NfsError> {
        let client = &self.client;
        if held.is_none() {
            let mut handles = vec![("the export's root".to_string(), client.root())];
            if let Ok((state, _)) = client.lookup(&client.root(), b".sharedvolume").await
                && let Ok((revisions, _)) = client.lookup(&state, b"revisions").await
            {
                handles.push((".sharedvolume/revisions".to_string(), revisions));
            }
            let own = if self.read_only {
                None
            } else {
                let name = format!("{}.held", self.name);
                let (fh, _) = client.create(&client.root(), name.as_bytes(), 0o644, false).await?;
                let content = format!("held by {}\n", self.pod).into_bytes();
                client.write(&fh, 0, &content, stable_how::FILE_SYNC).await?;
                handles.push((name, fh.clone()));
                Some((fh, content))
            };
            self.did(format!("holding {} handles", handles.len()));
            *held = Some(Held { handles, own });
        }
        let Some(held) = held.as_ref() else { return Ok(()) };
        let stale = |what: &str, e: &NfsError| {
            matches!(e.status(), Some(nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE))
                .then(|| format!("the handle of {what}: {e}"))
        };
        for (what, fh) in &held.handles {
            if let Err(e) = client.getattr(fh).await {
                let detail = stale(what, &e).ok_or(e)?;
                self.violated(Invariant::StaleHandle, detail);
                return Ok(());
            }
        }
        if let Some((fh, content)) = &held.own {
            match client.read(fh, 0, content.len() as u32).await {
                Ok((data, _)) if &data == content => {}
                Ok((data, _)) => {
                    let detail = format!("its own file reads {} bytes, not what it wrote", data.len());
                    self.violated(Invariant::LostWrite, detail);
                    return Ok(());
                }
                Err(e) => {
                    let detail = stale("its own file", &e).ok_or(e)?;
                    self.violated(Invariant::StaleHandle, detail);
                    return Ok(());
                }
            }
        }
        let count = held.handles.len() as u64;
        self.did(format!("used {count} held handles"));
        self.consumers.update(&self.pod, self.role, |r| {
            r.rounds += 1;
            r.checked += count;
        });
        Ok(())
    }
}

/// What a reader found at a path of a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// How a walked revision differs from its manifest, if it does. In the simulation a file's
/// version is the digest of its content (see [`super::sources`]), so a file of another revision
/// is caught even when its size is the same.
fn mismatch(manifest: &Manifest, seen: &BTreeMap<String, Seen>) -> Option<String> {
    for (path, entry) in &manifest.entries {
        let path = path.to_string();
        let found = seen.get(&path);
        match (entry, found) {
            (Entry::File { version, size, .. }, Some(Seen::File(content))) => {
                let digest = sv_syncer::source::digest([content.as_slice()]);
                if &digest != version || content.len() as u64 != *size {
                    return Some(format!(
                        "{path}: {} bytes with digest {digest}, the manifest says {size} bytes with {version}",
                        content.len()
                    ));
                }
            }
            (Entry::Symlink { target }, Some(Seen::Symlink(found))) if target == found => {}
            (Entry::Dir, Some(Seen::Dir)) => {}
            (_, None) => return Some(format!("{path} is in the manifest but not in the tree")),
            (entry, Some(found)) => {
                return Some(format!("{path}: the manifest has {entry:?}, the tree {}", kind(found)));
            }
        }
    }
    seen.keys()
        .find(|path| !manifest.entries.keys().any(|p| p.to_string() == **path))
        .map(|path| format!("{path} is in the tree but not in the manifest"))
}

fn kind(seen: &Seen) -> &'static str {
    match seen {
        Seen::Dir => "a directory",
        Seen::File(_) => "a file",
        Seen::Symlink(_) => "a symlink",
    }
}

/// Record `seq` of `pod`: its number and the pod, padded to [`RECORD_LEN`] bytes.
fn record(pod: &str, seq: u64) -> Vec<u8> {
    let mut text = format!("{seq:010} {pod}");
    text.truncate(RECORD_LEN - 1);
    let mut bytes = text.into_bytes();
    bytes.resize(RECORD_LEN - 1, b'.');
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, &str)]) -> Manifest {
        let mut manifest = Manifest { revision: "r1".into(), ..Manifest::default() };
        for (path, content) in files {
            let path = sv_syncer::paths::RelPath::parse(path).unwrap();
            let version = sv_syncer::source::digest([content.as_bytes()]);
            manifest.entries.insert(path, Entry::File { size: content.len() as u64, executable: false, version });
        }
        manifest
    }

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, Seen> {
        files.iter().map(|(p, c)| (p.to_string(), Seen::File(c.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn a_revision_matches_its_manifest_only_file_for_file() {
        let m = manifest(&[("a.txt", "one"), ("b.txt", "two")]);
        assert_eq!(mismatch(&m, &tree(&[("a.txt", "one"), ("b.txt", "two")])), None);
        // Same size, other revision's content.
        assert!(mismatch(&m, &tree(&[("a.txt", "ONE"), ("b.txt", "two")])).unwrap().contains("a.txt"));
        assert!(mismatch(&m, &tree(&[("a.txt", "one")])).unwrap().contains("b.txt is in the manifest"));
        let extra = tree(&[("a.txt", "one"), ("b.txt", "two"), ("c.txt", "new")]);
        assert!(mismatch(&m, &extra).unwrap().contains("c.txt is in the tree"));
    }

    #[test]
    fn records_have_a_fixed_size_and_name_their_number_and_pod() {
        let r = record("team-a/writer-0", 7);
        assert_eq!(r.len(), RECORD_LEN);
        assert!(r.starts_with(b"0000000007 team-a/writer-0."));
        assert_eq!(record(&"x".repeat(200), 1).len(), RECORD_LEN);
        assert_ne!(record("p", 1), record("p", 2));
    }

    #[test]
    fn mount_options_choose_the_ports_and_only_nfsv3_mounts() {
        let pod = PodContext::for_test("reader-0", "team-a");
        let mount = |options: &[&str]| NfsMount {
            server: "10.96.0.20".into(),
            path: "/".into(),
            options: options.iter().map(|o| o.to_string()).collect(),
            read_only: true,
            external: false,
        };
        let config = client_config(&mount(&["nfsvers=3", "port=2049", "mountport=2050", "nolock"]), &pod).unwrap();
        assert_eq!(config.addr, "10.96.0.20:2049".parse().unwrap());
        assert_eq!(config.mount_port, Some(2050));
        assert!(client_config(&mount(&["nfsvers=4.1"]), &pod).unwrap_err().contains("Protocol not supported"));
        assert!(client_config(&mount(&["port=nfs"]), &pod).unwrap_err().contains("port=nfs"));
    }
}
