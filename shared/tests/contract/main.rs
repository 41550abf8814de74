//! The state table's contract suite, run against every `JobStore` adapter: SQLite in a temporary
//! folder, and (feature `aws`) DynamoDB on the emulator at `AWS_ENDPOINT_URL` (moto, as
//! `scripts/test` starts it, or LocalStack), each test on a table of its own.
//!
//! `suite` holds the generic tests; `contract_suite!` instantiates every one of them per
//! adapter, so the adapters cannot drift apart. Tests that need to reach under an adapter (to
//! corrupt an item) live in the adapter's module here.

mod suite;
// The blob store's contract suite (LocalBlobStore, S3BlobStore), and the EventBridge bus.
mod blob;
#[cfg(feature = "aws")]
mod emulator;
#[cfg(feature = "aws")]
mod eventbridge;

/// One `#[tokio::test]` per suite function, each on a fresh store from `$fixture`.
macro_rules! contract_tests {
    ($fixture:path: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let fixture = $fixture().await;
                crate::suite::$name(&fixture.store).await;
                fixture.cleanup().await;
            }
        )*
    };
}

/// The whole suite, for one adapter.
macro_rules! contract_suite {
    ($fixture:path) => {
        contract_tests!($fixture:
            create_and_get,
            get_missing_is_not_found,
            create_twice_conflicts,
            list_by_owner_pages_newest_first,
            list_active_is_the_unfinished_jobs,
            find_by_name_newest_first,
            transitions_bump_the_version,
            stale_writes_conflict,
            counter_is_sequential_and_atomic,
            an_arrays_jobs_are_stored_together,
            controller_events_keep_their_order,
            racing_updates_one_wins,
            node_facts_are_recorded_once_and_read_per_cluster,
            followers_extend_never_shorten,
            a_claim_is_one_jobs,
            zone_capacity_only_moves_forward,
        );
    };
}

mod sqlite {
    use std::sync::Arc;

    use shared::job::{JobEvent, JobRecord, step};
    use shared::store::{JobReader, JobStore, SqliteStore, StoreError};
    use tempfile::TempDir;

    pub struct Fixture {
        pub store: SqliteStore,
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

