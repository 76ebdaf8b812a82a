//! ONC RPC (RFC 5531) over TCP: record marking with a size limit, call headers, and replies
//! written with their record mark in one buffer (one write per reply).

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::xdr::{Decoder, Encode, Malformed};

/// Largest request record accepted: a 1 MiB WRITE plus headers, with room to spare. A client that
/// announces more gets `GARBAGE_ARGS` and its connection is closed, before anything is allocated.
pub const MAX_RECORD: usize = 1024 * 1024 + 64 * 1024;

const LAST_FRAGMENT: u32 = 0x8000_0000;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_UNIX: u32 = 1;

pub mod accept {
    pub const SUCCESS: u32 = 0;
    pub const PROG_UNAVAIL: u32 = 1;
    pub const PROG_MISMATCH: u32 = 2;
    pub const PROC_UNAVAIL: u32 = 3;
    pub const GARBAGE_ARGS: u32 = 4;
    pub const SYSTEM_ERR: u32 = 5;
}

pub mod auth_stat {
    pub const AUTH_BADCRED: u32 = 1;
    pub const AUTH_TOOWEAK: u32 = 5;
}

/// What reading one record produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// A complete record is in the buffer.
    Complete,
    /// The peer closed the connection between records.
    Closed,
    /// The record would exceed [`MAX_RECORD`]; `xid` is its transaction id when it could be read.
    TooLarge { xid: Option<u32> },
}

/// Reads one record (all its fragments) into `buf`, replacing its contents.
pub async fn read_record<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Record> {
    buf.clear();
    loop {
        let mut header = [0u8; 4];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && buf.is_empty() => return Ok(Record::Closed),
            Err(e) => return Err(e),
        }
        let header = u32::from_be_bytes(header);
        let len = (header & !LAST_FRAGMENT) as usize;
        if buf.len() + len > MAX_RECORD {
            let xid = if buf.len() >= 4 {
                Some(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
            } else if len >= 4 {
                let mut xid = [0u8; 4];
                reader.read_exact(&mut xid).await.ok().map(|_| u32::from_be_bytes(xid))
            } else {
                None
            };
            return Ok(Record::TooLarge { xid });
        }
        let start = buf.len();
        buf.resize(start + len, 0);
        reader.read_exact(&mut buf[start..]).await?;
        if header & LAST_FRAGMENT != 0 {
            return Ok(Record::Complete);
        }
    }
}

/// The caller's identity from an `AUTH_UNIX` credential; `AUTH_NONE` maps to nobody.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

impl Credential {
    pub const NOBODY: u32 = 65534;

    pub fn nobody() -> Self {
        Self { uid: Self::NOBODY, gid: Self::NOBODY, gids: Vec::new() }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }
}

/// A decoded call header. `args` is the rest of the record.
#[derive(Debug)]
pub struct Call<'a> {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub cred: Result<Credential, u32>,
    pub args: Decoder<'a>,
}

/// Why a record is not a call we can answer normally.
#[derive(Debug, PartialEq, Eq)]
pub enum BadCall {
    /// Not even an xid: drop the record.
    Unreadable,
    /// A reply or an unknown message type: ignore it.
    NotACall,
    /// RPC version other than 2: answer `RPC_MISMATCH`.
    RpcVersion { xid: u32 },
    /// The header is malformed past the xid: answer `GARBAGE_ARGS`.
    Garbage { xid: u32 },
}

/// Parses a call header.
pub fn parse_call(record: &[u8]) -> Result<Call<'_>, BadCall> {
    let mut d = Decoder::new(record);
    let xid = d.u32().map_err(|_| BadCall::Unreadable)?;
    let garbage = |_: Malformed| BadCall::Garbage { xid };
    if d.u32().map_err(|_| BadCall::NotACall)? != 0 {
        return Err(BadCall::NotACall);
    }
    if d.u32().map_err(garbage)? != 2 {
        return Err(BadCall::RpcVersion { xid });
    }
    let prog = d.u32().map_err(garbage)?;
    let vers = d.u32().map_err(garbage)?;
    let proc_ = d.u32().map_err(garbage)?;
    let flavor = d.u32().map_err(garbage)?;
    let body = d.opaque(400).map_err(garbage)?;
    let cred = match flavor {
        AUTH_UNIX => parse_auth_unix(body).map_err(|_| auth_stat::AUTH_BADCRED),
        AUTH_NONE => Ok(Credential::nobody()),
        _ => Err(auth_stat::AUTH_TOOWEAK),
    };
    let _verf_flavor = d.u32().map_err(garbage)?;
    d.skip_opaque(400).map_err(garbage)?;
    Ok(Call { xid, prog, vers, proc_, cred, args: d })
}

