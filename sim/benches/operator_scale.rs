//! Not a test: the real operator with many volumes created at once (pods are Ready without
//! running our programs, so the measure is the operator and the API server).
//!
//! 1. In the simulation (a cluster network of about a millisecond per message): the wall and
//!    simulated time until every volume settled (a volume without a source Ready; one with a
//!    source Preparing with its NFS server ready: no syncer runs here, so no sync is reported),
//!    the operator's requests per volume to get there and in the idle minutes after, and the
//!    resident memory of the whole simulation.
//! 2. The `sv-operator` binary in its own process, against the same API server and controllers
//!    served on loopback in real time: the time to settle and the operator's own peak resident
//!    memory. Skipped, saying so, when `target/release/sv-operator` is not built.
//!
//! `cargo build --release -p sv-operator && cargo bench -p sv-sim --bench operator_scale`
//! (env `SV_BENCH_VOLUMES`, default 1000; `SV_BENCH_PART=process` runs only the second part).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sv_sim::api::{ApiServer, Options, http};
use sv_sim::cluster::{AlwaysReady, Cluster};
use sv_sim::examples::{install, install_into};
use sv_sim::world::{World, WorldConfig};
use tokio_util::sync::CancellationToken;

fn volume(i: usize) -> Value {
    let source =
        i.is_multiple_of(2).then(|| json!({"http": {"url": format!("https://files.example.com/{i}/data.txt")}}));
    let mut spec =
        json!({"mountPath": format!("/data/{i}"), "storageClassName": "standard", "storage": {"capacity": "1Gi"}});
    if let Some(source) = source {
        spec["source"] = source;
    }
    if i % 4 < 2 {
        json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "SharedVolume",
               "metadata": {"name": format!("v{i}"), "namespace": format!("team-{}", i % 10)}, "spec": spec})
    } else {
        json!({"apiVersion": "sv.sharedvolume.io/v1alpha1", "kind": "ClusterSharedVolume",
               "metadata": {"name": format!("c{i}")}, "spec": spec})
    }
}

fn settled(v: &Value) -> bool {
    let has_source = !v["spec"]["source"].is_null();
    let nfs_ready = v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "NfsServerReady" && c["status"] == "True");
    match v["status"]["phase"].as_str() {
        Some("Ready") => !has_source || nfs_ready,
        Some("Preparing") => has_source && nfs_ready,
        _ => false,
    }
}

/// Volumes settled; checked after every simulated tick, so it reads the store in place rather
/// than copy every volume.
fn settled_count(api: &ApiServer) -> usize {
    let state = api.state();
    ["sharedvolumes", "clustersharedvolumes"]
        .iter()
        .filter_map(|plural| state.registry.types().find(|t| t.id.plural == *plural))
        .map(|rt| state.store.list(&rt.id, None).filter(|(_, v)| settled(v)).count())
        .sum()
}

fn total(counts: &BTreeMap<(String, String), u64>, keep: impl Fn(&str, &str) -> bool) -> u64 {
    counts.iter().filter(|((verb, resource), _)| keep(verb, resource)).map(|(_, n)| n).sum()
}

/// `VmRSS`, `VmHWM` (peak), and of the resident memory the part that is anonymous (heap and
/// stacks; the rest is mapped files, mostly the program's code) of a process, in MiB.
fn process_rss_mib(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"))
}

fn workload(n: usize) -> Vec<Value> {
    let mut objects: Vec<Value> = (0..10)
        .map(|t| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("team-{t}")}}))
        .collect();
    objects.extend((0..n).map(volume));
    objects
}

