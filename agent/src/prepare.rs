//! Preparing the node before its first command: the workdir and the file mounts.
//!
//! # Where things go
//! - The workdir is `$NODE_DIR/sky_workdir`, the current directory of setup and run. It is
//!   created even when the task has no workdir.
//! - A mount destination `~` or `~/x` is `$NODE_DIR` or `$NODE_DIR/x` (`$NODE_DIR` is the
//!   commands' `HOME`); an absolute `/x` is `$NODE_DIR/root/x` (a node of the local cloud is a
//!   process and may not write to `/`); a relative `x` is `$NODE_DIR/sky_workdir/x`. A `..`
//!   component is refused, and so is a path through a symbolic link (a workdir could bring
//!   one pointing anywhere), or onto one (except where a MOUNT replaces it).
//!
//! # Archive layout (the control plane builds these)
//! Every archive is a gzip-compressed tar (`.tar.gz`). Entry paths are relative (no leading
//! `/`, no `..`; a leading `./` is fine), and hold no top-level folder named after the source.
//! - **A folder** (the workdir, or a mount whose source is a folder): the entries are the
//!   folder's contents, relative to the folder itself: the source `~/code/` holding `a.py` and
//!   `lib/b.py` is archived as `a.py`, `lib/`, `lib/b.py`. The agent creates the destination
//!   folder and unpacks into it, over anything already there. An empty archive makes an empty
//!   folder.
//! - **A single file** (a mount whose source is a file): exactly one entry, a regular file
//!   named `__file__` (or `./__file__`). The agent writes it to the destination path itself,
//!   creating its parent folders and replacing a file already there.
//!
//! Modes (executable bits) and modification times are kept; owners are not.
//!
//! # Local folders (buckets on the local cloud)
//! - `copy: false` (MOUNT): the destination becomes a symlink to the folder. The folder is
//!   created when missing (a new bucket is empty); an existing symlink at the destination is
//!   replaced, and so is an empty folder; anything else there is an error.
//! - `copy: true` (COPY): the folder's contents are copied into the destination (merged over
//!   what is there; symlinks are copied as symlinks). A missing folder is an error.
//!
//! Preparation failures that retrying cannot fix (a bad archive, a full disk, an occupied
//! destination) are reported as the phase failing with [`PREPARE_FAILED`], the reason in its
//! log. Downloads are retried like every other call.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use shared::agent_protocol::{MountSource, NodeMount, NodeTask};
use tracing::info;

use shared::spec::StorageMode;

use crate::api::{self, Api, Gone};
use crate::bucket::Data;

/// The exit code reported for a phase whose node could not be prepared (like `env` and
/// `docker run`, 125 means "the tool failed before the command ran").
pub const PREPARE_FAILED: i32 = 125;

/// The name of the only entry of a single-file archive.
pub const FILE_ENTRY: &str = "__file__";

/// The user the commands run as on a cloud VM (see `env::TASK_USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The node's folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The commands' `HOME`: `$NODE_DIR`, or the task user's home.
    pub home: PathBuf,
    /// `~/sky_workdir`, the commands' current directory.
    pub workdir: PathBuf,
    /// Where an absolute destination `/x` lands: `$NODE_DIR/root/x` on the local cloud,
    /// `/x` itself for a task user.
    pub root: PathBuf,
    /// Who the commands run as, and who owns what is prepared for them; `None`: the agent's
    /// own user.
    pub user: Option<TaskUser>,
    /// The agent's own folder, which no destination may hold or be inside.
    pub agent_dir: Option<PathBuf>,
}

impl NodePaths {
    /// The local cloud's layout: everything under `node_dir`.
    pub fn new(node_dir: &Path) -> NodePaths {
        NodePaths {
            home: node_dir.to_owned(),
            workdir: node_dir.join("sky_workdir"),
            root: node_dir.join("root"),
            user: None,
            agent_dir: None,
        }
    }

    /// SkyPilot's layout on a VM: `user`'s home, `~/sky_workdir`, absolute paths as they are.
    pub fn for_user(user: TaskUser, home: &Path, agent_dir: &Path) -> NodePaths {
        NodePaths {
            home: home.to_owned(),
            workdir: home.join("sky_workdir"),
            root: PathBuf::from("/"),
            user: Some(user),
            agent_dir: Some(agent_dir.to_owned()),
        }
    }

