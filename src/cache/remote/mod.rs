//! A shared remote cache on object storage (`object_store`: S3 and S3-compatible, `file://`,
//! in memory for tests). Layout under the remote's prefix:
//!
//! ```text
//!   blobs/<aa>/<blake3 of the file>     one per distinct file content (stored once)
//!   entries/<key>.json                  one per stage key, written last, create-only
//! ```
//!
//! An entry names the fingerprint, the stage report and every output file (relative path, size,
//! blake3). It is written with `PutMode::Create` after every blob it names: its existence is the
//! commit point, and two machines pushing one key leave one entry. Everything read back is
//! untrusted ([`verify`]): an entry is shape-checked before it is parsed and must list its files
//! canonically; the files are downloaded into a staging folder, every byte hashed, and the whole
//! artifact compared with the entry before the local atomic publish — a rejected download leaves
//! nothing in `objects/` or `tmp/`. A remote that cannot be reached (or a bucket that does not
//! exist) is reported once and the run goes on locally; a write the remote refuses is reported
//! for each stage it leaves unpushed.
//!
//! With `GALAXY_PIPE_REMOTE_KEY` set, every pushed entry starts with a MAC line (BLAKE3 in its
//! keyed mode, with a key derived from the secret) over the raw bytes of the JSON after it, and
//! entries that lack it or fail it are ignored before they are parsed: a bucket others can write
//! cannot hand this machine an artifact. Blobs need no MAC of their own: the signed entry names
//! their digests.

use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};

use super::{Artifact, CacheError, Fingerprint, OutputManifest, StageReport, Store};
use crate::untrusted::escape;
use verify::{MAC_HEADER, MAX_ENTRY_BYTES, VerifiedFile, check_download, decode_entry, invalid};

mod verify;

/// Entry layout version.
const ENTRY_FORMAT: u32 = 1;
/// Requests in flight at once for the files of one artifact.
const PARALLEL: usize = 8;
/// A blob larger than this is downloaded in ranges of this size, several at once (unless
/// `GALAXY_PIPE_REMOTE_RANGE_MB` says otherwise).
const RANGE_BYTES: u64 = 16 << 20;
/// The environment variable setting the range size in MiB; 0 fetches each file in one request.
pub const RANGE_VAR: &str = "GALAXY_PIPE_REMOTE_RANGE_MB";
/// Ranges of one blob in flight at once.
const RANGES_IN_FLIGHT: usize = 4;
/// The environment variable holding the shared secret that signs entries.
pub const KEY_VAR: &str = "GALAXY_PIPE_REMOTE_KEY";
/// The environment variable setting how long a request may go without a byte from the server
/// (seconds, or a duration such as `45s`) before the remote counts as unreachable.
pub const IDLE_VAR: &str = "GALAXY_PIPE_REMOTE_IDLE_TIMEOUT";
/// Its default: a frozen server costs a run about this long, then the run computes locally.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// BLAKE3 `derive_key` context: the MAC key is derived from the secret, never the secret itself.
const MAC_CONTEXT: &str = "galaxy-pipe 2026-11 remote entry MAC";

/// `entries/<key>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    format: u32,
    key: String,
    /// Content digest of all outputs (as in the local `manifest.json`).
    digest: String,
    fingerprint: Fingerprint,
    report: StageReport,
    files: Vec<EntryFile>,
}

