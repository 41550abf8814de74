//! What a task cannot do to its node's agent: read the job's token from the agent's process,
//! or make a file mount land outside the node through a symlink its workdir brought; and what
//! it can (a script longer than one argument may be).

use std::fmt::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use shared::agent_protocol::{MountSource, NodeMount, Report};
use shared::job::Phase;

use crate::fake::{Fake, TOKEN};
use crate::node::{Node, task};

#[test]
fn the_command_cannot_read_the_agents_token() {
    // The agent is the command's parent; its environment holds the token.
    let run = r#"if (tr '\0' '\n' < /proc/$PPID/environ) >/dev/null 2>&1; then echo readable; else echo unreadable; fi
(tr '\0' '\n' < /proc/$PPID/environ) 2>/dev/null | grep -c STRATUS_AGENT_TOKEN || true
(cat /proc/$PPID/mem) >/dev/null 2>&1 && echo mem-readable || echo mem-unreadable"#;
    let fake = Fake::start(task(None, Some(run)));
    let mut node = Node::start_unprivileged(&fake);
    assert_eq!(
        node.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        node.stderr()
    );
    let log = fake.state().log(Phase::Run);
    assert_eq!(log, "unreadable\n0\nmem-unreadable\n", "{}", node.stderr());
    assert!(!log.contains(TOKEN));
}

#[test]
fn a_script_longer_than_an_argument_runs() {
    // Linux refuses a single argument over 128 KiB; the script goes through a file.
    let mut run = String::new();
    for i in 0..6000 {
        let _ = writeln!(
            run,
            ": padding line {i} of a long generated script ................"
        );
    }
    run.push_str("echo done\n");
    assert!(run.len() > 200 * 1024);
    let fake = Fake::start(task(None, Some(&run)));
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(10)).code(), Some(0));
    assert_eq!(fake.state().log(Phase::Run), "done\n");
}

#[test]
fn a_mount_through_a_symlink_the_workdir_brought_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    // A workdir holding `escape -> <outside>`.
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    builder
        .append_link(&mut header, "escape", outside.path())
        .unwrap();
    let workdir = builder.into_inner().unwrap().finish().unwrap();
    let file = {
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "__file__", &b"owned"[..])
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    };
    let mut task = task(Some("echo never"), Some("echo never"));
    task.workdir_archive = Some("uploads/wd.tar.gz".into());
    task.mounts = vec![NodeMount {
        destination: "escape/planted".into(),
        source: MountSource::Archive {
            key: "uploads/file.tar.gz".into(),
        },
    }];
    let fake = Fake::start(task);
    {
        let mut state = fake.state();
        state.blobs.insert("uploads/wd.tar.gz".into(), workdir);
        state.blobs.insert("uploads/file.tar.gz".into(), file);
    }
    let mut node = Node::start(&fake);
    assert_eq!(node.wait(Duration::from_secs(10)).code(), Some(0));
    let state = fake.state();
    assert_eq!(
        state.reports().last(),
        Some(&Report::Exited {
            phase: Phase::Setup,
            code: 125,
            chunks: None
        })
    );
    assert!(
        state
            .log(Phase::Setup)
            .contains("passes through a symbolic link"),
        "{}",
        state.log(Phase::Setup)
    );
    assert!(
        !outside.path().join("planted").exists(),
        "the mount escaped"
    );
}
