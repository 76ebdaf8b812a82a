//! `sv-syncer`: keeps a SharedVolume equal to its source.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use sv_api::VolumeKind;
use sv_api::clock::SystemClock;
use sv_api::manifests::{self, Manifest};
use sv_common::telemetry;
use sv_syncer::program::{self, Cli, Command, Host, OnceArgs, RunArgs};
use sv_syncer::publish::Volume;
use sv_syncer::run::{Syncer, SyncerConfig, VolumeView};
use sv_syncer::source::NetworkSources;
use sv_syncer::volume_fs::LocalFs;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format);
    sv_syncer::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Once(args) => once(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let http = tokio::net::TcpListener::bind(("0.0.0.0", args.http_port)).await.context("binding the HTTP port")?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        tracing::info!("shutdown requested");
        stop.cancel();
    });
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let host = Host {
        client,
        clock: Arc::new(SystemClock),
        sources: Arc::new(NetworkSources),
        http,
        volume_fs: LocalFs::shared(),
        shutdown,
    };
    program::run(&args, host).await?;
    Ok(ExitCode::SUCCESS)
}

async fn once(args: OnceArgs) -> anyhow::Result<ExitCode> {
    let manifests = manifests::load(&args.spec)?;
    let (kind, view) = manifests
        .into_iter()
        .find_map(|(_, m)| match m {
            Manifest::SharedVolume(v) => Some((VolumeKind::SharedVolume, view_of(v.as_ref()))),
            Manifest::ClusterSharedVolume(v) => Some((VolumeKind::ClusterSharedVolume, view_of(v.as_ref()))),
            _ => None,
        })
        .context("the manifest holds no volume")?;
    let config = SyncerConfig {
        kind,
        name: "once".to_string(),
        namespace: None,
        data_dir: args.data_dir.clone(),
        credentials_dir: args.credentials_dir.clone(),
        extra_ca_pem: program::read_ca_bundle(args.ca_bundle.as_ref())?,
    };
    let fs = args.volume_fs().with_context(|| match args.nfs {
        // Not the export's path: sv-nfs's writer path holds its token.
        Some(server) => format!("mounting the volume from {server} over NFS"),
        None => format!("opening {}", args.data_dir.display()),
    })?;
    let syncer = Syncer::standalone(config).with_volume_fs(fs.clone());
    let volume = Volume::open_on(fs, &args.data_dir)?;
    match syncer.sync_once(&view, &volume).await {
        Ok(outcome) => {
            println!(
                "revision {} published={} files={} bytes={} transferred={}",
                outcome.revision, outcome.published, outcome.files, outcome.bytes, outcome.transferred
            );
            Ok(ExitCode::SUCCESS)
        }
        Err((error, redactor)) => {
            eprintln!("sync failed: {}", redactor.redact(&error.to_string()));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn view_of<V: sv_api::Volume>(volume: &V) -> VolumeView {
    VolumeView {
        spec: volume.volume_spec().clone(),
        annotations: kube::ResourceExt::annotations(volume).clone(),
        generation: volume.meta().generation,
        sync: None,
    }
}
