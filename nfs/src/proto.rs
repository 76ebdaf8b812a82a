//! The three RPC programs served on one port: NFS v3 (RFC 1813), MOUNT v3, and the two portmap
//! procedures clients use to find them (NULL and GETPORT), so no rpcbind is needed.

use nfs3_types::nfs3::{
    ACCESS3resok, COMMIT3resok, FSINFO3resok, FSSTAT3resok, LOOKUP3resok, PATHCONF3resok, READDIR3resok,
    READDIRPLUS3resok, READLINK3resok, WRITE3resok, cookieverf3, dirlist3, dirlistplus3, entry3, entryplus3, fattr3,
    filename3, nfs_fh3, nfspath3, nfsstat3, nfstime3, post_op_attr, post_op_fh3, pre_op_attr, stable_how, wcc_attr,
    wcc_data, writeverf3,
};
use nfs3_types::xdr_codec::{List, Opaque, Pack};

use crate::fs::{CreateHow, DirEntry, Export, MAX_IO, NfsResult, SetAttrs, SetTime};
use crate::rpc::Credential;
use crate::xdr::{Decoder, Encode, Malformed};

pub const NFS_PROGRAM: u32 = 100_003;
pub const MOUNT_PROGRAM: u32 = 100_005;
pub const PORTMAP_PROGRAM: u32 = 100_000;

/// Names of the NFSv3 procedures, for metrics and logs.
pub const NFS_PROCEDURES: [&str; 22] = [
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "MKNOD",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHCONF",
    "COMMIT",
];

/// What a call produced, beyond the bytes of its reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Results were appended; the NFS status (or `NFS3_OK` for non-NFS programs).
    Done(nfsstat3),
    /// The arguments did not decode: the reply must be `GARBAGE_ARGS`.
    Garbage,
    /// No such procedure: `PROC_UNAVAIL`.
    NoProcedure,
}

/// State a call needs besides the export.
pub struct CallContext<'a> {
    pub export: &'a Export,
    pub cred: &'a Credential,
    /// Changes on every server start, so clients resend writes that were not committed.
    pub write_verifier: [u8; 8],
    /// Port announced by portmap GETPORT.
    pub port: u16,
    /// Bytes of file data moved, for metrics.
    pub bytes_read: u64,
    pub bytes_written: u64,
}

fn pack<T: Pack>(out: &mut Vec<u8>, value: &T) {
    // Packing into a Vec cannot fail: it only grows the vector.
    let _ = value.pack(out);
}

fn fh(d: &mut Decoder<'_>) -> Result<Vec<u8>, Malformed> {
    d.opaque(64).map(<[u8]>::to_vec)
}

/// Names may be longer than NFS allows: the procedure answers NAMETOOLONG, not GARBAGE_ARGS.
fn name<'a>(d: &mut Decoder<'a>) -> Result<&'a [u8], Malformed> {
    d.opaque(8192)
}

fn time(d: &mut Decoder<'_>) -> Result<nfstime3, Malformed> {
    Ok(nfstime3 { seconds: d.u32()?, nseconds: d.u32()? })
}

fn set_time(d: &mut Decoder<'_>) -> Result<SetTime, Malformed> {
    match d.u32()? {
        0 => Ok(SetTime::Keep),
        1 => Ok(SetTime::ServerNow),
        2 => Ok(SetTime::Client(time(d)?)),
        _ => Err(Malformed { offset: d.position() }),
    }
}

fn sattr(d: &mut Decoder<'_>) -> Result<SetAttrs, Malformed> {
    let mode = if d.bool()? { Some(d.u32()?) } else { None };
    let uid = if d.bool()? { Some(d.u32()?) } else { None };
    let gid = if d.bool()? { Some(d.u32()?) } else { None };
    let size = if d.bool()? { Some(d.u64()?) } else { None };
    Ok(SetAttrs { mode, uid, gid, size, atime: set_time(d)?, mtime: set_time(d)? })
}

fn post_op(attr: Option<fattr3>) -> post_op_attr {
    match attr {
        Some(a) => post_op_attr::Some(a),
        None => post_op_attr::None,
    }
}

fn wcc_of(before: Option<wcc_attr>, after: Option<fattr3>) -> wcc_data {
    wcc_data { before: before.map_or(pre_op_attr::None, pre_op_attr::Some), after: post_op(after) }
}

fn handle(fh: &crate::handle::Fh) -> nfs_fh3 {
    nfs_fh3 { data: Opaque::owned(fh.as_bytes().to_vec()) }
}

