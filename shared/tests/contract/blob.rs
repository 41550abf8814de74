//! The blob store's contract suite, run against every `BlobStore` adapter: a folder
//! (`LocalBlobStore`) and (feature `aws`) an S3 bucket on the emulator at `AWS_ENDPOINT_URL`
//! (`S3BlobStore`), each test on a bucket of its own.
//!
//! Every test gets two stores over the same backend whose names share a string prefix
//! (`run-1` and `run-10`: two folders, or two prefixes of one bucket), so a store that leaks
//! into its neighbour's keys fails.

/// One `#[tokio::test]` per suite function, each on fresh stores from `$fixture`.
macro_rules! blob_contract {
    (@tests $fixture:path: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let fixture = $fixture().await;
                super::suite::$name(&fixture.store, &fixture.sibling).await;
                fixture.cleanup().await;
            }
        )*
    };
    ($fixture:path) => {
        blob_contract!(@tests $fixture:
            put_get_and_replace,
            missing_is_none,
            list_by_prefix_is_nested_and_sorted,
            stores_do_not_see_each_other,
            delete_prefix_deletes_only_the_prefix,
            delete_prefix_over_a_thousand,
            invalid_keys_are_rejected,
            binary_content_round_trips,
        );
    };
}

/// The contract. Each function gets an empty store and an empty sibling store.
mod suite {
    use std::sync::Arc;

    use shared::blob::{BlobError, BlobStore};
    use tokio::task::JoinSet;

