//! Everything read from a remote is untrusted: an entry is used only if it is ours, for its key,
//! and names plain files inside the artifact; a downloaded file is counted and hashed before it
//! counts as received.

use std::path::{Component, Path as FsPath};

use super::{ENTRY_FORMAT, Entry, EntryFile, RemoteError};
use crate::cache::{CacheError, OutputFile, output_digest};

/// A downloaded file being written: every byte counted and hashed before it lands on disk.
pub(super) struct VerifiedFile<'a> {
    key: &'a str,
    expected: &'a EntryFile,
    dest: std::path::PathBuf,
    file: std::fs::File,
    hasher: blake3::Hasher,
    received: u64,
}

impl<'a> VerifiedFile<'a> {
    pub(super) fn create(
        key: &'a str,
        expected: &'a EntryFile,
        out_dir: &FsPath,
    ) -> Result<Self, RemoteError> {
        let dest = out_dir.join(&expected.path);
        let local = |e: std::io::Error| RemoteError::from(CacheError::io("writing", &dest, e));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(local)?;
        }
        let file = std::fs::File::create(&dest).map_err(local)?;
        Ok(VerifiedFile {
            key,
            expected,
            dest,
            file,
            hasher: blake3::Hasher::new(),
            received: 0,
        })
    }

    pub(super) fn write(&mut self, chunk: &[u8]) -> Result<(), RemoteError> {
        self.received += chunk.len() as u64;
        if self.received > self.expected.size {
            let why = format!(
                "blob of `{}` is larger than its entry says",
                self.expected.path
            );
            return Err(invalid(self.key, &why));
        }
        self.hasher.update(chunk);
        std::io::Write::write_all(&mut self.file, chunk)
            .map_err(|e| CacheError::io("writing", &self.dest, e).into())
    }

    /// The file's size once it is complete and matches its digest.
    pub(super) fn finish(self) -> Result<u64, RemoteError> {
        let digest = self.hasher.finalize();
        if self.received != self.expected.size || digest.to_hex().as_str() != self.expected.digest {
            let why = format!("blob of `{}` does not match its digest", self.expected.path);
            return Err(invalid(self.key, &why));
        }
        Ok(self.received)
    }
}

pub(super) fn invalid(key: &str, why: &str) -> RemoteError {
    RemoteError::Invalid {
        key: key.to_string(),
        why: why.to_string(),
    }
}

/// An entry is used only if it is ours, for this key, and names files inside the artifact.
pub(super) fn check_entry(key: &str, entry: &Entry) -> Result<(), RemoteError> {
    if entry.format != ENTRY_FORMAT {
        return Err(invalid(
            key,
            &format!("unknown entry format {}", entry.format),
        ));
    }
    if entry.key != key || entry.fingerprint.key() != key {
        return Err(invalid(key, "the entry is for another key"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &entry.files {
        if !safe_relative(&f.path) || !seen.insert(f.path.as_str()) {
            return Err(invalid(
                key,
                &format!("unsafe or repeated path `{}`", f.path),
            ));
        }
        let hex = f.digest.len() == 64 && f.digest.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(invalid(key, &format!("bad digest for `{}`", f.path)));
        }
    }
    let files: Vec<OutputFile> = entry
        .files
        .iter()
        .map(|f| OutputFile {
            path: f.path.clone(),
            size: f.size,
            digest: f.digest.clone(),
            mtime_ns: 0,
        })
        .collect();
    if output_digest(&files) != entry.digest {
        return Err(invalid(
            key,
            "the file list does not match the entry's digest",
        ));
    }
    Ok(())
}

/// A path that stays inside the artifact folder: relative, plain names only.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && FsPath::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        for ok in ["out.bin", "a/b.png", "correlation_q01.png"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in ["", "../outside", "/etc/passwd", "a/../../b", "./x", "a\\b"] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }
}
