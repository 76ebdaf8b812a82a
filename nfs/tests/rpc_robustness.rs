//! Hostile and malformed RPC traffic over a raw socket: every case gets the proper RPC or NFS
//! error (or a closed connection where nothing else is possible), and the server keeps serving.

use crate::common::*;
use sv_nfs::fs::ExportOptions;
use sv_nfs::rpc::{self, Record};
use sv_nfs::xdr::{Decoder, Encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn record(body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() as u32) | 0x8000_0000).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A call header with AUTH_UNIX root credentials (flavor overridable), followed by `args`.
fn call(xid: u32, rpcvers: u32, prog: u32, vers: u32, proc_: u32, flavor: u32, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [xid, 0, rpcvers, prog, vers, proc_, flavor] {
        b.put_u32(v);
    }
    let mut cred = Vec::new();
    cred.put_u32(0); // stamp
    cred.put_opaque(b"t");
    for v in [0u32, 0, 0] {
        cred.put_u32(v);
    }
    b.put_opaque(&cred);
    b.put_u32(0);
    b.put_u32(0);
    b.extend_from_slice(args);
    b
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// accept_stat, then the first u32 of the results if any.
    Accepted(u32, Option<u32>),
    /// reject_stat and its first field.
    Denied(u32, u32),
}

async fn ask(stream: &mut TcpStream, bytes: &[u8]) -> Option<(u32, Answer)> {
    stream.write_all(bytes).await.ok()?;
    let mut buf = Vec::new();
    match rpc::read_record(stream, &mut buf).await.ok()? {
        Record::Complete => {}
        _ => return None,
    }
    let mut d = Decoder::new(&buf);
    let xid = d.u32().ok()?;
    assert_eq!(d.u32().ok()?, 1, "a reply");
    match d.u32().ok()? {
        0 => {
            let _ = d.u32().ok()?;
            d.skip_opaque(400).ok()?;
            let stat = d.u32().ok()?;
            Some((xid, Answer::Accepted(stat, d.u32().ok())))
        }
        _ => Some((xid, Answer::Denied(d.u32().ok()?, d.u32().ok()?))),
    }
}

async fn connected(server: &TestServer) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port)).await.expect("connect")
}

#[tokio::test]
async fn rpc_errors_are_answered_properly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut s = connected(&server).await;
    let root = server.server.export().root_fh().as_bytes().to_vec();
    let mut fh_arg = Vec::new();
    fh_arg.put_opaque(&root);

    let cases: Vec<(&str, Vec<u8>, Answer)> = vec![
        ("NULL works", call(1, 2, 100_003, 3, 0, 1, &[]), Answer::Accepted(0, None)),
        ("unknown program", call(2, 2, 100_099, 1, 0, 1, &[]), Answer::Accepted(rpc::accept::PROG_UNAVAIL, None)),
        ("NFS version 4", call(3, 2, 100_003, 4, 0, 1, &[]), Answer::Accepted(rpc::accept::PROG_MISMATCH, Some(3))),
        ("unknown procedure", call(4, 2, 100_003, 3, 99, 1, &[]), Answer::Accepted(rpc::accept::PROC_UNAVAIL, None)),
        (
            "truncated arguments",
            call(5, 2, 100_003, 3, 1, 1, &[0, 0, 0, 60, 1, 2]),
            Answer::Accepted(rpc::accept::GARBAGE_ARGS, None),
        ),
        (
            "trailing bytes",
            call(6, 2, 100_003, 3, 0, 1, &[0, 0, 0, 0]),
            Answer::Accepted(rpc::accept::GARBAGE_ARGS, None),
        ),
        (
            "handle longer than 64 bytes",
            call(7, 2, 100_003, 3, 1, 1, &{
                let mut a = Vec::new();
                a.put_opaque(&[1; 65]);
                a
            }),
            Answer::Accepted(rpc::accept::GARBAGE_ARGS, None),
        ),
        ("RPC version 3", call(8, 3, 100_003, 3, 0, 1, &[]), Answer::Denied(0, 2)),
        (
            "RPCSEC_GSS credential",
            call(9, 2, 100_003, 3, 1, 6, &fh_arg),
            Answer::Denied(1, rpc::auth_stat::AUTH_TOOWEAK),
        ),
        ("GETATTR of the root", call(10, 2, 100_003, 3, 1, 1, &fh_arg), Answer::Accepted(0, Some(0))),
        ("MOUNT version 1", call(11, 2, 100_005, 1, 1, 1, &[]), Answer::Accepted(rpc::accept::PROG_MISMATCH, Some(3))),
        ("NFS_ACL", call(12, 2, 100_227, 3, 0, 1, &[]), Answer::Accepted(rpc::accept::PROG_UNAVAIL, None)),
        (
            "portmap GETPORT of NFS",
            call(13, 2, 100_000, 2, 3, 1, &{
                let mut a = Vec::new();
                for v in [100_003u32, 3, 6, 0] {
                    a.put_u32(v);
                }
                a
            }),
            Answer::Accepted(0, Some(u32::from(server.port))),
        ),
    ];
    for (what, body, expected) in cases {
        let (xid, answer) = ask(&mut s, &record(&body)).await.unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(xid, u32::from_be_bytes([body[0], body[1], body[2], body[3]]), "{what}");
        assert_eq!(answer, expected, "{what}");
    }

    // A reply message and an unreadable record get no answer, and the connection stays usable.
    let mut reply_msg = Vec::new();
    for v in [77u32, 1, 0] {
        reply_msg.put_u32(v);
    }
    s.write_all(&record(&reply_msg)).await.expect("write");
    s.write_all(&record(&[1, 2])).await.expect("write");
    let (xid, answer) = ask(&mut s, &record(&call(14, 2, 100_003, 3, 0, 1, &[]))).await.expect("still serving");
    assert_eq!((xid, answer), (14, Answer::Accepted(0, None)));
    server.stop().await;
}

