//! Unpacking `.tar`, `.tar.gz` and `.zip` archives into a stage. Archives are untrusted: every
//! entry name goes through [`RelPath::parse`], symlinks must stay inside the tree (followed through
//! the tree's other links), hard links must name an entry already unpacked (and never reach a file
//! through a link), device files and FIFOs are refused, and the capacity is checked
//! as bytes are written (so a decompression bomb stops at the volume's size).
//!
//! An entry is compared, as it streams out of the archive, with the previous revision's file at
//! the same path: when every byte matches the file is linked from the previous revision instead of
//! written again. Archive metadata cannot decide this: reproducible archives give every entry the
//! same mtime, so a changed file of unchanged size would look unchanged.

use std::fs::File;
use std::io::{Read, Seek};

use tokio_util::sync::CancellationToken;

use crate::error::SyncError;
use crate::paths::RelPath;
use crate::tree::{Entry, Stage};
use crate::volume_fs::ReadFile;

/// Archive formats recognised by file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    Zip,
}

impl Format {
    /// Whether the format can be unpacked as it downloads (zip needs its central directory, at
    /// the end, first).
    pub fn streams(self) -> bool {
        self != Format::Zip
    }

    /// The format a file name suggests, if any.
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(Format::TarGz)
        } else if lower.ends_with(".tar") {
            Some(Format::Tar)
        } else if lower.ends_with(".zip") {
            Some(Format::Zip)
        } else {
            None
        }
    }
}

fn bad(message: impl std::fmt::Display) -> SyncError {
    SyncError::content(format!("archive: {message}"))
}

fn check(cancel: &CancellationToken) -> Result<(), SyncError> {
    if cancel.is_cancelled() { Err(SyncError::Source("the sync was abandoned".to_string())) } else { Ok(()) }
}

/// Unpacks a tar stream (gzip-compressed or not) into `stage`, stopping when `cancel` is set.
pub fn unpack_stream(
    reader: impl Read,
    format: Format,
    stage: &mut Stage,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    match format {
        Format::Tar => unpack_tar(reader, stage, cancel),
        Format::TarGz => unpack_tar(flate2::read::GzDecoder::new(reader), stage, cancel),
        Format::Zip => Err(bad("a zip archive cannot be read as a stream")),
    }
}

/// Unpacks a zip file into `stage`, stopping when `cancel` is set.
pub fn unpack_file(file: File, stage: &mut Stage, cancel: &CancellationToken) -> Result<(), SyncError> {
    unpack_zip(file, stage, cancel)
}

/// Writes an entry into the stage, or links the previous revision's file when the content is the
/// same. The version is a digest of the content.
fn copy_into(
    reader: &mut impl Read,
    stage: &mut Stage,
    path: &RelPath,
    executable: bool,
    size_hint: Option<u64>,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    // A candidate to link: the previous file at this path, of the same size and mode.
    let (mut previous, previous_size) = match (stage.previous_file(path), size_hint) {
        (Some((file, size, was_executable)), Some(hint)) if size == hint && was_executable == executable => {
            (Some((file, vec![0u8; buf.len()])), size)
        }
        _ => (None, 0),
    };
    let mut matched = 0u64;
    let mut out = None;
    loop {
        check(cancel)?;
        let n = reader.read(&mut buf).map_err(bad)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some((file, old)) = previous.as_mut() {
            if file.read_exact(&mut old[..n]).is_ok() && old[..n] == buf[..n] {
                matched += n as u64;
                continue;
            }
            // The first difference: write what matched so far, from the previous file, then go on.
            let (file, _) = previous.take().ok_or_else(|| bad("internal: lost the previous file"))?;
            let mut staged = stage.create_file(path, executable)?;
            copy_prefix(file, matched, &mut staged)?;
            out = Some(staged);
        }
        match out.as_mut() {
            Some(staged) => staged.write(&buf[..n])?,
            None => {
                let mut staged = stage.create_file(path, executable)?;
                staged.write(&buf[..n])?;
                out = Some(staged);
            }
        }
    }
    let version = format!("b3:{}", &hasher.finalize().to_hex()[..32]);
    match (out, previous) {
        (Some(staged), _) => staged.commit(&version),
        (None, Some((file, _))) => {
            // Every byte read matched the previous file: link it when it has no more bytes (and
            // its recorded version agrees); otherwise copy what matched.
            if matched == previous_size && stage.reuse(path, &version)? {
                return Ok(());
            }
            let mut staged = stage.create_file(path, executable)?;
            copy_prefix(file, matched, &mut staged)?;
            staged.commit(&version)
        }
        (None, None) => stage.write_file(path, &[], executable, &version),
    }
}