    /// Looks `name` up in the system's user database.
    pub fn of_user(name: &str, agent_dir: &Path) -> Result<NodePaths, String> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user '{name}': {e}"))?
            .ok_or_else(|| format!("there is no user '{name}' on this machine"))?;
        Ok(NodePaths::for_user(
            TaskUser {
                name: name.to_owned(),
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            },
            &user.dir,
            agent_dir,
        ))
    }

    /// Gives what was prepared at `path` (and everything under it) to the task user.
    pub fn hand_over(&self, path: &Path) -> io::Result<()> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let meta = fs::symlink_metadata(path)?;
        std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))?;
        if meta.is_dir() {
            for entry in fs::read_dir(path)? {
                self.hand_over(&entry?.path())?;
            }
        }
        Ok(())
    }

    /// The file a phase's script is written to before it runs.
    pub fn script(&self, phase: shared::job::Phase) -> PathBuf {
        self.home.join(".stratus").join(format!("{phase}.sh"))
    }

    /// Where a mount destination lands on this node (see the module docs).
    pub fn destination(&self, destination: &str) -> Result<PathBuf, PrepareError> {
        let refuse = |reason| PrepareError::Destination {
            destination: destination.to_owned(),
            reason,
        };
        let (mut path, rest) = if destination == "~" {
            (self.home.clone(), "")
        } else if let Some(rest) = destination.strip_prefix("~/") {
            (self.home.clone(), rest)
        } else if let Some(rest) = destination.strip_prefix('/') {
            (self.root.clone(), rest)
        } else if destination.trim().is_empty() {
            return Err(refuse("it is empty"));
        } else {
            (self.workdir.clone(), destination)
        };
        for component in Path::new(rest).components() {
            match component {
                Component::Normal(part) => {
                    // A symlink on the way (one a workdir brought, or the task user made in
                    // /tmp, say) could lead anywhere. The system's own (root's, as /bin on
                    // some images) are fine for a task user's absolute destinations outside
                    // the home (where the workdir, unpacked by root, could bring one).
                    let system = |m: &fs::Metadata| {
                        self.user.is_some()
                            && destination.starts_with('/')
                            && !path.starts_with(&self.home)
                            && std::os::unix::fs::MetadataExt::uid(m) == 0
                    };
                    if fs::symlink_metadata(&path)
                        .is_ok_and(|m| m.file_type().is_symlink() && !system(&m))
                    {
                        return Err(refuse("it passes through a symbolic link"));
                    }
                    path.push(part);
                }
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(refuse("'..' is not allowed in a destination"));
                }
            }
        }
        if let Some(agent) = &self.agent_dir {
            // Where the path really leads, through the links allowed above.
            let real = resolved(&path);
            if agent.starts_with(&path)
                || path.starts_with(agent)
                || agent.starts_with(&real)
                || real.starts_with(agent)
            {
                return Err(refuse("it holds the agent's own files"));
            }
        }
        Ok(path)
    }
}

