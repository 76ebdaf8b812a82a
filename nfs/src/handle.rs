//! NFS file handles that survive restarts and moves of the data to another node.
//!
//! A handle carries the kernel's own handle of the object (`name_to_handle_at`: on ext4 or XFS,
//! inode and generation, which stay the same when the disk is attached elsewhere) and a MAC keyed
//! by a secret kept inside the export. The server opens objects with `open_by_handle_at`, so:
//! - a restarted or rescheduled server resolves every handle it ever gave out, as long as the file
//!   exists (a deleted or reused inode fails with `ESTALE` thanks to the generation number);
//! - a forged handle, or one from another export, fails the MAC (`NFS3ERR_BADHANDLE`) before the
//!   kernel is asked, so a client cannot name a file outside the export by guessing inode numbers.
//!
//! The MAC also covers the handle's [`Class`]: whether it was reached through the writer's mount
//! (the syncer) or a consumer's, whether it lies in the protected state directory, and whether in
//! one of the writer's scratch trees. A client
//! cannot change the class of a handle it holds, so the class can decide what the handle may do.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Format version in the first byte. Version 2 added the class byte.
const VERSION: u8 = 2;
/// Bytes before the kernel handle: version, class, kernel handle type, kernel handle length.
const HEADER_LEN: usize = 4;
/// Bytes of MAC at the end of the handle.
const MAC_LEN: usize = 8;
/// Longest kernel handle we carry (ext4 uses 8 bytes, XFS 12–16, btrfs 20–40).
pub const MAX_KERNEL_HANDLE: usize = 48;
/// NFSv3 handles are at most 64 bytes.
pub const MAX_HANDLE: usize = 64;

/// An encoded NFS handle.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fh {
    len: u8,
    bytes: [u8; MAX_HANDLE],
}

impl Fh {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The class sealed into the handle.
    pub fn class(&self) -> Class {
        Class(self.bytes[1])
    }
}

/// Who reached an object, and where it lies; inherited from a directory by its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Class(u8);

impl Class {
    /// Reached through a consumer's mount: identity squashing and the consumer access apply.
    pub const CONSUMER: Class = Class(0);
    /// Reached through the writer's mount (the syncer): full access.
    pub const WRITER: Class = Class(1);
    const PROTECTED_BIT: u8 = 2;
    const SCRATCH_BIT: u8 = 4;

    pub fn is_writer(self) -> bool {
        self.0 & Self::WRITER.0 != 0
    }

    /// Inside the protected directory, reached by a consumer: read-only.
    pub fn is_protected(self) -> bool {
        self.0 & Self::PROTECTED_BIT != 0
    }

    pub fn protected(self) -> Class {
        Class(self.0 | Self::PROTECTED_BIT)
    }

    pub fn unprotected(self) -> Class {
        Class(self.0 & !Self::PROTECTED_BIT)
    }

    /// Inside one of the writer's scratch trees (a revision being built): its namespace changes
    /// are made durable together, before the writer's next change elsewhere.
    pub fn is_scratch(self) -> bool {
        self.0 & Self::SCRATCH_BIT != 0
    }

    pub fn scratch(self) -> Class {
        Class(self.0 | Self::SCRATCH_BIT)
    }

    pub fn unscratched(self) -> Class {
        Class(self.0 & !Self::SCRATCH_BIT)
    }
}

impl std::fmt::Debug for Fh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fh(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The kernel's handle of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelHandle {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

/// Why a wire handle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleError {
    /// Malformed, forged, or issued by another export.
    Bad,
}

/// Seals and opens handles with the export's key.
#[derive(Clone)]
pub struct HandleCodec {
    key: [u8; 32],
}

impl HandleCodec {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let hash = blake3::keyed_hash(&self.key, body);
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&hash.as_bytes()[..MAC_LEN]);
        out
    }

    /// Wraps a kernel handle with its class; fails if it does not fit in 64 bytes.
    pub fn seal(&self, kernel: &KernelHandle, class: Class) -> io::Result<Fh> {
        let n = kernel.bytes.len();
        let handle_type = u8::try_from(kernel.handle_type).ok();
        let Some(handle_type) = handle_type.filter(|_| n <= MAX_KERNEL_HANDLE) else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "kernel file handle does not fit an NFSv3 handle"));
        };
        let mut bytes = [0u8; MAX_HANDLE];
        bytes[0] = VERSION;
        bytes[1] = class.0;
        bytes[2] = handle_type;
        bytes[3] = n as u8;
        bytes[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&kernel.bytes);
        let mac = self.mac(&bytes[..HEADER_LEN + n]);
        bytes[HEADER_LEN + n..HEADER_LEN + n + MAC_LEN].copy_from_slice(&mac);
        Ok(Fh { len: (HEADER_LEN + n + MAC_LEN) as u8, bytes })
    }

    /// Checks a handle from the wire and returns the kernel handle inside.
    pub fn open(&self, wire: &[u8]) -> Result<(Fh, KernelHandle), HandleError> {
        if wire.len() < HEADER_LEN + MAC_LEN || wire.len() > MAX_HANDLE || wire[0] != VERSION {
            return Err(HandleError::Bad);
        }
        let n = wire[3] as usize;
        if n > MAX_KERNEL_HANDLE || wire.len() != HEADER_LEN + n + MAC_LEN {
            return Err(HandleError::Bad);
        }
        let expected = self.mac(&wire[..HEADER_LEN + n]);
        // Constant time is not needed for an 8-byte truncated MAC on handles, but it is cheap.
        if !constant_time_eq(&wire[HEADER_LEN + n..], &expected) {
            return Err(HandleError::Bad);
        }
        let mut bytes = [0u8; MAX_HANDLE];
        bytes[..wire.len()].copy_from_slice(wire);
        let fh = Fh { len: wire.len() as u8, bytes };
        Ok((fh, KernelHandle { handle_type: i32::from(wire[2]), bytes: wire[HEADER_LEN..HEADER_LEN + n].to_vec() }))
    }
}