/// Appends `status` and the failure body (`body` packs the procedure's `resfail`).
fn fail(out: &mut Vec<u8>, status: nfsstat3, body: impl FnOnce(&mut Vec<u8>)) -> Outcome {
    pack(out, &status);
    body(out);
    Outcome::Done(status)
}

/// Runs one NFSv3 procedure, appending its results to `out`.
pub fn nfs(ctx: &mut CallContext<'_>, proc_: u32, mut d: Decoder<'_>, out: &mut Vec<u8>) -> Outcome {
    match run_nfs(ctx, proc_, &mut d, out) {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Garbage,
    }
}

fn run_nfs(
    ctx: &mut CallContext<'_>,
    proc_: u32,
    d: &mut Decoder<'_>,
    out: &mut Vec<u8>,
) -> Result<Outcome, Malformed> {
    let export = ctx.export;
    let cred = ctx.cred;
    let attr_of = |fh: &[u8]| export.getattr(fh).ok();
    Ok(match proc_ {
        0 => {
            d.finish()?;
            Outcome::Done(nfsstat3::NFS3_OK)
        }
        1 => {
            let f = fh(d)?;
            d.finish()?;
            match export.getattr(&f) {
                Ok(a) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(out, &a);
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |_| {}),
            }
        }
        2 => {
            let f = fh(d)?;
            let attrs = sattr(d)?;
            let guard = if d.bool()? { Some(time(d)?) } else { None };
            d.finish()?;
            match export.setattr(&f, &attrs, guard, cred) {
                Ok((pre, post)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(out, &wcc_of(Some(pre), Some(post)));
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &wcc_of(None, attr_of(&f)))),
            }
        }
        3 => {
            let dir = fh(d)?;
            let n = name(d)?;
            d.finish()?;
            match export.lookup(&dir, n, cred) {
                Ok((child, attrs, dir_attrs)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &LOOKUP3resok {
                            object: handle(&child),
                            obj_attributes: post_op_attr::Some(attrs),
                            dir_attributes: post_op_attr::Some(dir_attrs),
                        },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &post_op(attr_of(&dir)))),
            }
        }
        4 => {
            let f = fh(d)?;
            let asked = d.u32()?;
            d.finish()?;
            match export.access(&f, asked, cred) {
                Ok((a, granted)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(out, &ACCESS3resok { obj_attributes: post_op_attr::Some(a), access: granted });
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &post_op_attr::None)),
            }
        }
        5 => {
            let f = fh(d)?;
            d.finish()?;
            match export.readlink(&f) {
                Ok((a, target)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &READLINK3resok {
                            symlink_attributes: post_op_attr::Some(a),
                            data: nfspath3(Opaque::borrowed(&target)),
                        },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &post_op(attr_of(&f)))),
            }
        }
        6 => {
            let f = fh(d)?;
            let offset = d.u64()?;
            let count = d.u32()?;
            d.finish()?;
            read(ctx, &f, offset, count, out)
        }
        7 => {
            let f = fh(d)?;
            let offset = d.u64()?;
            let count = d.u32()?;
            let stable = d.u32()?;
            let data = d.opaque(MAX_IO as usize)?;
            d.finish()?;
            if stable > 2 || data.len() != count as usize {
                return Err(Malformed { offset: d.position() });
            }
            match export.write(&f, offset, data, stable, cred) {
                Ok((pre, post, committed)) => {
                    ctx.bytes_written += data.len() as u64;
                    let committed = match committed {
                        2 => stable_how::FILE_SYNC,
                        1 => stable_how::DATA_SYNC,
                        _ => stable_how::UNSTABLE,
                    };
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &WRITE3resok {
                            file_wcc: wcc_of(Some(pre), Some(post)),
                            count,
                            committed,
                            verf: writeverf3(ctx.write_verifier),
                        },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &wcc_of(None, attr_of(&f)))),
            }
        }
        8 => {
            let dir = fh(d)?;
            let n = name(d)?;
            let how = match d.u32()? {
                0 => CreateHow::Unchecked(sattr(d)?),
                1 => CreateHow::Guarded(sattr(d)?),
                2 => {
                    let v = d.fixed(8)?;
                    let mut verifier = [0u8; 8];
                    verifier.copy_from_slice(v);
                    CreateHow::Exclusive(verifier)
                }
                _ => return Err(Malformed { offset: d.position() }),
            };
            d.finish()?;
            created(out, export.create(&dir, n, how, cred), || attr_of(&dir))
        }
        9 => {
            let dir = fh(d)?;
            let n = name(d)?;
            let attrs = sattr(d)?;
            d.finish()?;
            created(out, export.mkdir(&dir, n, &attrs, cred), || attr_of(&dir))
        }
        10 => {
            let dir = fh(d)?;
            let n = name(d)?;
            let attrs = sattr(d)?;
            let target = d.opaque(8192)?;
            d.finish()?;
            created(out, export.symlink(&dir, n, target, &attrs, cred), || attr_of(&dir))
        }
        11 => {
            // MKNOD: devices, sockets and FIFOs have no place in a shared data volume.
            let dir = fh(d)?;
            let _ = name(d)?;
            fail(out, nfsstat3::NFS3ERR_NOTSUPP, |o| pack(o, &wcc_of(None, attr_of(&dir))))
        }
        12 | 13 => {
            let dir = fh(d)?;
            let n = name(d)?;
            d.finish()?;
            match export.remove(&dir, n, proc_ == 13, cred) {
                Ok((pre, post)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(out, &wcc_of(Some(pre), Some(post)));
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &wcc_of(None, attr_of(&dir)))),
            }
        }
        14 => {
            let from = fh(d)?;
            let from_name = name(d)?;
            let to = fh(d)?;
            let to_name = name(d)?;
            d.finish()?;
            match export.rename(&from, from_name, &to, to_name, cred) {
                Ok((fpre, fpost, tpre, tpost)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(out, &wcc_of(Some(fpre), Some(fpost)));
                    pack(out, &wcc_of(Some(tpre), Some(tpost)));
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| {
                    pack(o, &wcc_of(None, attr_of(&from)));
                    pack(o, &wcc_of(None, attr_of(&to)));
                }),
            }
        }
        15 => {
            let file = fh(d)?;
            let dir = fh(d)?;
            let n = name(d)?;
            d.finish()?;
            match export.link(&file, &dir, n, cred) {
                Ok((fattr, pre, post)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(out, &post_op_attr::Some(fattr));
                    pack(out, &wcc_of(Some(pre), Some(post)));
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| {
                    pack(o, &post_op(attr_of(&file)));
                    pack(o, &wcc_of(None, attr_of(&dir)));
                }),
            }
        }
        16 => {
            let dir = fh(d)?;
            let cookie = d.u64()?;
            let _verifier = d.fixed(8)?;
            let count = d.u32()?;
            d.finish()?;
            readdir(ctx, &dir, cookie, count, count, false, out)
        }
        17 => {
            let dir = fh(d)?;
            let cookie = d.u64()?;
            let _verifier = d.fixed(8)?;
            let dircount = d.u32()?;
            let maxcount = d.u32()?;
            d.finish()?;
            readdir(ctx, &dir, cookie, dircount, maxcount, true, out)
        }
        18 => {
            let f = fh(d)?;
            d.finish()?;
            match export.fsstat(&f) {
                Ok((a, s)) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &FSSTAT3resok {
                            obj_attributes: post_op_attr::Some(a),
                            tbytes: s.total_bytes,
                            fbytes: s.free_bytes,
                            abytes: s.avail_bytes,
                            tfiles: s.total_files,
                            ffiles: s.free_files,
                            afiles: s.avail_files,
                            invarsec: 0,
                        },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &post_op_attr::None)),
            }
        }
        19 => {
            let f = fh(d)?;
            d.finish()?;
            match export.getattr(&f) {
                Ok(a) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &FSINFO3resok {
                            obj_attributes: post_op_attr::Some(a),
                            rtmax: MAX_IO,
                            rtpref: MAX_IO,
                            rtmult: 4096,
                            wtmax: MAX_IO,
                            wtpref: MAX_IO,
                            wtmult: 4096,
                            dtpref: 64 * 1024,
                            maxfilesize: i64::MAX as u64,
                            time_delta: nfstime3 { seconds: 0, nseconds: 1 },
                            properties: Export::fsinfo_properties(),
                        },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &post_op_attr::None)),
            }
        }
        20 => {
            let f = fh(d)?;
            d.finish()?;
            match export.getattr(&f) {
                Ok(a) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &PATHCONF3resok {
                            obj_attributes: post_op_attr::Some(a),
                            linkmax: 65_000,
                            name_max: 255,
                            no_trunc: true,
                            chown_restricted: true,
                            case_insensitive: false,
                            case_preserving: true,
                        },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &post_op_attr::None)),
            }
        }
        21 => {
            let f = fh(d)?;
            let _offset = d.u64()?;
            let _count = d.u32()?;
            d.finish()?;
            let before = export.resolve(&f).ok().map(|(_, st)| crate::fs::wcc(&st));
            match export.commit(&f) {
                Ok(a) => {
                    pack(out, &nfsstat3::NFS3_OK);
                    pack(
                        out,
                        &COMMIT3resok { file_wcc: wcc_of(before, Some(a)), verf: writeverf3(ctx.write_verifier) },
                    );
                    Outcome::Done(nfsstat3::NFS3_OK)
                }
                Err(s) => fail(out, s, |o| pack(o, &wcc_of(None, attr_of(&f)))),
            }
        }
        _ => Outcome::NoProcedure,
    })
}