/// Why the node could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("file_mounts: destination '{destination}': {reason}")]
    Destination {
        destination: String,
        reason: &'static str,
    },
    /// `what` is `workdir` or `file_mounts '<destination>'`.
    #[error("{what}: cannot {action} {}", path.display())]
    Io {
        what: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Bucket {
        what: String,
        #[source]
        source: crate::bucket::BucketError,
    },
    #[error(transparent)]
    Container(#[from] crate::container::ContainerError),
    #[error(transparent)]
    Gone(#[from] Gone),
}

/// Creates the workdir, unpacks the workdir archive and realizes each mount, in order.
pub fn prepare(
    api: &Api,
    data: &Data,
    node: &NodePaths,
    task: &NodeTask,
) -> Result<(), PrepareError> {
    let workdir = || "workdir".to_owned();
    fs::create_dir_all(&node.workdir).map_err(io_error(workdir(), "create", &node.workdir))?;
    if let Some(key) = &task.workdir_archive {
        let archive =
            download(api, node, key).map_err(io_error(workdir(), "download to", &node.home))??;
        unpack_folder(archive.path(), &node.workdir).map_err(io_error(
            workdir(),
            "unpack the workdir archive into",
            &node.workdir,
        ))?;
        info!("unpacked the workdir");
    }
    // Everything prepared belongs to the task user, who runs the commands: the workdir, and
    // each destination from the first folder the agent had to make for it (SkyPilot's
    // `sudo mkdir -p` then `chown`).
    let mut prepared = vec![node.workdir.clone()];
    for mount in &task.mounts {
        let destination = node.destination(&mount.destination)?;
        let made = first_missing(&destination);
        // A folder that was there already is handed over only in the user's own space (a
        // destination such as /usr/local keeps its owner; its new contents are the user's
        // only where the agent made them).
        if made != destination
            || fs::symlink_metadata(&destination).is_err()
            || destination.starts_with(&node.home)
        {
            prepared.push(made);
        }
        realize(api, data, node, mount)?;
    }
    for path in prepared {
        if fs::symlink_metadata(&path).is_ok() {
            node.hand_over(&path).map_err(io_error(
                "file_mounts".into(),
                "give to the task user",
                &path,
            ))?;
        }
    }
    if let Some(container) = &task.container {
        // The container sees the task's folders at the same paths: the home (workdir and `~`
        // destinations) and every absolute destination elsewhere.
        let mut folders = vec![node.home.clone()];
        for mount in &task.mounts {
            let destination = node.destination(&mount.destination)?;
            if !destination.starts_with(&node.home) {
                folders.push(destination);
            }
        }
        crate::container::start(container, &folders)?;
    }
    Ok(())
}

/// `path` with its longest existing part resolved (links followed), the rest appended.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path.to_owned();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = fs::canonicalize(&existing) {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_owned();
            }
            _ => return path.to_owned(),
        }
    }
}

/// The highest folder of `path` (or `path` itself) that does not exist yet.
fn first_missing(path: &Path) -> PathBuf {
    let mut missing = path.to_owned();
    while let Some(parent) = missing.parent() {
        if fs::symlink_metadata(parent).is_ok() {
            break;
        }
        missing = parent.to_owned();
    }
    missing
}

fn realize(
    api: &Api,
    data: &Data,
    node: &NodePaths,
    mount: &NodeMount,
) -> Result<(), PrepareError> {
    let destination = node.destination(&mount.destination)?;
    // The destination itself may be a symlink only where a MOUNT replaces it with its own.
    let replaced = matches!(mount.source, MountSource::LocalFolder { copy: false, .. });
    if !replaced && fs::symlink_metadata(&destination).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(PrepareError::Destination {
            destination: mount.destination.clone(),
            reason: "it is a symbolic link",
        });
    }
    let what = || format!("file_mounts '{}'", mount.destination);
    match &mount.source {
        MountSource::Archive { key } => {
            let archive =
                download(api, node, key).map_err(io_error(what(), "download to", &node.home))??;
            unpack_mount(archive.path(), &destination).map_err(io_error(
                what(),
                "unpack the archive at",
                &destination,
            ))?;
        }
        MountSource::LocalFolder { path, copy: false } => {
            link(Path::new(path), &destination).map_err(io_error(what(), "link", &destination))?;
        }
        MountSource::LocalFolder { path, copy: true } => {
            copy_tree(Path::new(path), &destination).map_err(io_error(
                what(),
                "copy into",
                &destination,
            ))?;
        }
        MountSource::S3 {
            bucket,
            prefix,
            mode,
        }
        | MountSource::Gcs {
            bucket,
            prefix,
            mode,
        } => {
            let store = if matches!(mount.source, MountSource::Gcs { .. }) {
                shared::spec::Store::Gcs
            } else {
                shared::spec::Store::S3
            };
            let write_back = *mode != StorageMode::Copy;
            data.mount(api, store, bucket, prefix, &destination, write_back)
                .map_err(|source| PrepareError::Bucket {
                    what: what(),
                    source,
                })?;
        }
    }
    info!(destination = %mount.destination, "mounted");
    Ok(())
}

