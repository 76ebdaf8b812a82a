use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use sv_common::telemetry;
use sv_webhook::program::{Cli, Command, review, serve};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sv_api::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Review(args) => {
            // No log lines: stdout is the answer, stderr the objects.
            let out = review(&args).await?;
            println!("{}", serde_json::to_string_pretty(&out.response)?);
            let mut stderr = std::io::stderr().lock();
            for object in &out.created {
                writeln!(stderr, "# would create\n---\n{}", serde_saphyr::to_string(object)?)?;
            }
            Ok(())
        }
        Command::Serve(args) => {
            telemetry::init_logging(args.log_format);
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
            let https = tokio::net::TcpListener::bind(("0.0.0.0", args.port))
                .await
                .with_context(|| format!("binding port {}", args.port))?;
            let http = tokio::net::TcpListener::bind(("0.0.0.0", args.metrics_port))
                .await
                .with_context(|| format!("binding port {}", args.metrics_port))?;
            let stop = CancellationToken::new();
            tokio::spawn({
                let stop = stop.clone();
                async move {
                    telemetry::shutdown_signal().await;
                    tracing::info!("SIGTERM: draining");
                    stop.cancel();
                }
            });
            serve(args, client, Arc::new(sv_api::clock::SystemClock), https, http, stop).await?;
            Ok(())
        }
    }
}
