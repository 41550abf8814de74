#!/usr/bin/env python3
"""Checks infra/template.yaml: translated by the SAM translator, and deployed to an AWS API emulator.

Run from anywhere, with the emulator's endpoint in AWS_ENDPOINT_URL:

    AWS_ENDPOINT_URL=http://127.0.0.1:4566 .venv/bin/python localstack-tests/template/deploy_check.py [-v] [TEMPLATE]

TEMPLATE defaults to infra/template.yaml (another path is for trying a changed copy); -v lists
every check.

Needs boto3, PyYAML and aws-sam-translator (scripts/test installs them into its venv, beside moto).

1. The SAM source: the SAM transform, and each function built by rust-cargolambda from the
   `functions` crate as its own binary. The expected table design is also compared with
   `DynamoStore::create_table` in shared/src/store/dynamo.rs, so the two cannot drift apart.
2. The translation (samtranslator, as `sam deploy` would do it): the table with its four GSIs,
   PITR and TTL; the bucket's public-access block, encryption, lifecycle and TLS-only policy; the
   generated secret; the HTTP API (IAM auth on /api, none on /agent); the schedule group and the
   scheduler's role; every function's runtime, timeout, own role and environment; each role's
   capabilities (least privilege: no action wildcards, Resource "*" only for EC2); the five
   rules, their targets and invoke permissions; the outputs. The translation is the authority
   for whatever the emulator does not create or ignores.
3. The deployment: a stack is created from the translation on the emulator (functions point at a
   tiny zip; the emulator runs no Lambda code). Resource types the emulator's CloudFormation
   cannot create are removed first, and properties it ignores are listed, each in a printed
   note. Then the deployed resources are checked and wired together (names and ARNs in
   environments, policies and targets), and the rules' patterns are tried with real events
   delivered to an SQS queue put in place of the function targets.
4. The stack and the scratch bucket are deleted.

Exit status: 0 when every check holds; 1 with the list of failed checks; 2 for a setup problem
(no endpoint, a missing package, an unreachable emulator).
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import sys
import tempfile
import time
import traceback
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
FORWARDER = ROOT / "infra" / "forwarder.yaml"
# Where the check deploys the forwarder (any region but the stack's).
FORWARDER_REGION = "us-west-2"
DYNAMO_RS = ROOT / "shared" / "src" / "store" / "dynamo" / "mod.rs"
EVENTBRIDGE_RS = ROOT / "shared" / "src" / "bus" / "eventbridge.rs"
# The marks (tags, labels) both cloud adapters put on machines.
MARKS_RS = ROOT / "shared" / "src" / "provider" / "marks.rs"

# What the Rust code publishes and tags (compared with those files; a moved file fails the check).
EVENT_SOURCE = "stratus"
JOB_EVENT = "stratus.job-event"
JOB_ENDED = "stratus.job-ended"
JOB_STATUS = "stratus.job-status"
CLUSTER_TAG = "stratus-cluster"

# The table as DynamoStore::create_table makes it (checked against dynamo.rs below).
TABLE_KEYS = [("pk", "HASH"), ("sk", "RANGE")]
TABLE_ATTRIBUTES = {"pk", "sk", "owner_key", "name_key", "all_key", "active_key", "job_key"}
TABLE_INDEXES = {"by_owner": "owner_key", "by_name": "name_key", "all_jobs": "all_key", "active": "active_key"}
INDEX_SORT_KEY = "job_key"
INDEX_PROJECTED = ["task_count"]

# logical id: (binary, timeout in seconds, the capabilities (managed policies) its role holds)
LAUNCHER = {
    "StateTableAccess", "BlobAccess", "BusPublish", "TimerAccess", "AgentTokenAccess",
    "ClusterLaunch", "ClusterTeardown", "GcpCredentialAccess",
}
FUNCTIONS = {
    "ApiFunction": ("api", 29, LAUNCHER | {"AgentPublish", "NodeDataIssue"}),
    "SubmitFunction": ("submit", 29, {"StateTableAccess", "BlobAccess", "BusPublish", "GcpCredentialAccess", "UserBuckets"}),
    "PollFunction": ("poll", 300, LAUNCHER),
    "RecoverFunction": ("recover", 120, LAUNCHER),
    "CleanupFunction": ("cleanup", 120, {"StateTableAccess", "BlobAccess", "TimerAccess", "ClusterTeardown", "GcpCredentialAccess", "UserBuckets"}),
    # Only with a WebhookUrl (PARAMETERS gives one): it posts and writes log lines, nothing else.
    "NotifyFunction": ("notify", 90, {"StateTableAccess"}),
}
# Where the functions read their environment: every variable the template sets must be read
# there (a parameter that reaches no code is a claim the stack does not keep).
FUNCTIONS_SRC = ROOT / "functions" / "src"
# HTTP API routes: path -> (method key in the OpenAPI body, function, IAM auth).
ROUTES = {
    "/api/{proxy+}": ("x-amazon-apigateway-any-method", "ApiFunction", True),
    "/agent/{proxy+}": ("x-amazon-apigateway-any-method", "ApiFunction", False),
    "/api/v1/jobs": ("post", "SubmitFunction", True),
    "/hooks/{proxy+}": ("post", "ApiFunction", False),
}
CAPABILITIES = set().union(*(caps for _, _, caps in FUNCTIONS.values())) | {"UserAccess"}
ENV_VARS = [
    "STRATUS_TABLE", "STRATUS_BUCKET", "STRATUS_BUS", "STRATUS_BUS_ARN", "STRATUS_SCHEDULER_ROLE_ARN",
    "STRATUS_SCHEDULE_GROUP", "STRATUS_API_URL_PARAM", "STRATUS_SECRET_ARN",
    "STRATUS_AGENT_HEARTBEAT_SECS", "STRATUS_HEARTBEAT_TIMEOUT_SECS", "STRATUS_READY_TIMEOUT_SECS",
    "STRATUS_EC2_NETWORKS", "STRATUS_GCP_PROJECT", "STRATUS_GCP_CREDENTIAL_CONFIG",
    "STRATUS_GCP_KEY_SECRET_ARN", "STRATUS_GCP_NETWORK", "STRATUS_GCP_SUBNETWORKS",
    "STRATUS_ADMIN_ROLE_ARN", "RUST_LOG",
]
EC2_DETAIL_TYPES = ["EC2 Instance State-change Notification", "EC2 Spot Instance Interruption Warning"]
# (function, bus ("custom" or "default"), pattern) of every rule the template must have.
RULES = [
    ("RecoverFunction", "custom", {"detail-type": [JOB_EVENT]}),
    ("CleanupFunction", "custom", {"detail-type": [JOB_ENDED]}),
    ("NotifyFunction", "custom", {"source": [EVENT_SOURCE], "detail-type": [JOB_STATUS], "detail": {"scope": ["job"]}}),
    ("PollFunction", "default", {"source": ["aws.ec2"], "detail-type": EC2_DETAIL_TYPES}),
    ("PollFunction", "default", "rate(1 minute)"),
]
OUTPUTS = {"ApiUrl", "TableName", "BucketName", "BusName"}

PARAMETERS = {
    "AgentHeartbeatSecs": "45",
    "AdminRoleArn": "arn:aws:iam::123456789012:role/stratus-admin",
    "WebhookUrl": "https://hooks.example.com/services/T0/B0/secret",
    "WebhookNotifyOn": "SUCCEEDED,FAILED",
    "WebhookFormat": "slack",
}

# Measured with moto 5.2.5. Resource types its CloudFormation cannot create (used when moto is
# not importable; otherwise moto's own list is read):
MOTO_UNSUPPORTED = [
    "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", "AWS::S3::BucketPolicy",
    "AWS::Scheduler::ScheduleGroup", "AWS::SecretsManager::Secret",
]
# Measured with LocalStack 2026.3.0 (community, no Docker, offline). What its CloudFormation
# cannot create here, and why (everything else in the translation it creates):
LOCALSTACK_UNSUPPORTED = {
    "AWS::DynamoDB::Table": "LocalStack's DynamoDB downloads a JDK and DynamoDB Local at first use "
    "(offline: the stack waits forever); its e2e lane keeps DynamoDB on moto",
    "AWS::ApiGatewayV2::Api": "HTTP APIs are LocalStack's paid edition (501)",
    "AWS::ApiGatewayV2::Stage": "HTTP APIs are LocalStack's paid edition (501)",
    "AWS::Lambda::Function": "LocalStack creates functions only with its Docker executor (none here)",
    "AWS::Lambda::Permission": "it names functions that are not deployed",
}
# Properties its CloudFormation accepts and drops (checked in the translation instead):
MOTO_IGNORED = {
    "AWS::DynamoDB::Table": ["PointInTimeRecoverySpecification", "TimeToLiveSpecification"],
    "AWS::S3::Bucket": ["PublicAccessBlockConfiguration", "LifecycleConfiguration", "OwnershipControls"],
    "AWS::IAM::Role": ["ManagedPolicyArns"],
    "AWS::Lambda::Function": ["Architectures", "LoggingConfig"],
}


GROUPS = {
    "dynamo.rs create_table": "the expected table design is still DynamoStore::create_table's",
    "source": "SAM source: transform; each function built by rust-cargolambda from functions/ as its binary; every function triggered, every parameter used, every variable read",
    "translation": "SAM translation: table, bucket, secret, HTTP API auth per route, timers, functions, "
    "roles and their capabilities (least privilege), rules and invoke permissions, outputs",
    "deployed": "deployed on the emulator: stack, table and GSIs, bus, bucket, roles, policies naming the "
    "deployed resources, functions and their environment, rules and permissions, SSM URL parameter, outputs",
    "delivery": "events put on the buses reach (or not) the right rules",
    "code contracts": "the rules' detail-types and the cluster tag key are the Rust code's",
    "forwarder": "infra/forwarder.yaml: the stack's EC2 pattern, sent to the home region's default bus by a role "
    "that may only do that; deployed in another region",
}


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    verbose = "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:]
    global TEMPLATE
    if args:
        TEMPLATE = Path(args[0]).resolve()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        print("deploy_check: set AWS_ENDPOINT_URL to the emulator (e.g. http://127.0.0.1:4566)", file=sys.stderr)
        return 2
    try:
        import boto3  # noqa: F401
        import yaml  # noqa: F401
        from samtranslator.translator.transform import transform  # noqa: F401
    except ImportError as e:
        print(f"deploy_check: {e}: install aws-sam-translator and boto3 (scripts/test puts them in its venv)", file=sys.stderr)
        return 2
    # Emulators take any credentials; never reach for real ones.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # The translator's boto session finds the region (for AWS::Region) only here.
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    check = Checker()
    try:
        run(endpoint, region, check)
    except SetupError as e:
        print(f"deploy_check: {e}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 (reported as a failure, with the traceback)
        check.that(False, "the check ran to the end", traceback.format_exc())
    return check.finish(verbose)


class SetupError(Exception):
    pass


class Checker:
    """Collects results: every check runs, and all failures are reported together."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def that(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed.append(what)
        else:
            self.failed.append(f"{what}{': ' + detail if detail else ''}")
        return bool(ok)

    def equal(self, actual, expected, what: str) -> bool:
        return self.that(actual == expected, what, f"expected {expected!r}, found {actual!r}")

    @staticmethod
    def note(text: str) -> None:
        print(f"note: {text}")

    def finish(self, verbose: bool) -> int:
        print()
        if verbose:
            for line in self.passed:
                print(f"  ok    {line}")
        else:
            groups: dict[str, int] = {}
            for line in self.passed:
                group = line.split(":", 1)[0]
                groups[group] = groups.get(group, 0) + 1
            print("checked (-v lists each check):")
            for group, count in groups.items():
                print(f"  {count:3} ok  {GROUPS.get(group, group)}")
        for line in self.failed:
            print(f"  FAIL  {line}")
        print(f"\ndeploy_check: {len(self.passed)} passed, {len(self.failed)} failed")
        if self.failed:
            print(f"deploy_check: {TEMPLATE} FAILED its checks", file=sys.stderr)
            return 1
        return 0