fn io_error(
    what: String,
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> PrepareError {
    let path = path.to_owned();
    move |source| PrepareError::Io {
        what,
        action,
        path,
        source,
    }
}

/// Downloads blob `key` into a temporary file under the node's folder (removed when dropped),
/// retrying until it arrives. The outer error is the local file; the inner one, the node gone.
fn download(
    api: &Api,
    node: &NodePaths,
    key: &str,
) -> io::Result<Result<tempfile::NamedTempFile, Gone>> {
    let mut file = tempfile::Builder::new()
        .prefix(".stratus-download-")
        .tempfile_in(&node.home)?;
    let fetched = api::retry(&format!("download of blob '{key}'"), || {
        api.download(key, file.as_file_mut())
    });
    if fetched.is_ok() {
        verify(key, file.path())?;
    }
    Ok(fetched.map(|()| file))
}

/// An archive is named for its SHA-256 (`.../<sha256>.tar.gz`, the key the upload route made):
/// what was fetched must hash to it. In a user's intermediate bucket (`jobs.bucket`) others
/// with access to the bucket could replace the object; a changed archive is never unpacked.
fn verify(key: &str, path: &Path) -> io::Result<()> {
    use sha2::Digest as _;
    let Some(expected) = key
        .rsplit('/')
        .next()
        .and_then(|file| file.strip_suffix(".tar.gz"))
        .filter(|sha| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Ok(());
    };
    let mut hasher = sha2::Sha256::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    let actual = hex::encode(hasher.finalize());
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the archive '{key}' was changed after it was uploaded (its SHA-256 is {actual}); \
                 not unpacking it"
            ),
        ))
    }
}

fn open_archive(archive: &Path) -> io::Result<tar::Archive<GzDecoder<BufReader<File>>>> {
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(File::open(archive)?)));
    archive.set_overwrite(true);
    archive.set_preserve_mtime(true);
    Ok(archive)
}

/// Unpacks a folder archive into `destination`, creating it.
pub fn unpack_folder(archive: &Path, destination: &Path) -> io::Result<()> {
    fs::create_dir_all(destination)?;
    open_archive(archive)?.unpack(destination)
}

/// Unpacks a mount archive: a single-file archive becomes the file `destination`, any other
/// archive the folder `destination`.
pub fn unpack_mount(archive: &Path, destination: &Path) -> io::Result<()> {
    if !is_single_file(archive)? {
        return unpack_folder(archive, destination);
    }
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(destination) {
        Ok(meta) if meta.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the archive holds a file but the destination is a folder",
            ));
        }
        Ok(_) => fs::remove_file(destination)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut archive = open_archive(archive)?;
    let mut entry = archive
        .entries()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the archive changed"))??;
    entry.unpack(destination)?;
    Ok(())
}

/// Whether the archive is exactly one regular file named [`FILE_ENTRY`].
fn is_single_file(archive: &Path) -> io::Result<bool> {
    let mut archive = open_archive(archive)?;
    let mut entries = archive.entries()?;
    let Some(first) = entries.next() else {
        return Ok(false);
    };
    let first = first?;
    let named = first
        .path()?
        .components()
        .filter(|c| *c != Component::CurDir)
        .eq([Component::Normal(FILE_ENTRY.as_ref())]);
    let single = named && first.header().entry_type().is_file();
    drop(first);
    Ok(single && entries.next().is_none())
}

