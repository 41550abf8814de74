//! A temporary `$STRATUS_HOME` with its own local control plane, driven through the real
//! `stratus` binary. Dropping it stops the control plane and kills every node process it left.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::text;

pub struct Home {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Home {
    /// A fresh home whose control plane sweeps every 200 ms.
    pub fn new() -> Self {
        Self::with_env(&[])
    }

    /// A fresh home whose commands (and so its control plane) also get `env`.
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "control_plane:\n  poll_interval_ms: 200\n  heartbeat_timeout_secs: 20\n",
        )
        .unwrap();
        Self {
            dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// The `$STRATUS_HOME` folder.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `GET <path>` on this home's control plane with its user token: status and body.
    pub fn api_get(&self, path: &str) -> (u16, Vec<u8>) {
        self.api_call("GET", path, None)
    }

    /// `PUT <path>` with `body`.
    pub fn api_put(&self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.api_call("PUT", path, Some(body))
    }

    /// `POST <path>` with a JSON `body`.
    pub fn api_post(&self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.api_call("POST", path, Some(body))
    }

    fn api_call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Vec<u8>) {
        let port = std::fs::read_to_string(self.path().join("api/port")).unwrap();
        // The file holds the token's bytes; the API takes them in hex.
        let token = hex::encode(std::fs::read(self.path().join("api/token")).unwrap());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let url = format!("http://127.0.0.1:{}{path}", port.trim());
        let auth = format!("Bearer {token}");
        let sent = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            ("PUT", body) => agent
                .put(&url)
                .header("Authorization", &auth)
                .send(body.unwrap_or_default()),
            (_, body) => agent
                .post(&url)
                .header("Authorization", &auth)
                .content_type("application/json")
                .send(body.unwrap_or_default()),
        };
        // A control plane killed mid-request answers nothing: status 0.
        let Ok(mut response) = sent else {
            return (0, Vec::new());
        };
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap();
        (status, body)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stratus"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("USER", "tester")
            .env("STRATUS_HOME", self.dir.path())
            .current_dir(self.dir.path());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stratus")
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.command(args);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("run stratus")
    }

    /// Runs `stratus` with `env` added, answering `y` to a question as a user would, killed
    /// after `timeout` (then `None`).
    pub fn run_timeout(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<Output> {
        let mut command = self.command(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run stratus");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = std::io::Write::write_all(&mut stdin, b"y\n");
        }
        // Read while it runs, so that a long output never fills its pipe and stalls it.
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }

    /// Runs `stratus` with a pseudo-terminal as its stdout and stderr (and a colour `TERM`), as
    /// on a user's terminal; returns what it wrote there.
    pub fn run_on_pty(&self, args: &[&str]) -> String {
        use std::io::Read as _;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let mut command = self.command(args);
        command
            .env("TERM", "xterm-256color")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(pty.slave));
        let mut child = command.spawn().expect("run stratus");
        // Only the child holds the terminal now: reading ends (EIO) once it exits.
        drop(command);
        let mut master = std::fs::File::from(pty.master);
        let mut output = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = master.read(&mut buffer) {
            if n == 0 {
                break;
            }
            output.extend_from_slice(&buffer[..n]);
        }
        child.wait().expect("wait");
        text(&output)
    }

    /// Writes a file in the home and returns its path.
    pub fn file(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// `jobs launch -y -d`, returning the job ID.
    pub fn launch_detached(&self, file: &str, extra: &[&str]) -> u64 {
        let mut args = vec!["jobs", "launch", "-y", "-d"];
        args.extend_from_slice(extra);
        args.push(file);
        let out = self.run(&args);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("Managed Job ID: "))
            .and_then(|id| id.trim().parse().ok())
            .unwrap_or_else(|| panic!("no job ID in: {stdout}"))
    }

    /// The job as `jobs queue --json` shows it.
    pub fn job(&self, id: u64) -> Value {
        let out = self.run(&["jobs", "queue", "-a", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        jobs.into_iter()
            .find(|j| j["id"] == id)
            .unwrap_or_else(|| panic!("job {id} is not in the queue"))
    }

    /// Waits until the job's status is one of `wanted`, and returns the job.
    pub fn wait_status(&self, id: u64, wanted: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id);
            if wanted.iter().any(|w| job["status"] == *w) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not reach {wanted:?} in {timeout:?}; it is {}\n{}",
                job["status"],
                self.diagnosis(id)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What a failed wait prints: the job's controller log, the queue, and the end of the
    /// control plane's own log (a race shows there, not in the job's lines).
    fn diagnosis(&self, id: u64) -> String {
        let queue = text(&self.run(&["jobs", "queue", "-a"]).stdout);
        let server =
            std::fs::read_to_string(self.path().join("api/server.log")).unwrap_or_default();
        let tail: Vec<&str> = server.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "controller log:\n{}\nqueue:\n{queue}\nserver log (last 60 lines):\n{}",
            self.controller_log(id),
            tail.join("\n")
        )
    }

    /// The job's output so far, every attempt's, as `jobs logs --no-follow --all-attempts`
    /// prints it but with plain line prefixes ([`crate::plain_prefixes`]).
    pub fn logs(&self, id: u64) -> String {
        crate::plain_prefixes(&text(
            &self
                .run(&[
                    "jobs",
                    "logs",
                    "--no-follow",
                    "--all-attempts",
                    &id.to_string(),
                ])
                .stdout,
        ))
    }

    pub fn controller_log(&self, id: u64) -> String {
        text(
            &self
                .run(&[
                    "jobs",
                    "logs",
                    "--controller",
                    "--no-follow",
                    &id.to_string(),
                ])
                .stdout,
        )
    }

    /// Waits until the controller log mentions `text` (lines are appended just after the
    /// state changes they describe), and returns the log.
    pub fn wait_controller(&self, id: u64, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.controller_log(id);
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the controller log never said {text:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Live processes started for this home's local clusters (found by their environment).
    pub fn node_processes(&self) -> Vec<i32> {
        let marker = format!(
            "STRATUS_NODE_DIR={}",
            self.dir.path().join("local").display()
        );
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let zombie = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if !zombie
                && environ
                    .split(|b| *b == 0)
                    .any(|v| v.starts_with(marker.as_bytes()))
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Waits until no node process of this home is left.
    pub fn wait_no_nodes(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.node_processes().is_empty() {
            assert!(
                Instant::now() < deadline,
                "node processes left behind: {:?}",
                self.node_processes()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The clusters launched for job `id`, from its controller log ("Cluster launched: X").
    pub fn launched_clusters(&self, id: u64) -> Vec<String> {
        let mut found: Vec<String> = self
            .controller_log(id)
            .lines()
            .filter_map(|l| l.split("Cluster launched: ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        found.dedup();
        found
    }

    /// The local cloud's cluster folders (one per cluster not yet torn down).
    pub fn cluster_folders(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("local/clusters"))
            .map(|e| e.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The control plane's pid.
    pub fn server_pid(&self) -> i32 {
        let info: Value = serde_json::from_slice(
            &std::fs::read(self.dir.path().join("api/server.json")).unwrap(),
        )
        .unwrap();
        i32::try_from(info["pid"].as_i64().unwrap()).unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.run(&["api", "stop"]);
        for pid in self.node_processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
    }
}

/// `examples/<name>` in the repository.
pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}
