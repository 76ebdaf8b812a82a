//! Health from the self-probe, and the metrics a scrape sees. Time is paused and connections are
//! in-memory pipes, so the ten-second rule is checked without waiting.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sv_nfs::fs::{Export, ExportOptions};
use sv_nfs::health::{Connector, run_probes};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::server::{NfsServer, ServerConfig};
use sv_operator::telemetry::Health;
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

/// Connects to the server through an in-memory pipe, or fails while `down`.
struct PipeConnector {
    server: Arc<NfsServer>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Connector for PipeConnector {
    type Io = DuplexStream;
    async fn connect(&self) -> std::io::Result<DuplexStream> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "down"));
        }
        let (client, server_side) = tokio::io::duplex(1 << 20);
        let server = self.server.clone();
        tokio::spawn(async move { server.handle_connection(server_side, "probe", CancellationToken::new()).await });
        Ok(client)
    }
}

fn server(dir: &std::path::Path, registry: &mut Registry) -> Arc<NfsServer> {
    let export =
        Arc::new(Export::open(dir, ExportOptions { capacity: Some(1 << 20), ..Default::default() }).expect("export"));
    Arc::new(NfsServer::new(export, NfsMetrics::register(registry), ServerConfig::new(2049).expect("config")))
}

#[tokio::test(start_paused = true)]
async fn health_turns_unhealthy_ten_seconds_after_the_last_good_probe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), &mut Registry::default());
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let health = Health::new();
    let stop = CancellationToken::new();
    let root = server.export().root_fh().clone();
    let probes =
        tokio::spawn(run_probes(PipeConnector { server, down: down.clone() }, root, health.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(health.is_live() && health.is_ready(), "probes pass");
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(health.is_live(), "still within ten seconds of the last good probe");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!health.is_live() && !health.is_ready(), "unhealthy after ten seconds without a good probe");
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(health.is_live() && health.is_ready(), "healthy again");
    stop.cancel();
    probes.await.expect("probe task");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_operations_bytes_errors_and_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), b"0123456789").expect("file");
    let mut registry = Registry::default();
    let server = server(dir.path(), &mut registry);
    let connector = PipeConnector { server: server.clone(), down: Arc::new(std::sync::atomic::AtomicBool::new(false)) };
    sv_nfs::health::probe(&connector, server.export().root_fh()).await.expect("probe");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for needle in [
        "sv_nfs_operations_total{program=\"nfs\",procedure=\"GETATTR\",status=\"OK\"} 1",
        "sv_nfs_operations_total{program=\"nfs\",procedure=\"NULL\",status=\"OK\"} 1",
        "sv_nfs_operation_duration_seconds_count{procedure=\"GETATTR\"} 1",
        "sv_nfs_capacity_bytes 1048576",
        "sv_nfs_used_bytes 10",
        "sv_nfs_connected_clients",
        "sv_nfs_read_bytes_total",
        "sv_nfs_written_bytes_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
