//! Table-driven optimizer tests on a small catalog, plus a snapshot of the real table.
#![allow(clippy::needless_pass_by_value, clippy::format_push_string)]

use expect_test::{Expect, expect};

use super::*;
use crate::catalog;
use crate::spec::{self, Overrides};

const HEADER: &str = "InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,Region,AvailabilityZone,Price,SpotPrice\n";

fn small_catalog() -> Catalog {
    let aws = "\
m6i.large,2,8,,,us-east-1,us-east-1a,0.096,0.04
m6i.2xlarge,8,32,,,us-east-1,us-east-1a,0.384,0.144
m6i.2xlarge,8,32,,,us-west-2,us-west-2a,0.384,0.136
c6i.2xlarge,8,16,,,us-east-1,us-east-1a,0.34,0.12
g5.xlarge,4,16,A10G,1,us-east-1,us-east-1a,1.006,0.45
g5.xlarge,4,16,A10G,1,us-east-2,us-east-2a,1.006,0.377
p3.2xlarge,8,61,V100,1,us-east-1,us-east-1a,3.06,0.9
p3.8xlarge,32,244,V100,4,us-east-1,us-east-1a,12.24,3.6
";
    let gcp = "\
n2-standard-8,8,32,,,us-central1,us-central1-a,0.388,0.09
n1-standard-8,8,30,T4,1,us-central1,us-central1-a,0.73,0.2
g2-standard-4,4,16,L4,1,us-central1,us-central1-a,0.7,0.25
g2-standard-4,4,16,L4,1,europe-west4,europe-west4-a,0.77,0.28
";
    let mut offerings = catalog::parse(Cloud::Aws, "aws", &format!("{HEADER}{aws}")).unwrap();
    offerings.extend(catalog::parse(Cloud::Gcp, "gcp", &format!("{HEADER}{gcp}")).unwrap());
    Catalog::from_offerings(offerings)
}

/// Plans a one-task YAML on AWS and GCP and prints the ranked list (or the no-fit reasons).
fn check(yaml: &str, expect: Expect) {
    let loaded = spec::load(yaml, &Overrides::default()).unwrap();
    let plan = plan_task(
        &small_catalog(),
        &loaded.pipeline.tasks[0],
        &[Cloud::Aws, Cloud::Gcp],
    );
    let mut out = String::new();
    for c in &plan.ranked {
        out.push_str(&format!("{c} ${:.3}\n", c.cost()));
    }
    if plan.ranked.is_empty() {
        out.push_str("no fit:\n");
        out.push_str(&plan.explain_no_fit());
    }
    expect.assert_eq(&out);
}

