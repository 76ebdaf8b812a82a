//! Feeds arbitrary records to the server's RPC decoder and dispatcher (the same entry point a
//! connection uses), against a real export in a temporary directory. Any panic is a bug.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sv_nfs::fs::{Export, ExportOptions};
use sv_nfs::metrics::NfsMetrics;
use sv_nfs::server::{NfsServer, ServerConfig};

struct Target {
    server: NfsServer,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        std::fs::write(dir.path().join("file"), b"data").expect("file");
        let export = Arc::new(Export::open(dir.path(), ExportOptions::default()).expect("export"));
        let metrics = NfsMetrics::register(&mut prometheus_client::registry::Registry::default());
        let config = ServerConfig {
            port: 2049,
            write_verifier: [1; 8],
            shutdown_grace: std::time::Duration::from_secs(1),
            execution: sv_nfs::server::Execution::Inline,
        };
        Target { server: NfsServer::new(export, metrics, config), _dir: dir }
    })
}

fuzz_target!(|record: &[u8]| {
    let t = target();
    let mut reply = Vec::new();
    // The root handle is spliced in at a fixed spot now and then, so calls get past handle checks.
    let mut input = record.to_vec();
    if input.len() > 44 && input[0] & 1 == 1 {
        let fh = t.server.export().root_fh().as_bytes();
        let at = 40;
        let len = (fh.len() as u32).to_be_bytes();
        input.splice(at..at, len.iter().copied().chain(fh.iter().copied()));
    }
    let _ = t.server.answer(&input, &mut reply);
});