#[tokio::test]
async fn oversized_records_close_the_connection_after_garbage_args() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut s = connected(&server).await;
    let mut bytes = (0x8000_0000u32 | 0x7fff_fff0).to_be_bytes().to_vec();
    bytes.extend_from_slice(&42u32.to_be_bytes());
    s.write_all(&bytes).await.expect("write");
    let mut buf = Vec::new();
    assert_eq!(rpc::read_record(&mut s, &mut buf).await.expect("reply"), Record::Complete);
    let mut d = Decoder::new(&buf);
    assert_eq!(d.u32(), Ok(42));
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "then the connection is closed");

    // Fragments that add up past the limit are refused the same way.
    let mut s = connected(&server).await;
    let chunk = vec![0u8; 512 * 1024];
    for _ in 0..3 {
        let mut frag = ((chunk.len() as u32).to_be_bytes()).to_vec();
        frag.extend_from_slice(&chunk);
        if s.write_all(&frag).await.is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed, not hung");

    // The server still serves others.
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    assert!(getattr(&mut c, &root).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn random_garbage_never_kills_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let root = server.server.export().root_fh().as_bytes().to_vec();
    for round in 0..300 {
        let mut s = connected(&server).await;
        // Valid headers for real procedures, then random argument bytes.
        let proc_ = (next() % 23) as u32;
        let prog = [100_003u32, 100_005, 100_000][(next() % 3) as usize];
        let vers = if prog == 100_000 { 2 } else { 3 };
        let mut args = Vec::new();
        if next() % 2 == 0 {
            args.put_opaque(&root);
        }
        for _ in 0..(next() % 64) {
            args.extend_from_slice(&(next() as u32).to_be_bytes()[..(1 + next() % 4) as usize]);
        }
        let body = call(round, 2, prog, vers, proc_, 1, &args);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), ask(&mut s, &record(&body)))
            .await
            .expect("answered");
    }
    let mut c = server.client().await;
    let root = c.root_nfs_fh3();
    assert!(getattr(&mut c, &root).await.is_ok(), "the server survived");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut idle = connected(&server).await;
    let (xid, answer) = ask(&mut idle, &record(&call(1, 2, 100_003, 3, 0, 1, &[]))).await.expect("reply");
    assert_eq!((xid, answer), (1, Answer::Accepted(0, None)));
    server.shutdown.cancel();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(5), server.task).await;
    assert!(matches!(finished, Ok(Ok(Ok(())))), "serve returns once connections are done");
    let mut rest = Vec::new();
    assert_eq!(idle.read_to_end(&mut rest).await.map(|_| rest.len()).unwrap_or(0), 0, "the idle connection was closed");
}

/// Many calls written on one connection before any reply is read (as the Linux client sends
/// the calls of every pod of a node): each is answered exactly once, whatever the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_on_one_connection_are_each_answered_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), ExportOptions::default()).await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).await.expect("connect");
    let calls = 200u32;
    let mut burst = Vec::new();
    for xid in 1..=calls {
        // NFS NULL, the cheapest call: the point is the pairing of replies to calls.
        burst.extend_from_slice(&record(&call(xid, 2, 100_003, 3, 0, 1, &[])));
    }
    stream.write_all(&burst).await.expect("write the burst");
    let mut seen = std::collections::BTreeSet::new();
    let mut buf = Vec::new();
    for _ in 0..calls {
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), rpc::read_record(&mut stream, &mut buf))
            .await
            .expect("a reply in time")
            .expect("read");
        assert_eq!(read, Record::Complete);
        let xid = Decoder::new(&buf).u32().expect("xid");
        assert!(seen.insert(xid), "xid {xid} answered twice");
    }
    assert_eq!(seen, (1..=calls).collect(), "every call answered");
    server.stop().await;
}