/// Part 2: the operator binary against the API server and controllers on loopback.
fn operator_process(n: usize) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let binary = exe.parent().and_then(|deps| deps.parent()).map(|release| release.join("sv-operator"));
    let Some(binary) = binary.filter(|b| b.exists()) else {
        println!();
        println!("(the operator as its own process: skipped; build it first: cargo build --release -p sv-operator)");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let api = ApiServer::new(
            Options { address: address.to_string(), watch_cache: n * 50, ..Options::default() },
            Arc::new(sv_operator::clock::SystemClock),
        );
        let stop = CancellationToken::new();
        tokio::spawn(http::serve_tcp(api.clone(), listener, stop.clone()));
        let mut cluster = Cluster::new(api.clone(), Box::new(AlwaysReady));
        for node in ["node-1", "node-2", "node-3"] {
            cluster.add_node(node);
        }
        tokio::spawn(cluster.run(stop.clone()));
        install_into(&api).map_err(|e| anyhow::anyhow!(e))?.into_iter().for_each(|w| eprintln!("{w}"));
        for object in workload(n) {
            api.create_object(object, "kubectl").map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {{server: \"http://{address}\"}}\n\
                 users:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: sim}}\n\
                 current-context: sim\n"
            ),
        )?;
        let wall = Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .args(["run", "--http-addr=127.0.0.1:0", "--identity=bench"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        // Progress is read whenever the API server commits a write, and at least every second.
        let mut changes = api.subscribe();
        let mut settled_at = None;
        while wall.elapsed() < Duration::from_secs(900) {
            if settled_count(&api) == n {
                settled_at = Some(wall.elapsed());
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
        }
        let (settled_rss, _, _) = process_rss_mib(pid);
        // A minute of resyncs after settling.
        let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
        let (idle_rss, peak, idle_anonymous) = process_rss_mib(pid);
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let exited = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        stop.cancel();
        println!();
        println!("## The sv-operator binary as its own process, {n} volumes, API server on loopback in real time");
        println!();
        println!("| measure | value |");
        println!("|---|---|");
        match settled_at {
            Some(t) => println!("| wall time to settle | {:.1} s |", t.as_secs_f64()),
            None => println!("| wall time to settle | not within 900 s |"),
        }
        println!("| operator resident memory when settled / a minute later / peak | {settled_rss:.0} / {idle_rss:.0} / {peak:.0} MiB |");
        println!("| of which anonymous (heap, stacks) a minute later | {idle_anonymous:.0} MiB |");
        println!(
            "| exit on SIGTERM | {} |",
            match exited {
                Ok(Ok(status)) => status.to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "still running after 10 s".into(),
            }
        );
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    sv_operator::install_crypto_provider();
    let n: usize = std::env::var("SV_BENCH_VOLUMES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    if std::env::var("SV_BENCH_PART").is_ok_and(|p| p == "process") {
        return operator_process(n);
    }
    // A cluster network: about a millisecond per message, stepped every millisecond.
    let mut world = World::new(WorldConfig {
        programs: false,
        tick: Duration::from_millis(1),
        message_latency: (Duration::from_micros(200), Duration::from_millis(2)),
        ..WorldConfig::default()
    })?;
    install(&world).map_err(|e| anyhow::anyhow!(e))?.into_iter().for_each(|w| eprintln!("{w}"));
    let wall = Instant::now();
    for result in world.create_all(workload(n)) {
        result.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    // Progress every 5 simulated seconds, on stderr.
    let mut ok = false;
    for _ in 0..720 {
        ok = world
            .run_until(Duration::from_secs(5), |api| settled_count(api) == n)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!(
            "{} of {n} settled after {:.0} simulated s, {:.1} s of wall time",
            settled_count(&world.api),
            world.elapsed().as_secs_f64(),
            wall.elapsed().as_secs_f64()
        );
        if ok {
            break;
        }
    }
    let settle_wall = wall.elapsed();
    let settle_sim = world.elapsed();
    let to_settle = world.requests_from("operator");
    let idle_minutes = 5;
    world.run_for(Duration::from_secs(idle_minutes * 60)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let after = world.requests_from("operator");
    let idle: BTreeMap<(String, String), u64> =
        after.iter().map(|(k, v)| (k.clone(), v - to_settle.get(k).copied().unwrap_or(0))).collect();
    let not_lease_or_watch = |verb: &str, resource: &str| verb != "watch" && resource != "leases";
    let writes = |verb: &str, resource: &str| not_lease_or_watch(verb, resource) && !matches!(verb, "get" | "list");
    let settle_requests = total(&to_settle, not_lease_or_watch);
    let settle_writes = total(&to_settle, writes);
    let idle_requests = total(&idle, not_lease_or_watch);
    println!("## The operator with {n} volumes created at once (half with a source, half cluster-scoped)");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| every volume settled | {} |", if ok { "yes" } else { "no (timed out after an hour)" });
    println!("| wall time to settle | {:.1} s |", settle_wall.as_secs_f64());
    println!("| simulated time to settle | {:.1} s |", settle_sim.as_secs_f64());
    println!(
        "| operator requests to settle, per volume (leader Lease and watches aside) | {:.1} ({:.1} writes) |",
        settle_requests as f64 / n as f64,
        settle_writes as f64 / n as f64
    );
    println!(
        "| operator requests per volume per minute, settled, over {idle_minutes} minutes | {:.3} |",
        idle_requests as f64 / n as f64 / idle_minutes as f64
    );
    println!("| resident memory of the whole simulation | {:.0} MiB |", process_rss_mib(std::process::id()).0);
    let mut top: Vec<_> = to_settle.iter().filter(|((v, r), _)| not_lease_or_watch(v, r)).collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    println!();
    println!("requests to settle by verb and resource: {:?}", top.iter().take(12).collect::<Vec<_>>());
    drop(world);
    operator_process(n)
}