# ------------------------------------------------------------------------------------------
# Loading, translating, preparing the deployed copy
# ------------------------------------------------------------------------------------------


def load_template(path: Path) -> dict:
    """The template as data, with CloudFormation's short-form tags (!Ref, !Sub, ...) expanded."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def constructor(tag: str):
        name = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

        def build(loader, node):
            if isinstance(node, yaml.ScalarNode):
                value = loader.construct_scalar(node)
                if tag == "GetAtt":
                    value = value.split(".", 1)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node, deep=True)
            else:
                value = loader.construct_mapping(node, deep=True)
            return {name: value}

        return build

    for tag in [
        "Ref", "Condition", "GetAtt", "Sub", "Join", "If", "Equals", "Not", "And", "Or", "Select",
        "Split", "FindInMap", "Base64", "GetAZs", "ImportValue", "Cidr", "Length", "ToJsonString",
    ]:
        Loader.add_constructor(f"!{tag}", constructor(tag))
    return yaml.load(path.read_text(), Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def tiny_zip() -> bytes:
    """A deployment package the emulator accepts: one executable `bootstrap` that never runs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, "#!/bin/sh\necho 'deploy_check stand-in'\nexit 1\n")
    return buffer.getvalue()


def point_code_at(template: dict, bucket: str, key: str) -> None:
    """Every CodeUri (Globals and functions) becomes the uploaded zip: the translator takes only
    S3 locations (`sam package` puts the built code there in a real deployment)."""
    globals_ = template.get("Globals", {}).get("Function", {})
    if "CodeUri" in globals_:
        globals_["CodeUri"] = {"Bucket": bucket, "Key": key}
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and ("CodeUri" in props or "CodeUri" not in globals_):
            resource.setdefault("Properties", {})["CodeUri"] = {"Bucket": bucket, "Key": key}


def translate(template: dict, iam) -> dict:
    from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
    from samtranslator.translator.transform import transform

    return transform(copy.deepcopy(template), dict(PARAMETERS), ManagedPolicyLoader(iam))


def removed_arn(logical_id: str, kind: str) -> str:
    """What stands for a resource that was not deployed: ARN-shaped (IAM checks policy
    resources), a Lambda ARN for a function (LocalStack checks a rule target's service)."""
    if kind == "AWS::Lambda::Function":
        return f"arn:aws:lambda:us-east-1:000000000000:function:removed-{logical_id}"
    return f"arn:aws:deploy-check:::removed/{logical_id}"