impl Entry {
    /// The bytes stored for this entry: its JSON, after a MAC line over that JSON when signing.
    fn to_bytes(&self, mac_key: Option<&[u8; 32]>) -> Vec<u8> {
        let body = serde_json::to_vec_pretty(self).expect("serialise");
        let Some(mac_key) = mac_key else {
            return body;
        };
        let mac = blake3::keyed_hash(mac_key, &body);
        let mut signed = format!("{MAC_HEADER}{}\n", mac.to_hex()).into_bytes();
        signed.extend_from_slice(&body);
        signed
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryFile {
    path: String,
    size: u64,
    digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{url}`: {message}")]
    Config { url: String, message: String },
    /// The remote could not be reached or answered with an error.
    #[error("remote {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The remote refused to store what was pushed (no permission, no such bucket, ...).
    #[error("remote {url}: {reason}")]
    Refused { url: String, reason: String },
    /// What the remote holds for this key is not a valid artifact (and is not used).
    #[error("remote entry {key}: {why}")]
    Invalid { key: String, why: String },
    #[error(transparent)]
    Local(#[from] CacheError),
}

impl RemoteError {
    /// What went wrong, without the remote's URL (for messages that name it already).
    pub fn reason(&self) -> String {
        match self {
            RemoteError::Unreachable { reason, .. } | RemoteError::Refused { reason, .. } => {
                reason.clone()
            }
            RemoteError::Config { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// What a fetch brought back.
pub struct Fetched {
    pub artifact: Artifact,
    pub bytes: u64,
}

/// Builds the store's client (for S3: an HTTP client with its TLS roots, a few milliseconds).
type Connect = Box<dyn Fn() -> Result<Arc<dyn ObjectStore>, String> + Send + Sync>;

pub struct Remote {
    /// Built at the first request: a run that finds every key locally pays nothing for it.
    store: std::sync::OnceLock<Arc<dyn ObjectStore>>,
    connect: Connect,
    prefix: Path,
    url: String,
    /// Upload what this machine computes (`--push`).
    pub push: bool,
    /// Started at the first request: a run that finds everything locally starts no threads.
    runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
    /// Set at the first failure to reach the remote: the rest of the run stays local.
    down: Mutex<Option<String>>,
    /// The server's reason for the first write it refused: nothing more is pushed this run.
    refused: Mutex<Option<String>>,
    /// Whether the bucket has been looked for (once, before the first request that needs it).
    bucket_checked: std::sync::atomic::AtomicBool,
    warned: std::sync::atomic::AtomicBool,
    /// Entries are signed on push and checked on fetch when set (`GALAXY_PIPE_REMOTE_KEY`).
    mac_key: Option<[u8; 32]>,
    /// Download range size (`u64::MAX`: one request per file).
    range_bytes: u64,
}

impl Remote {
    /// A remote at `url` (`s3://bucket/prefix`, `file:///path`, `memory:///`). Opening makes no
    /// request. S3 credentials, region and endpoint come from the standard `AWS_*` variables.
    pub fn open(url: &str, push: bool) -> Result<Remote, RemoteError> {
        let config = |message: String| RemoteError::Config {
            url: url.to_string(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| config(e.to_string()))?;
        let (connect, prefix): (Connect, Path) = match parsed.scheme() {
            "s3" | "s3a" => {
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(config("no bucket: expected s3://bucket/prefix".into()));
                }
                let prefix = Path::parse(parsed.path()).map_err(|e| config(e.to_string()))?;
                let url = url.to_string();
                let idle = idle_timeout().map_err(config)?;
                let connect: Connect = Box::new(move || {
                    let s3 = object_store::aws::AmazonS3Builder::from_env()
                        .with_url(&url)
                        .with_retry(retry())
                        .with_client_options(client_options(idle))
                        .build()
                        .map_err(|e| e.to_string())?;
                    Ok(Arc::new(s3) as Arc<dyn ObjectStore>)
                });
                (connect, prefix)
            }
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| config("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| config(e.to_string()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| config(e.to_string()))?;
                let fs: Arc<dyn ObjectStore> = Arc::new(fs);
                (Box::new(move || Ok(fs.clone())), Path::default())
            }
            "memory" => {
                let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
                (Box::new(move || Ok(memory.clone())), Path::default())
            }
            other => {
                return Err(config(format!(
                    "unsupported scheme `{other}` (s3://, file://)"
                )));
            }
        };
        let secret = match std::env::var(KEY_VAR) {
            Ok(v) if v.is_empty() => return Err(config(format!("{KEY_VAR} is set but empty"))),
            Ok(v) => Some(v),
            Err(_) => None,
        };
        let mut remote =
            Self::connecting(connect, prefix, url, push).signed_with(secret.as_deref());
        if let Ok(mb) = std::env::var(RANGE_VAR) {
            let mb: u64 = mb
                .trim()
                .parse()
                .map_err(|_| config(format!("{RANGE_VAR}=`{mb}` is not a whole number of MiB")))?;
            remote.range_bytes = if mb == 0 { u64::MAX } else { mb << 20 };
        }
        Ok(remote)
    }

    /// Sign pushed entries and accept only signed ones, with a key derived from `secret`.
    pub fn signed_with(mut self, secret: Option<&str>) -> Remote {
        self.mac_key = secret.map(|s| blake3::derive_key(MAC_CONTEXT, s.as_bytes()));
        self
    }

    /// A remote over any `ObjectStore` (tests use `InMemory`).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: Path, url: &str, push: bool) -> Remote {
        Self::connecting(Box::new(move || Ok(store.clone())), prefix, url, push)
    }

    fn connecting(connect: Connect, prefix: Path, url: &str, push: bool) -> Remote {
        Remote {
            store: std::sync::OnceLock::new(),
            connect,
            prefix,
            url: url.to_string(),
            push,
            runtime: std::sync::OnceLock::new(),
            down: Mutex::new(None),
            refused: Mutex::new(None),
            bucket_checked: std::sync::atomic::AtomicBool::new(false),
            warned: std::sync::atomic::AtomicBool::new(false),
            mac_key: None,
            range_bytes: RANGE_BYTES,
        }
    }

    /// The store, its client built the first time; a client that cannot be built marks the
    /// remote down like an unreachable one.
    fn store(&self) -> Result<&Arc<dyn ObjectStore>, RemoteError> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = (self.connect)().map_err(|e| self.down_because(e.to_string()))?;
        Ok(self.store.get_or_init(|| store))
    }

