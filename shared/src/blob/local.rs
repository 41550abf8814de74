//! Blob storage in a folder: each key is a file under the root.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{BlobError, BlobStore, Bounded, check_key};

/// A folder standing in for a bucket. Writes go to a temporary file and are renamed into place,
/// so a reader never sees half an object.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn backend(key: &str, e: std::io::Error) -> BlobError {
    BlobError::Backend {
        key: key.to_owned(),
        source: Box::new(e),
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .expect("blob write task")
        .map_err(|e| backend(&key, e))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            // As in S3: a "folder" or a path through a file is no object.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::IsADirectory
                        | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(backend(key, e)),
        }
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<(), BlobError> {
        let path = self.path(key)?;
        let (key, source) = (key.to_owned(), source.to_owned());
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Copied beside the target, then renamed: a reader never sees half an object.
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            std::fs::copy(&source, &tmp)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .expect("blob write task")
        .map_err(|e| backend(&key, e))
    }

    async fn get_at_most(&self, key: &str, max: usize) -> Result<Option<Bounded>, BlobError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() && meta.len() > max as u64 => {
                return Ok(Some(Bounded::TooLarge(meta.len())));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(backend(key, e)),
        }
        Ok(self.get(key).await?.map(Bounded::Data))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            // Walk only the folder the prefix names, not the whole store.
            let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
            let start = if dir_part.is_empty() {
                root.clone()
            } else {
                root.join(dir_part)
            };
            let mut keys = Vec::new();
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(backend(&prefix, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| backend(&prefix, e))?;
                    let path = entry.path();
                    if path.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().replace('\\', "/");
                    if key.starts_with(&prefix) && !key.contains(".tmp-") {
                        keys.push(key);
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })
        .await
        .expect("blob list task")
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        for key in self.list(prefix).await? {
            match tokio::fs::remove_file(self.root.join(&key)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(backend(&key, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobStore::new(dir.path());
        store.put("jobs/1/a", b"one".to_vec()).await.unwrap();
        store.put("jobs/1/sub/b", b"two".to_vec()).await.unwrap();
        store.put("jobs/2/a", b"three".to_vec()).await.unwrap();
        assert_eq!(
            store.get("jobs/1/a").await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(store.get("jobs/9").await.unwrap(), None);
        assert_eq!(
            store.list("jobs/1/").await.unwrap(),
            vec!["jobs/1/a", "jobs/1/sub/b"]
        );
        store.delete_prefix("jobs/1/").await.unwrap();
        assert!(store.list("jobs/1/").await.unwrap().is_empty());
        assert_eq!(store.list("jobs/").await.unwrap(), vec!["jobs/2/a"]);
        assert!(store.put("../escape", vec![]).await.is_err());
        assert!(store.put("/abs", vec![]).await.is_err());
    }
}
