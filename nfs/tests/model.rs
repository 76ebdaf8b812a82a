//! Model-based property test: random sequences of operations run against the server (through
//! `nfs3_client`) and against an in-memory model of a directory tree; every result and the final
//! tree must agree.

use std::collections::BTreeMap;

use crate::common::*;
use nfs3_types::nfs3::{
    Nfs3Result, READDIRPLUS3args, REMOVE3args, RENAME3args, RMDIR3args, SETATTR3args, cookieverf3, nfs_fh3, nfsstat3,
    sattr3, sattrguard3, set_size3, stable_how,
};
use proptest::prelude::*;
use sv_nfs::fs::ExportOptions;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir(BTreeMap<String, Node>),
}

/// The model: a tree rooted at an (empty-named) directory.
struct Model {
    root: Node,
}

type Path = Vec<String>;

impl Model {
    fn get(&self, path: &[String]) -> Option<&Node> {
        let mut node = &self.root;
        for part in path {
            match node {
                Node::Dir(children) => node = children.get(part)?,
                Node::File(_) => return None,
            }
        }
        Some(node)
    }

    fn dir_mut(&mut self, path: &[String]) -> &mut BTreeMap<String, Node> {
        let mut node = &mut self.root;
        for part in path {
            node = match node {
                Node::Dir(children) => children.get_mut(part).expect("model dir exists"),
                Node::File(_) => unreachable!("model paths to directories are directories"),
            };
        }
        match node {
            Node::Dir(children) => children,
            Node::File(_) => unreachable!(),
        }
    }

