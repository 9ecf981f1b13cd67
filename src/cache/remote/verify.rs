//! Everything read from a remote is untrusted. An entry is used only if its raw bytes pass the
//! MAC (in signed mode) and a shape check (size, depth, counts, string lengths) before any
//! parsing, it is for its key, and its file list is canonical: normalised relative paths, sorted,
//! unique, none both a file and a folder. A downloaded file is counted and hashed before it
//! counts as received; the whole artifact is checked against the entry before it is published.

use std::collections::BTreeSet;

use super::{ENTRY_FORMAT, Entry, EntryFile, RemoteError};
use crate::cache::{CacheError, OutputFile, OutputManifest, output_digest};
use crate::untrusted::{escape, is_unsafe_char};

/// An entry larger than this is not one of ours (a real one is a few KiB).
pub(super) const MAX_ENTRY_BYTES: usize = 4 << 20;
/// JSON nesting deeper than this is not an entry.
const MAX_DEPTH: usize = 32;
/// JSON values (numbers, strings, arrays, objects, ...) in one entry at most.
const MAX_VALUES: usize = 200_000;
/// One string in an entry at most (a path, a note, a parameter).
const MAX_STRING_BYTES: usize = 64 << 10;
/// Signed entries start with this line: `galaxy-pipe-mac <64 hex>\n`, then the JSON it signs.
pub(super) const MAC_HEADER: &str = "galaxy-pipe-mac ";

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
    /// `expected.path` is canonical ([`check_entry`]): it stays inside `out_dir`.
    pub(super) fn create(
        key: &'a str,
        expected: &'a EntryFile,
        out_dir: &std::path::Path,
    ) -> Result<Self, RemoteError> {
        let dest = out_dir.join(&expected.path);
        let local = |e: std::io::Error| RemoteError::from(CacheError::io("writing", &dest, e));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(local)?;
        }
        let file = std::fs::File::create_new(&dest).map_err(local)?;
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

/// A rejected entry; `why` may quote the bucket, so it is escaped here, once.
pub(super) fn invalid(key: &str, why: &str) -> RemoteError {
    RemoteError::Invalid {
        key: escape(key).into_owned(),
        why: escape(why).into_owned(),
    }
}

/// The entry of `key` from the raw bytes the remote sent: with `mac_key`, the MAC over the raw
/// bytes first; then the shape check; only then parsing into typed structs, and [`check_entry`].
pub(super) fn decode_entry(
    key: &str,
    raw: &[u8],
    mac_key: Option<&[u8; 32]>,
) -> Result<Entry, RemoteError> {
    if raw.len() > MAX_ENTRY_BYTES {
        return Err(invalid(key, "the entry is larger than any artifact's"));
    }
    let (mac, body) = split_mac(raw);
    if let Some(mac_key) = mac_key {
        let signed = mac.is_some_and(|mac| mac == blake3::keyed_hash(mac_key, body));
        if !signed {
            let why = format!(
                "the entry is not signed with this machine's {}; ignored",
                super::KEY_VAR
            );
            return Err(invalid(key, &why));
        }
    }
    check_shape(body).map_err(|why| invalid(key, &format!("not an entry: {why}")))?;
    let entry: Entry =
        serde_json::from_slice(body).map_err(|e| invalid(key, &format!("garbled entry: {e}")))?;
    check_entry(key, &entry)?;
    Ok(entry)
}

/// The MAC line of a signed entry (when there is a well-formed one) and the JSON after it.
fn split_mac(raw: &[u8]) -> (Option<blake3::Hash>, &[u8]) {
    let Some(rest) = raw.strip_prefix(MAC_HEADER.as_bytes()) else {
        return (None, raw);
    };
    let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
        return (None, raw);
    };
    let mac = std::str::from_utf8(&rest[..newline])
        .ok()
        .and_then(|hex| blake3::Hash::from_hex(hex).ok());
    (mac, &rest[newline + 1..])
}

/// What cannot be an entry, found by one pass over the bytes before any parsing allocates: too
/// deep, too many values, a string too long. (Parsing then costs a bounded multiple of this.)
fn check_shape(body: &[u8]) -> Result<(), String> {
    let (mut depth, mut values, mut string_len) = (0usize, 0usize, None::<usize>);
    let mut escaped = false;
    for &b in body {
        if let Some(len) = string_len.as_mut() {
            *len += 1;
            if *len > MAX_STRING_BYTES {
                return Err(format!("a string longer than {MAX_STRING_BYTES} bytes"));
            }
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => string_len = None,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => string_len = Some(0),
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH}"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if matches!(b, b'"' | b'[' | b'{' | b',') {
            values += 1;
            if values > MAX_VALUES {
                return Err(format!("more than {MAX_VALUES} values"));
            }
        }
    }
    Ok(())
}

/// An entry is used only if it is ours, for this key, names its files canonically (so that what
/// is downloaded and hashed is exactly what the entry lists) and says nothing a terminal would act on.
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
    check_file_list(&entry.files).map_err(|why| invalid(key, &why))?;
    let report = &entry.report;
    let texts = report.notes.iter().chain(report.metrics.keys());
    if let Some(bad) = texts.into_iter().find(|t| t.chars().any(unprintable)) {
        return Err(invalid(
            key,
            &format!("control characters in its report: `{bad}`"),
        ));
    }
    if output_digest(&output_files(&entry.files)) != entry.digest {
        return Err(invalid(
            key,
            "the file list does not match the entry's digest",
        ));
    }
    Ok(())
}