def is_localstack(endpoint: str) -> bool:
    """LocalStack answers its health route; moto does not have one."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint.rstrip('/')}/_localstack/health", timeout=5) as r:
            return "services" in json.loads(r.read() or b"{}")
    except Exception:  # noqa: BLE001 (anything else is not LocalStack)
        return False


def strip_unsupported(t: dict, localstack: bool = False) -> tuple[dict, list[tuple[str, str]]]:
    """A copy without the resource types the emulator's CloudFormation cannot create.

    moto skips such a resource with only a log line, and LocalStack waits forever on some, and
    references to it then break others, so they are removed here, loudly. References to a
    removed resource become ARN-shaped placeholders (IAM checks the format of policy
    resources).
    """
    if localstack:
        unsupported = set(LOCALSTACK_UNSUPPORTED)
    else:
        try:
            from moto.cloudformation.parsing import get_model_map  # type: ignore[import-not-found]

            supported = set(get_model_map())
            unsupported = {v["Type"] for v in t["Resources"].values() if v["Type"] not in supported}
        except ImportError:
            unsupported = set(MOTO_UNSUPPORTED)
    t = copy.deepcopy(t)
    removed = [(k, v["Type"]) for k, v in t["Resources"].items() if v["Type"] in unsupported]
    gone = {k for k, _ in removed}
    for logical_id in gone:
        del t["Resources"][logical_id]

    kinds = dict(removed)

    def placeholder(logical_id: str) -> str:
        return removed_arn(logical_id, kinds[logical_id])

    def replace(node):
        if isinstance(node, dict):
            if node.get("Ref") in gone:
                return placeholder(node["Ref"])
            if "Fn::GetAtt" in node and node["Fn::GetAtt"][0] in gone:
                return placeholder(node["Fn::GetAtt"][0])
            if "Fn::Sub" in node:
                sub = node["Fn::Sub"]
                text, variables = (sub, None) if isinstance(sub, str) else (sub[0], sub[1])
                for name in gone:
                    # An ARN attribute stays ARN-shaped (IAM checks policy resources).
                    text = re.sub(r"\$\{" + re.escape(name) + r"\.Arn\}", placeholder(name), text)
                    text = re.sub(r"\$\{" + re.escape(name) + r"(\.[A-Za-z]+)?\}", f"removed-{name}", text)
                return {"Fn::Sub": text if variables is None else [text, replace(variables)]}
            out = {k: replace(v) for k, v in node.items()}
            depends = out.get("DependsOn")
            if isinstance(depends, list):
                out["DependsOn"] = [d for d in depends if d not in gone]
            elif depends in gone:
                del out["DependsOn"]
            return out
        if isinstance(node, list):
            return [replace(v) for v in node]
        return node

    return replace(t), removed


# ------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------


def run(endpoint: str, region: str, check: Checker) -> None:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=60)

    def client(service: str):
        return boto3.client(service, endpoint_url=endpoint, region_name=region, config=config)

    s3, iam, cfn = client("s3"), client("iam"), client("cloudformation")
    try:
        s3.list_buckets()
    except Exception as e:  # noqa: BLE001 (any failure here means no usable emulator)
        raise SetupError(f"cannot reach the emulator at {endpoint}: {e}") from e

    # scripts/test says which emulator it started; by hand the check asks.
    kind = os.environ.get("STRATUS_DEPLOY_CHECK_EMULATOR")
    localstack = kind == "localstack" if kind else is_localstack(endpoint)
    print(f"deploy_check: {TEMPLATE} against {'LocalStack' if localstack else 'moto'} at {endpoint}")
    check_store_design_unchanged(check)
    check_code_contracts(check)
    source = load_template(TEMPLATE)
    check_sam_source(source, check)
    check_forwarder(source, endpoint, region, config, check)

    suffix = uuid.uuid4().hex[:8]
    artifacts, stack = f"stratus-deploy-check-{suffix}", f"stratus-check-{suffix}"
    s3.create_bucket(Bucket=artifacts)
    s3.put_object(Bucket=artifacts, Key="functions.zip", Body=tiny_zip())
    try:
        template = copy.deepcopy(source)
        point_code_at(template, artifacts, "functions.zip")
        translated = translate(template, iam)
        check_translation(translated, check)

        deployable, removed = strip_unsupported(translated, localstack)
        for logical_id, kind in removed:
            why = f" ({LOCALSTACK_UNSUPPORTED[kind]})" if localstack else ""
            check.note(f"the emulator's CloudFormation cannot create {kind}{why}: {logical_id} is not deployed (checked in the translation)")
        for kind, props in {} if localstack else MOTO_IGNORED.items():
            present = sorted({p for r in deployable["Resources"].values() if r["Type"] == kind for p in r.get("Properties", {}) if p in props})
            if present:
                check.note(f"moto's CloudFormation ignores {kind} {', '.join(present)} (checked in the translation)")
        with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="stratus-template-", delete=False) as f:
            json.dump(deployable, f, indent=1)
        print(f"deploy_check: translated template in {f.name} (kept if a check fails); deploying {len(deployable['Resources'])} resources as stack {stack}")
        gone = {logical_id for logical_id, _ in removed}
        deploy_and_check(client, cfn, stack, Path(f.name).read_text(), gone, check, localstack)
        if not check.failed:
            os.unlink(f.name)  # kept when something failed, to look at
    finally:
        cleanup(client, cfn, stack, artifacts)


def check_forwarder(source: dict, endpoint: str, home: str, config, check: Checker) -> None:
    """infra/forwarder.yaml forwards what the stack's Ec2 rule matches, to the home region's
    default bus, with a role that may only put events there; and it deploys."""
    import boto3

    forwarder = load_template(FORWARDER)
    ec2_rule = source["Resources"]["PollFunction"]["Properties"]["Events"]["Ec2"]["Properties"]["Pattern"]
    rule = forwarder["Resources"]["Ec2Events"]["Properties"]
    check.equal(rule["EventPattern"], ec2_rule, "forwarder: its pattern is the stack's Ec2 rule's")
    target = rule["Targets"][0]
    home_bus = {"Fn::Sub": "arn:${AWS::Partition}:events:${HomeRegion}:${AWS::AccountId}:event-bus/default"}
    check.equal(target["Arn"], home_bus, "forwarder: the target is the home region's default bus")
    statements = forwarder["Resources"]["ForwardRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    check.equal(
        [(s["Action"], s["Resource"]) for s in statements],
        [("events:PutEvents", home_bus)],
        "forwarder: its role may only put events on the home bus",
    )
    cfn = boto3.client("cloudformation", endpoint_url=endpoint, region_name=FORWARDER_REGION, config=config)
    events = boto3.client("events", endpoint_url=endpoint, region_name=FORWARDER_REGION, config=config)
    stack = f"stratus-forwarder-{uuid.uuid4().hex[:8]}"
    try:
        cfn.create_stack(
            StackName=stack,
            TemplateBody=FORWARDER.read_text(),
            Parameters=[{"ParameterKey": "HomeRegion", "ParameterValue": home}],
            Capabilities=["CAPABILITY_IAM"],
        )
        status, reason = wait_for_stack(cfn, stack)
        check.equal(status, "CREATE_COMPLETE", f"forwarder: deploys in {FORWARDER_REGION} ({reason})")
        arn = next(
            (o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", []) if o["OutputKey"] == "RuleArn"),
            "",
        )
        name = arn.rsplit("/", 1)[-1]
        targets = events.list_targets_by_rule(Rule=name)["Targets"] if name else []
        check.that(
            len(targets) == 1 and targets[0]["Arn"].endswith(f":events:{home}:" + targets[0]["Arn"].split(":")[4] + ":event-bus/default")
            and bool(targets[0].get("RoleArn")),
            f"forwarder: the deployed rule in {FORWARDER_REGION} targets {home}'s default bus with its role",
            repr(targets),
        )
    finally:
        try:
            cfn.delete_stack(StackName=stack)
        except Exception:  # noqa: BLE001 (cleanup of a scratch stack)
            pass


def check_store_design_unchanged(check: Checker) -> None:
    """The expectations above still describe create_table in dynamo.rs."""
    text = DYNAMO_RS.read_text()
    start, end = text.find("pub async fn create_table"), text.find("pub async fn delete_table")
    body = text[start:end] if 0 <= start < end else ""
    consts = dict(re.findall(r'const (INDEX_\w+): &str = "([^"]+)";', text))
    indexes = {consts.get(c, c): partition for c, partition in re.findall(r'\((INDEX_\w+), "(\w+)"\)', body)}
    attributes = set(re.findall(r'^\s*"(\w+)",\s*$', body, re.M))
    check.equal(indexes, TABLE_INDEXES, "dynamo.rs create_table: the indexes and their partition keys")
    check.equal(attributes, TABLE_ATTRIBUTES, "dynamo.rs create_table: the attribute definitions")
    check.that(
        all(s in body for s in [
            'key("pk", KeyType::Hash)', 'key("sk", KeyType::Range)', 'key("job_key", KeyType::Range)',
            'non_key_attributes("task_count")', "ProjectionType::Include", "BillingMode::PayPerRequest",
        ]),
        "dynamo.rs create_table: pk/sk, job_key index sort key, INCLUDE task_count, on-demand",
        "create_table changed: change infra/template.yaml and this script with it",
    )


def check_code_contracts(check: Checker) -> None:
    """The event names and the tag key the template relies on are the ones the Rust code uses."""
    if check.that(EVENTBRIDGE_RS.exists(), "code contracts: the bus adapter is where this check reads it", str(EVENTBRIDGE_RS)):
        text = EVENTBRIDGE_RS.read_text()
        found = {
            name: (re.search(rf'pub const {name}: &str = "([^"]+)";', text) or [None, None])[1]
            for name in ("EVENT_SOURCE", "JOB_EVENT_DETAIL_TYPE", "JOB_ENDED_DETAIL_TYPE", "JOB_STATUS_DETAIL_TYPE")
        }
        check.equal(
            found,
            {
                "EVENT_SOURCE": EVENT_SOURCE, "JOB_EVENT_DETAIL_TYPE": JOB_EVENT, "JOB_ENDED_DETAIL_TYPE": JOB_ENDED,
                "JOB_STATUS_DETAIL_TYPE": JOB_STATUS,
            },
            "code contracts: the bus adapter's source and detail-types are the rules'",
        )
    if check.that(MARKS_RS.exists(), "code contracts: the cloud marks are where this check reads them", str(MARKS_RS)):
        match = re.search(r'pub const CLUSTER: &str = "([^"]+)";', MARKS_RS.read_text())
        check.equal(
            match[1] if match else None, CLUSTER_TAG,
            "code contracts: the EC2 provider's cluster tag is the one ClusterTeardown requires",
        )


def references(node) -> set[str]:
    """Every name a template node refers to: Ref, GetAtt, and ${...} in Sub."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add((value.split(".")[0] if isinstance(value, str) else value[0]))
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
            found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return found


