//! `sv-sim`: the main job (`run`), and the whole system on this machine (`serve`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand};
use sv_sim::serve::{self, ServeConfig};

#[derive(Parser)]
#[command(name = "sv-sim", version, about = "SharedVolume simulation harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: apply the bundled examples to a simulated three-node cluster running the real
    /// operator, wait until every volume settles, delete them all, check the cleanup, and print a
    /// summary with the run's trace hash. With a scenario file (`scenarios/*.yaml`), replay that
    /// instead and print its timeline, the volumes and consumers at the end, and the invariants.
    Run {
        /// A scenario to replay instead of the main job.
        scenario: Option<PathBuf>,
        /// Seed of the simulation [default: 1, or the scenario's own].
        #[arg(long)]
        seed: Option<u64>,
        /// Run it twice with the same seed, each in a process of its own, and report whether
        /// the two runs are the same, or the first event where they diverge (exits non-zero
        /// then).
        #[arg(long)]
        check_determinism: bool,
        /// Write the run's trace to this file: its hash on the first line, then one line per
        /// event (what `--check-determinism` compares).
        #[arg(long, value_name = "FILE")]
        trace_out: Option<PathBuf>,
    },
    /// Generate scenarios from seeds (volumes made, changed and deleted, consumer pods across
    /// namespaces, source changes and outages, faults of the operator, the API server, the
    /// webhook, the NFS servers, the nodes and the network), run each with every invariant checked
    /// after every step and liveness once the faults heal, shrink each failure to a minimal
    /// scenario and write it under --regressions. Exits non-zero when a seed fails.
    Explore {
        /// How many seeds to explore.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Wall time for the whole exploration, shrinking included (e.g. 90s, 10m).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        budget: std::time::Duration,
        /// Actions per generated scenario.
        #[arg(long, default_value_t = sv_sim::explore::DEFAULT_ACTIONS)]
        actions: usize,
        /// Where to write shrunk failures as scenario files.
        #[arg(long, default_value = "scenarios/regressions")]
        regressions: PathBuf,
        /// Runs a shrink may take.
        #[arg(long, default_value_t = 60)]
        shrink_runs: usize,
        /// Seeds run at once [default: the machine's cores].
        #[arg(long)]
        jobs: Option<usize>,
        /// Print the scenario of --first-seed and stop (nothing runs).
        #[arg(long)]
        print: bool,
    },
    /// The whole system on this machine: the main job's simulated cluster, paced to the wall
    /// clock, its API server on a loopback port for kubectl (a kubeconfig is written for it), and
    /// each managed volume's NFS export on a loopback port of its own. Install SharedVolume into
    /// it with `kubectl apply -k deploy/`. Stops on Ctrl-C or SIGTERM.
    Serve {
        /// Port on 127.0.0.1 for the API server (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Where to write the kubeconfig for kubectl [default: sv-sim/kubeconfig in the
        /// temporary directory].
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Simulated seconds per wall-clock second (above 1 runs faster than real time, as far as
        /// this machine keeps up).
        #[arg(long, default_value_t = 1.0)]
        pace: f64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sv_operator::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    sv_sim::logtap::log_to_stderr();
    match Cli::parse().command {
        Command::Run { scenario, seed, check_determinism: true, trace_out: _ } => {
            let runs = [child_trace(scenario.as_deref(), seed)?, child_trace(scenario.as_deref(), seed)?];
            let [first, second] = runs;
            let comparison = sv_sim::determinism::compare(first, second);
            print!("{comparison}");
            anyhow::ensure!(comparison.same(), "the two runs diverged");
            Ok(())
        }
        Command::Run { scenario: Some(file), seed, check_determinism: false, trace_out } => {
            let mut scenario = sv_sim::scenario::Scenario::load(&file)?;
            if let Some(seed) = seed {
                scenario.seed = seed;
            }
            let keep_trace = trace_out.is_some();
            let (report, lines) = tokio::task::spawn_blocking(move || scenario.run_with(keep_trace))
                .await?
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if let Some(path) = trace_out {
                write_trace(&path, &report.trace_hash, &lines)?;
            }
            print!("{report}");
            Ok(())
        }
        Command::Run { scenario: None, seed, check_determinism: false, trace_out } => {
            let seed = seed.unwrap_or(1);
            let keep_trace = trace_out.is_some();
            let (report, lines) =
                tokio::task::spawn_blocking(move || sv_sim::examples::run_with(seed, keep_trace)).await??;
            if let Some(path) = trace_out {
                write_trace(&path, &report.trace_hash, &lines)?;
            }
            print!("{report}");
            if !report.errors.is_empty() || !report.left_after_delete.is_empty() {
                anyhow::bail!("the run did not end clean");
            }
            Ok(())
        }
        Command::Explore { seeds, first_seed, budget, actions, regressions, shrink_runs, jobs, print } => {
            if print {
                let scenario = sv_sim::explore::generate(first_seed, actions);
                print!("{}", sv_sim::explore::to_yaml(&scenario.description, &scenario)?);
                return Ok(());
            }
            let config = sv_sim::explore::ExploreConfig {
                first_seed,
                seeds,
                budget,
                actions,
                regressions: Some(regressions),
                shrink_runs,
                stop_at_first: false,
                jobs: jobs.unwrap_or(sv_sim::explore::ExploreConfig::default().jobs),
            };
            let started = std::time::Instant::now();
            let explored = tokio::task::spawn_blocking(move || {
                sv_sim::explore::explore(&config, |entry| println!("{}", sv_sim::explore::describe(entry)))
            })
            .await?;
            let summary = sv_sim::explore::Summary::of(&explored, started.elapsed());
            print!("{summary}");
            anyhow::ensure!(summary.failed == 0, "{} seed(s) failed", summary.failed);
            Ok(())
        }
        Command::Serve { port, seed, nodes, kubeconfig, pace } => {
            let kubeconfig = kubeconfig.unwrap_or_else(|| std::env::temp_dir().join("sv-sim").join("kubeconfig"));
            let config = ServeConfig { seed, nodes, port, kubeconfig, pace };
            let stop = Arc::new(AtomicBool::new(false));
            let running = stop.clone();
            let serving = tokio::task::spawn_blocking(move || {
                serve::run(config, &running, |notice| {
                    tracing::info!(%notice, "sv-sim serve");
                    println!("{notice}");
                })
            });
            let signalled = tokio::spawn(async move {
                shutdown_signal().await;
                stop.store(true, Ordering::Relaxed);
            });
            let result = serving.await.context("the simulation thread")?;
            signalled.abort();
            result.context("sv-sim serve")
        }
    }
}

/// Runs this program again (`run [SCENARIO] --seed N --trace-out FILE`) and reads the trace it
/// wrote: a process of its own, so that nothing a first run left in the process (lazily
/// initialised statics, process-wide counters) tells the runs apart.
fn child_trace(scenario: Option<&std::path::Path>, seed: Option<u64>) -> anyhow::Result<(String, Vec<String>)> {
    let file = tempfile::NamedTempFile::new().context("a file for the trace")?;
    let mut command = std::process::Command::new(std::env::current_exe().context("this program")?);
    command.arg("run").args(scenario).arg("--trace-out").arg(file.path()).stdout(std::process::Stdio::null());
    if let Some(seed) = seed {
        command.arg("--seed").arg(seed.to_string());
    }
    let status = command.status().context("running the simulation again")?;
    anyhow::ensure!(
        status.success(),
        "a run to compare failed ({status}); run it without --check-determinism to see why"
    );
    let text = std::fs::read_to_string(file.path()).context("the trace")?;
    let mut lines = text.lines().map(str::to_string);
    let hash = lines.next().and_then(|l| l.strip_prefix("hash ").map(str::to_string)).context("the trace's hash")?;
    Ok((hash, lines.collect()))
}

fn write_trace(path: &std::path::Path, hash: &str, lines: &[String]) -> anyhow::Result<()> {
    let mut text = format!("hash {hash}\n");
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing the trace to {}", path.display()))
}

/// A duration as the volumes' fields take one (`90s`, `10m`, `1h30m`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    sv_operator::units::parse_duration(text).map_err(|e| e.to_string())
}

/// Ctrl-C or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
