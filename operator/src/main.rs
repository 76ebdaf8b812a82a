//! `sv-operator`: the SharedVolume operator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use sv_operator::api::{Volume, VolumeKind, crds_yaml};
use sv_operator::clock::SystemClock;
use sv_operator::manifests::{self, Manifest};
use sv_operator::offline::{OfflineCluster, Stage};
use sv_operator::plan::{self, Settings};
use sv_operator::program::{self, Cli, Command, RunArgs};
use sv_operator::telemetry;
use sv_operator::validation::{VolumeInput, validate_volume};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    sv_operator::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => print_crds(),
        Command::Validate { paths } => validate(&paths),
        Command::Plan { paths, objects } => plan_offline(&paths, objects),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds() -> anyhow::Result<ExitCode> {
    print!("{}", crds_yaml()?);
    Ok(ExitCode::SUCCESS)
}

fn load_all(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Manifest)>> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(manifests::load(path).with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(all)
}

/// Checks every document of every file; a file or document that cannot be read is reported and
/// the rest are still checked.
fn validate(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    let mut checked = 0;
    let mut unreadable = 0;
    for path in paths {
        let files = match manifests::files(path) {
            Ok(files) => files,
            Err(error) => {
                println!("UNREADABLE {error}");
                unreadable += 1;
                continue;
            }
        };
        for file in files {
            let documents = std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|text| manifests::parse_each(&text, &file.display().to_string()).map_err(|e| e.to_string()));
            let documents = match documents {
                Ok(documents) => documents,
                Err(error) => {
                    println!("UNREADABLE {} ({error})", file.display());
                    unreadable += 1;
                    continue;
                }
            };
            for document in documents {
                let manifest = match document {
                    Ok(manifest) => manifest,
                    Err(error) => {
                        println!("INVALID  {error}");
                        failed += 1;
                        continue;
                    }
                };
                let (kind, name, result) = match &manifest {
                    Manifest::SharedVolume(v) => {
                        let mut input = VolumeInput::of(v.as_ref());
                        input.namespace = Some(input.namespace.unwrap_or("default"));
                        (VolumeKind::SharedVolume.to_string(), v.display_name(), validate_volume(input, None))
                    }
                    Manifest::ClusterSharedVolume(v) => (
                        VolumeKind::ClusterSharedVolume.to_string(),
                        v.display_name(),
                        validate_volume(VolumeInput::of(v.as_ref()), None),
                    ),
                    other => {
                        println!("skipped  {} ({}): not a volume", describe(other), file.display());
                        continue;
                    }
                };
                checked += 1;
                let status = if result.is_valid() { "valid" } else { "INVALID" };
                println!("{status:8} {kind} {name} ({})", file.display());
                for error in &result.errors {
                    println!("         error: {error}");
                }
                for warning in &result.warnings {
                    println!("         warning: {warning}");
                }
                if !result.is_valid() {
                    failed += 1;
                }
            }
        }
    }
    println!("{checked} volume(s) checked, {failed} invalid, {unreadable} file(s) unreadable");
    Ok(if failed == 0 && unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `Kind namespace/name` of a manifest that is not a volume.
fn describe(manifest: &Manifest) -> String {
    let (kind, meta) = match manifest {
        Manifest::Secret(s) => ("Secret".to_string(), Some(&s.metadata)),
        Manifest::Pod(p) => ("Pod".to_string(), Some(&p.metadata)),
        Manifest::Other { kind, .. } => (kind.clone(), None),
        Manifest::SharedVolume(_) | Manifest::ClusterSharedVolume(_) => ("volume".to_string(), None),
    };
    let name = match (manifest, meta) {
        (_, Some(meta)) => match (&meta.namespace, &meta.name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            _ => "(no name)".to_string(),
        },
        (Manifest::Other { value, .. }, None) => value["metadata"]["name"].as_str().unwrap_or("(no name)").to_string(),
        _ => String::new(),
    };
    format!("{kind} {name}")
}

/// Plans every volume offline. The summary goes to stdout; with `--objects` the objects go to
/// stdout as YAML documents that `kubectl apply -f -` takes as printed (what the operator
/// creates first, before anything assigns a ClusterIP), and the summary to stderr.
fn plan_offline(paths: &[PathBuf], print_objects: bool) -> anyhow::Result<ExitCode> {
    let cluster = OfflineCluster::from_manifests(load_all(paths)?.into_iter().map(|(_, m)| m));
    let settings = Settings::default();
    let mut summary = String::new();
    let mut yaml = String::new();
    let mut ready = 0;
    let mut failed = 0;
    for volume in &cluster.volumes {
        let display = match &volume.namespace {
            Some(ns) => format!("{} {ns}/{}", volume.kind, volume.name),
            None => format!("{} {}", volume.kind, volume.name),
        };
        summary.push_str(&format!("{display}\n"));
        for (stage, label) in [(Stage::Fresh, "new"), (Stage::Serving, "running")] {
            let planned = plan::plan(&cluster.observe(volume, stage, &settings), &settings);
            if stage == Stage::Fresh {
                summary.push_str(&format!("  reference {}\n", planned.reference));
                for object in &planned.objects {
                    // Owner references carry the volume's uid, which only the API server assigns:
                    // a made-up one would have the garbage collector delete the object at once.
                    let mut value = serde_json::to_value(object)?;
                    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                        meta.remove("ownerReferences");
                    }
                    yaml.push_str(&format!("---\n{}", serde_saphyr::to_string(&value)?));
                }
            }
            let phase = planned.status.phase.as_deref().unwrap_or("-");
            summary.push_str(&format!(
                "  {label:8} {phase:9} {}\n",
                planned.status.message.as_deref().unwrap_or_default()
            ));
            let kinds: Vec<String> = planned.objects.iter().map(|o| o.key().kind.to_string()).collect();
            summary.push_str(&format!("           applies {} object(s): {}\n", kinds.len(), summarize_kinds(&kinds)));
            if stage == Stage::Serving {
                match planned.status.phase.as_deref() {
                    Some("Ready") => ready += 1,
                    Some("Failed") => failed += 1,
                    _ => {}
                }
            }
        }
    }
    summary.push_str(&format!(
        "\n{} volume(s) planned: {ready} Ready once running, {failed} Failed, {} pod(s) consume them\n\
         (\"running\" assumes what only a cluster can show: each NFS server started, and each source \
         synced once without error)\n",
        cluster.volumes.len(),
        cluster.pods.len()
    ));
    if print_objects {
        print!("{yaml}");
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `["Secret", "Secret", "Service"]` → `2 Secret, Service`.
fn summarize_kinds(kinds: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for kind in kinds {
        match counts.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind.clone(), 1)),
        }
    }
    counts.into_iter().map(|(k, n)| if n == 1 { k } else { format!("{n} {k}") }).collect::<Vec<_>>().join(", ")
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    telemetry::init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let identity = args.identity(&std::env::var("HOSTNAME").unwrap_or_else(|_| "sv-operator".to_string()));
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("binding {}", args.http_addr))?;
        tracing::info!(addr = %args.http_addr, "serving /healthz, /readyz and /metrics");
        let signal_token = shutdown.clone();
        tokio::spawn(async move {
            telemetry::shutdown_signal().await;
            tracing::info!("shutdown requested");
            signal_token.cancel();
        });
        let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
        match program::run(&args, identity, client, Arc::new(SystemClock), listener, shutdown).await {
            Ok(()) => {
                tracing::info!("stopped");
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                tracing::error!(%error, "operator stopped");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}