def check_nothing_unused(source: dict, check: Checker) -> None:
    """No deployed function without a trigger, no parameter that nothing uses, and no variable the
    functions are given that their code never reads."""
    resources = source["Resources"]
    for logical_id, resource in resources.items():
        if resource.get("Type") == "AWS::Serverless::Function":
            events = resource.get("Properties", {}).get("Events") or {}
            check.that(bool(events), f"source: {logical_id} has a trigger (Events)", "no Events: nothing ever invokes it")
    used = references({k: v for k, v in source.items() if k != "Parameters"})
    unused = sorted(set(source.get("Parameters", {})) - used)
    check.that(not unused, "source: every parameter is used", f"unused: {unused}")
    code = "".join(p.read_text() for p in sorted(FUNCTIONS_SRC.rglob("*.rs")))
    variables = dict(source.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    for resource in resources.values():
        variables.update(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}) or {})
    unread = sorted(v for v in variables if v != "RUST_LOG" and f'"{v}"' not in code)
    check.that(not unread, "source: the functions' code reads every variable the template sets", f"unread: {unread}")


def check_sam_source(source: dict, check: Checker) -> None:
    """What only the SAM source shows: the transform and each function's build."""
    check_nothing_unused(source, check)
    resources = source["Resources"]
    globals_ = source.get("Globals", {}).get("Function", {})
    check.equal(source.get("Transform"), "AWS::Serverless-2016-10-31", "source: the SAM transform")
    for logical_id, (binary, _, _) in FUNCTIONS.items():
        resource = resources.get(logical_id, {})
        meta = resource.get("Metadata", {})
        check.that(
            meta.get("BuildMethod") == "rust-cargolambda" and meta.get("BuildProperties", {}).get("Binary") == binary,
            f"source: {logical_id} is built by rust-cargolambda as binary '{binary}'",
            f"Metadata is {meta!r}",
        )
        code_uri = resource.get("Properties", {}).get("CodeUri", globals_.get("CodeUri"))
        check.that(
            isinstance(code_uri, str) and code_uri.rstrip("/") in ("../functions", str(ROOT / "functions")),
            f"source: {logical_id} CodeUri is the functions crate",
            f"CodeUri is {code_uri!r}",
        )


# ------------------------------------------------------------------------------------------
# The translation
# ------------------------------------------------------------------------------------------


