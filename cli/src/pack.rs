//! `.tar.gz` archives of local paths (workdirs, local file mounts), in the layout the node
//! agent unpacks: a folder's entries relative to the folder; a single file as one entry named
//! `__file__` (see the agent's `prepare` module).

use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

/// Packs `path` (a file or a folder; symlinks are followed) into an archive in memory.
pub fn archive(path: &Path) -> anyhow::Result<Vec<u8>> {
    let encoder = GzEncoder::new(Vec::new(), Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(true);
    if path.is_dir() {
        builder.append_dir_all(".", path)?;
    } else {
        builder.append_path_with_name(path, agent::prepare::FILE_ENTRY)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_files_round_trip_through_the_agents_unpacking() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("lib")).unwrap();
        std::fs::write(src.path().join("a.py"), "print(1)").unwrap();
        std::fs::write(src.path().join("lib/b.py"), "x = 2").unwrap();
        let out = tempfile::tempdir().unwrap();
        let archive_path = out.path().join("a.tar.gz");
        std::fs::write(&archive_path, archive(src.path()).unwrap()).unwrap();
        let dest = out.path().join("dest");
        agent::prepare::unpack_folder(&archive_path, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("lib/b.py")).unwrap(),
            "x = 2"
        );

        std::fs::write(&archive_path, archive(&src.path().join("a.py")).unwrap()).unwrap();
        let file_dest = out.path().join("copied.py");
        agent::prepare::unpack_mount(&archive_path, &file_dest).unwrap();
        assert_eq!(std::fs::read_to_string(file_dest).unwrap(), "print(1)");
    }
}
