//! Bucket mounts on cloud nodes (S3 and GCS, from either cloud), with the job's data identity
//! (`GET credentials`: an hour of credentials that reach only the task's parts of its
//! buckets, asked again before they expire).
//!
//! - **COPY**: the bucket (or the part under the prefix) is downloaded into the destination
//!   once, before the first command.
//! - **MOUNT** and **`MOUNT_CACHED`**: downloaded the same way, then *written back*: files
//!   created or changed under the destination are uploaded, and files deleted there are
//!   deleted from the bucket, while the command runs (each heartbeat), when each phase ends
//!   (before its exit is reported, so the next task or a relaunch sees them) and when the agent
//!   stops (SIGTERM, as a Spot machine is taken back). A checkpoint written to the destination
//!   is therefore in the bucket when a preempted job resumes on a new cluster. This is
//!   SkyPilot's `MOUNT_CACHED` behaviour (rclone's write-back cache); no FUSE file system is
//!   involved, so it works on any image and in containers.
//!
//! Requests are made here (`s3`: signed with SigV4; `gcs`: Cloud Storage's JSON API with a
//! downscoped bearer token) and sent by the agent's own HTTP client; the control plane only
//! hands out the credentials. Keys that would land outside the destination (`..`, absolute)
//! are skipped with a warning. One object is one upload request (S3: 5 GB at most).

mod gcs;
mod s3;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::agent_protocol::DataCredentials;
use shared::spec::Store;
use tracing::{info, warn};

use crate::api::{Api, ApiError, error_chain};

/// Credentials closer than this to their expiry are asked for again.
const REFRESH_BEFORE: Duration = Duration::from_mins(10);
/// Attempts of one request before the operation fails.
const ATTEMPTS: u32 = 5;
/// S3's limit on one `PUT` (Cloud Storage takes up to 5 TiB in one upload).
const MAX_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// What a mount's download found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pulled {
    /// This many objects under the prefix, as files under the destination.
    Files(usize),
    /// The prefix named one object: it is the destination.
    Object,
}