    /// Run a request to completion on the remote's runtime (started the first time).
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        let runtime = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime starts")
        });
        runtime.block_on(future)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn entry_path(&self, key: &str) -> Path {
        self.prefix
            .clone()
            .join("entries")
            .join(format!("{key}.json"))
    }

    fn blob_path(&self, digest: &str) -> Path {
        let shard = &digest[..2.min(digest.len())];
        self.prefix.clone().join("blobs").join(shard).join(digest)
    }

    /// None when the remote is usable; the first failure's reason once it is not.
    pub fn is_down(&self) -> Option<String> {
        self.down.lock().expect("not poisoned").clone()
    }

    /// The warning for the remote's failure ("the remote cache cannot be used (URL: reason)"),
    /// the first time it is asked for (so a run warns once).
    pub fn take_warning(&self) -> Option<String> {
        let why = self.is_down()?;
        let first = !self.warned.swap(true, std::sync::atomic::Ordering::SeqCst);
        first.then(|| format!("the remote cache cannot be used ({}: {why})", self.url))
    }

    /// Remember that the remote cannot be reached; true the first time (to warn once).
    fn mark_down(&self, why: &str) -> bool {
        let mut down = self.down.lock().expect("not poisoned");
        let first = down.is_none();
        if first {
            *down = Some(why.to_string());
        }
        first
    }

    /// A failure to talk to the remote: the remote is marked down (the run goes on locally).
    fn unreachable(&self, e: object_store::Error) -> RemoteError {
        self.down_because(server_reason(&e))
    }

    /// Marks the remote down for `reason`; the error to return.
    fn down_because(&self, reason: String) -> RemoteError {
        self.mark_down(&reason);
        RemoteError::Unreachable {
            url: self.url.clone(),
            reason,
        }
    }

    /// A write the remote refused: nothing more is pushed this run (reads go on).
    fn refusal(&self, what: &str, reason: String) -> RemoteError {
        let reason = escape(&reason).into_owned();
        let mut refused = self.refused.lock().expect("not poisoned");
        refused.get_or_insert(reason.clone());
        RemoteError::Refused {
            url: self.url.clone(),
            reason: format!("{what}: {reason}"),
        }
    }

    /// The store, after checking once that its bucket exists: S3 answers a missing bucket's
    /// keys with 404 like missing entries, so a typo would otherwise look like an empty cache.
    fn ready(&self) -> Result<&Arc<dyn ObjectStore>, RemoteError> {
        if let Some(reason) = self.is_down() {
            let url = self.url.clone();
            return Err(RemoteError::Unreachable { url, reason });
        }
        let store = self.store()?;
        let first = !self
            .bucket_checked
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        if first && let Err(e) = self.block_on(store.list_with_delimiter(Some(&self.prefix))) {
            return Err(self.unreachable(e));
        }
        Ok(store)
    }

    /// Whether the remote has an entry for `key` (false when it cannot be reached).
    pub fn has(&self, key: &str) -> Result<bool, RemoteError> {
        if self.is_down().is_some() {
            return Ok(false);
        }
        let path = self.entry_path(key);
        let store = self.ready()?;
        match self.block_on(store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    /// Download the artifact of `key`, verify every file and publish it into `store`; None
    /// when the remote has no entry for it.
    pub fn fetch(&self, key: &str, store: &Store) -> Result<Option<Fetched>, RemoteError> {
        if self.is_down().is_some() {
            return Ok(None);
        }
        self.ready()?;
        let mac_key = self.mac_key.as_ref();
        let Some(entry) = self.block_on(self.read_entry_async(key, mac_key))? else {
            return Ok(None);
        };
        // Downloaded, hashed and compared with the entry in staging; published only then (a
        // rejected download is removed with its staging folder).
        let staging = store.staging(key)?;
        let bytes = self.block_on(self.download_all(&entry, &staging.out_dir))?;
        let sealed = store.seal(&staging)?;
        check_download(key, &entry, &sealed)?;
        let artifact = store.commit(staging, &entry.fingerprint, &entry.report, sealed)?;
        Ok(Some(Fetched { artifact, bytes }))
    }

    async fn download_all(&self, entry: &Entry, out_dir: &FsPath) -> Result<u64, RemoteError> {
        let results: Vec<Result<u64, RemoteError>> = futures::stream::iter(&entry.files)
            .map(|f| self.download(&entry.key, f, out_dir))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        results.into_iter().sum()
    }

    /// One blob into `out_dir/<path>`, never whole in memory: the first range's answer gives
    /// the size, a larger blob's other ranges come several at once, in order; size and blake3
    /// are checked against the entry on the way.
    async fn download(
        &self,
        key: &str,
        f: &EntryFile,
        out_dir: &FsPath,
    ) -> Result<u64, RemoteError> {
        let blob = self.blob_path(&f.digest);
        let mut sink = VerifiedFile::create(key, f, out_dir)?;
        let store = self.store()?;
        if f.size > 0 {
            let first = object_store::GetOptions {
                range: (self.range_bytes != u64::MAX).then(|| (0..self.range_bytes).into()),
                ..Default::default()
            };
            let got = match store.get_opts(&blob, first).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(invalid(key, &format!("blob of `{}` is missing", f.path)));
                }
                Err(e) => return Err(self.unreachable(e)),
            };
            if got.meta.size != f.size {
                return Err(invalid(
                    key,
                    &format!("blob of `{}` has the wrong size", f.path),
                ));
            }
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                sink.write(&chunk.map_err(|e| self.unreachable(e))?)?;
            }
            let step = self.range_bytes;
            let rest = (step..f.size).step_by(step.min(usize::MAX as u64) as usize);
            let mut ranges = futures::stream::iter(rest)
                .map(|start| store.get_range(&blob, start..start.saturating_add(step).min(f.size)))
                .buffered(RANGES_IN_FLIGHT);
            while let Some(range) = ranges.next().await {
                sink.write(&range.map_err(|e| self.unreachable(e))?)?;
            }
        }
        sink.finish()
    }

    /// Upload `artifact` (from `store`): the blobs the remote lacks, then the entry, create-only.
    /// Returns the bytes uploaded (0 when the remote had it all).
    pub fn push_artifact(&self, artifact: &Artifact) -> Result<u64, RemoteError> {
        if let Some(reason) = self.refused.lock().expect("not poisoned").clone() {
            return Err(RemoteError::Refused {
                url: self.url.clone(),
                reason: format!("it refused an earlier write this run ({reason})"),
            });
        }
        self.ready()?;
        let dir = artifact.out_dir.parent().expect("out/ has a parent");
        let manifest: OutputManifest = std::fs::read(dir.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid(&artifact.key, "local manifest.json is unreadable"))?;
        let entry = Entry {
            format: ENTRY_FORMAT,
            key: artifact.key.clone(),
            digest: manifest.digest.clone(),
            fingerprint: artifact.fingerprint.clone(),
            report: artifact.report.clone(),
            files: manifest
                .files
                .iter()
                .map(|f| EntryFile {
                    path: f.path.clone(),
                    size: f.size,
                    digest: f.digest.clone(),
                })
                .collect(),
        };
        self.block_on(self.push_entry(&entry, &artifact.out_dir))
    }

    async fn push_entry(&self, entry: &Entry, out_dir: &FsPath) -> Result<u64, RemoteError> {
        let path = self.entry_path(&entry.key);
        let replace_unsigned = match self.store()?.head(&path).await {
            Ok(_) if !self.needs_signed_copy(&entry.key).await? => return Ok(0),
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(self.unreachable(e)),
        };
        let results: Vec<Result<u64, RemoteError>> = futures::stream::iter(&entry.files)
            .map(|f| self.upload(&entry.key, f, out_dir))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let bytes = results.into_iter().sum::<Result<u64, RemoteError>>()?;
        let body = entry.to_bytes(self.mac_key.as_ref());
        // Create-only: the first complete push wins. Only an entry this machine's key rejects
        // is overwritten, so an unsigned or forged entry cannot block the key for good.
        let mode = match replace_unsigned {
            true => PutMode::Overwrite,
            false => PutMode::Create,
        };
        match self
            .store()?
            .put_opts(&path, PutPayload::from(body), mode.into())
            .await
        {
            Ok(_)
            | Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(bytes),
            Err(e) => Err(self.refusal("writing the entry", server_reason(&e))),
        }
    }

    /// Whether the entry on the remote for `key` must be replaced by a signed one: pushing with
    /// a key, and the entry there is unreadable or not signed with it.
    async fn needs_signed_copy(&self, key: &str) -> Result<bool, RemoteError> {
        let Some(mac_key) = &self.mac_key else {
            return Ok(false);
        };
        match self.read_entry_async(key, Some(mac_key)).await {
            Ok(Some(_)) => Ok(false),
            Ok(None) | Err(RemoteError::Invalid { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// One file as its blob, unless the remote has it already: read in chunks (large files go
    /// up in parts), hashed on the way; a file that no longer matches its manifest is not
    /// uploaded.
    async fn upload(&self, key: &str, f: &EntryFile, out_dir: &FsPath) -> Result<u64, RemoteError> {
        use std::io::Read;
        use tokio::io::AsyncWriteExt;
        let blob = self.blob_path(&f.digest);
        match self.store()?.head(&blob).await {
            Ok(meta) if meta.size == f.size => return Ok(0),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.unreachable(e)),
        }
        let source = out_dir.join(&f.path);
        let local = |e: std::io::Error| RemoteError::from(CacheError::io("reading", &source, e));
        let mut file = std::fs::File::open(&source).map_err(local)?;
        let mut upload = object_store::buffered::BufWriter::new(self.store()?.clone(), blob);
        let failed = |e: std::io::Error| {
            let reason = e
                .get_ref()
                .map(|inner| reason_of(&super::error_chain(inner)))
                .unwrap_or_else(|| e.to_string());
            self.refusal(&format!("uploading `{}`", f.path), reason)
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = file.read(&mut buf).map_err(local)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            upload.write_all(&buf[..n]).await.map_err(failed)?;
        }
        if hasher.finalize().to_hex().as_str() != f.digest {
            let _ = upload.abort().await;
            return Err(invalid(
                key,
                &format!(
                    "local `{}` changed since it was published; not pushed",
                    f.path
                ),
            ));
        }
        upload.shutdown().await.map_err(failed)?;
        Ok(f.size)
    }
}

/// What `gc --remote` removed (or, with `dry_run`, would remove).
#[derive(Debug, Default, Serialize)]
pub struct RemoteGc {
    pub dry_run: bool,
    pub removed_entries: Vec<String>,
    pub kept_entries: usize,
    pub removed_blobs: usize,
    pub freed_bytes: u64,
}

/// Blobs younger than this are never collected: a push uploads its blobs before its entry, and
/// a collection must not take them in between.
pub const BLOB_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Remote {
    /// Remove the entries whose key is not in `keep`, then the blobs no remaining entry names
    /// (older than `grace`).
    pub fn gc(
        &self,
        keep: &std::collections::BTreeSet<String>,
        dry_run: bool,
        grace: std::time::Duration,
    ) -> Result<RemoteGc, RemoteError> {
        self.block_on(self.collect(keep, dry_run, grace))
    }

    async fn collect(
        &self,
        keep: &std::collections::BTreeSet<String>,
        dry_run: bool,
        grace: std::time::Duration,
    ) -> Result<RemoteGc, RemoteError> {
        let mut report = RemoteGc {
            dry_run,
            ..RemoteGc::default()
        };
        let mut referenced = std::collections::BTreeSet::new();
        for meta in self.list("entries").await? {
            let key = meta
                .location
                .filename()
                .unwrap_or("")
                .trim_end_matches(".json")
                .to_string();
            if keep.contains(&key) {
                report.kept_entries += 1;
                if let Ok(Some(entry)) = self.read_entry_async(&key, None).await {
                    referenced.extend(entry.files.into_iter().map(|f| f.digest));
                }
                continue;
            }
            if !dry_run {
                self.delete(&meta.location).await?;
            }
            report.freed_bytes += meta.size;
            report.removed_entries.push(key);
        }
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or_default();
        for meta in self.list("blobs").await? {
            let digest = meta.location.filename().unwrap_or("");
            if referenced.contains(digest) || meta.last_modified > cutoff {
                continue;
            }
            if !dry_run {
                self.delete(&meta.location).await?;
            }
            report.removed_blobs += 1;
            report.freed_bytes += meta.size;
        }
        Ok(report)
    }

    async fn list(&self, folder: &str) -> Result<Vec<object_store::ObjectMeta>, RemoteError> {
        let prefix = self.prefix.clone().join(folder);
        let listed: Vec<_> = self.store()?.list(Some(&prefix)).collect().await;
        listed
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.unreachable(e))
    }

    async fn delete(&self, path: &Path) -> Result<(), RemoteError> {
        match self.store()?.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    /// The entry of `key` as the remote holds it, read with a size cap and decoded by
    /// [`decode_entry`] (with `mac_key`, only a signed one).
    async fn read_entry_async(
        &self,
        key: &str,
        mac_key: Option<&[u8; 32]>,
    ) -> Result<Option<Entry>, RemoteError> {
        let got = match self.store()?.get(&self.entry_path(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.unreachable(e)),
        };
        let too_large = || invalid(key, "the entry is larger than any artifact's");
        if got.meta.size > MAX_ENTRY_BYTES as u64 {
            return Err(too_large());
        }
        let mut raw = Vec::with_capacity(got.meta.size as usize);
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            raw.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
            if raw.len() > MAX_ENTRY_BYTES {
                return Err(too_large());
            }
        }
        decode_entry(key, &raw, mac_key).map(Some)
    }
}

fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 2,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    }
}

