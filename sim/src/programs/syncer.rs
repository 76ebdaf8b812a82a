//! `sv-syncer run` on a simulated host: the program's own entry point ([`program::run`]) with the
//! simulation's clock, API client, sources and sockets, and the pod's paths mapped onto the host.

use std::sync::Arc;

use clap::Parser as _;
use sv_operator::clock::SharedClock;
use sv_syncer::program::{self, Cli, Command, Host, RunArgs};
use tokio_util::sync::CancellationToken;

use super::pod::PodContext;
use super::sources::SimSources;
use crate::net::SimListener;

/// `run`'s flags from the pod's arguments and environment, parsed by the program's own command
/// line, with every path moved onto the volume it is mounted from.
fn parse(context: &PodContext) -> Result<RunArgs, String> {
    let cli = Cli::try_parse_from(context.argv_with_env::<Cli>("sv-syncer")).map_err(|e| e.to_string())?;
    let Command::Run(mut args) = cli.command else {
        return Err(format!("the syncer pod runs `sv-syncer run`; got {:?}", context.args));
    };
    args.data_dir = context.host_path(args.data_dir)?;
    args.credentials_dir = args.credentials_dir.map(|d| context.host_path(d)).transpose()?;
    args.ca_bundle = args.ca_bundle.map(|f| context.host_path(f)).transpose()?;
    Ok(args)
}

pub(super) async fn run(context: PodContext, clock: SharedClock, stop: CancellationToken) -> Result<(), String> {
    let args = parse(&context)?;
    let http = SimListener::bind(args.http_port).await.map_err(|e| format!("binding the HTTP port: {e}"))?;
    let client = context.in_cluster_client()?;
    let host = Host { client, clock, sources: Arc::new(SimSources), http, shutdown: stop };
    program::run(&args, host).await.map_err(|e| e.to_string())
}