/// Makes `destination` a symlink to `target` (MOUNT of a local folder).
pub fn link(target: &Path, destination: &Path) -> io::Result<()> {
    if fs::symlink_metadata(target).is_err() {
        fs::create_dir_all(target)?;
    }
    if let Some(parent) = destination.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(destination) {
        Ok(meta) if meta.file_type().is_symlink() => fs::remove_file(destination)?,
        // Fails, as it should, unless the folder is empty.
        Ok(meta) if meta.is_dir() => fs::remove_dir(destination)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file is in the way of the link",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, destination)
}

/// Copies `source` (a folder's contents, or a file) to `destination` (COPY of a local folder).
pub fn copy_tree(source: &Path, destination: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(source)?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(source)?;
        if fs::symlink_metadata(destination).is_ok() {
            fs::remove_file(destination)?;
        }
        return std::os::unix::fs::symlink(target, destination);
    }
    if !meta.is_dir() {
        if let Some(parent) = destination.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(source, destination)?;
        return Ok(());
    }
    fs::create_dir_all(destination)?;
    for entry in fs::read_dir(source)? {
        let entry = entry?;
        copy_tree(&entry.path(), &destination.join(entry.file_name()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// Writes a `.tar.gz` of `(path, contents)` regular files.
    fn archive(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        let path = dir.join(format!("a{}.tar.gz", files.len()));
        let mut builder = tar::Builder::new(GzEncoder::new(
            File::create(&path).unwrap(),
            Compression::fast(),
        ));
        for (name, contents) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(contents.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, contents.as_bytes())
                .unwrap();
        }
        builder
            .into_inner()
            .unwrap()
            .finish()
            .unwrap()
            .flush()
            .unwrap();
        path
    }

    #[test]
    fn destinations() {
        let node = NodePaths::new(Path::new("/n"));
        let check = |dest: &str, expected: &str| {
            let actual = match node.destination(dest) {
                Ok(path) => path.display().to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(actual, expected);
        };
        check("~", "/n");
        check("~/ckpt/", "/n/ckpt");
        check("/data//x", "/n/root/data/x");
        check("rel/./y", "/n/sky_workdir/rel/y");
        check("~other", "/n/sky_workdir/~other");
        check(
            "/a/../../etc",
            "file_mounts: destination '/a/../../etc': '..' is not allowed in a destination",
        );
        check(" ", "file_mounts: destination ' ': it is empty");
    }

    #[test]
    fn destinations_of_a_task_user() {
        let user = TaskUser {
            name: "ec2-user".into(),
            uid: 1000,
            gid: 1000,
        };
        let node =
            NodePaths::for_user(user, Path::new("/home/ec2-user"), Path::new("/opt/stratus"));
        let check = |dest: &str, expected: &str| {
            let actual = match node.destination(dest) {
                Ok(path) => path.display().to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(actual, expected);
        };
        check("~/ckpt", "/home/ec2-user/ckpt");
        check("/checkpoint", "/checkpoint");
        check("rel", "/home/ec2-user/sky_workdir/rel");
        for agents in ["/opt", "/opt/stratus", "/opt/stratus/bin", "/"] {
            check(
                agents,
                &format!("file_mounts: destination '{agents}': it holds the agent's own files"),
            );
        }
    }

    #[test]
    fn folder_and_file_archives() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = archive(tmp.path(), &[("./a.txt", "A"), ("sub/b.txt", "B")]);
        let dest = tmp.path().join("x/folder");
        unpack_mount(&folder, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "A");
        assert_eq!(fs::read_to_string(dest.join("sub/b.txt")).unwrap(), "B");

        let file = archive(tmp.path(), &[("__file__", "F")]);
        let dest = tmp.path().join("y/file.txt");
        unpack_mount(&file, &dest).unwrap();
        unpack_mount(&file, &dest).unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "F");
        assert!(
            unpack_mount(&file, tmp.path()).is_err(),
            "a file over a folder"
        );
    }

    #[test]
    fn link_replaces_links_and_empty_folders_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, dest) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("p/dest"),
        );
        link(&a, &dest).unwrap();
        assert!(a.is_dir(), "a missing bucket folder is created");
        link(&b, &dest).unwrap();
        assert_eq!(fs::read_link(&dest).unwrap(), b);
        fs::remove_file(&dest).unwrap();
        fs::create_dir_all(dest.join("full")).unwrap();
        assert!(link(&a, &dest).is_err());
    }

    #[test]
    fn copy_merges_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), "F").unwrap();
        std::os::unix::fs::symlink("d/f", src.join("l")).unwrap();
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("old"), "O").unwrap();
        copy_tree(&src, &dest).unwrap();
        copy_tree(&src, &dest).unwrap();
        assert_eq!(fs::read_to_string(dest.join("l")).unwrap(), "F");
        assert_eq!(fs::read_to_string(dest.join("old")).unwrap(), "O");
        assert!(copy_tree(&tmp.path().join("missing"), &dest).is_err());
    }
}
