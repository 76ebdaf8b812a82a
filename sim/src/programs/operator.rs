//! `sv-operator run` in a pod of its image, as `deploy/base/operator.yaml` runs it: the program's
//! own command line and entry point, its identity from `POD_NAME`, its client from the pod's
//! ServiceAccount token (in-cluster config), on turmoil sockets with the simulation's clock.

use clap::Parser as _;
use sv_operator::clock::SharedClock;
use sv_operator::program::{Cli, Command};
use tokio_util::sync::CancellationToken;

use super::pod::PodContext;
use crate::net::SimListener;

pub(super) async fn run(context: PodContext, clock: SharedClock, stop: CancellationToken) -> Result<(), String> {
    let cli = Cli::try_parse_from(context.argv_with_env::<Cli>("sv-operator")).map_err(|e| e.to_string())?;
    let Command::Run(args) = cli.command else {
        return Err(format!("the operator's pod must run `sv-operator run`; got {:?}", context.args));
    };
    let client = context.in_cluster_client()?;
    let port = args.http_addr.port();
    let http = SimListener::bind(port).await.map_err(|e| format!("binding port {port}: {e}"))?;
    let identity = args.identity(&context.name);
    sv_operator::program::run(&args, identity, client, clock, http, stop).await.map_err(|e| e.to_string())
}
