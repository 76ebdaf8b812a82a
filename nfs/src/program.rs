//! The `sv-nfs` command line, shared by the binary and the simulation: both parse the same flags
//! with [`Cli`] and build the export's options with [`ServeArgs::export_options`], so the
//! simulation runs the settings a real pod gets.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sv_common::telemetry::LogFormat;
use sv_common::writer::{is_valid_writer_token, nfs_writer_path};

use crate::fs::{ExportOptions, Identity, Squash};
use crate::rpc::Credential;

#[derive(Parser, Debug)]
#[command(name = "sv-nfs", version, about = "SharedVolume NFS server: NFSv3 and MOUNT v3 on one TCP port")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a directory.
    Serve(ServeArgs),
}

/// How consumers may use the export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumerAccess {
    ReadWrite,
    ReadOnly,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Directory to export.
    #[arg(long)]
    pub export: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// Port of NFS, MOUNT and portmap.
    #[arg(long, default_value_t = 2049)]
    pub port: u16,
    /// Port of /healthz, /readyz and /metrics.
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Bytes of file data the export may hold (0: no limit beyond the disk).
    #[arg(long, default_value_t = 0)]
    pub capacity_bytes: u64,
    /// Refuse every change, the writer's too.
    #[arg(long)]
    pub read_only: bool,
    /// Do not sync directories after namespace changes (faster, less durable).
    #[arg(long)]
    pub no_sync_namespace: bool,
    /// Whose identity consumers' requests are made with: `root` maps uid and gid 0 to the
    /// anonymous ids (an NFS export's root_squash), `all` maps everyone (all_squash), `none`
    /// trusts the AUTH_UNIX credential as sent.
    #[arg(long, default_value = "root", value_parser = parse_squash)]
    pub squash: Squash,
    /// The anonymous uid of squashed requests.
    #[arg(long, default_value_t = Credential::NOBODY)]
    pub anon_uid: u32,
    /// The anonymous gid of squashed requests.
    #[arg(long, default_value_t = Credential::NOBODY)]
    pub anon_gid: u32,
    /// Whether consumers may change the export.
    #[arg(long, value_enum, default_value_t = ConsumerAccess::ReadWrite)]
    pub consumer_access: ConsumerAccess,
    /// A top-level directory that consumers may read but never change (the syncer's state);
    /// empty for none.
    #[arg(long, default_value = ".sharedvolume")]
    pub protected_dir: String,
    /// File holding the writer token: MOUNT of `/.sv-writer-<token>` gives the writer's rights
    /// (no squashing, the protected directory writable). Without it there is no writer.
    #[arg(long)]
    pub writer_token_file: Option<PathBuf>,
    /// Mode given to the export's root directory at start, in octal (1777 lets squashed
    /// consumers create entries but not remove the writer's or each other's).
    #[arg(long, value_parser = parse_mode)]
    pub root_mode: Option<u32>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SV_LOG_FORMAT")]
    pub log_format: LogFormat,
}

fn parse_squash(s: &str) -> Result<Squash, String> {
    s.parse()
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 1777 or 755"))
}

impl ServeArgs {
    /// The export's options; `writer_token` is the content of `--writer-token-file`, read by the
    /// caller (the simulation maps the path onto its pod's volumes).
    pub fn export_options(&self, writer_token: Option<&str>) -> Result<ExportOptions, String> {
        let writer_path = match writer_token.map(str::trim) {
            Some(token) if is_valid_writer_token(token) => Some(nfs_writer_path(token)),
            Some(_) => {
                return Err("--writer-token-file: the token must be 32 lowercase hexadecimal digits".to_string());
            }
            None => None,
        };
        Ok(ExportOptions {
            read_only: self.read_only,
            capacity: (self.capacity_bytes > 0).then_some(self.capacity_bytes),
            sync_namespace: !self.no_sync_namespace,
            identity: Identity {
                squash: self.squash,
                anon_uid: self.anon_uid,
                anon_gid: self.anon_gid,
                consumer_read_only: self.consumer_access == ConsumerAccess::ReadOnly,
                protected_dir: Some(self.protected_dir.clone()).filter(|d| !d.is_empty()),
                writer_path,
            },
            root_mode: self.root_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &str) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(format!("sv-nfs serve {args}").split(' ')).map(|c| match c.command {
            Command::Serve(a) => a,
        })
    }

    #[test]
    fn defaults_squash_root_and_protect_the_syncers_state() {
        let args = serve("--export=/e").expect("parses");
        let options = args.export_options(None).expect("options");
        assert_eq!(options.identity.squash, Squash::Root);
        assert_eq!(options.identity.protected_dir.as_deref(), Some(".sharedvolume"));
        assert_eq!(options.identity.writer_path, None);
        let token = "0123456789abcdef0123456789abcdef";
        let options = args.export_options(Some(&format!("{token}\n"))).expect("options");
        assert_eq!(options.identity.writer_path, Some(format!("/.sv-writer-{token}")));
    }

    #[test]
    fn mistakes_are_refused_with_the_flag_named() {
        assert!(serve("--export=/e --squash=some").unwrap_err().to_string().contains("not a squash mode"));
        assert!(serve("--export=/e --root-mode=999").unwrap_err().to_string().contains("octal"));
        assert!(serve("--export=/e --consumer-access=rw").is_err());
        assert!(serve("--port=1").is_err(), "--export is required");
        let args = serve("--export=/e --consumer-access=read-only --root-mode=1777 --squash=all").expect("parses");
        let options = args.export_options(None).expect("options");
        assert!(options.identity.consumer_read_only);
        assert_eq!(options.root_mode, Some(0o1777));
        assert!(args.export_options(Some("short")).unwrap_err().contains("--writer-token-file"));
    }
}
