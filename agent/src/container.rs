//! `image_id: docker:<image>`: setup and run execute in a container, as SkyPilot runs them.
//!
//! Before the first command the agent (root on the VM) makes sure Docker is there (installing
//! it with the image's package manager when it is not), logs in to a private registry when the
//! task gives `SKYPILOT_DOCKER_USERNAME`, `SKYPILOT_DOCKER_PASSWORD` and
//! `SKYPILOT_DOCKER_SERVER` (the password on standard input, never on a command line), pulls
//! the image, and starts one long-lived container, [`NAME`], with SkyPilot's options: the
//! host's network, the GPUs when the machine has working NVIDIA drivers (`--gpus all`),
//! FUSE, and the task's folders bind-mounted at the same paths (`HOME`, so `~/sky_workdir`
//! and `~` destinations, and every absolute mount destination). Each phase is then
//! `docker exec` of the phase's script in that container, in the workdir, with the task's
//! variables passed by name (`-e NAME`, the value from the client's environment: secrets never
//! appear on a command line). A container left by an earlier agent run is reused.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shared::agent_protocol::Container;
use tracing::{info, warn};

/// The container's name (SkyPilot's).
pub const NAME: &str = "sky_container";

#[derive(Debug, thiserror::Error)]
#[error("docker image '{image}': {what}")]
pub struct ContainerError {
    pub image: String,
    pub what: String,
}

/// Starts the task's container unless it runs already. `folders`: bind-mounted at their path.
pub fn start(container: &Container, folders: &[PathBuf]) -> Result<(), ContainerError> {
    let fail = |what: String| ContainerError {
        image: container.image.clone(),
        what,
    };
    ensure_docker().map_err(fail)?;
    if running() {
        info!(container = NAME, "the task's container runs already");
        return Ok(());
    }
    if let Some(login) = &container.registry {
        let mut child = Command::new("docker")
            .args(["login", "--username", &login.username, "--password-stdin"])
            .arg(&login.server)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run docker login: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{}", login.password.expose());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("docker login: {e}")))?;
        if !out.status.success() {
            return Err(fail(format!(
                "docker login to {} as {} failed: {}",
                login.server,
                login.username,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    docker(&["pull", &container.image]).map_err(fail)?;
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        NAME,
        "--net=host",
        "--cap-add=SYS_ADMIN",
        "--cap-add=SYS_RESOURCE",
        "--security-opt=apparmor:unconfined",
        "-e",
        "LC_ALL=C.UTF-8",
        "-e",
        "LANG=C.UTF-8",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if Path::new("/dev/fuse").exists() {
        args.push("--device=/dev/fuse".into());
    }
    if gpus_work() {
        args.extend(["--gpus".into(), "all".into()]);
    }
    for folder in folders {
        let folder = folder.display();
        args.extend(["-v".into(), format!("{folder}:{folder}")]);
    }
    args.extend([
        "--entrypoint".into(),
        "/bin/sh".into(),
        container.image.clone(),
        "-c".into(),
        "sleep infinity".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args).map_err(fail)?;
    info!(container = NAME, image = %container.image, "started the task's container");
    Ok(())
}

/// `docker exec` of `script` in the container, in `workdir`, with the variables `names`
/// (their values come from the command's own environment).
pub fn exec<'a>(
    mut command: Command,
    workdir: &Path,
    names: impl IntoIterator<Item = &'a str>,
    script: &Path,
) -> Command {
    command.args(["exec", "-i", "-w"]).arg(workdir);
    for name in names {
        command.args(["-e", name]);
    }
    command.arg(NAME).arg("/bin/bash").arg(script);
    command
}

/// Stops the container's commands as the agent stops its own: SIGTERM to every process in
/// it (`docker exec` passes no signal on), up to 10 s to finish (a Spot job saving its
/// checkpoint), then the container is removed.
pub fn stop() {
    if !running() {
        return;
    }
    let _ = docker(&["exec", NAME, "/bin/sh", "-c", "kill -TERM -1"]);
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        // `docker top` lists a header and the container's processes: the idle `sleep` alone
        // means the commands are gone.
        let busy = Command::new("docker")
            .args(["top", NAME])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).lines().count() > 2
            });
        if !busy {
            break;
        }
    }
    if let Err(e) = docker(&["rm", "-f", NAME]) {
        warn!(error = %e, "cannot remove the task's container");
    }
}

fn running() -> bool {
    Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", NAME])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "true")
}

/// Docker, installed with the image's package manager when missing (Amazon Linux: dnf;
/// Debian and Ubuntu: apt-get), and its daemon started.
fn ensure_docker() -> Result<(), String> {
    if docker(&["version"]).is_ok() {
        return Ok(());
    }
    info!("installing docker");
    let script = "if command -v dnf >/dev/null; then dnf install -y -q docker; \
                  elif command -v apt-get >/dev/null; then apt-get update -qq && \
                  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; \
                  else echo 'no dnf or apt-get to install docker with' >&2; exit 1; fi; \
                  systemctl start docker 2>/dev/null || true";
    let out = Command::new("bash")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("cannot install docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot install docker: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    docker(&["version"]).map_err(|e| format!("docker does not answer after installing: {e}"))
}

/// Whether the machine's NVIDIA driver works (then the container gets the GPUs).
fn gpus_work() -> bool {
    Command::new("nvidia-smi")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn docker(args: &[&str]) -> Result<(), String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "docker {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
