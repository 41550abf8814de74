//! `image_id: docker:<image>`: the agent logs in with the password on standard input, pulls,
//! starts one container with the host's network, the GPUs and the task's folders, and runs
//! each phase in it with the task's variables passed by name. `docker` and `nvidia-smi` are
//! stand-ins on `PATH` that record what they were asked (and run the phase's script here).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use shared::agent_protocol::{Container, RegistryLogin};
use shared::job::Phase;
use shared::spec::Secret;

use crate::fake::Fake;
use crate::node::{Node, task};

/// Records every call in `$0.log`; `exec` runs the script the way the container would.
const DOCKER: &str = r#"#!/bin/bash
log="$(dirname "$0")/docker.log"
echo "docker $*" >>"$log"
running="$(dirname "$0")/running"
case "$1" in
  version|pull) exit 0 ;;
  run) touch "$running" ;;
  rm) rm -f "$running" ;;
  inspect) [ -f "$running" ] && echo true ;;
  top) printf 'PID CMD\n1 sleep\n' ;;
  login) read -r password; echo "password on stdin: $password" >>"$log" ;;
  exec)
    shift
    while [ $# -gt 0 ]; do
      case "$1" in
        -i) shift ;;
        -w) cd "$2"; shift 2 ;;
        -e) echo "var $2=${!2}" >>"$log"; shift 2 ;;
        *) break ;;
      esac
    done
    shift
    # The stop's signal to every process in the container: recorded, never sent here.
    case "$*" in *kill*) echo "signalled the container: $*" >>"$log"; exit 0 ;; esac
    exec "$@"
    ;;
esac
"#;

#[test]
fn a_docker_task_runs_in_its_container_with_the_tasks_variables() {
    let bin = tempfile::tempdir().unwrap();
    for (name, text) in [("docker", DOCKER), ("nvidia-smi", "#!/bin/sh\nexit 0\n")] {
        let path = bin.path().join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut task = task(None, Some("echo \"in the container: $GREETING\""));
    task.env.insert("GREETING".into(), "hello".into());
    task.env
        .insert("SKYPILOT_NODE_IPS".into(), "10.0.0.1\n10.0.0.2".into());
    task.container = Some(Container {
        image: "registry.example.com/team/trainer:1".into(),
        registry: Some(RegistryLogin {
            server: "registry.example.com".into(),
            username: "robot".into(),
            password: Secret::new("hunter2"),
        }),
    });
    let fake = Fake::start(task);
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut node = Node::start_with(&fake, &[("PATH", &path)]);
    assert_eq!(
        node.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        node.stderr()
    );
    assert_eq!(
        fake.state().log(Phase::Run),
        "in the container: hello\n",
        "{}",
        node.stderr()
    );
    let calls = fs::read_to_string(bin.path().join("docker.log")).unwrap();
    let home = node.home().display().to_string();
    for expected in [
        "docker login --username robot --password-stdin registry.example.com".to_owned(),
        "password on stdin: hunter2".to_owned(),
        "docker pull registry.example.com/team/trainer:1".to_owned(),
        "--name sky_container --net=host".to_owned(),
        "--gpus all".to_owned(),
        format!("-v {home}:{home}"),
        "--entrypoint /bin/sh registry.example.com/team/trainer:1 -c sleep infinity".to_owned(),
        format!("docker exec -i -w {home}/sky_workdir"),
        "var GREETING=hello".to_owned(),
        format!("var HOME={home}"),
        "sky_container /bin/bash".to_owned(),
        // The stopping agent stops the container's commands, then removes it.
        "signalled the container: /bin/sh -c kill -TERM -1".to_owned(),
        "docker rm -f sky_container".to_owned(),
    ] {
        assert!(calls.contains(&expected), "{expected}:\n{calls}");
    }
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("docker") && l.contains("hunter2")),
        "the password never on a command line:\n{calls}"
    );
}