/// A report may hold line breaks and tabs; nothing else a terminal would act on.
fn unprintable(c: char) -> bool {
    is_unsafe_char(c) && c != '\n' && c != '\t'
}

/// The canonical form of a file list, as `publish` writes it: each path normalised
/// ([`canonical_path`]), the list sorted by bytes with no repeats, no path also a folder of
/// another, each digest 64 lowercase hex digits.
fn check_file_list(files: &[EntryFile]) -> Result<(), String> {
    let mut folders = BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        if !canonical_path(&f.path) {
            return Err(format!("unsafe or unnormalised path `{}`", f.path));
        }
        if i > 0 && files[i - 1].path >= f.path {
            return Err(format!(
                "unsorted or repeated path `{}` (after `{}`)",
                f.path,
                files[i - 1].path
            ));
        }
        let hex = f.digest.len() == 64
            && f.digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex {
            return Err(format!("bad digest for `{}`", f.path));
        }
        let mut at = 0;
        while let Some(slash) = f.path[at..].find('/') {
            folders.insert(&f.path[..at + slash]);
            at += slash + 1;
        }
    }
    match files.iter().find(|f| folders.contains(f.path.as_str())) {
        Some(f) => Err(format!("`{}` is both a file and a folder", f.path)),
        None => Ok(()),
    }
}

/// A relative path in its one spelling: plain names joined by single `/`, no `.` or `..`, no
/// backslash, nothing a terminal acts on, at most 1,024 bytes.
pub(super) fn canonical_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.contains('\\')
        && !path.chars().any(is_unsafe_char)
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn output_files(files: &[EntryFile]) -> Vec<OutputFile> {
    files
        .iter()
        .map(|f| OutputFile {
            path: f.path.clone(),
            size: f.size,
            digest: f.digest.clone(),
            mtime_ns: 0,
        })
        .collect()
}

/// The downloaded folder, hashed as publishing would, is exactly what the entry lists: the same
/// paths, sizes and digests, and the entry's artifact digest.
pub(super) fn check_download(
    key: &str,
    entry: &Entry,
    sealed: &OutputManifest,
) -> Result<(), RemoteError> {
    let same_files = sealed.files.len() == entry.files.len()
        && sealed.files.iter().zip(&entry.files).all(|(got, want)| {
            got.path == want.path && got.size == want.size && got.digest == want.digest
        });
    if !same_files || sealed.digest != entry.digest {
        return Err(invalid(key, "the downloaded files do not match the entry"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> EntryFile {
        EntryFile {
            path: path.into(),
            size: 1,
            digest: "a".repeat(64),
        }
    }

    fn list(paths: &[&str]) -> Result<(), String> {
        check_file_list(&paths.iter().map(|p| file(p)).collect::<Vec<_>>())
    }

    #[test]
    fn only_plain_normalised_relative_paths_are_canonical() {
        for ok in ["out.bin", "a/b.png", "correlation_q01.png", "é/ü.txt"] {
            assert!(canonical_path(ok), "{ok}");
        }
        let bad = [
            "",
            "../outside",
            "/etc/passwd",
            "a/../../b",
            "./x",
            "a\\b",
            "a//b",
            "a/",
            "a/./b",
            "x\u{1b}]0;owned\u{7}",
            "a\0b",
        ];
        for path in bad {
            assert!(!canonical_path(path), "{path:?}");
        }
    }

    #[test]
    fn a_file_list_is_sorted_unique_and_never_a_file_and_a_folder() {
        assert_eq!(list(&["a.txt", "a/b", "b"]), Ok(()));
        assert!(list(&["b", "a"]).unwrap_err().contains("unsorted"));
        assert!(list(&["a", "a"]).unwrap_err().contains("repeated"));
        assert!(
            list(&["a", "a/b"])
                .unwrap_err()
                .contains("both a file and a folder")
        );
        assert!(list(&["x", "x/y/z"]).unwrap_err().contains("both"));
        assert!(
            list(&["extra/f", "extra//f"])
                .unwrap_err()
                .contains("unnormalised")
        );
        let upper = EntryFile {
            digest: "A".repeat(64),
            ..file("a")
        };
        assert!(
            check_file_list(&[upper])
                .unwrap_err()
                .contains("bad digest")
        );
    }

    #[test]
    fn what_cannot_be_an_entry_is_refused_before_parsing() {
        assert_eq!(check_shape(br#"{"a": [1, 2, {"b": "c,[{"}]}"#), Ok(()));
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(check_shape(deep.as_bytes()).unwrap_err().contains("deeper"));
        let many = format!("[{}0]", "0,".repeat(MAX_VALUES));
        assert!(check_shape(many.as_bytes()).unwrap_err().contains("values"));
        let long = format!("[\"{}\"]", "x".repeat(MAX_STRING_BYTES + 1));
        assert!(check_shape(long.as_bytes()).unwrap_err().contains("string"));
        // An escaped quote does not end a string.
        let escaped = format!("[\"\\\"{}\"]", "x".repeat(MAX_STRING_BYTES));
        assert!(check_shape(escaped.as_bytes()).is_err());
    }

    #[test]
    fn rejections_quote_the_bucket_escaped() {
        let err = invalid("k\u{1b}", "bad path `\u{1b}[2J`").to_string();
        assert!(!err.contains('\u{1b}'), "{err:?}");
        assert!(err.contains("\\u{1b}[2J"), "{err}");
    }
}
