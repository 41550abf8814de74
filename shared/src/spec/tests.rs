//! Table-driven spec tests: one line per case, valid files summarised, invalid ones by error.
//!
//! Why one file of this length: the spec's case tables, one line per case, so that a
//! reader sees every rule of the task format side by side.
#![allow(clippy::needless_pass_by_value, clippy::format_push_string)]
// Case tables grow one line at a time; their length is the point.
#![allow(clippy::too_many_lines)]

use std::fmt::Write as _;

use expect_test::{Expect, expect};

use super::*;

/// A one-line-per-task summary of what a file means.
fn summary(loaded: &Loaded) -> String {
    let mut out = format!("job {}\n", loaded.pipeline.name);
    if let Some(cap) = loaded.pipeline.max_cost {
        out.push_str(&format!("max_cost {cap}\n"));
    }
    for t in &loaded.pipeline.tasks {
        out.push_str(&format!("task {} nodes={}", t.name, t.num_nodes));
        if !t.envs.is_empty() {
            out.push_str(&format!(" envs={:?}", t.envs));
        }
        if !t.secrets.is_empty() {
            out.push_str(&format!(" secrets={:?}", t.secrets));
        }
        for c in &t.resources.candidates {
            out.push_str(" | ");
            if c.infra != Infra::default() {
                out.push_str(&format!("infra={} ", c.infra));
            }
            if let Some(a) = &c.accelerators {
                out.push_str(&format!("acc={a} "));
            }
            if let Some(q) = c.cpus {
                out.push_str(&format!("cpus={q} "));
            }
            if let Some(q) = c.memory {
                out.push_str(&format!("mem={q} "));
            }
            if let Some(i) = &c.instance_type {
                out.push_str(&format!("type={i} "));
            }
            if c.use_spot {
                out.push_str("spot ");
            }
            if let Some(i) = &c.image_id {
                out.push_str(&format!("image={i:?} "));
            }
            if !c.ports.is_empty() {
                let ports: Vec<String> = c.ports.iter().map(ToString::to_string).collect();
                out.push_str(&format!("ports={} ", ports.join(",")));
            }
        }
        if t.resources.preference == Preference::Ordered {
            out.push_str(" (ordered)");
        }
        if t.resources.recovery != RecoveryPolicy::default() {
            out.push_str(&format!(" recovery=[{}]", t.resources.recovery));
        }
        if !t.limits.is_none() {
            out.push_str(&format!(" limits={:?}", t.limits));
        }
        for m in &t.file_mounts {
            out.push_str(&format!(" mount {}<-{:?}", m.destination, m.source));
        }
        out.push('\n');
    }
    for w in &loaded.warnings {
        out.push_str(&format!("warning {w}\n"));
    }
    out
}

fn check(yaml: &str, expect: Expect) {
    check_with(yaml, &Overrides::default(), expect);
}

