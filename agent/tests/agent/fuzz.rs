//! Fuzz targets (bolero): short random runs in every `cargo test`, long coverage-guided runs
//! with `cargo bolero test fuzz::<target> -p agent --toolchain nightly` (see the README's
//! Limits).

use std::io::Write as _;
use std::time::{Duration, Instant};

use agent::plan::{Progress, decide, next_poll};
use agent::prepare::{unpack_folder, unpack_mount};
use flate2::Compression;
use flate2::write::GzEncoder;
use shared::agent_protocol::{LogUrls, WorkAnswer};

/// Whatever the control plane (or something posing as it) answers, the agent decodes it or
/// refuses it, and its plan is one of its rules.
#[test]
fn protocol() {
    bolero::check!().for_each(|input: &[u8]| {
        if let Ok(answer) = serde_json::from_slice::<WorkAnswer>(input) {
            for busy in [false, true] {
                let progress = Progress {
                    busy,
                    ..Progress::default()
                };
                let _ = decide(&progress, &answer.work);
            }
        }
        let _ = serde_json::from_slice::<LogUrls>(input);
        let quiet = u32::from(input.first().copied().unwrap_or(0));
        let delay = next_poll(
            false,
            quiet,
            Duration::from_secs(2),
            Duration::from_secs(30),
        );
        assert!(delay <= Duration::from_secs(30));
    });
}

/// Path parts hostile archives use.
const PARTS: &[&str] = &[
    "a",
    "b",
    "..",
    ".",
    "",
    "/",
    "/tmp",
    "__file__",
    "lib",
    "x.py",
    "../../outside",
];

/// A `.tar.gz` whose entries (files, folders, symlinks, hard links) are spelt by `input`,
/// paths and link targets written raw into the headers (no checks a builder would make).
fn archive(input: &[u8], outside: &str) -> Vec<u8> {
    let mut tar = Vec::new();
    for entry in input.chunks(4) {
        let pick = |i: usize| entry.get(i).copied().unwrap_or(0) as usize;
        let path = [PARTS[pick(1) % PARTS.len()], PARTS[pick(2) % PARTS.len()]].join("/");
        let target = if pick(3) % 3 == 0 {
            outside.to_owned()
        } else {
            PARTS[pick(3) % PARTS.len()].to_owned()
        };
        let mut header = tar::Header::new_gnu();
        let kind = match pick(0) % 4 {
            0 => tar::EntryType::Regular,
            1 => tar::EntryType::Directory,
            2 => tar::EntryType::Symlink,
            _ => tar::EntryType::Link,
        };
        header.set_entry_type(kind);
        header.set_mode(0o755);
        let body: &[u8] = if kind == tar::EntryType::Regular {
            b"data"
        } else {
            b""
        };
        header.set_size(body.len() as u64);
        let name = &mut header.as_old_mut().name;
        let bytes = path.as_bytes();
        name[..bytes.len().min(99)].copy_from_slice(&bytes[..bytes.len().min(99)]);
        let link = &mut header.as_old_mut().linkname;
        let bytes = target.as_bytes();
        link[..bytes.len().min(99)].copy_from_slice(&bytes[..bytes.len().min(99)]);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Nothing an archive holds lands outside the folder it is unpacked into.
#[test]
fn archive_unpacking() {
    bolero::check!().for_each(|input: &[u8]| {
        let root = tempfile::tempdir().unwrap();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let bytes = archive(input, outside.to_str().unwrap());
        let path = root.path().join("archive.tar.gz");
        std::fs::write(&path, &bytes).unwrap();
        let started = Instant::now();
        let _ = unpack_folder(&path, &root.path().join("folder"));
        let _ = unpack_mount(&path, &root.path().join("mount/x"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let left: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
        assert!(left.is_empty(), "an entry escaped: {left:?}");
        for entry in std::fs::read_dir(root.path()).unwrap().flatten() {
            let name = entry.file_name();
            assert!(
                ["outside", "archive.tar.gz", "folder", "mount"].contains(&name.to_str().unwrap()),
                "an entry escaped to {name:?}"
            );
        }
    });
}