fn parse_auth_unix(body: &[u8]) -> Result<Credential, Malformed> {
    let mut d = Decoder::new(body);
    let _stamp = d.u32()?;
    d.skip_opaque(255)?;
    let uid = d.u32()?;
    let gid = d.u32()?;
    let count = d.u32()? as usize;
    if count > 16 {
        return Err(Malformed { offset: d.position() });
    }
    let mut gids = Vec::with_capacity(count);
    for _ in 0..count {
        gids.push(d.u32()?);
    }
    d.finish()?;
    Ok(Credential { uid, gid, gids })
}

/// A reply under construction in a reused buffer, which starts with room for the record mark.
pub struct Reply<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl<'a> Reply<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        Self { buf }
    }

    /// Header of an accepted call with `accept_stat` SUCCESS; results follow.
    pub fn success(&mut self, xid: u32) {
        self.accepted(xid, accept::SUCCESS);
    }

    /// Header of an accepted call with the given status (nothing follows except for
    /// PROG_MISMATCH, see [`Reply::prog_mismatch`]).
    pub fn accepted(&mut self, xid: u32, stat: u32) {
        for v in [xid, 1 /* REPLY */, 0 /* MSG_ACCEPTED */, AUTH_NONE, 0, stat] {
            self.buf.put_u32(v);
        }
    }

    pub fn prog_mismatch(&mut self, xid: u32, low: u32, high: u32) {
        self.accepted(xid, accept::PROG_MISMATCH);
        self.buf.put_u32(low);
        self.buf.put_u32(high);
    }

    pub fn rpc_mismatch(&mut self, xid: u32) {
        for v in [xid, 1, 1 /* MSG_DENIED */, 0 /* RPC_MISMATCH */, 2, 2] {
            self.buf.put_u32(v);
        }
    }

    pub fn auth_error(&mut self, xid: u32, stat: u32) {
        for v in [xid, 1, 1 /* MSG_DENIED */, 1 /* AUTH_ERROR */, stat] {
            self.buf.put_u32(v);
        }
    }
}

/// Fills in the record mark of a reply built by [`Reply`]; the bytes are then ready to write.
pub fn seal(buf: &mut [u8]) -> &[u8] {
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&(len | LAST_FRAGMENT).to_be_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(prog: u32, cred_flavor: u32, cred: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [7u32, 0, 2, prog, 3, 0, cred_flavor] {
            b.put_u32(v);
        }
        b.put_opaque(cred);
        b.put_u32(0);
        b.put_u32(0);
        b
    }

    #[test]
    fn parses_auth_unix() {
        let mut cred = Vec::new();
        cred.put_u32(1);
        cred.put_opaque(b"host");
        cred.put_u32(1000);
        cred.put_u32(100);
        cred.put_u32(2);
        cred.put_u32(10);
        cred.put_u32(11);
        let rec = call(100_003, AUTH_UNIX, &cred);
        let c = parse_call(&rec).expect("call");
        assert_eq!(c.xid, 7);
        assert_eq!(c.cred, Ok(Credential { uid: 1000, gid: 100, gids: vec![10, 11] }));
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(parse_call(&[0, 0]).err(), Some(BadCall::Unreadable));
        let mut rec = call(100_003, AUTH_NONE, &[]);
        rec.truncate(20);
        assert_eq!(parse_call(&rec).err(), Some(BadCall::Garbage { xid: 7 }));
        let mut v3 = call(100_003, AUTH_NONE, &[]);
        v3[8..12].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(parse_call(&v3).err(), Some(BadCall::RpcVersion { xid: 7 }));
        let gss = call(100_003, 6, &[]);
        let c = parse_call(&gss).expect("call");
        assert_eq!(c.cred, Err(auth_stat::AUTH_TOOWEAK));
    }

    #[tokio::test]
    async fn oversized_records_are_refused_before_allocation() {
        let mut data = Vec::new();
        data.extend_from_slice(&(0x8000_0000u32 | 0x7fff_ffff).to_be_bytes());
        data.extend_from_slice(&42u32.to_be_bytes());
        let mut buf = Vec::new();
        let r = read_record(&mut &data[..], &mut buf).await.expect("read");
        assert_eq!(r, Record::TooLarge { xid: Some(42) });
        assert!(buf.capacity() < 1024);
    }

    #[tokio::test]
    async fn multi_fragment_records_are_joined() {
        let mut data = Vec::new();
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(b"ab");
        data.extend_from_slice(&(0x8000_0000u32 | 3).to_be_bytes());
        data.extend_from_slice(b"cde");
        let mut buf = Vec::new();
        let mut input = &data[..];
        assert_eq!(read_record(&mut input, &mut buf).await.expect("read"), Record::Complete);
        assert_eq!(buf, b"abcde");
        assert_eq!(read_record(&mut input, &mut buf).await.expect("read"), Record::Closed);
    }
}
