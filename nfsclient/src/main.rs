//! `sv-nfs-mount`: mounts an NFSv3 export with FUSE, for machines without a kernel NFS client
//! (tests and benchmarks here). Runs until SIGTERM or SIGINT, then unmounts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use sv_nfs_client::ClientConfig;
use sv_nfs_client::fuse::{MountConfig, mount};

#[derive(Parser, Debug)]
#[command(
    name = "sv-nfs-mount",
    version,
    about = "Mount an NFSv3 export with FUSE (a stand-in for the kernel NFS client)",
    after_help = "Example: sv-nfs-mount nfs://127.0.0.1:2049/ /mnt/volume\n         sv-nfs-mount --mount-port 20048 nfs://127.0.0.1:2049/export /mnt/ganesha"
)]
struct Cli {
    /// The export: nfs://HOST:PORT/PATH (PORT defaults to 2049; sv-nfs serves MOUNT on it too).
    url: String,
    /// Where to mount it (an existing empty directory).
    mountpoint: PathBuf,
    /// The MOUNT protocol's port, when it is not the NFS port (nfs-ganesha: 20048).
    #[arg(long)]
    mount_port: Option<u16>,
    /// AUTH_UNIX user and group the calls carry.
    #[arg(long, default_value_t = 0)]
    uid: u32,
    #[arg(long, default_value_t = 0)]
    gid: u32,
    /// File system calls answered at once (FUSE threads, and NFS connections).
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// How long attributes and names are cached, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    attr_ttl_ms: u64,
    /// Connect from a port below 1024 (servers that require it).
    #[arg(long)]
    privileged_port: bool,
}

fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let Some(rest) = url.strip_prefix("nfs://") else { bail!("the URL must start with nfs:// (got {url:?})") };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:2049") };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    Ok((addr, path.to_string()))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let cli = Cli::parse();
    // Blocked before any thread starts, so that every thread inherits the mask and the signal
    // waits for `sigwait` below instead of killing the process with the file system mounted.
    let signals = block_signals();
    let (addr, path) = parse_url(&cli.url)?;
    let mut client = ClientConfig::new(addr, path);
    client.mount_port = cli.mount_port;
    client.uid = cli.uid;
    client.gid = cli.gid;
    client.privileged_port = cli.privileged_port;
    let mut config = MountConfig::new(client);
    config.threads = cli.threads;
    config.attr_ttl = Duration::from_millis(cli.attr_ttl_ms);
    let mounted = mount(config, &cli.mountpoint).with_context(|| format!("mounting {}", cli.url))?;
    tracing::info!(url = %cli.url, mountpoint = %cli.mountpoint.display(), "mounted");
    wait_for(&signals)?;
    mounted.unmount().context("unmounting")?;
    Ok(())
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; the mask applies to this thread
    // and the threads it starts later.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Blocks until SIGTERM or SIGINT.
fn wait_for(signals: &libc::sigset_t) -> anyhow::Result<()> {
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set, blocked in every thread (block_signals).
    if unsafe { libc::sigwait(signals, &mut signal) } != 0 {
        bail!("waiting for a signal failed");
    }
    tracing::info!(signal, "unmounting");
    Ok(())
}