/// Copies the first `len` bytes of `file` into `staged`.
fn copy_prefix(
    mut file: Box<dyn ReadFile>,
    len: u64,
    staged: &mut crate::tree::StagedFile<'_>,
) -> Result<(), SyncError> {
    file.rewind()?;
    staged.write_from(file.take(len))
}

fn unpack_tar(reader: impl Read, stage: &mut Stage, cancel: &CancellationToken) -> Result<(), SyncError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad)? {
        check(cancel)?;
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path_bytes();
        let name = std::str::from_utf8(&raw).map_err(|_| bad("an entry name is not UTF-8"))?.to_string();
        if name == "./" || name == "." {
            continue;
        }
        let path = RelPath::parse(&name)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            stage.mkdir(&path)?;
        } else if kind.is_file() {
            let executable = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
            let size = entry.header().size().ok();
            copy_into(&mut entry, stage, &path, executable, size, cancel)?;
        } else if kind.is_symlink() {
            let target = entry.link_name_bytes().ok_or_else(|| bad(format!("{name}: symlink without a target")))?;
            let target = std::str::from_utf8(&target).map_err(|_| bad("a link target is not UTF-8"))?.to_string();
            stage.symlink(&path, &target)?;
        } else if kind.is_hard_link() {
            let target = entry.link_name_bytes().ok_or_else(|| bad(format!("{name}: hard link without a target")))?;
            let target = RelPath::parse(std::str::from_utf8(&target).map_err(|_| bad("a link target is not UTF-8"))?)?;
            // A hard link names an earlier entry of this archive, never a path on disk: the entry
            // is looked up in the tree, and a file is read without following links.
            match stage.entry(&target).cloned() {
                Some(Entry::File { executable, .. }) => {
                    let mut source = stage.open_staged(&target)?;
                    let size = source.size().ok();
                    copy_into(&mut source, stage, &path, executable, size, cancel)?;
                }
                // A hard link to a symlink is that symlink under a second name, resolved from
                // where the second name is: it is checked as any symlink is.
                Some(Entry::Symlink { target }) => stage.symlink(&path, &target)?,
                Some(Entry::Dir) => return Err(bad(format!("{name}: hard link to the directory {target}"))),
                None => return Err(bad(format!("{name}: hard link to {target}, which is not an earlier entry"))),
            }
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            return Err(bad(format!("{name}: entries of type {kind:?} (devices, FIFOs) are not supported")));
        }
    }
    Ok(())
}

fn unpack_zip(file: impl Read + Seek, stage: &mut Stage, cancel: &CancellationToken) -> Result<(), SyncError> {
    let mut archive = zip::ZipArchive::new(file).map_err(bad)?;
    for i in 0..archive.len() {
        check(cancel)?;
        let mut entry = archive.by_index(i).map_err(bad)?;
        let name = entry.name().map_err(bad)?.to_string();
        let path = RelPath::parse(&name)?;
        let mode = entry.unix_mode().unwrap_or(0);
        if entry.is_dir() {
            stage.mkdir(&path)?;
        } else if mode & 0o170000 == 0o120000 {
            let mut target = String::new();
            entry.by_ref().take(4096).read_to_string(&mut target).map_err(bad)?;
            stage.symlink(&path, &target)?;
        } else {
            let size = Some(entry.size());
            copy_into(&mut entry, stage, &path, mode & 0o111 != 0, size, cancel)?;
        }
    }
    Ok(())
}