    async fn put<B: BlobStore>(store: &B, key: &str, content: &str) {
        store
            .put(key, content.as_bytes().to_vec())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}: {:?}", std::error::Error::source(&e)));
    }

    async fn text<B: BlobStore>(store: &B, key: &str) -> Option<String> {
        let bytes = store.get(key).await.unwrap();
        bytes.map(|b| String::from_utf8(b).unwrap())
    }

    pub async fn put_get_and_replace<B: BlobStore>(store: &B, _: &B) {
        put(store, "jobs/1/report", "one").await;
        assert_eq!(text(store, "jobs/1/report").await.as_deref(), Some("one"));
        put(store, "jobs/1/report", "two, longer").await;
        assert_eq!(
            text(store, "jobs/1/report").await.as_deref(),
            Some("two, longer")
        );
        put(store, "jobs/1/report", "3").await;
        assert_eq!(text(store, "jobs/1/report").await.as_deref(), Some("3"));
        assert_eq!(store.list("").await.unwrap(), vec!["jobs/1/report"]);
    }

    pub async fn missing_is_none<B: BlobStore>(store: &B, sibling: &B) {
        assert_eq!(store.get("jobs/404/report").await.unwrap(), None);
        put(store, "jobs/1/a", "a").await;
        assert_eq!(sibling.get("jobs/1/a").await.unwrap(), None);
        assert!(store.list("jobs/404/").await.unwrap().is_empty());
    }

    pub async fn list_by_prefix_is_nested_and_sorted<B: BlobStore>(store: &B, _: &B) {
        for key in [
            "jobs/2/a",
            "jobs/1/sub/deeper/c",
            "jobs/10/x",
            "jobs/1/sub/b",
            "jobs/1/a",
            "jobs/1/logs/0-9",
            "jobs/1/logs/0-10",
            "uploads/u",
        ] {
            put(store, key, key).await;
        }
        assert_eq!(
            store.list("jobs/1/").await.unwrap(),
            vec![
                "jobs/1/a",
                "jobs/1/logs/0-10",
                "jobs/1/logs/0-9",
                "jobs/1/sub/b",
                "jobs/1/sub/deeper/c",
            ]
        );
        assert_eq!(
            store.list("jobs/1/sub/").await.unwrap(),
            vec!["jobs/1/sub/b", "jobs/1/sub/deeper/c"]
        );
        // A prefix is a string prefix, not a folder: `jobs/1` also matches `jobs/10/...`.
        let all_1 = store.list("jobs/1").await.unwrap();
        assert_eq!(all_1.len(), 6, "{all_1:?}");
        assert_eq!(all_1.last().map(String::as_str), Some("jobs/10/x"));
        assert_eq!(
            store.list("jobs/1/lo").await.unwrap(),
            vec!["jobs/1/logs/0-10", "jobs/1/logs/0-9"]
        );
        let everything = store.list("").await.unwrap();
        assert_eq!(everything.len(), 8);
        assert!(everything.is_sorted(), "{everything:?}");
        assert_eq!(everything.last().map(String::as_str), Some("uploads/u"));
        assert!(store.list("nothing/").await.unwrap().is_empty());
    }

    pub async fn stores_do_not_see_each_other<B: BlobStore>(store: &B, sibling: &B) {
        put(store, "jobs/1/a", "mine").await;
        put(sibling, "jobs/1/a", "theirs").await;
        put(sibling, "jobs/1/b", "theirs").await;
        assert_eq!(text(store, "jobs/1/a").await.as_deref(), Some("mine"));
        assert_eq!(text(sibling, "jobs/1/a").await.as_deref(), Some("theirs"));
        assert_eq!(store.get("jobs/1/b").await.unwrap(), None);
        assert_eq!(store.list("").await.unwrap(), vec!["jobs/1/a"]);
        assert_eq!(store.list("jobs/").await.unwrap(), vec!["jobs/1/a"]);
        assert_eq!(
            sibling.list("").await.unwrap(),
            vec!["jobs/1/a", "jobs/1/b"]
        );
        store.delete_prefix("").await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        assert_eq!(
            sibling.list("").await.unwrap().len(),
            2,
            "the sibling keeps its own"
        );
    }

    pub async fn delete_prefix_deletes_only_the_prefix<B: BlobStore>(store: &B, sibling: &B) {
        for key in ["jobs/1/a", "jobs/1/sub/b", "jobs/10/x", "jobs/2/a"] {
            put(store, key, key).await;
        }
        put(sibling, "jobs/1/a", "theirs").await;
        store.delete_prefix("jobs/1/").await.unwrap();
        assert_eq!(store.list("").await.unwrap(), vec!["jobs/10/x", "jobs/2/a"]);
        assert_eq!(store.get("jobs/1/a").await.unwrap(), None);
        assert_eq!(sibling.list("").await.unwrap(), vec!["jobs/1/a"]);
        // Nothing there is fine, and so is deleting again.
        store.delete_prefix("jobs/1/").await.unwrap();
        store.delete_prefix("nothing/").await.unwrap();
        assert_eq!(store.list("").await.unwrap().len(), 2);
    }

    pub async fn delete_prefix_over_a_thousand<B: BlobStore + Clone + 'static>(store: &B, _: &B) {
        // More than one page of listing (1,000) and one batch of deletes (1,000).
        const COUNT: usize = 1_050;
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        let mut puts = JoinSet::new();
        for i in 0..COUNT {
            let (store, limit) = (store.clone(), Arc::clone(&limit));
            puts.spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                store.put(&format!("bulk/{i:05}"), vec![b'x']).await
            });
        }
        while let Some(done) = puts.join_next().await {
            done.unwrap().unwrap();
        }
        put(store, "keep/a", "kept").await;
        let listed = store.list("bulk/").await.unwrap();
        assert_eq!(listed.len(), COUNT);
        assert_eq!(listed[0], "bulk/00000");
        assert_eq!(listed[COUNT - 1], format!("bulk/{:05}", COUNT - 1));
        store.delete_prefix("bulk/").await.unwrap();
        assert!(store.list("bulk/").await.unwrap().is_empty());
        assert_eq!(store.list("").await.unwrap(), vec!["keep/a"]);
    }

    pub async fn invalid_keys_are_rejected<B: BlobStore>(store: &B, _: &B) {
        for key in [
            "",
            "/abs",
            "a//b",
            "trailing/",
            "..",
            "../escape",
            "a/../b",
            "a/./b",
            "a\\b",
            "nul\0",
        ] {
            let err = store.put(key, b"x".to_vec()).await.unwrap_err();
            assert!(
                matches!(&err, BlobError::InvalidKey { key: k, .. } if k == key),
                "put {key:?}: {err:?}"
            );
            assert!(err.to_string().starts_with("invalid blob key"), "{err}");
            let err = store.get(key).await.unwrap_err();
            assert!(
                matches!(err, BlobError::InvalidKey { .. }),
                "get {key:?}: {err:?}"
            );
        }
        assert!(
            store.list("").await.unwrap().is_empty(),
            "nothing was written"
        );
    }

    pub async fn binary_content_round_trips<B: BlobStore>(store: &B, _: &B) {
        // Every byte value, NULs and invalid UTF-8 included, in a 256 KiB object.
        let bytes: Vec<u8> = (0..256 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        store
            .put("jobs/1/workdir.tar.gz", bytes.clone())
            .await
            .unwrap();
        assert_eq!(
            store.get("jobs/1/workdir.tar.gz").await.unwrap(),
            Some(bytes)
        );
        store.put("jobs/1/empty", Vec::new()).await.unwrap();
        assert_eq!(store.get("jobs/1/empty").await.unwrap(), Some(Vec::new()));
        // Keys with spaces and non-ASCII survive too.
        put(store, "jobs/1/my file é+ü", "spaced").await;
        assert_eq!(
            text(store, "jobs/1/my file é+ü").await.as_deref(),
            Some("spaced")
        );
        assert_eq!(
            store.list("jobs/1/").await.unwrap(),
            vec![
                "jobs/1/empty",
                "jobs/1/my file é+ü",
                "jobs/1/workdir.tar.gz"
            ]
        );
    }
}