type Created = NfsResult<(crate::handle::Fh, fattr3, wcc_attr, fattr3)>;

/// The shared result shape of CREATE, MKDIR and SYMLINK.
fn created(out: &mut Vec<u8>, result: Created, dir_attr: impl FnOnce() -> Option<fattr3>) -> Outcome {
    match result {
        Ok((fh, attrs, pre, post)) => {
            pack(out, &nfsstat3::NFS3_OK);
            pack(out, &post_op_fh3::Some(handle(&fh)));
            pack(out, &post_op_attr::Some(attrs));
            pack(out, &wcc_of(Some(pre), Some(post)));
            Outcome::Done(nfsstat3::NFS3_OK)
        }
        Err(s) => fail(out, s, |o| pack(o, &wcc_of(None, dir_attr()))),
    }
}

/// Bytes of a packed `post_op_attr` carrying attributes.
const POST_OP_ATTR_SIZE: usize = 4 + 84;

/// READ, with the file data read straight into the reply buffer.
fn read(ctx: &mut CallContext<'_>, f: &[u8], offset: u64, count: u32, out: &mut Vec<u8>) -> Outcome {
    let start = out.len();
    out.put_u32(0); // NFS3_OK
    let attr_at = out.len();
    out.resize(attr_at + POST_OP_ATTR_SIZE + 12, 0);
    let data_at = out.len();
    match ctx.export.read(f, offset, count, ctx.cred, out) {
        Ok((attrs, n, eof)) => {
            ctx.bytes_read += u64::from(n);
            out.extend_from_slice(&[0u8; 3][..crate::xdr::pad(n as usize)]);
            let mut head = Vec::with_capacity(POST_OP_ATTR_SIZE + 12);
            pack(&mut head, &post_op_attr::Some(attrs));
            head.put_u32(n);
            head.put_bool(eof);
            head.put_u32(n);
            out[attr_at..data_at].copy_from_slice(&head);
            Outcome::Done(nfsstat3::NFS3_OK)
        }
        Err(s) => {
            out.truncate(start);
            fail(out, s, |o| pack(o, &post_op(ctx.export.getattr(f).ok())))
        }
    }
}