/// Compares secrets without telling, by timing, how much of them matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[repr(C)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; 128],
}

/// `name_to_handle_at(dirfd, name, flags)`; `name` empty with `AT_EMPTY_PATH` names `dirfd` itself.
/// Never follows a symlink in the last component.
pub fn name_to_handle(dirfd: BorrowedFd<'_>, name: &CStr, empty_path: bool) -> io::Result<KernelHandle> {
    let mut raw = RawHandle { handle_bytes: 128, handle_type: 0, f_handle: [0; 128] };
    let mut mount_id: libc::c_int = 0;
    let flags = if empty_path { libc::AT_EMPTY_PATH } else { 0 };
    // SAFETY: `raw` is a `struct file_handle` with room for 128 bytes of handle, as announced in
    // `handle_bytes`; `name` is NUL-terminated; `mount_id` is a valid out pointer.
    let rc = unsafe {
        libc::name_to_handle_at(
            dirfd.as_raw_fd(),
            name.as_ptr(),
            (&mut raw as *mut RawHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (raw.handle_bytes as usize).min(raw.f_handle.len());
    Ok(KernelHandle { handle_type: raw.handle_type, bytes: raw.f_handle[..n].to_vec() })
}

/// `open_by_handle_at(mount_fd, handle, flags)`. Needs `CAP_DAC_READ_SEARCH`.
pub fn open_by_handle(mount_fd: BorrowedFd<'_>, handle: &KernelHandle, flags: libc::c_int) -> io::Result<OwnedFd> {
    let mut raw = RawHandle { handle_bytes: 0, handle_type: handle.handle_type, f_handle: [0; 128] };
    let n = handle.bytes.len().min(raw.f_handle.len());
    raw.f_handle[..n].copy_from_slice(&handle.bytes[..n]);
    raw.handle_bytes = n as libc::c_uint;
    // SAFETY: `raw` is a valid `struct file_handle`; the kernel only reads `handle_bytes` bytes.
    let fd = unsafe {
        libc::open_by_handle_at(mount_fd.as_raw_fd(), (&mut raw as *mut RawHandle).cast::<libc::file_handle>(), flags)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> HandleCodec {
        HandleCodec::new([7; 32])
    }

    #[test]
    fn sealed_handles_open() {
        let k = KernelHandle { handle_type: 1, bytes: vec![1, 2, 3, 4, 5, 6, 7, 8] };
        let fh = codec().seal(&k, Class::CONSUMER).expect("fits");
        let (again, kernel) = codec().open(fh.as_bytes()).expect("opens");
        assert_eq!(again, fh);
        assert_eq!(kernel, k);
        let writer = codec().seal(&k, Class::WRITER).expect("fits");
        assert_ne!(writer, fh, "the class is part of the handle");
        assert!(codec().open(writer.as_bytes()).expect("opens").0.class().is_writer());
    }

    #[test]
    fn the_class_cannot_be_changed_by_a_client() {
        let k = KernelHandle { handle_type: 1, bytes: vec![1, 2, 3, 4, 5, 6, 7, 8] };
        let protected = codec().seal(&k, Class::CONSUMER.protected()).expect("fits");
        for class in [0u8, 1, 3, 0xff] {
            let mut raised = protected.as_bytes().to_vec();
            raised[1] = class;
            assert_eq!(codec().open(&raised), Err(HandleError::Bad), "class byte {class} forged");
        }
    }

    #[test]
    fn forged_and_foreign_handles_fail() {
        let k = KernelHandle { handle_type: 1, bytes: vec![1, 2, 3, 4, 5, 6, 7, 8] };
        let fh = codec().seal(&k, Class::CONSUMER).expect("fits");
        let mut forged = fh.as_bytes().to_vec();
        forged[4] ^= 1;
        assert_eq!(codec().open(&forged), Err(HandleError::Bad));
        assert_eq!(HandleCodec::new([8; 32]).open(fh.as_bytes()), Err(HandleError::Bad));
        for bad in [&[][..], &[1, 1, 200][..], &[9; 20][..], &[1; 65][..]] {
            assert_eq!(codec().open(bad), Err(HandleError::Bad));
        }
    }
}
