//! A fake Compute Engine API: the subset of the REST API the GCE provider calls, served on a
//! local port, that checks every request against Google's discovery document
//! (`compute.v1.json`) before acting on it. There is no Compute emulator; this stands in for
//! one.
//!
//! Served (under `/compute/v1`, as the official client calls them): `instances.insert`
//! (`requestId` honoured), `.list` (with `filter`, `maxResults`, `pageToken`), `.get`,
//! `.delete`, `.setLabels` (with `labelFingerprint`), and `zoneOperations.get`, `.wait`,
//! `.list`. Errors are Google's JSON errors (`{"error": {"code", "message", "errors":
//! [{"reason", ...}], "status"}}`). Operations are `RUNNING` when returned by the call that
//! starts them and `DONE` from the next `get` or `wait`.
//!
//! Every request is checked (see `discovery` for what): a request the real API would reject
//! is answered `400` and recorded, and [`FakeCompute::assert_valid`] fails the test at its
//! end. Beyond the schema, inserts are held to rules Google documents that a schema cannot
//! say (see [`insert_rules`]).
//!
//! Knobs for what the real API does that a test cannot provoke: [`FakeCompute::preempt`],
//! [`FakeCompute::exhaust_zone`] (capacity errors in the operation or in the call),
//! [`FakeCompute::fail`] (any Google error on any method), [`FakeCompute::lose_insert_responses`]
//! (a reply lost after the insert took effect), [`FakeCompute::forget_request_ids`].
//!
//! Part of `shared::testing` (feature `test-util`), so every crate's tests reach it the same way.
//!
//! Why one file of this length: it holds the fake's state, the knobs tests turn and the
//! routing of every request through the validator, which all touch the same locked state; what
//! the methods do is in `instances`, the documented rules in `rules`, list filters in `filter`,
//! and Storage and IAM in modules of their own.

mod discovery;
mod filter;
pub mod identity;
mod instances;
mod pattern;
mod rules;
pub mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use self::discovery::Discovery;
use self::instances::{Listed, delete, insert, list, set_labels};
pub use self::pattern::full_match;
pub use self::rules::insert_rules;
use self::rules::semantic_rules;

/// The environment variable naming the discovery document.
pub const DISCOVERY_ENV: &str = "STRATUS_COMPUTE_DISCOVERY";

/// Where compute.v1.json is inside the `googleapiclient` package.
const DOCUMENT_IN_PACKAGE: &str = "googleapiclient/discovery_cache/documents/compute.v1.json";

/// How the fake names itself in `selfLink`s.
const API_ROOT: &str = "https://www.googleapis.com/compute/v1";

/// A Google error to answer a call with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub http: u16,
    /// The canonical status (`PERMISSION_DENIED`).
    pub status: String,
    /// `error.errors[].reason` (`quotaExceeded`).
    pub reason: String,
    pub message: String,
}

impl Fault {
    pub fn new(http: u16, status: &str, reason: &str, message: &str) -> Self {
        Self {
            http,
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
        }
    }

    /// A regional quota, as an insert's HTTP 403.
    pub fn quota() -> Self {
        Self::new(
            403,
            "PERMISSION_DENIED",
            "quotaExceeded",
            "Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 0.0 in region us-central1.",
        )
    }

    /// Bad or expired credentials.
    pub fn unauthenticated() -> Self {
        Self::new(
            401,
            "UNAUTHENTICATED",
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential.",
        )
    }

    /// A caller without the permission.
    pub fn permission_denied() -> Self {
        Self::new(
            403,
            "PERMISSION_DENIED",
            "forbidden",
            "Required 'compute.instances.create' permission for 'projects/test-project'",
        )
    }

    /// The API's rate limit.
    pub fn rate_limited() -> Self {
        Self::new(
            429,
            "RESOURCE_EXHAUSTED",
            "rateLimitExceeded",
            "Rate Limit Exceeded",
        )
    }

    /// A transient failure the client retries.
    pub fn unavailable() -> Self {
        Self::new(503, "UNAVAILABLE", "backendError", "Backend Error")
    }
}

/// How a zone says it has no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhaustion {
    /// The insert is accepted and its operation ends with `ZONE_RESOURCE_POOL_EXHAUSTED` (the
    /// usual way).
    InOperation,
    /// The insert itself fails: HTTP 503 with the reason `ZONE_RESOURCE_POOL_EXHAUSTED`.
    InCall,
}