/// READDIR and READDIRPLUS. `dircount` bounds the names and cookies, `maxcount` the whole reply.
fn readdir(
    ctx: &CallContext<'_>,
    dir: &[u8],
    cookie: u64,
    dircount: u32,
    maxcount: u32,
    plus: bool,
    out: &mut Vec<u8>,
) -> Outcome {
    const OVERHEAD: usize = 4 + POST_OP_ATTR_SIZE + 8 + 4 + 4;
    let maxcount = (maxcount as usize).min(MAX_IO as usize);
    let dircount = if plus { dircount as usize } else { maxcount };
    let mut total = OVERHEAD;
    let mut dir_bytes = 0usize;
    let fits = |e: &DirEntry| {
        let padded_name = e.name.len() + crate::xdr::pad(e.name.len());
        let base = 4 + 8 + 4 + padded_name + 8;
        let extra = match &e.plus {
            Some((fh, _)) => POST_OP_ATTR_SIZE + 4 + 4 + fh.as_bytes().len() + crate::xdr::pad(fh.as_bytes().len()),
            None if plus => 8,
            None => 0,
        };
        if total + base + extra > maxcount || dir_bytes + base > dircount {
            return false;
        }
        total += base + extra;
        dir_bytes += base;
        true
    };
    match ctx.export.readdir(dir, cookie, plus, ctx.cred, fits) {
        Ok((dir_attr, entries, eof)) => {
            if entries.is_empty() && !eof {
                return fail(out, nfsstat3::NFS3ERR_TOOSMALL, |o| pack(o, &post_op_attr::Some(dir_attr)));
            }
            pack(out, &nfsstat3::NFS3_OK);
            if plus {
                let list: Vec<entryplus3<'_>> = entries
                    .iter()
                    .map(|e| entryplus3 {
                        fileid: e.fileid,
                        name: filename3(Opaque::borrowed(&e.name)),
                        cookie: e.cookie,
                        name_attributes: e
                            .plus
                            .as_ref()
                            .map_or(post_op_attr::None, |(_, a)| post_op_attr::Some(a.clone())),
                        name_handle: e.plus.as_ref().map_or(post_op_fh3::None, |(fh, _)| post_op_fh3::Some(handle(fh))),
                    })
                    .collect();
                pack(
                    out,
                    &READDIRPLUS3resok {
                        dir_attributes: post_op_attr::Some(dir_attr),
                        cookieverf: cookieverf3([0; 8]),
                        reply: dirlistplus3 { entries: List(list), eof },
                    },
                );
            } else {
                let list: Vec<entry3<'_>> = entries
                    .iter()
                    .map(|e| entry3 { fileid: e.fileid, name: filename3(Opaque::borrowed(&e.name)), cookie: e.cookie })
                    .collect();
                pack(
                    out,
                    &READDIR3resok {
                        dir_attributes: post_op_attr::Some(dir_attr),
                        cookieverf: cookieverf3([0; 8]),
                        reply: dirlist3 { entries: List(list), eof },
                    },
                );
            }
            Outcome::Done(nfsstat3::NFS3_OK)
        }
        Err(s) => fail(out, s, |o| pack(o, &post_op(ctx.export.getattr(dir).ok()))),
    }
}