mod local {
    use shared::blob::LocalBlobStore;
    use tempfile::TempDir;

    pub struct Fixture {
        pub store: LocalBlobStore,
        pub sibling: LocalBlobStore,
        dir: TempDir,
    }

    impl Fixture {
        #[expect(
            clippy::unused_async,
            reason = "the suite awaits every adapter's cleanup"
        )]
        pub async fn cleanup(self) {
            drop(self.dir);
        }
    }

    #[expect(
        clippy::unused_async,
        reason = "the suite awaits every adapter's fixture"
    )]
    pub async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            store: LocalBlobStore::new(dir.path().join("run-1")),
            sibling: LocalBlobStore::new(dir.path().join("run-10")),
            dir,
        }
    }

    blob_contract!(fixture);
}

#[cfg(feature = "aws")]
mod s3 {
    use shared::blob::{BlobError, BlobStore, S3BlobStore};

    use crate::emulator;

    pub struct Fixture {
        pub store: S3BlobStore,
        pub sibling: S3BlobStore,
    }

    impl Fixture {
        pub async fn cleanup(self) {
            // Best effort: a persistent emulator (LocalStack) would otherwise keep the buckets.
            let _ = self.store.delete_prefix("").await;
            let _ = self.sibling.delete_prefix("").await;
            let _ = self
                .store
                .client()
                .delete_bucket()
                .bucket(self.store.bucket())
                .send()
                .await;
        }
    }

    /// Two stores, `run-1/` and `run-10/`, on a new bucket of their own at the emulator.
    pub async fn fixture() -> Fixture {
        let (config, endpoint) = emulator::sdk_config().await;
        let bucket = emulator::unique("blobs");
        let store = S3BlobStore::from_sdk_config(&config, &bucket, "run-1").unwrap();
        let sibling = S3BlobStore::from_sdk_config(&config, &bucket, "run-10/").unwrap();
        store.create_bucket_if_missing().await.unwrap_or_else(|e| {
            panic!(
                "cannot create bucket {bucket} at {endpoint}: {e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        });
        Fixture { store, sibling }
    }

    blob_contract!(fixture);

    #[tokio::test]
    async fn creating_the_bucket_again_is_fine() {
        let f = fixture().await;
        f.store.create_bucket_if_missing().await.unwrap();
        f.sibling.create_bucket_if_missing().await.unwrap();
        f.cleanup().await;
    }

    /// Objects sit under the store's prefix in the bucket; keys come back without it.
    #[tokio::test]
    async fn keys_live_under_the_prefix() {
        let f = fixture().await;
        f.store.put("jobs/1/a", b"a".to_vec()).await.unwrap();
        let listed = f
            .store
            .client()
            .list_objects_v2()
            .bucket(f.store.bucket())
            .send()
            .await
            .unwrap();
        let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert_eq!(keys, vec!["run-1/jobs/1/a"]);
        f.cleanup().await;
    }

    /// A failure names the call, the bucket and the object.
    #[tokio::test]
    async fn errors_name_the_call_and_the_object() {
        let (config, _) = emulator::sdk_config().await;
        let missing = emulator::unique("missing");
        let store = S3BlobStore::from_sdk_config(&config, &missing, "p").unwrap();
        let err = store.put("jobs/1/a", b"a".to_vec()).await.unwrap_err();
        assert!(
            matches!(&err, BlobError::Backend { key, .. } if key == "jobs/1/a"),
            "{err:?}"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            source.starts_with(&format!("S3 PutObject on s3://{missing}/p/jobs/1/a: ")),
            "{source}"
        );
        assert!(source.contains("NoSuchBucket"), "{source}");
    }
}
