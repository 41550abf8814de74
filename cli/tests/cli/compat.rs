//! Every unmodified SkyPilot task file must be accepted by `jobs launch --dry-run`, or rejected
//! with a message naming exactly the unsupported cloud or feature.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{stratus, text};

/// Files rejected on purpose, with the words their error must contain.
const REJECTED: &[(&str, &str)] = &[
    (
        "examples__managed_spot_queued_resource.yaml",
        "TPUs ('tpu-v5litepod-16') are not supported",
    ),
    (
        "examples__tpu__tpu_app.yaml",
        "TPUs ('tpu-v2-8') are not supported",
    ),
    (
        "examples__nebius_infiniband__infiniband.yaml",
        "cloud 'nebius' (Nebius) is not supported",
    ),
    (
        "examples__oci__dataset-mount.yaml",
        "OCI Object Storage buckets are not supported",
    ),
    (
        "examples__pools_batch_inference__pool.yaml",
        "job pools (`sky jobs pool`) are not supported",
    ),
    (
        "examples__serve__spot_policy__dynamic_on_demand_fallback.yaml",
        "services (`sky serve`) are not supported",
    ),
    (
        "llm__llama-4__llama4.yaml",
        "services (`sky serve`) are not supported",
    ),
    (
        "examples__training_network_storage_benchmarks__e2e_disk.yaml",
        "volumes",
    ),
    ("tests__test_yamls__pvc_volume_with_new.yaml", "volumes"),
    (
        "llm__rl-post-training-jobgroup__rlhf-math-jobgroup-cpu.yaml",
        "job groups (`execution: parallel`) are not supported",
    ),
    (
        "llm__train-eval-jobgroup__train-eval-jobgroup.yaml",
        "job groups (`execution: parallel`) are not supported",
    ),
    (
        "tests__test_job_groups__example_job_group.yaml",
        "job groups (`execution: parallel`) are not supported",
    ),
    (
        "tests__test_yamls__test_enable_all_default.yaml",
        "cloud 'kubernetes' (Kubernetes) is not supported",
    ),
];

/// The corpus folder: `$STRATUS_COMPAT_DIR`, else `../shared/compat/skypilot` beside the checkout.
fn corpus() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STRATUS_COMPAT_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "STRATUS_COMPAT_DIR={} is not a folder",
            dir.display()
        );
        return Some(dir);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compat/skypilot");
    beside.is_dir().then_some(beside)
}

/// `--env K=x` / `--secret K=x` for every env or secret the file declares with no value.
fn required_values(path: &PathBuf) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut args = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) else {
            continue;
        };
        for (field, flag) in [("envs", "--env"), ("secrets", "--secret")] {
            if let Some(map) = value.get(field).and_then(|v| v.as_mapping()) {
                for (k, v) in map {
                    if v.is_null() {
                        args.push(format!("{flag}={}=value", k.as_str().unwrap()));
                    }
                }
            }
        }
    }
    args.sort();
    args.dedup();
    args
}

#[test]
fn every_skypilot_file_is_accepted_or_rejected_by_name() {
    let Some(dir) = corpus() else {
        eprintln!("compat: no ../shared/compat/skypilot here, nothing to walk");
        return;
    };
    let rejected: BTreeMap<&str, &str> = REJECTED.iter().copied().collect();
    let home = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());

    let (mut accepted, mut refused, mut wrong) = (0, 0, Vec::new());
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let mut args = vec!["jobs".to_owned(), "launch".into(), "--dry-run".into()];
        args.extend(required_values(path));
        args.push(path.to_str().unwrap().to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = stratus(&args, home.path(), &[]);
        let stderr = text(&out.stderr);
        match rejected.get(name) {
            None if out.status.code() == Some(0) => accepted += 1,
            None => wrong.push(format!(
                "{name}: expected acceptance, got exit {:?}: {stderr}",
                out.status.code()
            )),
            Some(words) if out.status.code() == Some(2) && stderr.contains(words) => refused += 1,
            Some(words) => wrong.push(format!(
                "{name}: expected exit 2 naming \"{words}\", got exit {:?}: {stderr}",
                out.status.code()
            )),
        }
    }
    eprintln!(
        "compat: {accepted} accepted, {refused} rejected as unsupported, {} wrong, of {} files",
        wrong.len(),
        files.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn env_values_keep_the_text_written() {
    let Some(dir) = corpus() else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("llm__verl__multinode.yaml")).unwrap();
    let overrides = shared::spec::Overrides {
        envs: vec![("WANDB_API_KEY".into(), "k".into())],
        ..Default::default()
    };
    let loaded = shared::spec::load(&text, &overrides).unwrap();
    let envs = &loaded.pipeline.tasks[0].envs;
    // PyYAML (YAML 1.1) reads `1e-6` as a string; SkyPilot passes numbers as written.
    assert_eq!(
        envs.get("ACTOR_LR").map(String::as_str),
        Some("1e-6"),
        "{envs:?}"
    );
    assert_eq!(
        envs.get("TOTAL_EPOCHS").map(String::as_str),
        Some("3"),
        "{envs:?}"
    );
}