/// MOUNT v3 status codes.
mod mnt {
    pub const OK: u32 = 0;
    pub const NOENT: u32 = 2;
    pub const ACCES: u32 = 13;
    pub const NOTDIR: u32 = 20;
    pub const INVAL: u32 = 22;
    pub const NAMETOOLONG: u32 = 63;
    pub const SERVERFAULT: u32 = 10006;
}

/// Runs one MOUNT v3 procedure.
pub fn mount(ctx: &CallContext<'_>, proc_: u32, mut d: Decoder<'_>, out: &mut Vec<u8>) -> Outcome {
    let result = (|| -> Result<Outcome, Malformed> {
        Ok(match proc_ {
            0 | 4 => {
                d.finish()?;
                Outcome::Done(nfsstat3::NFS3_OK)
            }
            1 => {
                let path = d.opaque(1024)?;
                d.finish()?;
                match ctx.export.mount_path(path) {
                    Ok(fh) => {
                        out.put_u32(mnt::OK);
                        out.put_opaque(fh.as_bytes());
                        out.put_u32(2);
                        out.put_u32(crate::rpc::AUTH_UNIX);
                        out.put_u32(crate::rpc::AUTH_NONE);
                        Outcome::Done(nfsstat3::NFS3_OK)
                    }
                    Err(s) => {
                        let code = match s {
                            nfsstat3::NFS3ERR_NOENT => mnt::NOENT,
                            nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM => mnt::ACCES,
                            nfsstat3::NFS3ERR_NOTDIR => mnt::NOTDIR,
                            nfsstat3::NFS3ERR_NAMETOOLONG => mnt::NAMETOOLONG,
                            nfsstat3::NFS3ERR_INVAL => mnt::INVAL,
                            _ => mnt::SERVERFAULT,
                        };
                        out.put_u32(code);
                        Outcome::Done(s)
                    }
                }
            }
            2 => {
                d.finish()?;
                out.put_bool(false); // no mount list is kept
                Outcome::Done(nfsstat3::NFS3_OK)
            }
            3 => {
                d.skip_opaque(1024)?;
                d.finish()?;
                Outcome::Done(nfsstat3::NFS3_OK)
            }
            5 => {
                d.finish()?;
                out.put_bool(true);
                out.put_opaque(b"/");
                out.put_bool(false); // no group restriction
                out.put_bool(false);
                Outcome::Done(nfsstat3::NFS3_OK)
            }
            _ => Outcome::NoProcedure,
        })
    })();
    result.unwrap_or(Outcome::Garbage)
}

/// Portmap v2 NULL and GETPORT: NFS v3 and MOUNT v3 over TCP are on this very port.
pub fn portmap(ctx: &CallContext<'_>, proc_: u32, mut d: Decoder<'_>, out: &mut Vec<u8>) -> Outcome {
    let result = (|| -> Result<Outcome, Malformed> {
        Ok(match proc_ {
            0 => {
                d.finish()?;
                Outcome::Done(nfsstat3::NFS3_OK)
            }
            3 => {
                let prog = d.u32()?;
                let vers = d.u32()?;
                let prot = d.u32()?;
                let _port = d.u32()?;
                d.finish()?;
                let ours = matches!((prog, vers), (NFS_PROGRAM, 3) | (MOUNT_PROGRAM, 3)) && prot == 6;
                out.put_u32(if ours { u32::from(ctx.port) } else { 0 });
                Outcome::Done(nfsstat3::NFS3_OK)
            }
            _ => Outcome::NoProcedure,
        })
    })();
    result.unwrap_or(Outcome::Garbage)
}