/// Short connect timeout (an unreachable remote must not stall a run), an idle timeout (a
/// server that accepts and then sends nothing must not either), a long total for large files;
/// `AWS_ALLOW_HTTP=true` allows a plain-HTTP endpoint (a local test server).
fn client_options(idle: std::time::Duration) -> object_store::ClientOptions {
    let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(std::time::Duration::from_secs(5))
        .with_read_timeout(idle)
        .with_timeout(std::time::Duration::from_secs(300))
}

/// The idle timeout: `GALAXY_PIPE_REMOTE_IDLE_TIMEOUT` (seconds, or `45s`, `2m`), else 30 s.
fn idle_timeout() -> Result<std::time::Duration, String> {
    let Ok(text) = std::env::var(IDLE_VAR) else {
        return Ok(IDLE_TIMEOUT);
    };
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{IDLE_VAR}=`{text}` must be more than zero")),
        Err(e) => Err(format!("{IDLE_VAR}=`{}`: {e}", escape(text))),
    }
}

/// What the server said, short and escaped: an S3 error body's `Code: Message` when there is
/// one (`AccessDenied: Access Denied`, `NoSuchBucket: ...`), else the error chain.
fn server_reason(e: &object_store::Error) -> String {
    reason_of(&super::error_chain(e))
}