def check_translation(t: dict, check: Checker) -> None:
    resources = t["Resources"]

    def of_type(kind: str) -> dict:
        return {k: v for k, v in resources.items() if v["Type"] == kind}

    def props(logical_id: str) -> dict:
        return resources.get(logical_id, {}).get("Properties", {})

    # The table.
    table = props("StateTable")
    check.equal(resources.get("StateTable", {}).get("Type"), "AWS::DynamoDB::Table", "translation: StateTable is a DynamoDB table")
    check.equal(table.get("BillingMode"), "PAY_PER_REQUEST", "translation: table on-demand")
    check.equal([(k["AttributeName"], k["KeyType"]) for k in table.get("KeySchema", [])], TABLE_KEYS, "translation: table keys pk/sk")
    check.equal(
        {(a["AttributeName"], a["AttributeType"]) for a in table.get("AttributeDefinitions", [])},
        {(a, "S") for a in TABLE_ATTRIBUTES},
        "translation: table attribute definitions",
    )
    check.equal(describe_indexes(table.get("GlobalSecondaryIndexes", [])), expected_indexes(), "translation: the four GSIs, keys and projections")
    check.that(
        table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True,
        "translation: table point-in-time recovery on",
    )
    check.that(table.get("TimeToLiveSpecification", {}).get("Enabled") is True, "translation: table TTL attribute set")

    # The bucket.
    bucket = props("DeploymentBucket")
    block = bucket.get("PublicAccessBlockConfiguration", {})
    check.that(
        all(block.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")),
        "translation: bucket blocks all public access",
        repr(block),
    )
    encryption = bucket.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [{}])
    check.that(
        encryption[0].get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") in ("AES256", "aws:kms"),
        "translation: bucket encrypted at rest",
    )
    check.equal(bucket.get("OwnershipControls", {}).get("Rules"), [{"ObjectOwnership": "BucketOwnerEnforced"}], "translation: bucket ACLs disabled")
    rules = bucket.get("LifecycleConfiguration", {}).get("Rules", [])
    check.that(
        any(
            r.get("Status") == "Enabled" and (r.get("Prefix") or r.get("Filter", {}).get("Prefix")) == "uploads/"
            and "ExpirationInDays" in r
            for r in rules
        ),
        "translation: bucket lifecycle expires uploads/",
        repr(rules),
    )
    policy = props("DeploymentBucketPolicy")
    check.that(
        policy.get("Bucket") == {"Ref": "DeploymentBucket"}
        and any(
            s.get("Effect") == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition"))
            for s in policy.get("PolicyDocument", {}).get("Statement", [])
        ),
        "translation: bucket policy denies requests without TLS",
    )

    # The signing key: generated, never written in the template.
    secret = resources.get("AgentTokenSecret", {})
    generate = secret.get("Properties", {}).get("GenerateSecretString", {})
    check.that(
        secret.get("Type") == "AWS::SecretsManager::Secret" and generate.get("PasswordLength", 0) >= 32
        and "SecretString" not in secret.get("Properties", {}),
        "translation: agent-token key is a generated secret (>= 32 characters)",
        repr(secret),
    )

    # The HTTP API: IAM auth on /api/*, none on /agent/*, nothing else.
    apis = of_type("AWS::ApiGatewayV2::Api")
    if check.equal(sorted(apis), ["HttpApi"], "translation: one HTTP API"):
        paths = apis["HttpApi"]["Properties"].get("Body", {}).get("paths", {})
        check.equal(sorted(paths), sorted(ROUTES), "translation: HTTP API routes")
        for path, (method, function, iam_auth) in ROUTES.items():
            op = paths.get(path, {}).get(method, {})
            uri = json.dumps(op.get("x-amazon-apigateway-integration", {}).get("uri"))
            check.that(function in uri, f"translation: {method} {path} goes to {function}", uri)
            # SAM writes Authorizer: NONE as the requirement {"NONE": []}, which names no scheme.
            security = op.get("security")
            check.that(
                security == [{"AWS_IAM": []}] if iam_auth else security in (None, [], [{"NONE": []}]),
                f"translation: {method} {path} auth is {'AWS_IAM' if iam_auth else 'NONE'}",
                f"security is {security!r}",
            )
    check.that(
        any(s["Properties"].get("StageName") == "$default" and s["Properties"].get("AutoDeploy") for s in of_type("AWS::ApiGatewayV2::Stage").values()),
        "translation: HTTP API auto-deployed at the $default stage (routes start at /api and /agent)",
    )
    gateway_permissions = sorted(
        p["Properties"]["SourceArn"]["Fn::Sub"][0].rsplit("/", 2)[-2]
        for p in of_type("AWS::Lambda::Permission").values()
        if p["Properties"].get("Principal") == "apigateway.amazonaws.com" and p["Properties"].get("FunctionName") == {"Ref": "ApiFunction"}
    )
    check.equal(gateway_permissions, ["agent", "api", "hooks"], "translation: the API may invoke ApiFunction on its three routes")
    submit_permissions = [
        p["Properties"]["SourceArn"]["Fn::Sub"][0]
        for p in of_type("AWS::Lambda::Permission").values()
        if p["Properties"].get("Principal") == "apigateway.amazonaws.com" and p["Properties"].get("FunctionName") == {"Ref": "SubmitFunction"}
    ]
    check.that(
        len(submit_permissions) == 1 and submit_permissions[0].endswith("/POST/api/v1/jobs"),
        "translation: the API may invoke SubmitFunction on POST /api/v1/jobs only",
        repr(submit_permissions),
    )

    # Timers: the group, CreateSchedule scoped to it, the role Scheduler assumes.
    check.equal(sorted(of_type("AWS::Scheduler::ScheduleGroup")), ["ScheduleGroup"], "translation: one schedule group")
    scheduler = props("SchedulerRole")
    check.that(
        "scheduler.amazonaws.com" in json.dumps(scheduler.get("AssumeRolePolicyDocument"))
        and "aws:SourceAccount" in json.dumps(scheduler.get("AssumeRolePolicyDocument")),
        "translation: SchedulerRole is assumable by EventBridge Scheduler of this account only",
    )
    statements = [s for p in scheduler.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    check.equal(
        [(s["Action"], s["Resource"]) for s in statements],
        [("events:PutEvents", {"Fn::GetAtt": ["EventBus", "Arn"]})],
        "translation: SchedulerRole may only put events on the bus",
    )
    timer = json.dumps(props("TimerAccess").get("PolicyDocument"))
    check.that(
        "schedule/${ScheduleGroup}/*" in timer and '"iam:PassRole"' in timer and "scheduler.amazonaws.com" in timer
        and '"scheduler:DeleteSchedule"' in timer,
        "translation: TimerAccess creates and deletes schedules in the group only, passes SchedulerRole to Scheduler only",
    )

    # Functions and their roles.
    for logical_id, (_, timeout, capabilities) in FUNCTIONS.items():
        fn = props(logical_id)
        check.that(
            fn.get("Runtime") == "provided.al2023" and fn.get("Handler") == "bootstrap" and fn.get("Architectures") == ["x86_64"],
            f"translation: {logical_id} provided.al2023, bootstrap, x86_64",
        )
        check.equal(fn.get("Timeout"), timeout, f"translation: {logical_id} timeout")
        check.equal(fn.get("Role"), {"Fn::GetAtt": [f"{logical_id}Role", "Arn"]}, f"translation: {logical_id} has a role of its own")
        env = fn.get("Environment", {}).get("Variables", {})
        missing = [v for v in ENV_VARS if v not in env]
        check.that(not missing, f"translation: {logical_id} environment complete", f"missing {missing}")
        check.that("LogGroup" in fn.get("LoggingConfig", {}), f"translation: {logical_id} logs to a log group with retention")
        role = props(f"{logical_id}Role")
        arns = role.get("ManagedPolicyArns", [])
        refs = {a["Ref"] for a in arns if isinstance(a, dict) and "Ref" in a}
        others = [a for a in arns if not (isinstance(a, dict) and "Ref" in a)]
        check.equal(refs, capabilities, f"translation: {logical_id}Role capabilities")
        check.that(
            all(isinstance(a, str) and a.endswith(":policy/service-role/AWSLambdaBasicExecutionRole") for a in others),
            f"translation: {logical_id}Role has no AWS-managed policy but basic execution (logs)",
            repr(others),
        )
        inline = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        check.equal([(s["Action"], s["Resource"]) for s in inline], [], f"translation: {logical_id}Role has no inline permissions")
    api_env = props("ApiFunction").get("Environment", {}).get("Variables", {})
    url_name = props("ApiUrlParameter").get("Name")
    check.that(
        url_name == api_env.get("STRATUS_API_URL_PARAM") and "${HttpApi}" in json.dumps(props("ApiUrlParameter").get("Value")),
        "translation: STRATUS_API_URL_PARAM names the SSM parameter holding the API's URL",
        f"{url_name!r} vs {api_env.get('STRATUS_API_URL_PARAM')!r}",
    )

    # Least privilege in the capabilities.
    for logical_id in sorted(CAPABILITIES):
        doc = props(logical_id).get("PolicyDocument", {})
        problems = []
        for s in doc.get("Statement", []):
            actions = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
            targets = [s["Resource"]] if not isinstance(s["Resource"], list) else s["Resource"]
            if any("*" in a for a in actions):
                problems.append(f"action wildcard in {actions}")
            if "*" in targets and not all(a.startswith("ec2:") for a in actions):
                problems.append(f"Resource '*' for {actions}")
        check.that(
            resources.get(logical_id, {}).get("Type") == "AWS::IAM::ManagedPolicy" and not problems,
            f"translation: {logical_id} names its actions, and Resource '*' only for EC2",
            "; ".join(problems) or "missing",
        )
    teardown = props("ClusterTeardown").get("PolicyDocument", {}).get("Statement", [])
    mutating = [s for s in teardown if s.get("Action") != "ec2:DescribeInstances"]
    check.that(
        len(mutating) == 1
        and set(mutating[0]["Action"]) == {"ec2:CreateTags", "ec2:TerminateInstances"}
        and mutating[0].get("Condition") == {"StringLike": {f"aws:ResourceTag/{CLUSTER_TAG}": "*"}},
        f"translation: ClusterTeardown tags and terminates only instances tagged {CLUSTER_TAG}",
        json.dumps(teardown),
    )
    launch = props("ClusterLaunch").get("PolicyDocument", {}).get("Statement", [])
    tagging = [s for s in launch if "ec2:CreateTags" in json.dumps(s.get("Action"))]
    check.that(
        len(tagging) == 1 and "ec2:CreateAction" in json.dumps(tagging[0].get("Condition")),
        "translation: ClusterLaunch tags only within the creating call",
        json.dumps(tagging),
    )
    table_policy = json.dumps(props("StateTableAccess"))
    check.that(
        "dynamodb:Scan" not in table_policy and "dynamodb:DeleteItem" not in table_policy
        and "${StateTable.Arn}/index/*" in table_policy,
        "translation: StateTableAccess covers the table and its indexes, without Scan or DeleteItem",
    )

    # Rules, their targets and invoke permissions.
    found = []
    for rule_id, rule in of_type("AWS::Events::Rule").items():
        p = rule["Properties"]
        bus = "custom" if p.get("EventBusName") == {"Fn::GetAtt": ["EventBus", "Name"]} else p.get("EventBusName", "default")
        targets = [tg["Arn"]["Fn::GetAtt"][0] for tg in p.get("Targets", []) if "Fn::GetAtt" in tg.get("Arn", {})]
        what = p.get("ScheduleExpression") or p.get("EventPattern")
        for target in targets:
            found.append((target, bus, what))
            permitted = [
                q for q in of_type("AWS::Lambda::Permission").values()
                if q["Properties"].get("FunctionName") == {"Ref": target}
                and q["Properties"].get("Principal") == "events.amazonaws.com"
                and q["Properties"].get("SourceArn") == {"Fn::GetAtt": [rule_id, "Arn"]}
            ]
            check.equal(len(permitted), 1, f"translation: rule {rule_id} may invoke {target}")
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    check.equal(sorted(found, key=key), sorted(RULES, key=key), "translation: the five rules (bus, pattern or schedule, target)")

    check.that(OUTPUTS <= set(t.get("Outputs", {})), "translation: outputs ApiUrl, TableName, BucketName, BusName")


def describe_indexes(indexes: list[dict]) -> dict:
    return {
        i["IndexName"]: (
            [(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]],
            i.get("Projection", {}).get("ProjectionType"),
            sorted(i.get("Projection", {}).get("NonKeyAttributes", [])),
        )
        for i in indexes
    }


def expected_indexes() -> dict:
    return {
        name: ([(partition, "HASH"), (INDEX_SORT_KEY, "RANGE")], "INCLUDE", INDEX_PROJECTED)
        for name, partition in TABLE_INDEXES.items()
    }


# ------------------------------------------------------------------------------------------
# The deployment
# ------------------------------------------------------------------------------------------


def deploy_and_check(client, cfn, stack: str, body: str, gone: set[str], check: Checker, localstack: bool = False) -> None:
    cfn.create_stack(
        StackName=stack,
        TemplateBody=body,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    status, reason = wait_for_stack(cfn, stack)
    if not check.equal(status, "CREATE_COMPLETE", f"deployed: stack {stack}"):
        failed = [
            f"{e['LogicalResourceId']} ({e['ResourceType']}): {e.get('ResourceStatusReason')}"
            for e in cfn.describe_stack_events(StackName=stack)["StackEvents"]
            if e["ResourceStatus"].endswith("FAILED")
        ]
        check.that(False, "deployed: stack events", "; ".join(failed) or reason or "no reason given")
        return
    physical = {
        r["LogicalResourceId"]: r.get("PhysicalResourceId")
        for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    check.that(OUTPUTS <= set(outputs), "deployed: outputs ApiUrl, TableName, BucketName, BusName", f"outputs: {sorted(outputs)}")
    table, bucket, bus = physical.get("StateTable"), physical.get("DeploymentBucket"), outputs.get("BusName")

    if "StateTable" in gone:
        # Nothing deployed to compare with: the names become the placeholders, and the
        # table's design was checked in the translation.
        table = "arn:aws:deploy-check:::removed/StateTable"
    else:
        check_table(client("dynamodb"), table, check)
    bus_arn = check_bus(client("events"), bus, check)
    check_bucket(client("s3"), bucket, check)
    roles = check_roles(client("iam"), physical, bus_arn, check)
    check_policies(client("iam"), physical, table, bucket, bus_arn, roles.get("SchedulerRole"), check)
    if any(f in gone for f in FUNCTIONS):
        # Their configuration, environment and invoke permissions were checked in the
        # translation; the rules still name them (by placeholder) and are tried below.
        functions = {}
    else:
        functions = check_functions(client("lambda"), physical, roles, check)
        check_environment(functions, physical, table, bucket, bus, bus_arn, roles.get("SchedulerRole"), stack, check)
    check_rules(client("events"), client("lambda"), client("sqs"), functions, bus, check, gone, localstack)
    check_api_url_parameter(client("ssm"), f"/stratus/{stack}/api-url", check)
    if "StateTable" not in gone:
        check.equal(outputs.get("TableName"), table, "deployed: output TableName is the table")
    check.equal(outputs.get("BucketName"), bucket, "deployed: output BucketName is the bucket")
    if "AgentTokenSecret" not in gone:
        secret = physical.get("AgentTokenSecret")
        value = client("secretsmanager").get_secret_value(SecretId=secret)["SecretString"] if secret else ""
        check.that(len(value) >= 32, "deployed: agent-token key generated")


def wait_for_stack(cfn, stack: str, timeout: float = 120.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        described = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        status = described["StackStatus"]
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            return status, described.get("StackStatusReason", "")
        time.sleep(0.5)


def check_table(dynamodb, name: str | None, check: Checker) -> None:
    if not check.that(bool(name), "deployed: table"):
        return
    table = dynamodb.describe_table(TableName=name)["Table"]
    check.equal([(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]], TABLE_KEYS, "deployed: table keys pk/sk")
    check.equal(
        {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]},
        {(a, "S") for a in TABLE_ATTRIBUTES},
        "deployed: table attribute definitions",
    )
    check.equal(table.get("BillingModeSummary", {}).get("BillingMode"), "PAY_PER_REQUEST", "deployed: table on-demand")
    check.equal(describe_indexes(table.get("GlobalSecondaryIndexes", [])), expected_indexes(), "deployed: the four GSIs, keys and projections")


def check_bus(events, name: str | None, check: Checker) -> str | None:
    if not check.that(bool(name) and name.startswith("stratus-"), "deployed: bus named stratus-<stack>", repr(name)):
        return None
    try:
        return events.describe_event_bus(Name=name)["Arn"]
    except Exception as e:  # noqa: BLE001
        check.that(False, "deployed: bus exists", str(e))
        return None


def check_bucket(s3, name: str | None, check: Checker) -> None:
    if not check.that(bool(name), "deployed: bucket"):
        return
    s3.head_bucket(Bucket=name)
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    check.equal(rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256", "deployed: bucket encrypted at rest")


def check_roles(iam, physical: dict, bus_arn: str | None, check: Checker) -> dict:
    roles = {}
    for logical_id in [f"{f}Role" for f in FUNCTIONS] + ["SchedulerRole"]:
        name = physical.get(logical_id)
        if not check.that(bool(name), f"deployed: role {logical_id}"):
            continue
        role = iam.get_role(RoleName=name.rsplit("/", 1)[-1])["Role"]
        roles[logical_id] = role["Arn"]
        principal = "scheduler.amazonaws.com" if logical_id == "SchedulerRole" else "lambda.amazonaws.com"
        trust = json.dumps(role["AssumeRolePolicyDocument"])
        check.that(principal in trust, f"deployed: role {logical_id} trusts {principal}", trust)
    if "SchedulerRole" in roles and bus_arn:
        name = physical["SchedulerRole"].rsplit("/", 1)[-1]
        docs = [
            iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"]
            for p in iam.list_role_policies(RoleName=name)["PolicyNames"]
        ]
        statements = [s for d in docs for s in as_document(d)["Statement"]]
        check.equal(
            [(s["Action"], s["Resource"]) for s in statements],
            [("events:PutEvents", bus_arn)],
            "deployed: SchedulerRole may only put events on the bus",
        )
    return roles


def check_policies(iam, physical: dict, table, bucket, bus_arn, scheduler_arn, check: Checker) -> None:
    """The capabilities exist and name the deployed resources."""
    docs = {}
    for logical_id in sorted(CAPABILITIES):
        arn = physical.get(logical_id)
        if not check.that(bool(arn), f"deployed: managed policy {logical_id}"):
            continue
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        docs[logical_id] = json.dumps(as_document(doc))
    expectations = [
        ("StateTableAccess", [f":table/{table}\"", f":table/{table}/index/*\""]),
        ("BlobAccess", [f"arn:aws:s3:::{bucket}/jobs/*", f"arn:aws:s3:::{bucket}/uploads/*"]),
        ("BusPublish", [str(bus_arn)]),
        ("TimerAccess", [str(scheduler_arn), ":schedule/"]),
        ("ClusterLaunch", ["parameter/stratus/", "parameter/aws/service/*"]),
        ("AgentPublish", [f"arn:aws:s3:::{bucket}/agent/*"]),
        # Nodes' data identity: only the node data role may be assumed, never anything else.
        ("NodeDataIssue", ["sts:AssumeRole", ":role/"]),
    ]
    if "deploy-check:::removed/" in str(table):
        # The table was not deployed: the policy names its placeholder, and its index's.
        expectations[0] = ("StateTableAccess", [f"{table}\"", f"{table}/index/*\""])
    for logical_id, needles in expectations:
        doc = docs.get(logical_id, "")
        missing = [n for n in needles if n not in doc]
        check.that(not missing, f"deployed: {logical_id} names the deployed resources", f"missing {missing} in {doc}")


def as_document(doc) -> dict:
    """A policy document as IAM returns it: a dict, JSON text, URL-encoded JSON, or (moto, for
    inline policies made by CloudFormation) a Python repr."""
    if isinstance(doc, dict):
        return doc
    import ast
    from urllib.parse import unquote

    for text in (doc, unquote(doc)):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return ast.literal_eval(doc)


def check_functions(lam, physical: dict, roles: dict, check: Checker) -> dict:
    functions = {}
    for logical_id, (_, timeout, _) in FUNCTIONS.items():
        name = physical.get(logical_id)
        if not check.that(bool(name), f"deployed: function {logical_id}"):
            continue
        config = lam.get_function_configuration(FunctionName=name)
        functions[logical_id] = config
        check.that(
            config["Runtime"] == "provided.al2023" and config["Handler"] == "bootstrap",
            f"deployed: {logical_id} provided.al2023, handler bootstrap",
            f"{config['Runtime']}, {config['Handler']}",
        )
        check.equal(config["Timeout"], timeout, f"deployed: {logical_id} timeout")
        check.equal(config["Role"], roles.get(f"{logical_id}Role"), f"deployed: {logical_id} runs as its own role")
    return functions


def check_environment(
    functions: dict, physical: dict, table, bucket, bus, bus_arn, scheduler_arn, stack: str, check: Checker
) -> None:
    expected = {
        "STRATUS_TABLE": table,
        "STRATUS_BUCKET": bucket,
        "STRATUS_BUS": bus,
        "STRATUS_BUS_ARN": bus_arn,
        "STRATUS_SCHEDULER_ROLE_ARN": scheduler_arn,
        "STRATUS_API_URL_PARAM": f"/stratus/{stack}/api-url",
        "STRATUS_AGENT_HEARTBEAT_SECS": PARAMETERS["AgentHeartbeatSecs"],
        "STRATUS_HEARTBEAT_TIMEOUT_SECS": "300",
        "RUST_LOG": "info",
    }
    for logical_id, config in functions.items():
        env = config.get("Environment", {}).get("Variables", {})
        wrong = {k: env.get(k) for k, v in expected.items() if str(env.get(k)) != str(v)}
        missing = [k for k in ("STRATUS_SCHEDULE_GROUP", "STRATUS_SECRET_ARN") if not env.get(k)]
        check.that(not wrong and not missing, f"deployed: {logical_id} environment names the deployed resources", f"wrong {wrong}, missing {missing}")
    api = functions.get("ApiFunction", {}).get("Environment", {}).get("Variables", {})
    check.equal(api.get("STRATUS_ADMIN_ROLE_ARN"), PARAMETERS["AdminRoleArn"], "deployed: ApiFunction admin role from the parameter")
    notify = functions.get("NotifyFunction", {}).get("Environment", {}).get("Variables", {})
    check.equal(
        (notify.get("STRATUS_WEBHOOK_URL"), notify.get("STRATUS_WEBHOOK_NOTIFY_ON"), notify.get("STRATUS_WEBHOOK_FORMAT")),
        (PARAMETERS["WebhookUrl"], PARAMETERS["WebhookNotifyOn"], PARAMETERS["WebhookFormat"]),
        "deployed: NotifyFunction's webhook from the parameters",
    )
    check.that(
        not any("STRATUS_WEBHOOK_URL" in (c.get("Environment", {}).get("Variables", {})) for f, c in functions.items() if f != "NotifyFunction"),
        "deployed: only NotifyFunction's environment holds the webhook URL",
    )


def check_rules(
    events, lam, sqs, functions: dict, bus: str | None, check: Checker, gone: set[str] = frozenset(), localstack: bool = False
) -> None:
    """Each rule targets its function, may invoke it, and matches the events it should (tried with
    real events: the function target is swapped for an SQS queue, since the emulator runs no
    Lambda code). A function the emulator could not create is named by its placeholder."""
    arns = {logical_id: f["FunctionArn"] for logical_id, f in functions.items()}
    arns.update({f: removed_arn(f, "AWS::Lambda::Function") for f in FUNCTIONS if f in gone})
    by_target: dict[str, list[tuple[str, dict]]] = {}
    for bus_name in filter(None, [bus, "default"]):
        for rule in events.list_rules(EventBusName=bus_name)["Rules"]:
            for target in events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus_name)["Targets"]:
                for logical_id, arn in arns.items():
                    if target["Arn"] == arn:
                        by_target.setdefault(logical_id, []).append((bus_name, rule))
    found = []
    for logical_id, rules in by_target.items():
        for bus_name, rule in rules:
            what = rule.get("ScheduleExpression") or json.loads(rule.get("EventPattern") or "{}")
            found.append((logical_id, "custom" if bus_name == bus else "default", what))
            if logical_id in gone:
                continue  # no function, no invoke permission (checked in the translation)
            policy = json.loads(lam.get_policy(FunctionName=arns[logical_id])["Policy"])
            allowed = [
                s for s in policy["Statement"]
                if "events.amazonaws.com" in json.dumps(s.get("Principal")) and rule["Arn"] in json.dumps(s.get("Condition") or s)
            ]
            check.that(bool(allowed), f"deployed: rule {rule['Name']} may invoke {logical_id}", json.dumps(policy))
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    check.equal(sorted(found, key=key), sorted(RULES, key=key), "deployed: the five rules (bus, pattern or schedule, target)")

    # Delivery: real events are put on the bus and an SQS queue stands in for the function. The
    # emulator cannot deliver to a Lambda target (moto raises on any matching rule that has one,
    # and it matches its pattern-less schedule rules against every event), so while a trial runs,
    # this stack's rules on that bus lose their function targets; they are put back after.
    queue_url = sqs.create_queue(QueueName=f"deploy-check-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    trials = [
        ("RecoverFunction", bus, EVENT_SOURCE, JOB_EVENT, True),
        ("RecoverFunction", bus, EVENT_SOURCE, JOB_ENDED, False),
        ("CleanupFunction", bus, EVENT_SOURCE, JOB_ENDED, True),
        ("CleanupFunction", bus, EVENT_SOURCE, JOB_EVENT, False),
        ("NotifyFunction", bus, EVENT_SOURCE, JOB_STATUS, True),
        ("NotifyFunction", bus, EVENT_SOURCE, JOB_EVENT, False),
        ("PollFunction", "default", "aws.ec2", EC2_DETAIL_TYPES[0], True),
        ("PollFunction", "default", "aws.ec2", EC2_DETAIL_TYPES[1], True),
        ("PollFunction", "default", "aws.ec2", "EC2 Instance Rebalance Recommendation", False),
    ]
    try:
        for logical_id, bus_name, source, detail_type, delivered in trials:
            rules = [r for b, r in by_target.get(logical_id, []) if r.get("EventPattern") and b == bus_name]
            if not bus_name or not rules:
                continue  # already reported above as a missing rule
            what = f"delivery: {source} '{detail_type}' {'reaches' if delivered else 'does not reach'} {logical_id}'s rule"
            ours = {r["Name"] for _, stack_rules in by_target.items() for b, r in stack_rules if b == bus_name}
            saved = {}
            for name in ours:
                targets = events.list_targets_by_rule(Rule=name, EventBusName=bus_name)["Targets"]
                saved[name] = [t for t in targets if ":lambda:" in t["Arn"]]
                if saved[name]:
                    events.remove_targets(Rule=name, EventBusName=bus_name, Ids=[t["Id"] for t in saved[name]])
            events.put_targets(Rule=rules[0]["Name"], EventBusName=bus_name, Targets=[{"Id": "deploy-check", "Arn": queue_arn}])
            # Each event carries its own trial id, so a late delivery is never taken for another
            # trial's. An event that must not arrive is followed by one that must (the rule's
            # own detail-type): once that one is in, the emulator has handled the first too.
            trial = uuid.uuid4().hex
            sentinel = None if delivered else next(
                (t for i, _b, _s, t, d in trials if i == logical_id and d), None
            )
            try:
                try:
                    put_trial(events, bus_name, source, detail_type, trial)
                    if sentinel:
                        sentinel_trial = uuid.uuid4().hex
                        put_trial(events, bus_name, source, sentinel, sentinel_trial)
                except Exception as e:  # noqa: BLE001
                    if localstack:  # LocalStack takes every event: a refusal is a failure
                        check.that(False, what, f"the event was refused: {e}")
                    else:
                        check.note(f"{what}: not tried, the emulator could not take the event ({e}); the pattern is checked above")
                    continue
                awaited = trial if delivered else (sentinel_trial if sentinel else None)
                seen = receive_trials(sqs, queue_url, awaited)
                if sentinel and sentinel_trial not in seen:
                    check.that(False, what, f"the control event ({sentinel}) never arrived, so nothing can be said")
                    continue
                check.equal([seen[trial]] if trial in seen else [], [detail_type] if delivered else [], what)
            finally:
                events.remove_targets(Rule=rules[0]["Name"], EventBusName=bus_name, Ids=["deploy-check"])
                for name, targets in saved.items():
                    if targets:
                        events.put_targets(Rule=name, EventBusName=bus_name, Targets=targets)
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


def put_trial(events, bus_name: str, source: str, detail_type: str, trial: str) -> None:
    events.put_events(Entries=[{
        "EventBusName": bus_name, "Source": source, "DetailType": detail_type,
        "Detail": json.dumps({"job_id": 1, "scope": "job", "instance-id": "i-0123456789abcdef0", "trial": trial}),
    }])


def receive_trials(sqs, queue_url: str, awaited: str | None, seconds: float = 30.0) -> dict[str, str]:
    """The trials delivered to the queue (trial id -> detail-type), read until `awaited` is in
    or `seconds` have passed (a loaded machine delivers late; nothing is read twice)."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            body = json.loads(m["Body"])
            seen[(body.get("detail") or {}).get("trial", "")] = body.get("detail-type")
        if awaited is None or awaited in seen:
            break
    return seen


def check_api_url_parameter(ssm, name: str, check: Checker) -> None:
    try:
        value = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except Exception as e:  # noqa: BLE001
        check.that(False, f"deployed: SSM parameter {name}", str(e))
        return
    # LocalStack answers AWS::URLSuffix with its own address, without the region.
    shape = r"https://[^/]+\.execute-api\.([a-z0-9-]+\.amazonaws\.com|127\.0\.0\.1:[0-9]+)/?"
    check.that(re.fullmatch(shape, value) is not None, f"deployed: SSM parameter {name} holds the API's URL", value)


def cleanup(client, cfn, stack: str, artifacts: str) -> None:
    """Best effort: emulators are thrown away, but a shared one should stay tidy."""
    s3 = client("s3")
    try:
        for r in cfn.describe_stack_resources(StackName=stack)["StackResources"]:
            if r["ResourceType"] == "AWS::S3::Bucket" and r.get("PhysicalResourceId"):
                empty_bucket(s3, r["PhysicalResourceId"])
        cfn.delete_stack(StackName=stack)
    except Exception:  # noqa: BLE001, S110
        pass
    try:  # moto's stack deletion leaves managed policies behind
        iam = client("iam")
        for policy in iam.list_policies(Scope="Local")["Policies"]:
            if policy["PolicyName"].startswith(f"{stack}-") and not policy.get("AttachmentCount"):
                iam.delete_policy(PolicyArn=policy["Arn"])
    except Exception:  # noqa: BLE001, S110
        pass
    try:
        empty_bucket(s3, artifacts)
        s3.delete_bucket(Bucket=artifacts)
    except Exception:  # noqa: BLE001, S110
        pass


def empty_bucket(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])


if __name__ == "__main__":
    sys.exit(main())