/// One request the fake saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `compute.instances.insert`, or `?` when the path is no Compute method.
    pub method: String,
    pub verb: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Key = (String, String, String);

/// A method's answer: its resource, or a Google error.
type Reply = Result<Value, Fault>;

#[derive(Debug, Default)]
struct FakeState {
    /// (project, zone, name) → instance.
    instances: BTreeMap<Key, Value>,
    /// (project, zone, name) → operation.
    operations: BTreeMap<Key, Value>,
    /// requestId → the operation it made.
    request_ids: BTreeMap<String, Key>,
    forget_request_ids: bool,
    exhausted: BTreeMap<String, Exhaustion>,
    /// zone → how many instances it holds at most (then inserts fail as exhausted).
    capacity: BTreeMap<String, usize>,
    /// zone → (code, message) every insert operation there fails with.
    operation_faults: BTreeMap<String, (String, String)>,
    /// method id → (fault, times left; `None`: always).
    faults: BTreeMap<String, (Fault, Option<u32>)>,
    lose_insert_responses: u32,
    page_size: Option<usize>,
    requests: Vec<Recorded>,
    failures: Vec<String>,
    next_id: u64,
    /// The bearer token every request must carry (see [`FakeCompute::require_token`]).
    required_token: Option<String>,
}

#[derive(Debug)]
struct Shared {
    discovery: Arc<Discovery>,
    state: Mutex<FakeState>,
}

