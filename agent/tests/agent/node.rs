//! One agent process on a fresh node folder, talking to a [`Fake`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shared::agent_protocol::{NodeTask, env};

use crate::fake::{CLUSTER, Fake, JOB, RANK, TOKEN};

/// A task with `setup` and `run` and nothing else.
pub fn task(setup: Option<&str>, run: Option<&str>) -> NodeTask {
    NodeTask {
        env: BTreeMap::new(),
        setup: setup.map(Into::into),
        run: run.map(Into::into),
        workdir_archive: None,
        mounts: Vec::new(),
        container: None,
    }
}

/// A `.tar.gz` of `(path, contents)` regular files, in the layout the agent documents.
pub fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub child: Child,
}

impl Node {
    /// Starts the agent against `fake`.
    pub fn start(fake: &Fake) -> Node {
        Node::start_with(fake, &[])
    }

    /// Starts the agent against `fake`, with more (or other) variables.
    pub fn start_with(fake: &Fake, vars: &[(&str, &str)]) -> Node {
        Node::spawn(fake, vars, false)
    }

    /// Starts the agent as an unprivileged user: `nobody` when the tests run as root (root
    /// may read any process's memory), else the tests' own user.
    pub fn start_unprivileged(fake: &Fake) -> Node {
        use std::os::unix::fs::MetadataExt as _;
        let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        Node::spawn(fake, &[], root)
    }

    /// Starts the agent as root on a VM would run, in a throwaway root (a mount namespace
    /// with `/home` and `/mnt` of its own and a copy of `/etc`) where the task user `user` is
    /// made first; `None` where this machine allows no mount namespace.
    pub fn start_as_on_a_vm(fake: &Fake, user: &str) -> Option<Node> {
        let probe = Command::new("unshare").args(["--mount", "true"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED: no mount namespaces here (run as root with util-linux's unshare)");
            return None;
        }
        Some(Node::spawn_with(
            fake,
            &[(env::TASK_USER, user)],
            &Launcher::ThrowawayRoot(user.to_owned()),
        ))
    }

    fn spawn(fake: &Fake, vars: &[(&str, &str)], as_nobody: bool) -> Node {
        let launcher = if as_nobody {
            Launcher::Nobody
        } else {
            Launcher::Direct
        };
        Node::spawn_with(fake, vars, &launcher)
    }

    fn spawn_with(fake: &Fake, vars: &[(&str, &str)], launcher: &Launcher) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let agent = env!("CARGO_BIN_EXE_stratus-agent");
        let mut command = if let Launcher::ThrowawayRoot(user) = launcher {
            // The binary goes where the task user may run it (the agent re-executes itself as
            // that user), as /opt/stratus/bin is on a VM.
            let mut command = Command::new("unshare");
            command.args([
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                THROWAWAY_ROOT,
                "bash",
                agent,
                user,
            ]);
            command
        } else if matches!(launcher, Launcher::Nobody) {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups", agent]);
            command
        } else {
            Command::new(agent)
        };
        let child = command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("RUST_LOG", "trace")
            .env(env::API_URL, format!("http://{}/", fake.addr))
            .env(env::TOKEN, TOKEN)
            .env(env::JOB_ID, JOB.to_string())
            .env(env::CLUSTER, CLUSTER)
            .env(env::NODE_RANK, RANK.to_string())
            .env(env::NODE_DIR, dir.path().join("node"))
            .env(env::POLL_MS, "50")
            .env(env::HEARTBEAT_MS, "50")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap();
        Node { dir, child }
    }

    /// `$STRATUS_NODE_DIR`.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    /// What the agent logged.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().cast_signed())
    }

    /// Waits for the agent to exit, or panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent is still running after {timeout:?}; its log:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the file `name` under the node folder and returns its trimmed contents.
    pub fn wait_for_file(&self, name: &str) -> String {
        let path = self.home().join(name);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(&path)
                && text.ends_with('\n')
            {
                return text.trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {}; agent log:\n{}",
                path.display(),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    /// Whatever happened, nothing of this node outlives the test: the agent leads its group.
    fn drop(&mut self) {
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// How a test starts the agent.
enum Launcher {
    Direct,
    Nobody,
    /// As root in a throwaway root, with this task user.
    ThrowawayRoot(String),
}

/// Makes the throwaway root, the task user `$2`, and runs the agent `$1` from `/mnt`.
const THROWAWAY_ROOT: &str = r#"set -euo pipefail
etc=$(mktemp -d)
cp -a /etc/. "$etc/"
mount --bind "$etc" /etc
mount -t tmpfs tmpfs /home
mount -t tmpfs -o mode=0755 tmpfs /mnt
useradd --create-home --shell /bin/bash "$2"
cp "$1" /mnt/stratus-agent
exec /mnt/stratus-agent
"#;

/// Whether process `pid` is gone (a zombie counts as gone: nothing reaps orphans here).
pub fn gone(pid: &str) -> bool {
    match fs::read_to_string(Path::new("/proc").join(pid).join("stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}
