//! `sv-webhook serve` on a simulated host: the program's own command line and entry point, on
//! turmoil sockets, with the simulation's API client and clock.

use clap::Parser as _;
use sv_operator::clock::SharedClock;
use sv_webhook::program::{Cli, Command, ServeArgs, serve};
use tokio_util::sync::CancellationToken;

use super::pod::PodContext;
use crate::net::SimListener;

/// `serve`'s flags as the program parses them, from the pod's arguments and environment.
fn parse(context: &PodContext) -> Result<ServeArgs, String> {
    let cli = Cli::try_parse_from(context.argv_with_env::<Cli>("sv-webhook")).map_err(|e| e.to_string())?;
    let Command::Serve(mut args) = cli.command else {
        return Err("the webhook's pod must run `sv-webhook serve`".to_string());
    };
    // Certificates from files (cert-manager) are on the pod's volumes.
    args.tls_cert_file = args.tls_cert_file.map(|f| context.host_path(f)).transpose()?;
    args.tls_key_file = args.tls_key_file.map(|f| context.host_path(f)).transpose()?;
    Ok(args)
}

pub(super) async fn run(context: PodContext, clock: SharedClock, stop: CancellationToken) -> Result<(), String> {
    let args = parse(&context)?;
    let client = context.in_cluster_client()?;
    let https = SimListener::bind(args.port).await.map_err(|e| format!("binding port {}: {e}", args.port))?;
    let http =
        SimListener::bind(args.metrics_port).await.map_err(|e| format!("binding port {}: {e}", args.metrics_port))?;
    serve(args, client, clock, https, http, stop).await.map_err(|e| e.to_string())
}
