//! File mounts: local folders linked (MOUNT) and copied (COPY), archives of a folder and of a
//! file, `~` and `/` destinations; an agent given `Run` first prepares the node anyway.

use std::fs;
use std::time::Duration;

use shared::agent_protocol::{MountSource, NodeMount, Report};
use shared::job::Phase;

use crate::fake::{Fake, Mode};
use crate::node::{Node, tar_gz, task};

fn mount(destination: &str, source: MountSource) -> NodeMount {
    NodeMount {
        destination: destination.into(),
        source,
    }
}

const RUN: &str = r#"cat ~/mnt/bucket/b.txt rel/dir/a.txt rel/dir/sub/c.txt ~/x/file.txt
echo written > ~/mnt/bucket/from-run"#;

#[test]
fn links_copies_and_archives_land_where_the_command_looks() {
    let buckets = tempfile::tempdir().unwrap();
    let bucket = buckets.path().join("bucket");
    fs::create_dir_all(&bucket).unwrap();
    fs::write(bucket.join("b.txt"), "bucket\n").unwrap();
    let bucket_path = bucket.display().to_string();

    let mut task = task(None, Some(RUN));
    task.mounts = vec![
        mount(
            "~/mnt/bucket",
            MountSource::LocalFolder {
                path: bucket_path.clone(),
                copy: false,
            },
        ),
        mount(
            "/data/copy",
            MountSource::LocalFolder {
                path: bucket_path,
                copy: true,
            },
        ),
        mount(
            "rel/dir",
            MountSource::Archive {
                key: "folder.tar.gz".into(),
            },
        ),
        mount(
            "~/x/file.txt",
            MountSource::Archive {
                key: "file.tar.gz".into(),
            },
        ),
    ];
    let fake = Fake::start(task);
    {
        let mut state = fake.state();
        state.mode = Mode::RunOnly;
        state.blobs.insert(
            "folder.tar.gz".into(),
            tar_gz(&[("a.txt", "a\n"), ("sub/c.txt", "c\n")]),
        );
        state
            .blobs
            .insert("file.tar.gz".into(), tar_gz(&[("__file__", "file\n")]));
    }
    let mut node = Node::start(&fake);
    assert_eq!(
        node.wait(Duration::from_secs(5)).code(),
        Some(0),
        "{}",
        node.stderr()
    );

    let state = fake.state();
    assert_eq!(
        state.reports(),
        [
            Report::Ready,
            Report::Started { phase: Phase::Run },
            Report::Exited {
                phase: Phase::Run,
                code: 0,
                chunks: None
            },
        ]
    );
    assert_eq!(state.log(Phase::Run), "bucket\na\nc\nfile\n");
    let home = node.home();
    assert_eq!(fs::read_link(home.join("mnt/bucket")).unwrap(), bucket);
    assert_eq!(
        fs::read_to_string(bucket.join("from-run")).unwrap(),
        "written\n"
    );
    let copy = home.join("root/data/copy");
    assert!(!fs::symlink_metadata(&copy).unwrap().is_symlink());
    assert_eq!(fs::read_to_string(copy.join("b.txt")).unwrap(), "bucket\n");
    assert!(!copy.join("from-run").exists(), "a copy is not a link");
    assert_eq!(
        fs::read_to_string(home.join("sky_workdir/rel/dir/sub/c.txt")).unwrap(),
        "c\n"
    );
    assert_eq!(
        fs::read_to_string(home.join("x/file.txt")).unwrap(),
        "file\n"
    );
}

#[test]
fn a_node_that_cannot_be_prepared_fails_the_phase_with_125() {
    let mut task = task(Some("echo never"), Some("echo never"));
    task.mounts = vec![mount(
        "~/in",
        MountSource::LocalFolder {
            path: "/nonexistent/stratus-bucket".into(),
            copy: true,
        },
    )];
    let fake = Fake::start(task);
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(5)).code(), Some(0));
    let state = fake.state();
    assert_eq!(
        state.reports().last(),
        Some(&Report::Exited {
            phase: Phase::Setup,
            code: 125,
            chunks: None
        })
    );
    let log = state.log(Phase::Setup);
    assert!(
        log.starts_with(
            "stratus-agent: cannot prepare the node: file_mounts '~/in': cannot copy into "
        ),
        "{log}"
    );
}

/// SkyPilot's layout on a VM: the commands run as the task user, in its home, with
/// `~/sky_workdir` and absolute destinations at their real path, all the task user's.
#[test]
fn on_a_vm_the_task_user_runs_in_its_home_with_absolute_destinations_at_their_path() {
    let mut task = task(
        Some("id -un > ~/who-ran-setup"),
        Some(
            r#"echo "user=$(id -un) home=$HOME pwd=$PWD"
cat w.txt /mnt/data/file.txt
stat -c 'owner=%U' /mnt/data /mnt/data/file.txt ~/sky_workdir/w.txt
touch /mnt/data/by-the-task && echo "wrote to the mount"
touch /root/x 2>/dev/null || echo "root's files are not the task's""#,
        ),
    );
    task.workdir_archive = Some("wd.tar.gz".into());
    task.mounts = vec![mount(
        "/mnt/data/file.txt",
        MountSource::Archive {
            key: "file.tar.gz".into(),
        },
    )];
    let fake = Fake::start(task);
    {
        let mut state = fake.state();
        state
            .blobs
            .insert("wd.tar.gz".into(), tar_gz(&[("w.txt", "workdir\n")]));
        state
            .blobs
            .insert("file.tar.gz".into(), tar_gz(&[("__file__", "mounted\n")]));
    }
    let Some(mut node) = Node::start_as_on_a_vm(&fake, "sky-task") else {
        return;
    };
    assert_eq!(
        node.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        node.stderr()
    );
    let state = fake.state();
    assert_eq!(
        state.log(Phase::Run),
        "user=sky-task home=/home/sky-task pwd=/home/sky-task/sky_workdir\n\
         workdir\nmounted\n\
         owner=sky-task\nowner=sky-task\nowner=sky-task\n\
         wrote to the mount\n\
         root's files are not the task's\n",
        "{}",
        node.stderr()
    );
}
