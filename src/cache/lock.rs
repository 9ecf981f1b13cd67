//! Per-key locks: an advisory `flock` on `locks/<key>.lock`. The kernel drops the lock when its
//! holder dies, so a lock of a killed run is recovered by simply taking it. Lock files are removed
//! by their holder; a taker re-checks that the file it locked is still the one at the path.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A held lock; released (and its file removed) on drop.
#[derive(Debug)]
pub struct KeyLock {
    file: File,
    path: PathBuf,
}

/// Whether taking the lock had to wait for another process.
pub enum Acquired {
    Immediately(KeyLock),
    AfterWaiting(KeyLock),
}

impl Acquired {
    pub fn into_lock(self) -> KeyLock {
        match self {
            Acquired::Immediately(l) | Acquired::AfterWaiting(l) => l,
        }
    }
}

impl KeyLock {
    /// Take the lock at `path`, calling `on_wait` once if another process holds it.
    pub fn acquire(path: &Path, mut on_wait: impl FnMut()) -> std::io::Result<Acquired> {
        let mut waited = false;
        loop {
            let file = open(path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    if !waited {
                        on_wait();
                        waited = true;
                    }
                    file.lock()?;
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
            // The previous holder may have removed the file after we opened it: then we hold a
            // lock on an unlinked inode and must retry on the current file.
            if same_file(&file, path) {
                let lock = KeyLock {
                    file,
                    path: path.to_path_buf(),
                };
                return Ok(if waited {
                    Acquired::AfterWaiting(lock)
                } else {
                    Acquired::Immediately(lock)
                });
            }
        }
    }

    /// Take the lock only if nobody holds it (used by sweeping).
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<KeyLock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) if same_file(&file, path) => Ok(Some(KeyLock {
                file,
                path: path.to_path_buf(),
            })),
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Open (creating if needed) a lock file without truncating it.
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        // Remove while still holding the lock, so no one can lock this inode and believe it
        // current; waiters re-check the path after they wake.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}