/// A running fake Compute API; it serves until the test process ends.
#[derive(Debug, Clone)]
pub struct FakeCompute {
    /// `http://127.0.0.1:<port>`: the endpoint to give the client.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeCompute {
    /// The discovery document: `$STRATUS_COMPUTE_DISCOVERY`, else the one in the workspace's
    /// `.venv` (`scripts/test` installs `google-api-python-client` there). Panics with what to
    /// do when there is none.
    pub fn discovery_path() -> PathBuf {
        if let Some(path) = std::env::var_os(DISCOVERY_ENV).filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let lib = root.join(".venv/lib");
        let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("site-packages").join(DOCUMENT_IN_PACKAGE))
                .find(|p| p.is_file())
        });
        found.unwrap_or_else(|| {
            panic!(
                "no Compute discovery document: set {DISCOVERY_ENV} to compute.v1.json, or run \
                 scripts/test (it installs google-api-python-client into .venv), or \
                 `.venv/bin/pip install google-api-python-client`"
            )
        })
    }

    /// Starts a fake on a free port, checking requests against the document at
    /// `discovery_path`.
    pub async fn start(discovery_path: &Path) -> FakeCompute {
        let discovery = Discovery::load(discovery_path).unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(Shared {
            discovery,
            state: Mutex::new(FakeState {
                next_id: 1_000_000_000_000_000_001,
                ..FakeState::default()
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeCompute { url, shared }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, every request must carry `Authorization: Bearer <token>` (as Google's
    /// API requires a token its STS issued); others get 401 and count as failures.
    pub fn require_token(&self, token: &str) {
        self.state().required_token = Some(token.to_owned());
    }

    /// The discovery document's revision.
    pub fn revision(&self) -> String {
        self.shared.discovery.revision().to_owned()
    }

    /// Every instance (any project and zone), by zone then name.
    pub fn instances(&self) -> Vec<Value> {
        self.state()
            .instances
            .values()
            .cloned()
            .map(public)
            .collect()
    }

    /// The instances of `zone`, by name.
    pub fn instances_in(&self, zone: &str) -> Vec<Value> {
        self.state()
            .instances
            .iter()
            .filter(|((_, z, _), _)| z == zone)
            .map(|(_, v)| public(v.clone()))
            .collect()
    }

    /// The instance `name` of `zone`.
    pub fn instance(&self, zone: &str, name: &str) -> Option<Value> {
        find_instance(&mut self.state(), zone, name).map(|(_, v)| public(v.clone()))
    }

    /// Sets an instance's status (`STAGING`, `SUSPENDED`, ...).
    pub fn set_status(&self, zone: &str, name: &str, status: &str) {
        let mut state = self.state();
        let (_, instance) = find_instance(&mut state, zone, name).expect("no such instance");
        instance["status"] = json!(status);
    }

    /// Preempts a spot VM as GCE does: it becomes `TERMINATED` and a
    /// `compute.instances.preempted` operation is recorded for it.
    pub fn preempt(&self, zone: &str, name: &str) {
        let mut state = self.state();
        let (key, instance) = find_instance(&mut state, zone, name).expect("no such instance");
        instance["status"] = json!("TERMINATED");
        instance["statusMessage"] = json!("Instance was preempted.");
        let (target, id) = (instance["selfLink"].clone(), instance["id"].clone());
        let op = new_operation(
            &mut state,
            &key.0,
            zone,
            "compute.instances.preempted",
            &target,
            &id,
        );
        let op_key = (
            key.0.clone(),
            zone.to_owned(),
            op["name"].as_str().unwrap().to_owned(),
        );
        let mut op = op;
        finish(&mut op);
        op["user"] = json!("system");
        op["statusMessage"] = json!("Instance was preempted.");
        state.operations.insert(op_key, op);
    }

    /// Preempts a spot VM whose termination action is `DELETE`: as [`Self::preempt`], then
    /// the instance is gone.
    pub fn preempt_and_delete(&self, zone: &str, name: &str) {
        self.preempt(zone, name);
        self.remove(zone, name);
    }

    /// Deletes an instance from outside (no operation Stratus would recognise).
    pub fn remove(&self, zone: &str, name: &str) {
        let mut state = self.state();
        let key = find_instance(&mut state, zone, name).map(|(k, _)| k);
        if let Some(key) = key {
            state.instances.remove(&key);
        }
    }

    /// Completes every deletion under way: instances `instances.delete` left `STOPPING` are
    /// gone.
    pub fn finish_deletions(&self) {
        self.state()
            .instances
            .retain(|_, i| i["status"] != "STOPPING" || i.get("_deleting").is_none());
    }

    /// Makes `zone` have no room: inserts there fail with `ZONE_RESOURCE_POOL_EXHAUSTED`.
    pub fn exhaust_zone(&self, zone: &str, how: Exhaustion) {
        self.state().exhausted.insert(zone.to_owned(), how);
    }

    /// Gives `zone` room for `n` instances in all: an insert beyond that is accepted and its
    /// operation ends with `ZONE_RESOURCE_POOL_EXHAUSTED` (capacity running out mid-cluster).
    pub fn set_zone_capacity(&self, zone: &str, n: usize) {
        self.state().capacity.insert(zone.to_owned(), n);
    }

    /// Makes every insert operation in `zone` fail with `code` (e.g. `QUOTA_EXCEEDED`).
    pub fn fail_insert_operations(&self, zone: &str, code: &str, message: &str) {
        self.state()
            .operation_faults
            .insert(zone.to_owned(), (code.to_owned(), message.to_owned()));
    }

    /// Answers calls of `method` (`compute.instances.insert`) with `fault`, `times` times
    /// (`None`: always). The request is still checked first.
    pub fn fail(&self, method: &str, fault: Fault, times: Option<u32>) {
        self.state()
            .faults
            .insert(method.to_owned(), (fault, times));
    }

    /// The next `n` inserts take effect but their replies are lost (HTTP 503), as when a
    /// connection drops: the client retries with the same `requestId`.
    pub fn lose_insert_responses(&self, n: u32) {
        self.state().lose_insert_responses = n;
    }

    /// From now on, a repeated `requestId` is not recognised (GCE remembers them for a
    /// limited time): a repeated insert of an existing name is answered `409 alreadyExists`.
    pub fn forget_request_ids(&self) {
        let mut state = self.state();
        state.forget_request_ids = true;
        state.request_ids.clear();
    }

    /// At most `n` items per list page, whatever `maxResults` says.
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = Some(n.max(1));
    }

    /// What the fake would find wrong with a call of `method` (`compute.instances.insert`) in
    /// `zone` with `query` and `body`: the same checks as a request's, without acting on it.
    pub fn check(
        &self,
        method: &str,
        zone: &str,
        query: &[(&str, &str)],
        body: &Value,
    ) -> Vec<String> {
        let discovery = &self.shared.discovery;
        let m = discovery.method(method).expect("no such method");
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut failures = discovery.check_query(m, &query);
        failures.extend(discovery.check_request(m, Some(body)));
        let params = BTreeMap::from([("zone".to_owned(), zone.to_owned())]);
        failures.extend(semantic_rules(method, &params, &query, Some(body)));
        failures
    }

    /// What the fake would find wrong with the query of a call of `method`.
    pub fn check_query(&self, method: &str, query: &[(&str, &str)]) -> Vec<String> {
        let discovery = &self.shared.discovery;
        let m = discovery.method(method).expect("no such method");
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut failures = discovery.check_query(m, &query);
        failures.extend(semantic_rules(method, &BTreeMap::new(), &query, None));
        failures
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The requests to `method` (`compute.instances.insert`).
    pub fn requests_to(&self, method: &str) -> Vec<Recorded> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }

    /// How many requests `method` got.
    pub fn count(&self, method: &str) -> usize {
        self.requests_to(method).len()
    }

    /// Every check that failed so far (requests the real API would reject, replies it could
    /// not give, calls the fake does not serve).
    pub fn validation_failures(&self) -> Vec<String> {
        self.state().failures.clone()
    }

    /// Fails the test if any request did not validate.
    pub fn assert_valid(&self) {
        let failures = self.validation_failures();
        assert!(
            failures.is_empty(),
            "requests the Compute API would reject (checked against compute.v1.json revision \
             {}):\n  {}",
            self.revision(),
            failures.join("\n  ")
        );
    }
}

fn find_instance<'a>(
    state: &'a mut FakeState,
    zone: &str,
    name: &str,
) -> Option<(Key, &'a mut Value)> {
    state
        .instances
        .iter_mut()
        .find(|((_, z, n), _)| z == zone && n == name)
        .map(|(k, v)| (k.clone(), v))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    verb: Method,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let required = shared.state.lock().unwrap().required_token.clone();
    if let Some(token) = required {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            let why = format!("{verb} {path}: no valid bearer token");
            shared.state.lock().unwrap().failures.push(why.clone());
            return error(401, "UNAUTHENTICATED", "authError", &why);
        }
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                let why = format!("{verb} {path}: the body is not JSON: {e}");
                shared.state.lock().unwrap().failures.push(why.clone());
                return error(400, "INVALID_ARGUMENT", "parseError", &why);
            }
        }
    };
    let discovery = shared.discovery.clone();
    let Some((method, params)) = discovery.route(verb.as_str(), &path) else {
        let why = format!("{verb} {path}: no Compute API method has this path");
        let mut state = shared.state.lock().unwrap();
        state.failures.push(why.clone());
        state.requests.push(Recorded {
            method: "?".to_owned(),
            verb: verb.to_string(),
            path,
            query,
            body,
        });
        return error(404, "NOT_FOUND", "notFound", &why);
    };
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    state.requests.push(Recorded {
        method: method.id.clone(),
        verb: verb.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let mut failures = discovery.check_query(method, &query);
    failures.extend(discovery.check_request(method, body.as_ref()));
    if failures.is_empty() {
        failures.extend(semantic_rules(&method.id, &params, &query, body.as_ref()));
    }
    if !failures.is_empty() {
        let message = failures.join("; ");
        state.failures.extend(failures);
        return error(400, "INVALID_ARGUMENT", "invalid", &message);
    }
    if let Some((fault, times)) = state.faults.get_mut(&method.id) {
        let fault = fault.clone();
        match times {
            Some(0) => {}
            Some(n) => {
                *n -= 1;
                return fault_response(&fault);
            }
            None => return fault_response(&fault),
        }
    }
    let reply = dispatch(&mut state, &discovery, method, &params, &query, body);
    match reply {
        Ok(value) => {
            let value = public(value);
            let problems = discovery.check_response(method, &value);
            state
                .failures
                .extend(problems.into_iter().map(|p| format!("fake reply: {p}")));
            if method.id == "compute.instances.insert" && state.lose_insert_responses > 0 {
                state.lose_insert_responses -= 1;
                return fault_response(&Fault::unavailable());
            }
            (StatusCode::OK, axum::Json(value)).into_response()
        }
        Err(fault) => fault_response(&fault),
    }
}

/// What the method answers (its checks passed).
fn dispatch(
    state: &mut FakeState,
    discovery: &Discovery,
    method: &discovery::Method,
    params: &BTreeMap<String, String>,
    query: &[(String, String)],
    body: Option<Value>,
) -> Reply {
    let p = |k: &str| params.get(k).cloned().unwrap_or_default();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match method.id.as_str() {
        "compute.instances.insert" => insert(
            state,
            &p("project"),
            &p("zone"),
            q("requestId"),
            body.unwrap_or_default(),
        ),
        "compute.instances.list" => list(
            state,
            discovery,
            method,
            (&p("project"), &p("zone")),
            Listed::Instances,
            query,
        ),
        "compute.instances.get" => match find_instance(state, &p("zone"), &p("instance")) {
            Some((_, i)) => Ok(i.clone()),
            None => Err(not_found(
                &p("project"),
                &p("zone"),
                "instances",
                &p("instance"),
            )),
        },
        "compute.instances.delete" => delete(state, &p("project"), &p("zone"), &p("instance")),
        "compute.instances.setLabels" => set_labels(
            state,
            &p("project"),
            &p("zone"),
            &p("instance"),
            &body.unwrap_or_default(),
        ),
        "compute.zoneOperations.get" | "compute.zoneOperations.wait" => {
            let key = (p("project"), p("zone"), p("operation"));
            match state.operations.get_mut(&key) {
                Some(op) => {
                    finish(op);
                    Ok(op.clone())
                }
                None => Err(not_found(&key.0, &key.1, "operations", &key.2)),
            }
        }
        "compute.zoneOperations.list" => list(
            state,
            discovery,
            method,
            (&p("project"), &p("zone")),
            Listed::Operations,
            query,
        ),
        other => {
            let why = format!("{other}: not served by the fake Compute API");
            state.failures.push(why.clone());
            Err(Fault::new(501, "UNIMPLEMENTED", "notImplemented", &why))
        }
    }
}

/// `value` without the fake's own bookkeeping fields (`_...`).
fn public(mut value: Value) -> Value {
    if let Some(o) = value.as_object_mut() {
        o.retain(|k, _| !k.starts_with('_'));
    }
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(o) = item.as_object_mut() {
                o.retain(|k, _| !k.starts_with('_'));
            }
        }
    }
    value
}