    fn dirs(&self) -> Vec<Path> {
        fn walk(node: &Node, path: &mut Path, out: &mut Vec<Path>) {
            if let Node::Dir(children) = node {
                out.push(path.clone());
                for (name, child) in children {
                    path.push(name.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut Vec::new(), &mut out);
        out
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create { dir: usize, name: usize },
    Mkdir { dir: usize, name: usize },
    Write { dir: usize, name: usize, offset: u16, data: Vec<u8> },
    Truncate { dir: usize, name: usize, size: u16 },
    Remove { dir: usize, name: usize },
    Rmdir { dir: usize, name: usize },
    Rename { from: usize, from_name: usize, to: usize, to_name: usize },
    List { dir: usize },
    Read { dir: usize, name: usize },
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn op() -> impl Strategy<Value = Op> {
    let ix = || 0usize..8;
    let nm = || 0usize..NAMES.len();
    prop_oneof![
        (ix(), nm()).prop_map(|(dir, name)| Op::Create { dir, name }),
        (ix(), nm()).prop_map(|(dir, name)| Op::Mkdir { dir, name }),
        (ix(), nm(), 0u16..300, prop::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(dir, name, offset, data)| Op::Write { dir, name, offset, data }),
        (ix(), nm(), 0u16..400).prop_map(|(dir, name, size)| Op::Truncate { dir, name, size }),
        (ix(), nm()).prop_map(|(dir, name)| Op::Remove { dir, name }),
        (ix(), nm()).prop_map(|(dir, name)| Op::Rmdir { dir, name }),
        (ix(), nm(), ix(), nm()).prop_map(|(from, from_name, to, to_name)| Op::Rename { from, from_name, to, to_name }),
        ix().prop_map(|dir| Op::List { dir }),
        (ix(), nm()).prop_map(|(dir, name)| Op::Read { dir, name }),
    ]
}

async fn resolve(c: &mut Client, path: &[String]) -> nfs_fh3 {
    let mut fh = c.root_nfs_fh3();
    for part in path {
        fh = lookup(c, &fh, part).await.unwrap_or_else(|e| panic!("server lost directory {path:?}: {e:?}"));
    }
    fh
}

async fn list_names(c: &mut Client, dir: &nfs_fh3) -> Vec<String> {
    let mut names = Vec::new();
    let mut cookie = 0;
    loop {
        let args = READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf: cookieverf3([0; 8]),
            dircount: 512,
            maxcount: 2048,
        };
        match c.readdirplus(&args).await.expect("rpc") {
            Nfs3Result::Ok(ok) => {
                for e in &ok.reply.entries.0 {
                    let n = String::from_utf8_lossy(&e.name.0).into_owned();
                    if n != "." && n != ".." && n != ".sv-nfs" {
                        names.push(n);
                    }
                    cookie = e.cookie;
                }
                if ok.reply.eof {
                    break;
                }
            }
            Nfs3Result::Err((s, _)) => panic!("readdirplus {s:?}"),
        }
    }
    names.sort();
    names
}

/// Applies `op` to the model and returns the status the server must answer.
fn expect(model: &mut Model, dirs: &[Path], op: &Op) -> nfsstat3 {
    use nfsstat3::*;
    let child = |dir: &Path, name: usize| {
        let mut p = dir.clone();
        p.push(NAMES[name].to_string());
        p
    };
    match op {
        Op::Create { dir, name } => {
            let d = &dirs[*dir % dirs.len()];
            match model.get(&child(d, *name)) {
                Some(Node::Dir(_)) => NFS3ERR_ISDIR,
                Some(Node::File(_)) => NFS3_OK,
                None => {
                    model.dir_mut(d).insert(NAMES[*name].to_string(), Node::File(Vec::new()));
                    NFS3_OK
                }
            }
        }
        Op::Mkdir { dir, name } => {
            let d = &dirs[*dir % dirs.len()];
            if model.get(&child(d, *name)).is_some() {
                return NFS3ERR_EXIST;
            }
            model.dir_mut(d).insert(NAMES[*name].to_string(), Node::Dir(BTreeMap::new()));
            NFS3_OK
        }
        Op::Write { dir, name, offset, data } => {
            let d = &dirs[*dir % dirs.len()];
            match model.dir_mut(d).get_mut(NAMES[*name]) {
                None => NFS3ERR_NOENT,
                Some(Node::Dir(_)) => NFS3ERR_ISDIR,
                // A write of nothing changes nothing, not even the size past the end (POSIX pwrite).
                Some(Node::File(_)) if data.is_empty() => NFS3_OK,
                Some(Node::File(content)) => {
                    let end = *offset as usize + data.len();
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[*offset as usize..end].copy_from_slice(data);
                    NFS3_OK
                }
            }
        }
        Op::Truncate { dir, name, size } => {
            let d = &dirs[*dir % dirs.len()];
            match model.dir_mut(d).get_mut(NAMES[*name]) {
                None => NFS3ERR_NOENT,
                Some(Node::Dir(_)) => NFS3ERR_ISDIR,
                Some(Node::File(content)) => {
                    content.resize(*size as usize, 0);
                    NFS3_OK
                }
            }
        }
        Op::Remove { dir, name } => {
            let d = &dirs[*dir % dirs.len()];
            match model.get(&child(d, *name)) {
                None => NFS3ERR_NOENT,
                Some(Node::Dir(_)) => NFS3ERR_ISDIR,
                Some(Node::File(_)) => {
                    model.dir_mut(d).remove(NAMES[*name]);
                    NFS3_OK
                }
            }
        }
        Op::Rmdir { dir, name } => {
            let d = &dirs[*dir % dirs.len()];
            match model.get(&child(d, *name)) {
                None => NFS3ERR_NOENT,
                Some(Node::File(_)) => NFS3ERR_NOTDIR,
                Some(Node::Dir(c)) if !c.is_empty() => NFS3ERR_NOTEMPTY,
                Some(Node::Dir(_)) => {
                    model.dir_mut(d).remove(NAMES[*name]);
                    NFS3_OK
                }
            }
        }
        Op::Rename { from, from_name, to, to_name } => {
            let (fd, td) = (&dirs[*from % dirs.len()], &dirs[*to % dirs.len()]);
            let (src, dst) = (child(fd, *from_name), child(td, *to_name));
            let Some(moving) = model.get(&src).cloned() else { return NFS3ERR_NOENT };
            if src == dst {
                return NFS3_OK;
            }
            // rename(2) checks ancestry before types: moving a directory into itself is EINVAL,
            // replacing an ancestor of the source is ENOTEMPTY, which NFS calls EXIST.
            if matches!(moving, Node::Dir(_)) && dst.starts_with(&src) {
                return NFS3ERR_INVAL;
            }
            if src.starts_with(&dst) {
                return NFS3ERR_EXIST;
            }
            match (&moving, model.get(&dst)) {
                (Node::Dir(_), Some(Node::File(_))) => return NFS3ERR_NOTDIR,
                (Node::File(_), Some(Node::Dir(_))) => return NFS3ERR_ISDIR,
                (Node::Dir(_), Some(Node::Dir(c))) if !c.is_empty() => return NFS3ERR_EXIST,
                _ => {}
            }
            model.dir_mut(fd).remove(NAMES[*from_name]);
            model.dir_mut(td).insert(NAMES[*to_name].to_string(), moving);
            NFS3_OK
        }
        Op::List { .. } | Op::Read { .. } => NFS3_OK,
    }
}

async fn apply(
    c: &mut Client,
    dirs: &[Path],
    op: &Op,
) -> (nfsstat3, Option<Vec<String>>, Option<Result<Vec<u8>, nfsstat3>>) {
    let pick = |i: usize| dirs[i % dirs.len()].clone();
    match op {
        Op::Create { dir, name } => {
            let d = resolve(c, &pick(*dir)).await;
            (create(c, &d, NAMES[*name]).await.err().unwrap_or(nfsstat3::NFS3_OK), None, None)
        }
        Op::Mkdir { dir, name } => {
            let d = resolve(c, &pick(*dir)).await;
            (mkdir(c, &d, NAMES[*name]).await.err().unwrap_or(nfsstat3::NFS3_OK), None, None)
        }
        Op::Write { dir, name, offset, data } => {
            let d = resolve(c, &pick(*dir)).await;
            match lookup(c, &d, NAMES[*name]).await {
                Err(s) => (s, None, None),
                Ok(f) => (
                    write(c, &f, u64::from(*offset), data, stable_how::FILE_SYNC)
                        .await
                        .err()
                        .unwrap_or(nfsstat3::NFS3_OK),
                    None,
                    None,
                ),
            }
        }
        Op::Truncate { dir, name, size } => {
            let d = resolve(c, &pick(*dir)).await;
            match lookup(c, &d, NAMES[*name]).await {
                Err(s) => (s, None, None),
                Ok(f) => {
                    let args = SETATTR3args {
                        object: f,
                        new_attributes: sattr3 { size: set_size3::Some(u64::from(*size)), ..Default::default() },
                        guard: sattrguard3::None,
                    };
                    (status(&c.setattr(&args).await.expect("rpc")), None, None)
                }
            }
        }
        Op::Remove { dir, name } => {
            let d = resolve(c, &pick(*dir)).await;
            (status(&c.remove(&REMOVE3args { object: dirop(&d, NAMES[*name]) }).await.expect("rpc")), None, None)
        }
        Op::Rmdir { dir, name } => {
            let d = resolve(c, &pick(*dir)).await;
            (status(&c.rmdir(&RMDIR3args { object: dirop(&d, NAMES[*name]) }).await.expect("rpc")), None, None)
        }
        Op::Rename { from, from_name, to, to_name } => {
            let f = resolve(c, &pick(*from)).await;
            let t = resolve(c, &pick(*to)).await;
            let args = RENAME3args { from: dirop(&f, NAMES[*from_name]), to: dirop(&t, NAMES[*to_name]) };
            (status(&c.rename(&args).await.expect("rpc")), None, None)
        }
        Op::List { dir } => {
            let d = resolve(c, &pick(*dir)).await;
            (nfsstat3::NFS3_OK, Some(list_names(c, &d).await), None)
        }
        Op::Read { dir, name } => {
            let d = resolve(c, &pick(*dir)).await;
            let content = match lookup(c, &d, NAMES[*name]).await {
                Ok(f) => read_all(c, &f).await,
                Err(s) => Err(s),
            };
            (nfsstat3::NFS3_OK, None, Some(content))
        }
    }
}

fn model_read(model: &Model, dirs: &[Path], dir: usize, name: usize) -> Result<Vec<u8>, nfsstat3> {
    let mut p = dirs[dir % dirs.len()].clone();
    p.push(NAMES[name].to_string());
    match model.get(&p) {
        None => Err(nfsstat3::NFS3ERR_NOENT),
        Some(Node::Dir(_)) => Err(nfsstat3::NFS3ERR_ISDIR),
        Some(Node::File(c)) => Ok(c.clone()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn server_agrees_with_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let server = TestServer::start(dir.path(), ExportOptions::default()).await;
            let mut c = server.client().await;
            let mut model = Model { root: Node::Dir(BTreeMap::new()) };
            for (i, op) in ops.iter().enumerate() {
                let dirs = model.dirs();
                let expected_read = match op {
                    Op::Read { dir, name } => Some(model_read(&model, &dirs, *dir, *name)),
                    _ => None,
                };
                let expected_list = match op {
                    Op::List { dir } => match model.get(&dirs[dir % dirs.len()]) {
                        Some(Node::Dir(children)) => Some(children.keys().cloned().collect::<Vec<_>>()),
                        _ => None,
                    },
                    _ => None,
                };
                let expected = expect(&mut model, &dirs, op);
                let (got, listed, read) = apply(&mut c, &dirs, op).await;
                prop_assert_eq!(got, expected, "op {} {:?}", i, op);
                if let Some(names) = expected_list {
                    prop_assert_eq!(listed, Some(names), "op {} {:?}", i, op);
                }
                if let Some(content) = expected_read {
                    prop_assert_eq!(read, Some(content), "op {} {:?}", i, op);
                }
            }
            // The final tree on disk equals the model.
            fn disk(path: &std::path::Path, top: bool) -> Node {
                let mut children = BTreeMap::new();
                for entry in std::fs::read_dir(path).expect("read_dir") {
                    let entry = entry.expect("entry");
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if top && name == ".sv-nfs" {
                        continue;
                    }
                    let node = if entry.file_type().expect("type").is_dir() {
                        disk(&entry.path(), false)
                    } else {
                        Node::File(std::fs::read(entry.path()).expect("read"))
                    };
                    children.insert(name, node);
                }
                Node::Dir(children)
            }
            prop_assert_eq!(disk(dir.path(), true), model.root);
            server.stop().await;
            Ok(())
        })?;
    }
}