fn reason_of(chain: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = chain.find(&open)? + open.len();
        let len = chain[start..].find(&format!("</{name}>"))?;
        Some(chain[start..start + len].to_string())
    };
    let reason = match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => chain.to_string(),
    };
    escape(&reason).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CACHE_FORMAT, Lookup};

    /// A published artifact of two files (one in a subfolder) in `store`.
    fn publish_one(store: &Store) -> Artifact {
        let fp = Fingerprint {
            cache_format: CACHE_FORMAT,
            kind: "toy".into(),
            code_version: 1,
            params: serde_json::json!({ "n": 3 }),
            seed: None,
            inputs: Default::default(),
            files: Default::default(),
        };
        let staging = store.staging(&fp.key()).unwrap();
        std::fs::write(staging.out_dir.join("a.bin"), vec![7u8; 100_000]).unwrap();
        std::fs::create_dir_all(staging.out_dir.join("sub")).unwrap();
        std::fs::write(staging.out_dir.join("sub/b.txt"), "hello").unwrap();
        store
            .publish(staging, &fp, &StageReport::default())
            .unwrap()
    }

    /// Two local caches (two machines), with the folders that hold them.
    fn two_stores() -> (tempfile::TempDir, Store, tempfile::TempDir, Store) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store_a, store_b) = (
            Store::open(a.path()).unwrap(),
            Store::open(b.path()).unwrap(),
        );
        (a, store_a, b, store_b)
    }

    #[test]
    fn push_then_fetch_through_an_in_memory_store_is_byte_identical() {
        let (_a, store_a, _b, store_b) = two_stores();
        let artifact = publish_one(&store_a);
        let memory = Arc::new(object_store::memory::InMemory::new());
        let remote = Remote::with_store(memory, Path::from("team"), "memory:///team", true);
        assert!(!remote.has(&artifact.key).unwrap());
        assert_eq!(remote.push_artifact(&artifact).unwrap(), 100_005);
        // A second push of the same key uploads nothing and is not an error.
        assert_eq!(remote.push_artifact(&artifact).unwrap(), 0);
        assert!(remote.has(&artifact.key).unwrap());
        let fetched = remote
            .fetch(&artifact.key, &store_b)
            .unwrap()
            .expect("on the remote");
        assert_eq!(fetched.bytes, 100_005);
        assert_eq!(fetched.artifact.digest, artifact.digest);
        let Lookup::Valid(local) = store_b.lookup(&artifact.key, true) else {
            panic!("published in the second cache");
        };
        for f in ["a.bin", "sub/b.txt"] {
            let (x, y) = (artifact.out_dir.join(f), local.out_dir.join(f));
            assert_eq!(std::fs::read(x).unwrap(), std::fs::read(y).unwrap(), "{f}");
        }
        assert!(
            remote
                .fetch("0".repeat(64).as_str(), &store_b)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_local_file_damaged_after_publishing_is_not_pushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let artifact = publish_one(&store);
        std::fs::write(artifact.out_dir.join("sub/b.txt"), "HELLO").unwrap();
        let memory = Arc::new(object_store::memory::InMemory::new());
        let remote = Remote::with_store(memory, Path::default(), "memory:///", true);
        let err = remote.push_artifact(&artifact).unwrap_err();
        assert!(
            err.to_string().contains("changed since it was published"),
            "{err}"
        );
        assert!(
            !remote.has(&artifact.key).unwrap(),
            "no entry names a damaged blob"
        );
    }

    #[test]
    fn with_a_key_only_entries_signed_with_it_are_used() {
        let (_a, store_a, _b, store_b) = two_stores();
        let artifact = publish_one(&store_a);
        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let open = |secret: Option<&str>| {
            Remote::with_store(memory.clone(), Path::default(), "memory:///", true)
                .signed_with(secret)
        };
        // An unsigned push (a teammate without the key, or an attacker) is ignored ...
        open(None).push_artifact(&artifact).unwrap();
        let err = open(Some("team secret")).fetch(&artifact.key, &store_b);
        assert!(
            matches!(&err, Err(RemoteError::Invalid { why, .. }) if why.contains(KEY_VAR)),
            "{:?}",
            err.err()
        );
        // ... and replaced by the next signed push, which the key's holders then use.
        open(Some("team secret")).push_artifact(&artifact).unwrap();
        let fetched = open(Some("team secret")).fetch(&artifact.key, &store_b);
        assert_eq!(
            fetched.unwrap().expect("signed entry").artifact.digest,
            artifact.digest
        );
        // Another key does not accept it, and tampering with the signed entry breaks it.
        let store_c = tempfile::tempdir().unwrap();
        let store_c = Store::open(store_c.path()).unwrap();
        assert!(open(Some("other")).fetch(&artifact.key, &store_c).is_err());
        let path = Path::from(format!("entries/{}.json", artifact.key));
        let remote = open(Some("team secret"));
        let body = remote.block_on(async { memory.get(&path).await.unwrap().bytes().await });
        let tampered = String::from_utf8(body.unwrap().to_vec())
            .unwrap()
            .replace("\"notes\": []", "\"notes\": [\"forged\"]");
        assert!(tampered.contains("forged"));
        remote
            .block_on(memory.put(&path, PutPayload::from(tampered)))
            .unwrap();
        let err = remote.fetch(&artifact.key, &store_c);
        assert!(
            matches!(&err, Err(RemoteError::Invalid { why, .. }) if why.contains(KEY_VAR)),
            "a changed report fails the MAC: {:?}",
            err.err()
        );
    }

    #[test]
    fn a_blob_larger_than_one_range_arrives_whole_and_verified() {
        let (_a, store_a, _b, store_b) = two_stores();
        let fp = Fingerprint {
            cache_format: crate::cache::CACHE_FORMAT,
            kind: "toy".into(),
            code_version: 1,
            params: serde_json::json!({ "big": true }),
            seed: None,
            inputs: Default::default(),
            files: Default::default(),
        };
        let staging = store_a.staging(&fp.key()).unwrap();
        // 2.5 ranges of distinct bytes: a range out of order or twice would change the digest.
        let size = (RANGE_BYTES * 5 / 2) as usize;
        let big: Vec<u8> = (0..size)
            .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
            .collect();
        std::fs::write(staging.out_dir.join("model.bin"), &big).unwrap();
        std::fs::write(staging.out_dir.join("empty.txt"), "").unwrap();
        let artifact = store_a
            .publish(staging, &fp, &StageReport::default())
            .unwrap();
        let memory = Arc::new(object_store::memory::InMemory::new());
        let remote = Remote::with_store(memory, Path::default(), "memory:///", true);
        remote.push_artifact(&artifact).unwrap();
        let fetched = remote.fetch(&artifact.key, &store_b).unwrap().unwrap();
        assert_eq!(fetched.bytes, size as u64);
        let got = std::fs::read(fetched.artifact.out_dir.join("model.bin")).unwrap();
        assert!(got == big, "the ranges are reassembled in order");
        assert!(fetched.artifact.out_dir.join("empty.txt").exists());
    }

    /// An in-memory remote holding `publish_one`'s artifact, and that artifact's entry as JSON.
    fn pushed_entry(
        store: &Store,
    ) -> (
        Arc<object_store::memory::InMemory>,
        Artifact,
        serde_json::Value,
    ) {
        let artifact = publish_one(store);
        let memory = Arc::new(object_store::memory::InMemory::new());
        let remote = Remote::with_store(memory.clone(), Path::default(), "memory:///", true);
        remote.push_artifact(&artifact).unwrap();
        let path = Path::from(format!("entries/{}.json", artifact.key));
        let body = remote.block_on(async { memory.get(&path).await.unwrap().bytes().await });
        let entry = serde_json::from_slice(&body.unwrap()).unwrap();
        (memory, artifact, entry)
    }

    /// Replace the entry of `key` on `memory` with `entry` and fetch it into a fresh cache under
    /// a folder of its own: the fetch's result and that folder.
    fn fetch_rewritten(
        memory: &Arc<object_store::memory::InMemory>,
        key: &str,
        entry: &serde_json::Value,
    ) -> (Result<Option<Fetched>, RemoteError>, tempfile::TempDir) {
        let remote = Remote::with_store(memory.clone(), Path::default(), "memory:///", false);
        let path = Path::from(format!("entries/{key}.json"));
        let body = serde_json::to_vec(entry).unwrap();
        remote
            .block_on(memory.put(&path, PutPayload::from(body)))
            .unwrap();
        let parent = tempfile::tempdir().unwrap();
        let store = Store::open(&parent.path().join("cache")).unwrap();
        (remote.fetch(key, &store), parent)
    }

    /// The files of `parent` (relative paths), recursively.
    fn files_under(parent: &FsPath) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![parent.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(parent).unwrap().to_path_buf();
                    out.push(rel.display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// The entry's artifact digest recomputed for its (mutated) file list, as an attacker would.
    fn redigest(entry: &mut serde_json::Value) {
        let files: Vec<crate::cache::OutputFile> = entry["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| crate::cache::OutputFile {
                path: f["path"].as_str().unwrap_or("").to_string(),
                size: f["size"].as_u64().unwrap_or(0),
                digest: f["digest"].as_str().unwrap_or("").to_string(),
                mtime_ns: 0,
            })
            .collect();
        entry["digest"] = crate::cache::output_digest(&files).into();
    }

    /// A rejected fetch leaves no object for the key and nothing in `tmp/`; a fetch never
    /// writes outside the cache.
    fn assert_clean_rejection(parent: &FsPath, key: &str) {
        let cache = parent.join("cache");
        assert!(
            !cache.join("objects").join(key).exists(),
            "nothing published"
        );
        assert!(files_under(&cache.join("tmp")).is_empty(), "tmp/ is clean");
        assert!(
            files_under(&cache.join("objects")).is_empty(),
            "objects/ is clean"
        );
    }

    #[test]
    fn a_file_listed_under_two_spellings_or_out_of_order_is_rejected_before_publishing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (memory, artifact, entry) = pushed_entry(&store);
        // One blob under two spellings (`sub/b.txt` and `sub//b.txt`), the digest recomputed.
        let mut twice = entry.clone();
        let mut copy = twice["files"][1].clone();
        copy["path"] = "sub//b.txt".into();
        twice["files"].as_array_mut().unwrap().push(copy);
        redigest(&mut twice);
        // The two files listed in the other order, the digest recomputed.
        let mut swapped = entry.clone();
        swapped["files"].as_array_mut().unwrap().reverse();
        redigest(&mut swapped);
        for (what, hostile) in [("two spellings", twice), ("out of order", swapped)] {
            let (got, parent) = fetch_rewritten(&memory, &artifact.key, &hostile);
            let Err(RemoteError::Invalid { why, .. }) = &got else {
                panic!(
                    "{what}: rejected, got {:?}",
                    got.map(|f| f.map(|f| f.bytes))
                );
            };
            assert!(
                why.contains("unnormalised") || why.contains("unsorted"),
                "{what}: {why}"
            );
            assert_clean_rejection(parent.path(), &artifact.key);
        }
        // The untouched entry still arrives whole.
        let (got, _parent) = fetch_rewritten(&memory, &artifact.key, &entry);
        assert_eq!(got.unwrap().unwrap().artifact.digest, artifact.digest);
    }

    #[test]
    fn a_download_that_differs_from_its_entry_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (memory, artifact, entry) = pushed_entry(&store);
        // The entry's artifact digest does not match its (valid) file list.
        let mut lying = entry.clone();
        lying["digest"] = "0".repeat(64).into();
        let (got, parent) = fetch_rewritten(&memory, &artifact.key, &lying);
        assert!(matches!(got, Err(RemoteError::Invalid { .. })));
        assert_clean_rejection(parent.path(), &artifact.key);
        // A blob replaced on the server: its bytes fail the digest while downloading.
        let digest = entry["files"][0]["digest"].as_str().unwrap();
        let blob = Path::from(format!("blobs/{}/{digest}", &digest[..2]));
        let remote = Remote::with_store(memory.clone(), Path::default(), "memory:///", false);
        remote
            .block_on(memory.put(&blob, PutPayload::from(vec![8u8; 100_000])))
            .unwrap();
        let (got, parent) = fetch_rewritten(&memory, &artifact.key, &entry);
        let Err(RemoteError::Invalid { why, .. }) = got else {
            panic!("a replaced blob is rejected");
        };
        assert!(why.contains("does not match its digest"), "{why}");
        assert_clean_rejection(parent.path(), &artifact.key);
    }

    /// One change an attacker can make to an entry's file list.
    #[derive(Debug, Clone)]
    enum Mutation {
        Path(usize, String),
        Size(usize, u64),
        Digest(usize, String),
        Swap,
        Duplicate(usize),
        Drop(usize),
        Extra(String, usize),
    }

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        let path = prop_oneof![
            Just("../escape".to_string()),
            Just("/abs/path".to_string()),
            Just("sub//b.txt".to_string()),
            Just("./a.bin".to_string()),
            Just("sub".to_string()),
            Just("a.bin/x".to_string()),
            Just("nul\0byte".to_string()),
            Just("esc\u{1b}[2J".to_string()),
            Just("sub/./b.txt".to_string()),
            Just("é/ü".to_string()),
            "[a-z/.]{1,8}",
            "\\PC{1,6}",
        ];
        let hex = prop_oneof![
            Just("0".repeat(64)),
            Just("A".repeat(64)),
            "[0-9a-f]{64}",
            "[0-9a-fA-F]{0,70}",
        ];
        prop_oneof![
            (0..2usize, path.clone()).prop_map(|(i, p)| Mutation::Path(i, p)),
            (
                0..2usize,
                prop_oneof![
                    Just(0u64),
                    Just(5),
                    Just(99_999),
                    Just(100_001),
                    any::<u64>()
                ]
            )
                .prop_map(|(i, n)| Mutation::Size(i, n)),
            (0..2usize, hex).prop_map(|(i, d)| Mutation::Digest(i, d)),
            Just(Mutation::Swap),
            (0..2usize).prop_map(Mutation::Duplicate),
            (0..2usize).prop_map(Mutation::Drop),
            (path, 0..2usize).prop_map(|(p, i)| Mutation::Extra(p, i)),
        ]
    }

    fn apply(entry: &mut serde_json::Value, m: &Mutation) {
        let files = entry["files"].as_array_mut().unwrap();
        let n = files.len();
        if n == 0 {
            return;
        }
        match m {
            Mutation::Path(i, p) => files[i % n]["path"] = p.clone().into(),
            Mutation::Size(i, size) => files[i % n]["size"] = (*size).into(),
            Mutation::Digest(i, d) => files[i % n]["digest"] = d.clone().into(),
            Mutation::Swap => files.swap(0, n - 1),
            Mutation::Duplicate(i) => {
                let copy = files[i % n].clone();
                files.push(copy);
            }
            Mutation::Drop(i) => {
                files.remove(i % n);
            }
            Mutation::Extra(p, i) => {
                let mut extra = files[i % n].clone();
                extra["path"] = p.clone().into();
                files.push(extra);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Random mutations of a valid entry (with its digest recomputed or not) never publish
        /// an artifact that differs from what the entry says, never leave a rejected download in
        /// the cache, and never write outside it.
        #[test]
        fn a_mutated_entry_never_publishes_a_wrong_artifact(
            mutations in proptest::collection::vec(mutation(), 1..4),
            recompute in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let (memory, artifact, mut entry) = pushed_entry(&store);
            for m in &mutations {
                apply(&mut entry, m);
            }
            if recompute {
                redigest(&mut entry);
            }
            let (got, parent) = fetch_rewritten(&memory, &artifact.key, &entry);
            let outside: Vec<String> = files_under(parent.path())
                .into_iter()
                .filter(|f| !f.starts_with("cache/"))
                .collect();
            proptest::prop_assert!(outside.is_empty(), "written outside the cache: {:?}", outside);
            match got {
                Ok(Some(fetched)) => {
                    // Accepted: what is published is exactly what the entry lists, verified.
                    let cache = Store::open(&parent.path().join("cache")).unwrap();
                    let Lookup::Valid(local) = cache.lookup(&artifact.key, true) else {
                        panic!("a published artifact verifies");
                    };
                    proptest::prop_assert_eq!(&local.digest, &fetched.artifact.digest);
                    proptest::prop_assert_eq!(local.digest.as_str(), entry["digest"].as_str().unwrap());
                }
                Ok(None) => panic!("the entry exists"),
                Err(_) => assert_clean_rejection(parent.path(), &artifact.key),
            }
        }
    }
}