#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("cannot get the job's data credentials")]
    Credentials(#[source] ApiError),
    /// `url`: `s3://bucket` or `gs://bucket`.
    #[error("{url}: {detail}")]
    Store { url: String, detail: String },
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The job's data credentials (fetched on first use, renewed before they expire) and the
/// mounts written back to their buckets.
#[derive(Default)]
pub struct Data {
    credentials: Mutex<Option<DataCredentials>>,
    synced: Mutex<Vec<SyncedMount>>,
    /// The task user's uid and gid (on a VM): the write-back reads the mounts with their
    /// file-system rights, so a link the task swaps in cannot make root upload a file the
    /// task may not read (the agent's token, say).
    reader: Mutex<Option<(u32, u32)>>,
}

impl Data {
    /// `reader`: the task user's uid and gid, when the commands run as one.
    pub fn new(reader: Option<(u32, u32)>) -> Data {
        Data {
            reader: Mutex::new(reader),
            ..Data::default()
        }
    }

    /// The commands run as root (in a container): the write-back reads as root too, or files
    /// they made root's alone would never be written back.
    pub fn read_as_root(&self) {
        *self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn credentials(&self, api: &Api) -> Result<DataCredentials, BucketError> {
        let mut held = self
            .credentials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let fresh = held.as_ref().is_some_and(|c| {
            c.expires_at_ms()
                > now_ms.saturating_add(u64::try_from(REFRESH_BEFORE.as_millis()).unwrap_or(0))
        });
        if !fresh {
            *held = Some(api.credentials().map_err(BucketError::Credentials)?);
        }
        Ok(held.clone().expect("set above"))
    }

    /// Downloads `bucket/prefix` of `store` into `destination`; with `write_back`, keeps the
    /// mount to write back from then on ([`Data::write_back`]).
    pub fn mount(
        &self,
        api: &Api,
        store: Store,
        bucket: &str,
        prefix: &str,
        destination: &Path,
        write_back: bool,
    ) -> Result<(), BucketError> {
        let mut mount = SyncedMount {
            store,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            dir: destination.to_owned(),
            known: BTreeMap::new(),
        };
        let credentials = self.credentials(api)?;
        let files = mount.pull(api, &credentials)?;
        info!(bucket, prefix, files = ?files, destination = %destination.display(), write_back, "bucket mounted");
        if files == Pulled::Object {
            // One object mounted as a file: copied, not written back.
            return Ok(());
        }
        if files == Pulled::Files(0) && !write_back && !mount.prefix.is_empty() {
            return Err(BucketError::Store {
                url: mount.url(),
                detail: format!("nothing at '{prefix}' to copy"),
            });
        }
        if write_back {
            self.synced
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(mount);
        }
        Ok(())
    }

    /// Uploads what changed under every written-back mount, and deletes what was deleted.
    /// What failed (each file on its own: one bad file holds up no other) is logged, named in
    /// the error, and tried again at the next call.
    pub fn write_back(&self, api: &Api) -> Result<(), String> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if synced.is_empty() {
            return Ok(());
        }
        let credentials = match self.credentials(api) {
            Ok(c) => c,
            Err(e) => {
                let e = error_chain(&e);
                warn!(error = %e, "cannot write the bucket mounts back now");
                return Err(e);
            }
        };
        let reader = *self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mounts: &mut Vec<SyncedMount> = &mut synced;
        let credentials = &credentials;
        // On a thread of its own, whose file-system identity (Linux's fsuid, per thread) is
        // the task user's: everything it opens, it opens with the task's rights.
        std::thread::scope(|scope| {
            let pushed = scope.spawn(move || {
                if let Some((uid, gid)) = reader {
                    nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
                    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
                }
                let mut failures = Vec::new();
                for mount in mounts.iter_mut() {
                    match mount.push(api, credentials, &mut failures) {
                        Ok((0, 0)) => {}
                        Ok((put, deleted)) => {
                            info!(bucket = %mount.url(), put, deleted, "wrote the mount back");
                        }
                        Err(e) => failures.push(error_chain(&e)),
                    }
                }
                failures
            });
            match pushed.join() {
                Ok(failures) if failures.is_empty() => Ok(()),
                Ok(failures) => {
                    for failure in &failures {
                        warn!(failure = %failure, "not written back (tried again later)");
                    }
                    Err(failures.join("; "))
                }
                Err(_) => Err("the write-back thread panicked".to_owned()),
            }
        })
    }
}

/// A destination kept in step with `bucket/prefix`; `known` is what the bucket holds as far
/// as this node knows (size and modification time of the local file when last in step).
struct SyncedMount {
    store: Store,
    bucket: String,
    prefix: String,
    dir: PathBuf,
    known: BTreeMap<String, (u64, SystemTime)>,
}

impl SyncedMount {
    /// `s3://bucket` or `gs://bucket`, for messages.
    fn url(&self) -> String {
        format!("{}://{}", self.store.scheme(), self.bucket)
    }

    /// A client of the mount's bucket.
    fn client<'a>(
        &self,
        api: &'a Api,
        credentials: &DataCredentials,
    ) -> Result<Box<dyn ObjectStore + 'a>, BucketError> {
        let uncovered = || BucketError::Store {
            url: self.url(),
            detail: "the data credentials do not cover this store".into(),
        };
        Ok(match self.store {
            Store::S3 => Box::new(s3::S3::new(
                api,
                credentials.s3.as_ref().ok_or_else(uncovered)?,
                &self.bucket,
            )?),
            Store::Gcs => Box::new(gcs::Gcs::new(
                api,
                credentials.gcs.as_ref().ok_or_else(uncovered)?,
                &self.bucket,
            )),
        })
    }

    fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    /// Downloads every object under the prefix, or the object the prefix names.
    fn pull(&mut self, api: &Api, credentials: &DataCredentials) -> Result<Pulled, BucketError> {
        let client = self.client(api, credentials)?;
        let list_prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let keys = client.list(&list_prefix)?;
        if keys.is_empty() && !self.prefix.is_empty() && client.exists(&self.prefix)? {
            // `s3://bucket/path/file.csv`: the object itself, as a file at the destination.
            if let Some(parent) = self.dir.parent() {
                fs::create_dir_all(parent).map_err(io_error("cannot create", parent))?;
            }
            client.download(&self.prefix, &self.dir)?;
            return Ok(Pulled::Object);
        }
        fs::create_dir_all(&self.dir).map_err(io_error("cannot create", &self.dir))?;
        let mut count = 0;
        for key in keys {
            let relative = &key[list_prefix.len()..];
            let Some(path) = inside(&self.dir, relative) else {
                if !relative.is_empty() && !relative.ends_with('/') {
                    warn!(key, "skipping an object whose key leaves the destination");
                }
                continue;
            };
            // Written back, the file would get its plain key (`a/b`, not `./a//b`): such an
            // object is left alone rather than renamed.
            if path.strip_prefix(&self.dir).ok().and_then(Path::to_str) != Some(relative) {
                warn!(key, "skipping an object whose key is not a plain path");
                continue;
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io_error("cannot create", parent))?;
            }
            client.download(&key, &path)?;
            self.known.insert(relative.to_owned(), stamp(&path)?);
            count += 1;
        }
        Ok(Pulled::Files(count))
    }

    /// Uploads new and changed files, deletes objects whose file is gone; returns the counts.
    fn push(
        &mut self,
        api: &Api,
        credentials: &DataCredentials,
        failures: &mut Vec<String>,
    ) -> Result<(usize, usize), BucketError> {
        let mut present = BTreeMap::new();
        walk(&self.dir, &self.dir, &mut present, failures);
        let changed: Vec<(String, (u64, SystemTime))> = present
            .iter()
            .filter(|(relative, now)| self.known.get(*relative) != Some(now))
            .map(|(r, s)| (r.clone(), *s))
            .collect();
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|r| !present.contains_key(*r))
            .cloned()
            .collect();
        if changed.is_empty() && gone.is_empty() {
            return Ok((0, 0));
        }
        let client = self.client(api, credentials)?;
        let (mut put, mut deleted) = (0, 0);
        for (relative, stamp) in &changed {
            let key = self.key(relative);
            if self.store == Store::S3 && stamp.0 > MAX_PUT_BYTES {
                failures.push(format!(
                    "{}/{key}: {} bytes, over S3's 5 GB for one upload",
                    self.url(),
                    stamp.0
                ));
                continue;
            }
            match client.upload(&key, &self.dir.join(relative)) {
                Ok(()) => {
                    self.known.insert(relative.clone(), *stamp);
                    put += 1;
                }
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        for relative in &gone {
            match client.delete(&self.key(relative)) {
                Ok(()) => {
                    self.known.remove(relative);
                    deleted += 1;
                }
                Err(e) => failures.push(error_chain(&e)),
            }
        }
        Ok((put, deleted))
    }
}

