//! `sv-kind`: SharedVolume end to end on kind clusters (see the library's documentation).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sv-kind",
    version,
    about = "SharedVolume end to end on real kind clusters, one per Kubernetes version"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the exact commands a run would carry out, as a shell script.
    Plan {
        #[command(flatten)]
        which: Which,
    },
    /// Build the images, then for each version: create a cluster, install, run the scenario,
    /// delete the cluster. Skips (exit 0) where kind or a Docker engine is missing, unless
    /// --require-tools.
    Run {
        #[command(flatten)]
        which: Which,
        /// Fail instead of skipping when kind, docker or kubectl is missing (CI).
        #[arg(long)]
        require_tools: bool,
        /// Keep a cluster whose run failed, to look into it.
        #[arg(long)]
        keep_failed: bool,
        /// Longest any single command may run, in seconds.
        #[arg(long, default_value_t = 900)]
        command_limit: u64,
    },
}

#[derive(clap::Args)]
struct Which {
    /// Kubernetes minors to run (default: the three newest the pinned kind supports).
    #[arg(long, value_delimiter = ',')]
    versions: Vec<String>,
    /// Where a failed cluster's logs and events are written.
    #[arg(long, default_value = "target/kind-logs")]
    logs: PathBuf,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan { which } => match sv_kind::plan(&which.versions, &which.logs) {
            Ok(plan) => {
                print!("{plan}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sv-kind: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { which, require_tools, keep_failed, command_limit } => {
            let plan = match sv_kind::plan(&which.versions, &which.logs) {
                Ok(plan) => plan,
                Err(e) => {
                    eprintln!("sv-kind: {e}");
                    return ExitCode::from(2);
                }
            };
            let missing = sv_kind::missing_tools();
            if !missing.is_empty() {
                println!("sv-kind: skipped: {} (`sv-kind plan` shows what a run does)", missing.join("; "));
                return if require_tools { ExitCode::FAILURE } else { ExitCode::SUCCESS };
            }
            let options = sv_kind::RunOptions {
                root: sv_kind::repository_root().to_path_buf(),
                keep_failed,
                command_limit: Duration::from_secs(command_limit),
            };
            let outcomes = match sv_kind::run(&plan, &options, &mut std::io::stdout()) {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    eprintln!("sv-kind: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!("\n== summary");
            for outcome in &outcomes {
                let verdict = outcome.failed.as_deref().map(|why| format!("FAILED: {why}")).unwrap_or("passed".into());
                println!("Kubernetes {}: {verdict} ({:.0} s)", outcome.version, outcome.took.as_secs_f64());
            }
            if outcomes.iter().all(|o| o.failed.is_none()) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}