/// Google's JSON error.
fn error(http: u16, status: &str, reason: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": http,
            "message": message,
            "errors": [{ "message": message, "domain": "global", "reason": reason }],
            "status": status,
        }
    });
    let code = StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn fault_response(f: &Fault) -> Response {
    error(f.http, &f.status, &f.reason, &f.message)
}

fn not_found(project: &str, zone: &str, kind: &str, name: &str) -> Fault {
    Fault::new(
        404,
        "NOT_FOUND",
        "notFound",
        &format!("The resource 'projects/{project}/zones/{zone}/{kind}/{name}' was not found"),
    )
}

fn next_id(state: &mut FakeState) -> u64 {
    state.next_id += 1;
    state.next_id
}

fn zone_link(project: &str, zone: &str) -> String {
    format!("{API_ROOT}/projects/{project}/zones/{zone}")
}

/// A new `RUNNING` operation (not stored).
fn new_operation(
    state: &mut FakeState,
    project: &str,
    zone: &str,
    kind: &str,
    target: &Value,
    target_id: &Value,
) -> Value {
    let id = next_id(state);
    let name = format!("operation-{}-{id:x}", now_millis());
    json!({
        "kind": "compute#operation",
        "id": id.to_string(),
        "name": name,
        "zone": zone_link(project, zone),
        "operationType": kind,
        "targetLink": target,
        "targetId": target_id,
        "status": "RUNNING",
        "user": "stratus-tests@test-project.iam.gserviceaccount.com",
        "progress": 0,
        "insertTime": rfc3339_now(),
        "startTime": rfc3339_now(),
        "selfLink": format!("{}/operations/{name}", zone_link(project, zone)),
    })
}

fn finish(op: &mut Value) {
    if op["status"] != "DONE" {
        op["status"] = json!("DONE");
        op["progress"] = json!(100);
        op["endTime"] = json!(rfc3339_now());
    }
}

fn store_operation(state: &mut FakeState, project: &str, zone: &str, op: &Value) -> Key {
    let key = (
        project.to_owned(),
        zone.to_owned(),
        op["name"].as_str().unwrap_or_default().to_owned(),
    );
    state.operations.insert(key.clone(), op.clone());
    key
}

fn fingerprint(seed: u64) -> String {
    // Eight bytes, URL-safe base64 with padding: what GCE's fingerprints look like.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// Now as GCE writes times: Pacific standard time with milliseconds
/// (`2026-11-27T03:12:00.123-08:00`).
pub fn rfc3339_now() -> String {
    let pacific = jiff::tz::TimeZone::fixed(jiff::tz::offset(-8));
    jiff::Timestamp::now()
        .to_zoned(pacific)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}
