//! The AWS emulator the `aws` tests run against: its SDK configuration and unique names.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;

/// The SDK configuration for the emulator at `AWS_ENDPOINT_URL`, with its endpoint. Panics with
/// what to do when the variable is unset: these tests must not pass without running.
pub async fn sdk_config() -> (SdkConfig, String) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !endpoint.is_empty(),
        "AWS_ENDPOINT_URL is not set: the S3 and EventBridge tests need an AWS emulator. Run \
         scripts/test (it starts moto), or start moto or LocalStack and export \
         AWS_ENDPOINT_URL=http://127.0.0.1:4566"
    );
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(
            aws_config::meta::region::RegionProviderChain::default_provider().or_else("us-east-1"),
        );
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        // Emulators accept any credentials; never fall through to a real profile.
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "stratus-tests",
        ));
    }
    (loader.load().await, endpoint)
}

/// Tells apart the resources of one test process.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this process or another) uses: lowercase, digits and `-`, at most
/// 63 characters (valid for buckets, queues, buses, schedule groups).
pub fn unique(kind: &str) -> String {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "stratus-{kind}-{}-{stamp}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