#[test]
fn default_request_is_8_cpus_4x_memory_cheapest_first() {
    check(
        "run: echo",
        expect![[r#"
            aws/us-east-1/us-east-1a m6i.2xlarge $0.384
            aws/us-west-2/us-west-2a m6i.2xlarge $0.384
            gcp/us-central1/us-central1-a n2-standard-8 $0.388
        "#]],
    );
}

#[test]
fn cpus_at_least_picks_cheapest_per_zone() {
    check(
        "resources: {cpus: 2+}",
        expect![[r#"
            aws/us-east-1/us-east-1a m6i.large $0.096
            aws/us-west-2/us-west-2a m6i.2xlarge $0.384
            gcp/us-central1/us-central1-a n2-standard-8 $0.388
        "#]],
    );
}

#[test]
fn spot_uses_spot_prices_and_multiplies_by_nodes() {
    check(
        "num_nodes: 2\nresources: {accelerators: A10G, use_spot: true}",
        expect![[r#"
            aws/us-east-2/us-east-2a g5.xlarge[Spot] $0.754
            aws/us-east-1/us-east-1a g5.xlarge[Spot] $0.900
        "#]],
    );
}

#[test]
fn accelerator_set_picks_the_cheapest() {
    check(
        "resources: {accelerators: {'V100:1', 'T4:1', 'L4:1'}}",
        expect![[r#"
            gcp/us-central1/us-central1-a g2-standard-4 $0.700
            gcp/us-central1/us-central1-a n1-standard-8 $0.730
            gcp/europe-west4/europe-west4-a g2-standard-4 $0.770
            aws/us-east-1/us-east-1a p3.2xlarge $3.060
        "#]],
    );
}

#[test]
fn accelerator_list_is_tried_in_order() {
    check(
        "resources: {accelerators: ['V100:1', 'T4:1']}",
        expect![[r#"
            aws/us-east-1/us-east-1a p3.2xlarge $3.060
            gcp/us-central1/us-central1-a n1-standard-8 $0.730
        "#]],
    );
}

#[test]
fn any_of_takes_the_cheapest_alternative() {
    check(
        "resources:\n  any_of:\n    - {infra: aws, accelerators: A10G}\n    - {infra: gcp, accelerators: L4}",
        expect![[r#"
            gcp/us-central1/us-central1-a g2-standard-4 $0.700
            gcp/europe-west4/europe-west4-a g2-standard-4 $0.770
            aws/us-east-1/us-east-1a g5.xlarge $1.006
            aws/us-east-2/us-east-2a g5.xlarge $1.006
        "#]],
    );
}

#[test]
fn ordered_takes_the_first_feasible_alternative() {
    check(
        "resources:\n  ordered:\n    - {infra: aws, accelerators: A10G}\n    - {infra: gcp, accelerators: L4}",
        expect![[r#"
            aws/us-east-1/us-east-1a g5.xlarge $1.006
            aws/us-east-2/us-east-2a g5.xlarge $1.006
            gcp/us-central1/us-central1-a g2-standard-4 $0.700
            gcp/europe-west4/europe-west4-a g2-standard-4 $0.770
        "#]],
    );
}

#[test]
fn any_of_on_spot_lists_spot_then_on_demand() {
    check(
        "resources:\n  accelerators: L4\n  any_of:\n    - use_spot: true\n    - use_spot: false",
        expect![[r#"
            gcp/us-central1/us-central1-a g2-standard-4[Spot] $0.250
            gcp/europe-west4/europe-west4-a g2-standard-4[Spot] $0.280
            gcp/us-central1/us-central1-a g2-standard-4 $0.700
            gcp/europe-west4/europe-west4-a g2-standard-4 $0.770
        "#]],
    );
}

#[test]
fn infra_region_and_instance_type_restrict() {
    check(
        "resources: {infra: aws/us-east-1, instance_type: c6i.2xlarge}",
        expect![[r#"
            aws/us-east-1/us-east-1a c6i.2xlarge $0.340
        "#]],
    );
}

#[test]
fn no_fit_explains_each_cloud() {
    check(
        "resources: {accelerators: V100:2}",
        expect![[r#"
            no fit:
              AWS: V100 comes only in counts of 1, 4 per node in any region, not 2
              GCP: no V100 (offers L4, T4)
        "#]],
    );
    check(
        "resources: {infra: aws/eu-west-9, cpus: 2}",
        expect![[r#"
            no fit:
              AWS: no region 'eu-west-9' (did you mean 'us-west-2'?); regions: us-east-1, us-east-2, us-west-2
              GCP: not requested (infra: aws/eu-west-9)
        "#]],
    );
    check(
        "resources: {instance_type: m6i.2xlarg}",
        expect![[r#"
            no fit:
              AWS: no instance type 'm6i.2xlarg' (did you mean 'm6i.2xlarge'?)
              GCP: no instance type 'm6i.2xlarg'
        "#]],
    );
    check(
        "resources: {cpus: 64+, memory: 1000+}",
        expect![[r#"
            no fit:
              AWS: no instance has 64+ vCPUs and 1000+ GB memory in any region
              GCP: no instance has 64+ vCPUs and 1000+ GB memory in any region
        "#]],
    );
}

#[test]
fn considered_table_snapshot_on_the_embedded_catalog() {
    let loaded = spec::load(
        "num_nodes: 2\nresources: {accelerators: {'T4:1', 'L4:1'}, use_spot: true}",
        &Overrides::default(),
    )
    .unwrap();
    let task = &loaded.pipeline.tasks[0];
    let plan = plan_task(&Catalog::embedded(), task, &Cloud::ALL);
    expect![[r#"
        Considered resources (2 nodes):
        ----------------------------------------------------------------------------------------
         INFRA                INSTANCE              vCPUs   Mem(GB)   GPUS   COST ($)   CHOSEN
        ----------------------------------------------------------------------------------------
         AWS (us-east-1)      g4dn.xlarge[Spot]     4       16        T4:1   0.39       ✔
         AWS (us-east-2)      g4dn.xlarge[Spot]     4       16        T4:1   0.39
         AWS (us-west-2)      g4dn.xlarge[Spot]     4       16        T4:1   0.41
         GCP (us-west1)       n1-standard-4[Spot]   4       15        T4:1   0.45
         GCP (us-east1)       n1-standard-4[Spot]   4       15        T4:1   0.45
         GCP (us-east4)       n1-standard-4[Spot]   4       15        T4:1   0.46
         AWS (us-east-2)      g6.xlarge[Spot]       4       16        L4:1   0.54
         GCP (us-central1)    g2-standard-4[Spot]   4       16        L4:1   0.55
         GCP (us-east1)       g2-standard-4[Spot]   4       16        L4:1   0.56
         GCP (us-west1)       g2-standard-4[Spot]   4       16        L4:1   0.57
         AWS (us-east-1)      g6.xlarge[Spot]       4       16        L4:1   0.68
         AWS (eu-central-1)   g6.xlarge[Spot]       4       16        L4:1   0.80
        ----------------------------------------------------------------------------------------
    "#]]
    .assert_eq(&considered_table(&plan, None, task.num_nodes));
}
