//! Fuzz targets (bolero): short random runs in every `cargo test`, long coverage-guided runs
//! with `cargo bolero test fuzz::<target> -p shared --features test-util --toolchain nightly`
//! (see the README's Limits). Each checks that hostile input never panics, never hangs, and never
//! reaches a 5xx.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use shared::spec::{self, Overrides};
use shared::testing::TestPlane;

use crate::api::{As, call, router};

/// Words task files are made of, so that random input reaches past the parser into the
/// validator: keys, values, and the YAML that makes nesting, anchors and flow collections.
const WORDS: &[&str] = &[
    "name: ",
    "run: ",
    "setup: ",
    "envs:",
    "secrets:",
    "resources:",
    "num_nodes: ",
    "accelerators: ",
    "cpus: ",
    "memory: ",
    "infra: ",
    "use_spot: ",
    "any_of:",
    "ordered:",
    "job_recovery:",
    "max_restarts_on_errors: ",
    "strategy: ",
    "file_mounts:",
    "workdir: ",
    "image_id: ",
    "disk_size: ",
    "region: ",
    "cloud: ",
    "zone: ",
    "instance_type: ",
    "aws",
    "gcp",
    "local",
    "kubernetes",
    "A100:8",
    "H100",
    "{A100: 2, V100: 1}",
    "4+",
    "16GB",
    "true",
    "false",
    "null",
    "~",
    "4294967295",
    "-1",
    "0.5",
    "1e9",
    "\"x\\0y\"",
    "'q'",
    "s3://bucket/key",
    "gs://b",
    "~/ckpt",
    "/abs",
    "../up",
    "echo hi",
    "$(rm -rf /)",
    "\n",
    "\n  ",
    "\n    ",
    "\n- ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    ": ",
    "&a ",
    "*a",
    "---\n",
    "# c\n",
    "|\n  ",
    ">\n  ",
    "\t",
    "é",
    "\u{1b}[2J",
];

fn yamlish(input: &[u8]) -> String {
    input
        .iter()
        .map(|b| WORDS[usize::from(*b) % WORDS.len()])
        .collect()
}

#[test]
fn spec_load() {
    bolero::check!().for_each(|input: &[u8]| {
        for text in [yamlish(input), String::from_utf8_lossy(input).into_owned()] {
            let started = Instant::now();
            if let Err(e) = spec::load(&text, &Overrides::default()) {
                assert!(!e.to_string().is_empty());
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?} took {:?}",
                text.chars().take(200).collect::<String>(),
                started.elapsed()
            );
        }
    });
}

/// Every route that takes a body or a query, fed random ones, as a user and as a node.
#[test]
fn api_bodies() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (plane, router, job, cluster, token) = runtime.block_on(async {
        let mut plane = TestPlane::new().await;
        let job = plane
            .submit(
                "alice",
                "name: t\nresources:\n  infra: aws/us-east-1\nrun: x\n",
            )
            .await;
        let cluster = job.tasks[0].cluster.clone().unwrap();
        let token = plane.ctx.settings.secret.agent_token(job.id);
        let router = router(&plane);
        (plane, router, job.id, cluster, token)
    });
    let node = format!("/agent/v1/jobs/{job}/clusters/{cluster}/nodes/0");
    // The router and runtime are only used from this thread; a panic fails the test anyway.
    let router = std::panic::AssertUnwindSafe(router);
    let runtime = std::panic::AssertUnwindSafe(runtime);
    bolero::check!().for_each(|input: &[u8]| {
        let text = String::from_utf8_lossy(input);
        let query: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "=&.-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        runtime.block_on(async {
            let requests: [(As<'_>, &str, String, Option<Vec<u8>>); 8] = [
                (
                    As::User("alice"),
                    "POST",
                    "/api/v1/jobs".into(),
                    Some(input.to_vec()),
                ),
                (
                    As::User("alice"),
                    "POST",
                    format!("/api/v1/uploads/url?{query}"),
                    Some(b"{}".to_vec()),
                ),
                (
                    As::User("alice"),
                    "GET",
                    format!("/api/v1/jobs/{job}/logs?{query}"),
                    None,
                ),
                (
                    As::User("alice"),
                    "GET",
                    format!("/api/v1/jobs?{query}"),
                    None,
                ),
                (
                    As::Agent(&token),
                    "POST",
                    format!("{node}/report"),
                    Some(input.to_vec()),
                ),
                (
                    As::Agent(&token),
                    "POST",
                    format!("{node}/logs"),
                    Some(input.to_vec()),
                ),
                (
                    As::Agent(&token),
                    "POST",
                    format!("{node}/logs/urls"),
                    Some(input.to_vec()),
                ),
                (
                    As::Agent(&token),
                    "GET",
                    format!("{node}/work?{query}"),
                    None,
                ),
            ];
            for (who, method, path, body) in requests {
                let (status, answer) = call(&router, who, method, &path, body).await;
                assert!(
                    status != StatusCode::INTERNAL_SERVER_ERROR,
                    "{method} {path}: {answer}"
                );
            }
        });
    });
    drop(plane);
}
