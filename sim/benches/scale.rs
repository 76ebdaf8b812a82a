//! Not a test: how the simulated API server scales, and how fast the simulation runs.
//!
//! 1. A loopback API server holding 10,000 ConfigMaps created through the real `kube::Client`
//!    while 50 `kube-runtime` watchers follow them: wall time to create, time until every watcher
//!    has seen every object, list latency, resident memory.
//! 2. Simulated seconds per wall second: a busy cluster without the operator, and the main job.
//!
//! `cargo bench -p sv-sim --bench scale` (env `SV_BENCH_OBJECTS`, `SV_BENCH_WATCHERS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use sv_sim::api::{ApiServer, Options, http};
use tokio_util::sync::CancellationToken;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn api_server_at_scale(objects: usize, watchers: usize) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = ApiServer::new(
        Options { address: address.to_string(), watch_cache: objects * 2, ..Options::default() },
        Arc::new(sv_operator::clock::SystemClock),
    );
    let stop = CancellationToken::new();
    tokio::spawn(http::serve_tcp(server.clone(), listener, stop.clone()));
    let client = kube::Client::try_from(kube::Config::new(format!("http://{address}").parse()?))?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rss_before = rss_mib();

    let seen = Arc::new(AtomicUsize::new(0));
    let all_seen = Arc::new(tokio::sync::Notify::new());
    for _ in 0..watchers {
        let (api, seen, all_seen) = (api.clone(), seen.clone(), all_seen.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = event
                    && cm.metadata.name.as_deref().is_some_and(|n| n.starts_with("obj-"))
                    && seen.fetch_add(1, Ordering::Relaxed) + 1 == objects * watchers
                {
                    all_seen.notify_one();
                }
            }
        });
    }
    let started = Instant::now();
    let creators = 8;
    let mut tasks = Vec::new();
    for worker in 0..creators {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..objects).step_by(creators) {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("obj-{i:05}"), "labels": {"bench": "scale", "shard": (i % 10).to_string()}},
                    "data": {"value": "x".repeat(256)},
                }))?;
                api.create(&PostParams::default(), &cm).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let created = started.elapsed();
    tokio::time::timeout(Duration::from_secs(600), all_seen.notified()).await?;
    let observed = started.elapsed();
    let listed = Instant::now();
    let list = api.list(&ListParams::default().labels("shard=3")).await?;
    let list_time = listed.elapsed();
    let rss_after = rss_mib();
    println!("## The simulated API server at scale ({objects} ConfigMaps of 256 bytes, {watchers} watchers)");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| create {objects} objects over HTTP (8 concurrent clients) | {:.2} s ({:.0} objects/s) |",
        created.as_secs_f64(),
        objects as f64 / created.as_secs_f64()
    );
    println!(
        "| until all {watchers} watchers saw every object | {:.2} s ({:.0} events/s delivered) |",
        observed.as_secs_f64(),
        (objects * watchers) as f64 / observed.as_secs_f64()
    );
    println!("| list by label ({} of {objects}) | {:.1} ms |", list.items.len(), list_time.as_secs_f64() * 1000.0);
    println!(
        "| resident memory, process (server + clients + watcher caches) | {rss_before:.0} MiB → {rss_after:.0} MiB |"
    );
    println!();
    stop.cancel();
    Ok(())
}

fn simulation_speed() -> anyhow::Result<()> {
    use sv_sim::world::{World, WorldConfig};
    let wall = Instant::now();
    let mut world = World::new(WorldConfig { operator: false, ..WorldConfig::default() }).expect("a world");
    let mut objects = Vec::new();
    for i in 0..20 {
        objects.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("web-{i}"), "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": format!("web-{i}")}},
                     "template": {"metadata": {"labels": {"app": format!("web-{i}")}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}},
        }));
    }
    for result in world.create_all(objects) {
        result.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    world.run_for(Duration::from_secs(600)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let busy_wall = wall.elapsed().as_secs_f64();
    let busy = world.elapsed().as_secs_f64() / busy_wall;

    let report = sv_sim::examples::run(1)?;
    let main_job = report.simulated.as_secs_f64() / report.wall.as_secs_f64();
    println!("## Simulation speed");
    println!();
    println!("| run | simulated | wall | simulated s per wall s |");
    println!("|---|---|---|---|");
    println!("| 20 Deployments × 3 pods, 3 nodes, no operator | 600 s | {busy_wall:.2} s | {busy:.0} |");
    println!(
        "| the main job: real operator, 29 volumes, settle + delete | {:.0} s | {:.2} s | {main_job:.1} |",
        report.simulated.as_secs_f64(),
        report.wall.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    sv_operator::install_crypto_provider();
    let objects = env("SV_BENCH_OBJECTS", 10_000);
    let watchers = env("SV_BENCH_WATCHERS", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(api_server_at_scale(objects, watchers))?;
    drop(runtime);
    simulation_speed()
}
