//! The `sv-operator` command line, and the entry point of `run` that `main.rs` and the
//! simulation both call: the same flags, the same settings, the same wiring.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::controller::leader::LeaderConfig;
use crate::controller::metrics::Metrics;
use crate::controller::{self, RunOptions};
use crate::plan::{self, Settings};
use crate::telemetry::{self, Health, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "sv-operator",
    version,
    about = "SharedVolume operator: shared ReadWriteMany volumes kept in sync with Git, S3, SSH and HTTP sources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the SharedVolume and ClusterSharedVolume CRDs as YAML.
    Crd,
    /// Validate volume manifests (files or directories) and print what is wrong with each.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Plan volume manifests without a cluster: what the operator would create and report, when
    /// the volume is new and once its server and syncer run.
    Plan {
        /// Manifest files or directories (default: the bundled examples).
        #[arg(default_value = "deploy/examples")]
        paths: Vec<PathBuf>,
        /// Print every planned object as YAML.
        #[arg(long)]
        objects: bool,
    },
    /// Run the operator against the cluster of the current kubeconfig or service account.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespace of the operator; ClusterSharedVolumes keep their servers and syncers here.
    #[arg(long, env = "POD_NAMESPACE", default_value = plan::DEFAULT_OPERATOR_NAMESPACE)]
    pub namespace: String,
    /// Image of the managed NFS server.
    #[arg(long, env = "SV_NFS_IMAGE")]
    pub nfs_image: Option<String>,
    /// Image of the syncer.
    #[arg(long, env = "SV_SYNCER_IMAGE")]
    pub syncer_image: Option<String>,
    /// imagePullPolicy of the NFS server and syncer containers.
    #[arg(long)]
    pub image_pull_policy: Option<String>,
    /// Mount options of PVs that point at an external NFS server (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub external_mount_options: Vec<String>,
    /// Put a NetworkPolicy in front of each managed NFS server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policy: bool,
    /// Elect a leader among replicas through a Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of this replica (in the Lease and in Events).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SV_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The planner's settings these flags give.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings { operator_namespace: self.namespace.clone(), ..Settings::default() };
        if let Some(image) = &self.nfs_image {
            settings.nfs_image = image.clone();
        }
        if let Some(image) = &self.syncer_image {
            settings.syncer_image = image.clone();
        }
        settings.image_pull_policy = self.image_pull_policy.clone();
        settings.external_mount_options = self.external_mount_options.clone();
        settings.network_policy = self.network_policy;
        settings
    }

    /// This replica's name: `--identity` (`POD_NAME`), else `fallback` (the host name).
    pub fn identity(&self, fallback: &str) -> String {
        self.identity.clone().unwrap_or_else(|| fallback.to_string())
    }
}

/// `sv-operator run`: `/healthz`, `/readyz` and `/metrics` on `http`, then the controller until
/// `shutdown`. The caller brings the client, the clock and the listener (real ones in `main.rs`,
/// simulated ones in the simulation).
pub async fn run<L>(
    args: &RunArgs,
    identity: String,
    client: kube::Client,
    clock: SharedClock,
    http: L,
    shutdown: CancellationToken,
) -> Result<(), controller::Error>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    sv_common::bugs::operator_started();
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let health = Health::new();
    let (_, server) = telemetry::spawn_endpoints(http, registry, health.clone(), shutdown.clone().cancelled_owned());
    let options = RunOptions {
        settings: args.settings(),
        leader: args.leader_elect.then(|| LeaderConfig::new(&args.namespace, &identity)),
        instance: identity,
    };
    let result = controller::run(client, options, clock, metrics, health, shutdown.clone()).await;
    shutdown.cancel();
    let _ = server.await;
    result
}