    pub async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("home/state.db"))
            .await
            .unwrap();
        Fixture { store, dir }
    }

    contract_suite!(fixture);

    fn raw(store: &SqliteStore) -> rusqlite::Connection {
        rusqlite::Connection::open(store.path()).unwrap()
    }

    async fn stored_job(store: &SqliteStore) -> JobRecord {
        let id = store.next_job_id().await.unwrap();
        store
            .create_job(&JobRecord::test().id(id).tasks(2))
            .await
            .unwrap()
    }

    async fn corrupt_reason(store: &SqliteStore, id: u64) -> String {
        match store.get_job(id).await {
            Err(err @ StoreError::Corrupt { .. }) => {
                assert!(err.to_string().starts_with(&format!("job {id}: ")), "{err}");
                err.to_string()
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreadable_rows_are_corrupt_naming_the_job() {
        let f = fixture().await;
        let job = stored_job(&f.store).await;
        let db = raw(&f.store);

        db.execute("UPDATE jobs SET state = '{oops' WHERE id = 1", [])
            .unwrap();
        let reason = corrupt_reason(&f.store, job.id).await;
        assert!(reason.contains("job state is not valid JSON"), "{reason}");

        db.execute("UPDATE jobs SET format = 7 WHERE id = 1", [])
            .unwrap();
        let reason = corrupt_reason(&f.store, job.id).await;
        assert!(
            reason.contains("format version 7") && reason.contains("upgrade Stratus"),
            "{reason}"
        );

        let job = stored_job(&f.store).await;
        db.execute("DELETE FROM tasks WHERE job_id = 2 AND idx = 1", [])
            .unwrap();
        let reason = corrupt_reason(&f.store, job.id).await;
        assert!(reason.contains("2 tasks but 1 task specs"), "{reason}");
        // A listing that meets a corrupt job says which one.
        let err = f.store.list_jobs(None, None, 10).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { job_id: 2, .. }),
            "{err:?}"
        );
        f.cleanup().await;
    }

    #[tokio::test]
    async fn the_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        // A file left world-readable (by an older version, say) is tightened at open.
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        store.next_job_id().await.unwrap();
        for suffix in ["", "-wal"] {
            let file = dir.path().join(format!("state.db{suffix}"));
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        assert!(matches!(
            store.get_job(u64::MAX).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let f = fixture().await;
        raw(&f.store)
            .pragma_update(None, "user_version", 3)
            .unwrap();
        let err = SqliteStore::open(f.store.path()).await.unwrap_err();
        assert!(err.to_string().contains("open failed"), "{err}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            source.contains("schema version 3") && source.contains("upgrade Stratus"),
            "{source}"
        );
        f.cleanup().await;
    }

    /// Separate connections to one file (as separate processes would have) race the same
    /// transition: the fence holds across connections too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_connections_one_wins() {
        let f = fixture().await;
        let job = stored_job(&f.store).await;
        let mut stores = Vec::new();
        for _ in 0..8 {
            stores.push(SqliteStore::open(f.store.path()).await.unwrap());
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
        let tasks: Vec<_> = stores
            .into_iter()
            .map(|store| {
                let (job, barrier) = (job.clone(), Arc::clone(&barrier));
                tokio::spawn(async move {
                    let next = step(&job, JobEvent::Submitted, job.submitted_at).next;
                    barrier.wait().await;
                    store.update_job(&next, job.fence()).await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(wins, 1);
        assert_eq!(f.store.get_job(job.id).await.unwrap().version, 2);
        f.cleanup().await;
    }

    #[tokio::test]
    async fn reopening_keeps_everything() {
        let f = fixture().await;
        let job = stored_job(&f.store).await;
        let reopened = SqliteStore::open(f.store.path()).await.unwrap();
        assert_eq!(reopened.get_job(job.id).await.unwrap(), job);
        assert_eq!(reopened.next_job_id().await.unwrap(), 2);
        f.cleanup().await;
    }
}

#[cfg(feature = "aws")]
mod dynamo {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use aws_sdk_dynamodb::types::AttributeValue;
    use shared::job::JobRecord;
    use shared::store::{DynamoStore, JobReader, JobStore, StoreError};

    pub struct Fixture {
        pub store: DynamoStore,
    }

    impl Fixture {
        pub async fn cleanup(self) {
            // Best effort: a persistent emulator (LocalStack) would otherwise keep the tables.
            let _ = self.store.delete_table().await;
        }
    }

    /// Tells apart the tables of one test process.
    static SEQ: AtomicU32 = AtomicU32::new(0);

    /// A store on a new table of its own at the emulator in `AWS_ENDPOINT_URL`.
    pub async fn fixture() -> Fixture {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        assert!(
            !endpoint.is_empty(),
            "AWS_ENDPOINT_URL is not set: the DynamoDB contract tests need an AWS emulator. \
             Run scripts/test (it starts moto), or start moto or LocalStack and export \
             AWS_ENDPOINT_URL=http://127.0.0.1:4566"
        );
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(
                aws_config::meta::region::RegionProviderChain::default_provider()
                    .or_else("us-east-1"),
            );
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Emulators accept any credentials; never fall through to a real profile.
            loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "stratus-tests",
            ));
        }
        let config = loader.load().await;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let table = format!(
            "stratus-test-{}-{stamp}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
        store.create_table().await.unwrap_or_else(|e| {
            panic!(
                "cannot create a table at {endpoint}: {e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        });
        Fixture { store }
    }

    contract_suite!(fixture);

    async fn corrupt_reason(store: &DynamoStore, id: u64) -> String {
        match store.get_job(id).await {
            Err(err @ StoreError::Corrupt { .. }) => {
                assert!(err.to_string().starts_with(&format!("job {id}: ")), "{err}");
                err.to_string()
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    async fn set(store: &DynamoStore, id: u64, sk: &str, name: &str, value: AttributeValue) {
        store
            .client()
            .update_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S(format!("JOB#{id}")))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", name)
            .expression_attribute_values(":v", value)
            .send()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn unreadable_items_are_corrupt_naming_the_job() {
        let f = fixture().await;
        let store = &f.store;
        let id = store.next_job_id().await.unwrap();
        store
            .create_job(&JobRecord::test().id(id).tasks(2))
            .await
            .unwrap();

        set(
            store,
            id,
            "META",
            "state",
            AttributeValue::S("{oops".into()),
        )
        .await;
        let reason = corrupt_reason(store, id).await;
        assert!(reason.contains("job state is not valid JSON"), "{reason}");

        set(store, id, "META", "format", AttributeValue::N("7".into())).await;
        let reason = corrupt_reason(store, id).await;
        assert!(
            reason.contains("format version 7") && reason.contains("upgrade Stratus"),
            "{reason}"
        );

        set(
            store,
            id,
            "META",
            "version",
            AttributeValue::S("one".into()),
        )
        .await;
        let reason = corrupt_reason(store, id).await;
        assert!(
            reason.contains("attribute 'version' is not a number"),
            "{reason}"
        );

        let id = store.next_job_id().await.unwrap();
        store
            .create_job(&JobRecord::test().id(id).tasks(2))
            .await
            .unwrap();
        store
            .client()
            .delete_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S(format!("JOB#{id}")))
            .key("sk", AttributeValue::S("TASK#0000".into()))
            .send()
            .await
            .unwrap();
        let reason = corrupt_reason(store, id).await;
        assert!(reason.contains("task item 0 is missing"), "{reason}");
        let err = store.list_jobs(Some("alice"), None, 1).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { job_id: 2, .. }),
            "{err:?}"
        );
        f.cleanup().await;
    }

    /// The access patterns hit the indexes, not scans: the sweep's index holds only the jobs
    /// it must look at (live, or ended but not cleaned up).
    #[tokio::test]
    async fn the_active_index_is_sparse() {
        let f = fixture().await;
        let store = &f.store;
        let id = store.next_job_id().await.unwrap();
        let job = store.create_job(&JobRecord::test().id(id)).await.unwrap();
        let count = || async {
            store
                .client()
                .scan()
                .table_name(store.table())
                .index_name("active")
                .send()
                .await
                .unwrap()
                .count()
        };
        assert_eq!(count().await, 1);
        let cancelled = shared::job::step(
            &job,
            shared::job::JobEvent::CancelRequested,
            job.submitted_at,
        );
        let cancelled = store
            .update_job(&cancelled.next, job.fence())
            .await
            .unwrap();
        assert_eq!(count().await, 1, "ended, but not cleaned up yet");
        let mut cleaned = cancelled.clone();
        cleaned.cleaned_at = Some(job.submitted_at);
        store.update_job(&cleaned, cancelled.fence()).await.unwrap();
        assert_eq!(count().await, 0);
        f.cleanup().await;
    }
}