fn check_with(yaml: &str, overrides: &Overrides, expect: Expect) {
    let actual = match load(yaml, overrides) {
        Ok(loaded) => summary(&loaded),
        Err(e) => format!("error {e}\n"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn valid_files() {
    check(
        "run: echo hi",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | 
    "#]],
    );
    check(
        "name: train\nnum_nodes: 2\nrun: echo",
        expect![[r#"
        job train
        task train nodes=2 | 
    "#]],
    );
    check(
        "resources: {accelerators: V100}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc=V100:1 
    "#]],
    );
    check(
        "resources: {accelerators: 'v100:2'}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc=V100:2 
    "#]],
    );
    check(
        "resources: {accelerators: {A100: 8}}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc=A100:8 
    "#]],
    );
    check(
        "resources: {accelerators: T4:0.5}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc=T4:0.5 
    "#]],
    );
    check(
        "resources: {accelerators: {'A100:1', 'T4:1'}}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc={A100:1, T4:1} 
    "#]],
    );
    check(
        "resources: {accelerators: { H100:8, H200:8 }}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc={H100:8, H200:8} 
    "#]],
    );
    check(
        "resources:\n  accelerators:\n    T4: 1\n    L4: 1",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc={T4:1, L4:1} 
    "#]],
    );
    check(
        "resources: {accelerators: ['A100:1', 'T4:1']}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | acc=[A100:1, T4:1] 
    "#]],
    );
    check(
        "resources: {cpus: 8+, memory: 32}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | cpus=8+ mem=32 
    "#]],
    );
    check(
        "resources: {cpus: 0.5+, memory: 4x}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | cpus=0.5+ mem=4x 
    "#]],
    );
    check(
        "resources: {memory: 1TB+}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | mem=1024+ 
    "#]],
    );
    check(
        "resources: {infra: aws}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=aws 
    "#]],
    );
    check(
        "resources: {infra: AWS/us-east-1}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=aws/us-east-1 
    "#]],
    );
    check(
        "resources: {infra: gcp/us-central1/us-central1-a}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=gcp/us-central1/us-central1-a 
    "#]],
    );
    check(
        "resources: {infra: 'gcp/*/us-east4-b'}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=gcp/*/us-east4-b 
    "#]],
    );
    check(
        "resources: {infra: local}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=local 
    "#]],
    );
    check(
        "resources: {cloud: aws, region: us-west-2}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=aws/us-west-2 
    "#]],
    );
    check(
        "resources: {use_spot: True, instance_type: m6i.large}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | type=m6i.large spot 
    "#]],
    );
    check(
        "resources: {use_spot: yes}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | spot 
    "#]],
    );
    check(
        "resources: {ports: [8080, '9000-9010']}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | ports=8080,9000-9010 
    "#]],
    );
    check(
        "resources: {image_id: {us-east-1: ami-1}}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | image=PerRegion({"us-east-1": "ami-1"}) 
    "#]],
    );
    check(
        "resources:\n  image_id: docker:x\n  any_of:\n    - {infra: aws, image_id: null}\n    - infra: gcp",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=aws  | infra=gcp image=One("docker:x") 
    "#]],
    );
    check(
        "resources:\n  ordered:\n    - {infra: aws, accelerators: A10g}\n    - {infra: gcp, accelerators: L4}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=aws acc=A10G:1  | infra=gcp acc=L4:1  (ordered)
    "#]],
    );
    check(
        "resources:\n  any_of:\n    - infra: aws\n    - infra: azure",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 | infra=aws 
        warning resources.any_of[1].infra: cloud 'azure' (Azure) is not supported by Stratus; supported clouds: aws, gcp, local; this alternative is skipped
    "#]],
    );
}

#[test]
fn recovery_policies() {
    check(
        "resources: {job_recovery: failover}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 |  recovery=[FAILOVER, max_restarts_on_errors: 0]
    "#]],
    );
    check(
        "resources: {spot_recovery: FAILOVER}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 |  recovery=[FAILOVER, max_restarts_on_errors: 0]
        warning resources.spot_recovery: deprecated: use job_recovery
    "#]],
    );
    check(
        "resources: {job_recovery: {max_restarts_on_errors: 3}}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 |  recovery=[EAGER_NEXT_REGION, max_restarts_on_errors: 3]
    "#]],
    );
    check(
        "resources: {job_recovery: {strategy: EAGER_NEXT_REGION, recover_on_exit_codes: 29}}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 |  recovery=[EAGER_NEXT_REGION, max_restarts_on_errors: 0, recover_on_exit_codes: [29]]
    "#]],
    );
    check(
        "resources: {job_recovery: {strategy: failover, recover_on_exit_codes: [29, 33]}}",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 |  recovery=[FAILOVER, max_restarts_on_errors: 0, recover_on_exit_codes: [29, 33]]
    "#]],
    );
}

#[test]
fn time_and_money_limits() {
    check(
        "max_duration: 2h30m\nstratus:\n  max_cost: 25\n  max_attempt_duration: 45m\n  max_pending: 10m\nresources:\n  job_recovery: {strategy: NO_RECOVERY, max_recoveries: 2}\nrun: x",
        expect![[r#"
        job stratus-job
        max_cost 25
        task stratus-job nodes=1 |  recovery=[NO_RECOVERY, max_restarts_on_errors: 0, max_recoveries: 2] limits=TaskLimits { max_duration: Some(9000s), max_attempt_duration: Some(2700s), max_pending: Some(600s) }
    "#]],
    );
    // A pipeline: each task its own limits, the lowest cap the job's.
    check(
        "name: p\n---\nstratus: {max_cost: 5}\nrun: a\n---\nstratus: {max_cost: 2.5}\nmax_duration: 1h\nrun: b",
        expect![[r#"
        job p
        max_cost 2.5
        task p-0 nodes=1 | 
        task p-1 nodes=1 |  limits=TaskLimits { max_duration: Some(3600s), max_attempt_duration: None, max_pending: None }
    "#]],
    );
    let flags = Overrides {
        max_cost: Some(7.0),
        max_duration: Some("90m".into()),
        ..Overrides::default()
    };
    check_with(
        "stratus: {max_cost: 1}\nmax_duration: 5h\nrun: x",
        &flags,
        expect![[r#"
        job stratus-job
        max_cost 7
        task stratus-job nodes=1 |  limits=TaskLimits { max_duration: Some(5400s), max_attempt_duration: None, max_pending: None }
    "#]],
    );
    check(
        "max_duration: 90\nrun: x",
        expect![[r#"
            error line 1, column 1: max_duration: '90' has no unit: write e.g. `90s`, `90m` or `90h`
        "#]],
    );
    check(
        "max_duration: banana\nrun: x",
        expect![[r#"
            error line 1, column 1: max_duration: 'banana' is not a duration (expected number at 0): write e.g. `90s`, `30m` or `2h30m`
        "#]],
    );
    check(
        "stratus: {max_cost: free}\nrun: x",
        expect![[r#"
            error line 1, column 11: stratus.max_cost: 'free' is not a number of US dollars: write e.g. `max_cost: 25`
        "#]],
    );
    check(
        "stratus: {max_cost: -3}\nrun: x",
        expect![[r#"
            error line 1, column 11: stratus.max_cost: -3 is not a positive amount of US dollars
        "#]],
    );
    check(
        "stratus: {max_budget: 3}\nrun: x",
        expect![[r#"
            error line 1, column 11: stratus.max_budget: unknown field 'max_budget' (did you mean 'max_cost'?)
        "#]],
    );
    check(
        "resources:\n  job_recovery: {max_recoveries: many}\nrun: x",
        expect![[r#"
            error line 2, column 18: resources.job_recovery.max_recoveries: 'many' is not a whole number of recoveries (0 or more)
        "#]],
    );
    check_with(
        "run: x",
        &Overrides {
            max_cost: Some(0.0),
            ..Overrides::default()
        },
        expect![[r#"
            error --max-cost: 0 is not a positive amount of US dollars
        "#]],
    );
}

#[test]
fn envs_keep_their_text_and_secrets_stay_redacted() {
    check(
        "envs:\n  LR: 1e-6\n  FLAG: true\n  N: 20\n  Q: '007'\nsecrets:\n  TOKEN: abc\nrun: echo",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 envs={"FLAG": "true", "LR": "1e-6", "N": "20", "Q": "007"} secrets={"TOKEN": <redacted>} | 
    "#]],
    );
    let overrides = Overrides {
        envs: vec![("KEY".into(), "v".into())],
        secrets: vec![("HF".into(), "s".into())],
        ..Overrides::default()
    };
    check_with(
        "envs:\n  KEY:\nsecrets:\n  HF: null\n",
        &overrides,
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 envs={"KEY": "v"} secrets={"HF": <redacted>} | 
    "#]],
    );
}

#[test]
fn file_mounts_and_env_substitution() {
    check(
        "envs: {B: bkt}\nfile_mounts:\n  /data: s3://${B}/x/\n  /local: ./dir\n  /ckpt:\n    name: $B-2\n    mode: copy\n    persistent: false",
        expect![[r#"
        job stratus-job
        task stratus-job nodes=1 envs={"B": "bkt"} |  mount /ckpt<-Storage(Storage { name: Some("bkt-2"), sources: [], store: None, persistent: false, mode: Copy }) mount /data<-Bucket(BucketUrl { store: S3, bucket: "bkt", key: "x" }) mount /local<-Local("./dir")
    "#]],
    );
}

#[test]
fn pipelines() {
    check(
        "name: pipe\n---\nname: a\nrun: echo a\n---\nrun: echo b\n",
        expect![[r#"
        job pipe
        task a nodes=1 | 
        task pipe-1 nodes=1 | 
    "#]],
    );
    check(
        "run: echo a\n---\nrun: echo b\n",
        expect![[r#"
        job stratus-job
        task stratus-job-0 nodes=1 | 
        task stratus-job-1 nodes=1 | 
    "#]],
    );
    check(
        "name: only-header\n",
        expect![[r#"
        job only-header
        task only-header nodes=1 | 
    "#]],
    );
    let overrides = Overrides {
        gpus: Some("T4".into()),
        ..Overrides::default()
    };
    check_with(
        "run: a\n---\nrun: b\n",
        &overrides,
        expect![[r#"
        job stratus-job
        task stratus-job-0 nodes=1 | 
        task stratus-job-1 nodes=1 | 
        warning --infra/--gpus/--cpus/...: resource overrides are ignored, since the file holds several tasks
    "#]],
    );
}

#[test]
fn cli_overrides() {
    let overrides = Overrides {
        name: Some("renamed".into()),
        gpus: Some("A100:8".into()),
        use_spot: Some(true),
        infra: Some("gcp".into()),
        cpus: Some("16+".into()),
        num_nodes: Some(3),
        ..Overrides::default()
    };
    check_with(
        "name: orig\nresources:\n  any_of:\n    - infra: aws\n    - accelerators: T4\nrun: x",
        &overrides,
        expect![[r#"
            job renamed
            task renamed nodes=3 | infra=gcp acc=A100:8 cpus=16+ spot  | infra=gcp acc=A100:8 cpus=16+ spot 
        "#]],
    );
}

#[test]
fn invalid_files() {
    check(
        "run: echo\nresourcs: {}",
        expect![[r#"
        error line 2, column 1: resourcs: unknown field 'resourcs' (did you mean 'resources'?)
    "#]],
    );
    check(
        "resources:\n  acclerators: V100",
        expect![[r#"
        error line 2, column 3: resources.acclerators: unknown field 'acclerators' (did you mean 'accelerators'?)
    "#]],
    );
    check(
        "resources:\n  accelerators: V1OO",
        expect![[r#"
        error line 2, column 3: resources.accelerators: unknown accelerator 'V1OO' (did you mean 'V100'?); known: T4, L4, A10G, L40S, V100, A100, A100-80GB, H100, H200, ...
    "#]],
    );
    check(
        "resources:\n  accelerators: V100:zero",
        expect![[r#"
        error line 2, column 3: resources.accelerators: 'zero' is not a valid count for V100: use a positive number, e.g. V100:1
    "#]],
    );
    check(
        "resources:\n  accelerators: tpu-v2-8",
        expect![[r#"
        error line 2, column 3: resources.accelerators: TPUs ('tpu-v2-8') are not supported by Stratus, which launches Compute Engine VMs, not Cloud TPU VMs; use a GPU such as A100 or H100
    "#]],
    );
    check(
        "resources:\n  infra: awz",
        expect![[r#"
        error line 2, column 3: resources.infra: unknown cloud 'awz' (did you mean 'aws'?); supported clouds: aws, gcp, local
    "#]],
    );
    check(
        "resources:\n  infra: oci/us-sanjose-1",
        expect![[r#"
        error line 2, column 3: resources.infra: cloud 'oci' (OCI) is not supported by Stratus; supported clouds: aws, gcp, local
    "#]],
    );
    check(
        "resources:\n  cloud: nebius\n  region: eu-north1",
        expect![[r#"
        error line 2, column 3: resources.cloud: cloud 'nebius' (Nebius) is not supported by Stratus; supported clouds: aws, gcp, local
    "#]],
    );
    check(
        "resources:\n  infra: aws\n  cloud: aws",
        expect![[r#"
        error line 2, column 3: resources.infra: use either infra or the legacy cloud/region/zone keys, not both
    "#]],
    );
    check(
        "resources:\n  cpus: lots",
        expect![[r#"
        error line 2, column 3: resources.cpus: 'lots' is not a vCPU count: write N (exactly) or N+ (at least), e.g. 8+
    "#]],
    );
    check(
        "resources:\n  memory: -1",
        expect![[r#"
        error line 2, column 3: resources.memory: '-1' is not a memory size: write GB as N (exactly) or N+ (at least), e.g. 32+
    "#]],
    );
    check(
        "resources:\n  use_spot: maybe",
        expect![[r#"
        error line 2, column 3: resources.use_spot: expected true or false, got 'maybe'
    "#]],
    );
    check(
        "resources:\n  disk_tier: fast",
        expect![[r#"
        error line 2, column 3: resources.disk_tier: unknown value 'fast' (did you mean 'best'?): use one of low, medium, high, ultra, best
    "#]],
    );
    check(
        "resources:\n  ports: 70000",
        expect![[r#"
        error line 2, column 3: resources.ports: '70000' is not a port: use 1-65535 or a range like 8080-8090
    "#]],
    );
    check(
        "resources:\n  job_recovery: sometimes",
        expect![[r#"
        error line 2, column 3: resources.job_recovery: unknown recovery strategy 'sometimes': use EAGER_NEXT_REGION, FAILOVER or NO_RECOVERY
    "#]],
    );
    check(
        "resources:\n  job_recovery:\n    max_restarts_on_errors: -1",
        expect![[r#"
        error line 3, column 5: resources.job_recovery.max_restarts_on_errors: '-1' is not a whole number of restarts (0 or more)
    "#]],
    );
    check(
        "resources:\n  job_recovery:\n    recover_on_exit_codes: [1, 300]",
        expect![[r#"
        error line 3, column 5: resources.job_recovery.recover_on_exit_codes: '300' is not an exit code: use whole numbers from 0 to 255
    "#]],
    );
    check(
        "resources:\n  any_of:\n    - infra: aws\n  ordered:\n    - infra: gcp",
        expect![[r#"
        error line 4, column 3: resources.ordered: use either any_of or ordered, not both
    "#]],
    );
    check(
        "resources:\n  any_of:\n    - infra: aws\n    - cpus: many",
        expect![[r#"
        error line 4, column 7: resources.any_of[1].cpus: 'many' is not a vCPU count: write N (exactly) or N+ (at least), e.g. 8+
    "#]],
    );
    check(
        "num_nodes: 0\nrun: x",
        expect![[r#"
        error line 1, column 1: num_nodes: '0' is not a positive integer: write e.g. `num_nodes: 2`
    "#]],
    );
    check(
        "name: 'bad name!'\nrun: x",
        expect![[r#"
        error line 1, column 1: name: invalid name 'bad name!': use letters, digits, '-', '_' and '.', starting with a letter and ending with a letter or digit
    "#]],
    );
    check(
        "envs:\n  WANDB_API_KEY:\nrun: x",
        expect![[r#"
        error line 2, column 3: envs.WANDB_API_KEY: WANDB_API_KEY has no value: pass it with `--env WANDB_API_KEY=<value>` (or `--env WANDB_API_KEY` to copy it from your environment)
    "#]],
    );
    check(
        "secrets:\n  HF_TOKEN: null\nrun: x",
        expect![[r#"
        error line 2, column 3: secrets.HF_TOKEN: HF_TOKEN has no value: pass it with `--secret HF_TOKEN=<value>` (or `--secret HF_TOKEN` to copy it from your environment)
    "#]],
    );
    check(
        "envs:\n  1BAD: x",
        expect![[r#"
        error line 2, column 3: envs.1BAD: '1BAD' is not a valid variable name: use letters, digits and '_', not starting with a digit
    "#]],
    );
    check(
        "file_mounts:\n  /x: r2://bucket/path",
        expect![[r#"
        error line 2, column 3: file_mounts./x: 'r2://bucket/path': Cloudflare R2 buckets are not supported by Stratus; use an s3:// or gs:// bucket
    "#]],
    );
    check(
        "file_mounts:\n  /x:\n    source: s3://b\n    mode: MOUNTED",
        expect![[r#"
        error line 4, column 5: file_mounts./x.mode: unknown mode 'MOUNTED' (did you mean 'MOUNT'?): use MOUNT, COPY or MOUNT_CACHED
    "#]],
    );
    check(
        "service:\n  readiness_probe: /\nrun: x",
        expect![[r#"
        error line 1, column 1: service: SkyPilot services (`sky serve`) are not supported by Stratus, which runs managed batch jobs; remove the `service` section to run the task as a job
    "#]],
    );
    check(
        "name: g\nexecution: parallel\n---\nrun: x",
        expect![[r#"
        error line 2, column 1: execution: job groups (`execution: parallel`) are not supported by Stratus: a pipeline's tasks run one after another; remove the job-group keys to run the tasks serially, or launch each task as its own job
    "#]],
    );
    check(
        "run: [1, 2]",
        expect![[r#"
        error line 1, column 6: run: invalid type: sequence, expected a string
    "#]],
    );
    // Every problem serde finds in the document, not one fix at a time; each at its line.
    check(
        "name: x\nresources:\n  cpu: 2\n  acclerators: A100\nsetpu: x\nworkdir: 5\nenvs: [A=1]\nrun: echo",
        expect![[r#"
            error line 3, column 3: resources.cpu: unknown field 'cpu' (did you mean 'cpus'?)
              and line 4, column 3: resources.acclerators: unknown field 'acclerators' (did you mean 'accelerators'?)
              and line 5, column 1: setpu: unknown field 'setpu' (did you mean 'setup'?)
              and line 6, column 1: workdir: expected a local path or {url: <git url>, ref: <branch, tag or commit>}
              and line 7, column 1: envs: invalid type: sequence, expected a map; write envs as a mapping, one `KEY: value` per line or `envs: {A: 1, B: two}`, not a list of KEY=value
        "#]],
    );
    check(
        "envs:\n  ? [a]\n  : b\nrun: echo",
        expect![[r#"
            error line 2, column 5: envs: a key here is a list or a mapping: keys must be plain text, e.g. `NAME: value`
        "#]],
    );
    check(
        "resources: [1]\nrun: echo",
        expect![[r#"
            error line 1, column 12: resources: invalid type: sequence, expected a mapping
        "#]],
    );
    check(
        "# only a comment\n",
        expect![[r#"
        error the file holds no task: write at least `run: <command>`
    "#]],
    );
    check(
        "run: a\n---\nrun: b\nnum_nodes: x\n",
        expect![[r#"
        error line 4, column 1: num_nodes: 'x' is not a positive integer: write e.g. `num_nodes: 2`
    "#]],
    );
    let bad_flag = Overrides {
        gpus: Some("V1OO".into()),
        ..Overrides::default()
    };
    check_with(
        "run: x",
        &bad_flag,
        expect![[r#"
        error --gpus: unknown accelerator 'V1OO' (did you mean 'V100'?); known: T4, L4, A10G, L40S, V100, A100, A100-80GB, H100, H200, ...
    "#]],
    );
}

#[test]
fn limits_are_named_and_refused_fast() {
    let deep = format!("run: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let started = std::time::Instant::now();
    check(
        &deep,
        expect![[r#"
            error line 1, column 261: the task file nests mappings and lists more than 32 levels deep; flatten it
        "#]],
    );
    let nested_map = format!(
        "name: x\nenvs: {}1{}\n",
        "{a: ".repeat(40_000),
        "}".repeat(40_000)
    );
    assert!(load(&nested_map, &Overrides::default()).is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "hostile nesting took {:?}",
        started.elapsed()
    );
    let laughs = format!(
        "a: &a [x, x]\nb: [{}]\nrun: echo\n",
        vec!["*a"; 100].join(", ")
    );
    check(
        &laughs,
        expect![[r#"
            error line 2, column 261: the task file uses more than 64 aliases (`*name`); write the values out
        "#]],
    );
    check(
        "num_nodes: 4294967295\nrun: echo\n",
        expect![[r#"
            error line 1, column 1: num_nodes: 4294967295 nodes is more than the 512 a Stratus cluster may have
        "#]],
    );
    check(
        "run: \"echo a\\0b\"\n",
        expect![[r#"
            error line 1, column 1: run: holds a NUL character (\0), which no command or variable can carry; remove it
        "#]],
    );
    check(
        "envs:\n  A: \"x\\0\"\nrun: echo\n",
        expect![[r#"
            error line 2, column 3: envs.A: holds a NUL character (\0), which no command or variable can carry; remove it
        "#]],
    );
    let many = (0..1001).fold(String::new(), |mut text, i| {
        let _ = writeln!(text, "  V{i}: x");
        text
    });
    check(
        &format!("envs:\n{many}run: echo\n"),
        expect![[r#"
            error line 1, column 1: envs: 1001 variables (envs and secrets together); a task may have at most 1000
        "#]],
    );
    let big = "x".repeat(limits::MAX_YAML_BYTES);
    assert!(
        load(&format!("run: echo {big}\n"), &Overrides::default())
            .unwrap_err()
            .to_string()
            .contains("at most 1024 KiB")
    );
}

#[test]
fn config_provision_timeouts_apply_and_the_rest_is_kept() {
    check(
        "run: x\nconfig:\n  aws:\n    provision_timeout: 900\n  gcp:\n    provision_timeout: 600\n",
        expect![[r#"
            job stratus-job
            task stratus-job nodes=1 | 
        "#]],
    );
    check(
        "run: x\nconfig:\n  aws:\n    provision_timeout: 900\n    labels: {a: b}\n  kubernetes:\n    provision_timeout: 60\n",
        expect![[r#"
            job stratus-job
            task stratus-job nodes=1 | 
            warning config: kept but not applied: aws.labels, kubernetes (Stratus applies only <cloud>.provision_timeout)
        "#]],
    );
    check(
        "run: x\nconfig:\n  gcp:\n    provision_timeout: 5\n",
        expect![[r#"
            error line 4, column 5: config.gcp.provision_timeout: expected whole seconds from 10 to 86400 (how long a launch may take until every node is ready), got 5
        "#]],
    );
    check(
        "run: x\nconfig:\n  aws:\n    provision_timeout: ten minutes\n",
        expect![[r#"
            error line 4, column 5: config.aws.provision_timeout: expected whole seconds from 10 to 86400 (how long a launch may take until every node is ready), got "ten minutes"
        "#]],
    );
    check(
        "run: x\nconfig: [aws]\n",
        expect![[r#"
        error line 2, column 1: config: expected a mapping of SkyPilot config keys, e.g. `config: {aws: {provision_timeout: 900}}`
    "#]],
    );
    let loaded = load(
        "run: x\nconfig:\n  aws:\n    provision_timeout: 900\n",
        &Overrides::default(),
    )
    .unwrap();
    let config = loaded.pipeline.tasks[0].config.as_ref();
    assert_eq!(
        super::config::provision_timeout(config, crate::cloud::Cloud::Aws),
        Some(std::time::Duration::from_mins(15))
    );
    assert_eq!(
        super::config::provision_timeout(config, crate::cloud::Cloud::Gcp),
        None
    );
}