/// `dir/relative` when `relative` is a plain relative file path (no `..`, not absolute, not a
/// folder marker).
fn inside(dir: &Path, relative: &str) -> Option<PathBuf> {
    if relative.is_empty() || relative.ends_with('/') {
        return None;
    }
    let mut path = dir.to_owned();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(path)
}

/// Every regular file under `dir` (symbolic links are not followed), by relative path; what
/// cannot be read is named in `failures` and skipped.
fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, (u64, SystemTime)>,
    failures: &mut Vec<String>,
) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // A destination the command removed holds nothing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            failures.push(format!("cannot read {}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries {
        let Ok(entry) = entry else {
            failures.push(format!("cannot read {}", dir.display()));
            continue;
        };
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(root, &path, out, failures);
        } else if kind.is_file() {
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let Some(relative) = relative.to_str() else {
                warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            // A file deleted while walking is gone.
            if let Ok(s) = stamp(&path) {
                out.insert(relative.to_owned(), s);
            }
        }
    }
}

fn stamp(path: &Path) -> Result<(u64, SystemTime), BucketError> {
    let meta = fs::metadata(path).map_err(io_error("cannot read", path))?;
    Ok((meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BucketError {
    let path = path.to_owned();
    move |source| BucketError::Io {
        action,
        path,
        source,
    }
}

/// One bucket's objects, as the mounts use them.
trait ObjectStore {
    /// Every key under `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>, BucketError>;
    /// Whether the object `key` exists.
    fn exists(&self, key: &str) -> Result<bool, BucketError>;
    /// Writes the object `key` to `path` (through a `.stratus-part` file renamed at the end).
    fn download(&self, key: &str, path: &Path) -> Result<(), BucketError>;
    /// Uploads the file at `path` as `key`; a file deleted meanwhile is skipped.
    fn upload(&self, key: &str, path: &Path) -> Result<(), BucketError>;
    /// Deletes `key` (gone already is fine).
    fn delete(&self, key: &str) -> Result<(), BucketError>;
}

/// Sends a request up to [`ATTEMPTS`] times, backing off; `send` builds it afresh each time.
fn attempt<T>(
    url: &str,
    what: &str,
    mut send: impl FnMut() -> Result<T, String>,
) -> Result<T, BucketError> {
    let mut delay = Duration::from_millis(200);
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match send() {
            Ok(value) => return Ok(value),
            Err(e) => last = e,
        }
        std::thread::sleep(delay);
        delay *= 2;
    }
    Err(BucketError::Store {
        url: url.to_owned(),
        detail: format!("{what}: {last}"),
    })
}

/// A transfer of any size: no overall deadline, but at most a minute without a byte.
fn unhurried<B>(request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
    request
        .config()
        .timeout_global(None)
        .timeout_per_read(Some(Duration::from_mins(1)))
        .build()
}

/// `Ok` for a 2xx answer about `key` (and for a 404 when `gone_is_done`), else the status.
fn answered(status: u16, key: &str, gone_is_done: bool) -> Result<(), String> {
    match status {
        200..=299 => Ok(()),
        404 if gone_is_done => Ok(()),
        status => Err(format!("HTTP {status} for {key}")),
    }
}

/// Saves a `200` answer's body to `part` (the download's own file; renamed by the caller).
fn save(
    mut response: ureq::http::Response<ureq::Body>,
    key: &str,
    part: &Path,
) -> Result<(), String> {
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status} for {key}"));
    }
    let mut file = File::create(part).map_err(|e| e.to_string())?;
    io::copy(&mut response.body_mut().as_reader(), &mut file).map_err(|e| e.to_string())?;
    file.flush().map_err(|e| e.to_string())
}

/// The file to upload, with its length; `None` when it was deleted since the walk (the next
/// write-back deletes the object).
fn open_upload(path: &Path) -> Result<Option<(File, u64)>, String> {
    match File::open(path) {
        Ok(file) => {
            let len = file.metadata().map_err(|e| e.to_string())?.len();
            Ok(Some((file, len)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_destination() {
        let dir = Path::new("/d");
        assert_eq!(inside(dir, "a/b.txt"), Some(PathBuf::from("/d/a/b.txt")));
        assert_eq!(inside(dir, "./a"), Some(PathBuf::from("/d/a")));
        for bad in ["", "a/", "../x", "a/../../x", "/etc/passwd"] {
            assert_eq!(inside(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_walk_sees_files_not_links() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/c.txt"), "x").unwrap();
        fs::write(dir.path().join("top"), "yy").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        let mut out = BTreeMap::new();
        let mut failures = Vec::new();
        walk(dir.path(), dir.path(), &mut out, &mut failures);
        assert!(failures.is_empty(), "{failures:?}");
        let names: Vec<(&str, u64)> = out.iter().map(|(k, v)| (k.as_str(), v.0)).collect();
        assert_eq!(names, [("a/b/c.txt", 1), ("top", 2)]);
    }
}
