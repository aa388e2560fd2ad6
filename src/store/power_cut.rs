//! A redb storage backend, for tests only, that can lose power.
//!
//! It keeps two images of the database file: the bytes as written (what the
//! running process reads back) and the bytes as of the last `sync_data` (what
//! a disk is guaranteed to hold). Between syncs it logs every write and
//! resize. When the power fails ([`PowerCutDisk::cut`], or by itself after a
//! set number of I/O operations, see [`PowerCutDisk::cut_after`]) every later
//! operation fails, and [`PowerCutDisk::after_cut`] gives the disk as it is
//! found on reboot: the synced image, plus (if asked) a random subset of the
//! unsynced operations, applied in order, as a disk that reorders its writes
//! might have left it. Each logged operation is kept or lost whole (no torn
//! writes).
//!
//! [`Store::open_on`] opens a [`Store`] on such a disk exactly as
//! [`Store::open`] opens one on a file.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, StorageBackend};

use super::{schema, Inner, Store, StoreError, CACHE_BYTES};

/// One unsynced operation.
#[derive(Debug, Clone)]
enum Op {
    /// Bytes written at an offset.
    Write(u64, Vec<u8>),
    /// The length set.
    SetLen(u64),
}

impl Op {
    /// Apply this operation to `image`.
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Op::Write(offset, data) => {
                let start = usize::try_from(*offset).expect("offsets fit memory");
                let end = start + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[start..end].copy_from_slice(data);
            }
            Op::SetLen(len) => image.resize(usize::try_from(*len).expect("fits memory"), 0),
        }
    }
}

/// The state of the disk.
#[derive(Debug, Default)]
struct Disk {
    /// The bytes as written.
    written: Vec<u8>,
    /// The bytes as of the last successful sync.
    synced: Vec<u8>,
    /// The operations since that sync, in order.
    pending: Vec<Op>,
    /// Whether the power is off.
    dead: bool,
    /// I/O operations (writes, resizes, syncs) left before the power fails.
    fuse: Option<u64>,
    /// A lying disk: `sync_data` succeeds but makes nothing durable.
    lies: bool,
    /// Successful syncs that made data durable.
    syncs: u64,
    /// I/O operations carried out.
    ops: u64,
}

/// A shared handle on one simulated disk: give [`PowerCutDisk::backend`] to
/// redb and keep the handle to cut the power.
#[derive(Debug, Clone, Default)]
pub(crate) struct PowerCutDisk {
    /// The disk, shared by the handle and the backend.
    disk: Arc<Mutex<Disk>>,
}

/// What [`PowerCutDisk`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskStats {
    /// I/O operations carried out (writes, resizes, syncs).
    pub(crate) ops: u64,
    /// Syncs that made data durable.
    pub(crate) syncs: u64,
    /// Operations logged since the last sync (lost or kept at a cut).
    pub(crate) pending: usize,
}

impl PowerCutDisk {
    /// An empty disk with the power on.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A backend for redb on this disk.
    pub(crate) fn backend(&self) -> PowerCutBackend {
        PowerCutBackend(self.clone())
    }

    /// Cut the power now: every later operation fails.
    pub(crate) fn cut(&self) {
        self.lock().dead = true;
    }

    /// Cut the power just before the `n`th I/O operation from now (that
    /// operation, and every later one, fails).
    pub(crate) fn cut_after(&self, n: u64) {
        self.lock().fuse = Some(n);
    }

    /// From now on `sync_data` succeeds without making anything durable, as
    /// a disk with a lying write cache does.
    pub(crate) fn lie_about_syncs(&self) {
        self.lock().lies = true;
    }

    /// Whether the power has failed.
    pub(crate) fn is_cut(&self) -> bool {
        self.lock().dead
    }

    /// What the disk counted so far.
    pub(crate) fn stats(&self) -> DiskStats {
        let disk = self.lock();
        DiskStats {
            ops: disk.ops,
            syncs: disk.syncs,
            pending: disk.pending.len(),
        }
    }

    /// The disk as found after the power failed (the power must be off): the
    /// synced image, plus each unsynced operation for which `keep` says yes
    /// (asked in order; `|_| false` loses them all). Power on, nothing pending.
    pub(crate) fn after_cut(&self, mut keep: impl FnMut(usize) -> bool) -> PowerCutDisk {
        let disk = self.lock();
        assert!(disk.dead, "the power is still on");
        let mut image = disk.synced.clone();
        for (i, op) in disk.pending.iter().enumerate() {
            if keep(i) {
                op.apply(&mut image);
            }
        }
        PowerCutDisk {
            disk: Arc::new(Mutex::new(Disk {
                written: image.clone(),
                synced: image,
                ..Disk::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one I/O operation, failing it if the power is (now) off.
    fn io(&self) -> Result<MutexGuard<'_, Disk>, io::Error> {
        let mut disk = self.lock();
        if let Some(left) = disk.fuse.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                disk.dead = true;
            }
        }
        if disk.dead {
            return Err(power_off());
        }
        disk.ops += 1;
        Ok(disk)
    }
}

fn power_off() -> io::Error {
    io::Error::other("the power is off")
}

/// The redb side of a [`PowerCutDisk`].
#[derive(Debug)]
pub(crate) struct PowerCutBackend(PowerCutDisk);

impl StorageBackend for PowerCutBackend {
    fn len(&self) -> Result<u64, io::Error> {
        let disk = self.0.lock();
        if disk.dead {
            return Err(power_off());
        }
        Ok(disk.written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let disk = self.0.lock();
        if disk.dead {
            return Err(power_off());
        }
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let bytes = disk
            .written
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut disk = self.0.io()?;
        let op = Op::SetLen(len);
        op.apply(&mut disk.written);
        disk.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut disk = self.0.io()?;
        if disk.lies {
            return Ok(());
        }
        let Disk {
            synced, pending, ..
        } = &mut *disk;
        for op in pending.drain(..) {
            op.apply(synced);
        }
        disk.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut disk = self.0.io()?;
        let op = Op::Write(offset, data.to_vec());
        op.apply(&mut disk.written);
        disk.pending.push(op);
        Ok(())
    }
}

impl Store {
    /// Open a store on `disk`, as [`Store::open`] does on a file (the same
    /// cache size, the integrity check on open, then `schema::prepare`).
    pub(crate) fn open_on(disk: &PowerCutDisk) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create_with_backend(disk.backend())
            .map_err(|e| StoreError::from(redb::Error::from(e)))?;
        let boot_epoch = schema::prepare(&db)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: PathBuf::from("(a power-cut test disk)"),
                boot_epoch,
            }),
        })
    }

    /// The redb database, for tests that write to it as no store would.
    pub(crate) fn raw_db(&self) -> &Database {
        &self.inner.db
    }
}
