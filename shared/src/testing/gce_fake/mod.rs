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
//! Why one file of this length: it is one fake service (Compute's instances and operations)
//! whose handlers share one state and one validator; Storage and IAM are in modules beside it.

mod discovery;
pub mod identity;
mod pattern;
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
pub use self::pattern::full_match;

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
        "compute.instances.list" => {
            list_instances(state, discovery, method, &p("project"), &p("zone"), query)
        }
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
        "compute.zoneOperations.list" => {
            list_operations(state, discovery, method, &p("project"), &p("zone"), query)
        }
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

fn insert(
    state: &mut FakeState,
    project: &str,
    zone: &str,
    request_id: Option<String>,
    body: Value,
) -> Reply {
    if let Some(rid) = &request_id
        && let Some(key) = state.request_ids.get(rid)
        && let Some(op) = state.operations.get(key)
    {
        return Ok(op.clone());
    }
    if state.exhausted.get(zone) == Some(&Exhaustion::InCall) {
        return Err(Fault::new(
            503,
            "UNAVAILABLE",
            "ZONE_RESOURCE_POOL_EXHAUSTED",
            &format!(
                "The zone 'projects/{project}/zones/{zone}' does not have enough resources \
                 available to fulfill the request.  Try a different zone, or try again later."
            ),
        ));
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let key = (project.to_owned(), zone.to_owned(), name.clone());
    let self_link = format!("{}/instances/{name}", zone_link(project, zone));
    if state.instances.contains_key(&key) {
        return Err(Fault::new(
            409,
            "ALREADY_EXISTS",
            "alreadyExists",
            &format!(
                "The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"
            ),
        ));
    }
    let held = state.instances.keys().filter(|(_, z, _)| z == zone).count();
    let full = state.capacity.get(zone).is_some_and(|n| held >= *n);
    let operation_fault = if full || state.exhausted.get(zone) == Some(&Exhaustion::InOperation) {
        Some((
            "ZONE_RESOURCE_POOL_EXHAUSTED".to_owned(),
            format!(
                "The zone 'projects/{project}/zones/{zone}' does not have enough resources \
                 available to fulfill the request.  Try a different zone, or try again later."
            ),
        ))
    } else {
        state.operation_faults.get(zone).cloned()
    };
    let id = next_id(state);
    let mut op = new_operation(
        state,
        project,
        zone,
        "insert",
        &json!(self_link),
        &json!(id.to_string()),
    );
    if let Some((code, message)) = operation_fault {
        finish(&mut op);
        op["error"] = json!({ "errors": [{ "code": code, "message": message }] });
        op["httpErrorStatusCode"] = json!(if code == "QUOTA_EXCEEDED" { 403 } else { 503 });
        op["httpErrorMessage"] = json!(if code == "QUOTA_EXCEEDED" {
            "FORBIDDEN"
        } else {
            "SERVICE UNAVAILABLE"
        });
        // A real failed insert's operation is DONE at once; return it RUNNING anyway so the
        // provider has to wait for it.
        op["status"] = json!("RUNNING");
    } else {
        let instance = materialize(state, project, zone, id, &self_link, body);
        state.instances.insert(key, instance);
    }
    let op_key = store_operation(state, project, zone, &op);
    if let Some(rid) = request_id
        && !state.forget_request_ids
    {
        state.request_ids.insert(rid, op_key);
    }
    Ok(op)
}

/// The instance GCE would make of an insert body: the body plus the output-only fields, boot
/// disk made, addresses assigned.
fn materialize(
    state: &mut FakeState,
    project: &str,
    zone: &str,
    id: u64,
    self_link: &str,
    mut body: Value,
) -> Value {
    let n = state.instances.len() + 2;
    let o = body.as_object_mut().expect("checked: an object");
    o.insert("kind".into(), json!("compute#instance"));
    o.insert("id".into(), json!(id.to_string()));
    o.insert("creationTimestamp".into(), json!(rfc3339_now()));
    o.insert("zone".into(), json!(zone_link(project, zone)));
    o.insert("status".into(), json!("RUNNING"));
    o.insert("selfLink".into(), json!(self_link));
    o.insert("labelFingerprint".into(), json!(fingerprint(id)));
    o.insert("cpuPlatform".into(), json!("Intel Cascade Lake"));
    if let Some(mt) = o.get("machineType").and_then(Value::as_str)
        && !mt.starts_with("https://")
    {
        let full = format!("{API_ROOT}/projects/{project}/{mt}");
        o.insert("machineType".into(), json!(full));
    }
    if let Some(disks) = o.get_mut("disks").and_then(Value::as_array_mut) {
        for (i, disk) in disks.iter_mut().enumerate() {
            let d = disk.as_object_mut().expect("checked: an object");
            let init = d.remove("initializeParams").unwrap_or_default();
            let size = init["diskSizeGb"].as_str().unwrap_or("10").to_owned();
            d.insert("kind".into(), json!("compute#attachedDisk"));
            d.insert("index".into(), json!(i));
            d.insert("mode".into(), json!("READ_WRITE"));
            d.insert("deviceName".into(), json!(format!("persistent-disk-{i}")));
            d.insert("diskSizeGb".into(), json!(size));
            d.insert(
                "source".into(),
                json!(format!(
                    "{}/disks/{}",
                    zone_link(project, zone),
                    body_name(id, i)
                )),
            );
        }
    }
    if let Some(nics) = o.get_mut("networkInterfaces").and_then(Value::as_array_mut) {
        for (i, nic) in nics.iter_mut().enumerate() {
            let nic = nic.as_object_mut().expect("checked: an object");
            nic.insert("kind".into(), json!("compute#networkInterface"));
            nic.insert("name".into(), json!(format!("nic{i}")));
            nic.insert("networkIP".into(), json!(format!("10.128.0.{n}")));
            if let Some(configs) = nic.get_mut("accessConfigs").and_then(Value::as_array_mut) {
                for c in configs {
                    c["kind"] = json!("compute#accessConfig");
                    c["natIP"] = json!(format!("34.1.2.{n}"));
                    c["networkTier"] = json!("PREMIUM");
                }
            }
        }
    }
    if let Some(metadata) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("kind".into(), json!("compute#metadata"));
        metadata.insert("fingerprint".into(), json!(fingerprint(id + 1)));
    }
    body
}

fn body_name(id: u64, i: usize) -> String {
    format!("disk-{id}-{i}")
}

fn list_instances(
    state: &mut FakeState,
    discovery: &Discovery,
    method: &discovery::Method,
    project: &str,
    zone: &str,
    query: &[(String, String)],
) -> Reply {
    let filter = parse_filter(discovery, method, query).map_err(|why| {
        state.failures.push(why.clone());
        Fault::new(400, "INVALID_ARGUMENT", "invalid", &why)
    })?;
    let items: Vec<Value> = state
        .instances
        .iter()
        .filter(|((p, z, _), i)| p == project && z == zone && filter.iter().all(|t| t.holds(i)))
        .map(|(_, i)| i.clone())
        .collect();
    Ok(page(
        state,
        "compute#instanceList",
        &format!("{}/instances", zone_link(project, zone)),
        items,
        query,
    ))
}

fn list_operations(
    state: &mut FakeState,
    discovery: &Discovery,
    method: &discovery::Method,
    project: &str,
    zone: &str,
    query: &[(String, String)],
) -> Reply {
    let filter = parse_filter(discovery, method, query).map_err(|why| {
        state.failures.push(why.clone());
        Fault::new(400, "INVALID_ARGUMENT", "invalid", &why)
    })?;
    let items: Vec<Value> = state
        .operations
        .iter()
        .filter(|((p, z, _), o)| p == project && z == zone && filter.iter().all(|t| t.holds(o)))
        .map(|(_, o)| o.clone())
        .collect();
    Ok(page(
        state,
        "compute#operationList",
        &format!("{}/operations", zone_link(project, zone)),
        items,
        query,
    ))
}

/// One page of `items`: `maxResults` (default 500, at most the fake's page size) from the
/// offset `pageToken` says.
fn page(
    state: &FakeState,
    kind: &str,
    link: &str,
    items: Vec<Value>,
    query: &[(String, String)],
) -> Value {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let size = q("maxResults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(500)
        .min(state.page_size.unwrap_or(usize::MAX))
        .max(1);
    let from = q("pageToken")
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(from).take(size).collect();
    let mut out = json!({ "kind": kind, "id": link, "selfLink": link });
    if !chunk.is_empty() {
        out["items"] = Value::Array(chunk);
    }
    if from + size < total {
        out["nextPageToken"] = json!(format!("page-{}", from + size));
    }
    out
}

fn delete(state: &mut FakeState, project: &str, zone: &str, name: &str) -> Reply {
    let Some((_, instance)) = find_instance(state, zone, name) else {
        return Err(not_found(project, zone, "instances", name));
    };
    instance["status"] = json!("STOPPING");
    instance["_deleting"] = json!(true);
    let (target, id) = (instance["selfLink"].clone(), instance["id"].clone());
    let op = new_operation(state, project, zone, "delete", &target, &id);
    store_operation(state, project, zone, &op);
    Ok(op)
}

fn set_labels(state: &mut FakeState, project: &str, zone: &str, name: &str, body: &Value) -> Reply {
    let fresh = fingerprint(next_id(state));
    let Some((_, instance)) = find_instance(state, zone, name) else {
        return Err(not_found(project, zone, "instances", name));
    };
    if body["labelFingerprint"] != instance["labelFingerprint"] {
        return Err(Fault::new(
            412,
            "FAILED_PRECONDITION",
            "conditionNotMet",
            "Labels fingerprint either invalid or resource labels have changed",
        ));
    }
    instance["labels"] = body["labels"].clone();
    instance["labelFingerprint"] = json!(fresh);
    let (target, id) = (instance["selfLink"].clone(), instance["id"].clone());
    let op = new_operation(state, project, zone, "setLabels", &target, &id);
    store_operation(state, project, zone, &op);
    Ok(op)
}

/// Google documents these rules for `instances.insert`; the discovery document cannot say
/// them. Also: a `requestId` must be a UUID other than the nil one, and labels must be valid.
fn semantic_rules(
    method: &str,
    params: &BTreeMap<String, String>,
    query: &[(String, String)],
    body: Option<&Value>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some((_, rid)) = query.iter().find(|(n, _)| n == "requestId")
        && !is_uuid(rid)
    {
        failures.push(format!(
            "{method}: requestId '{rid}' is not a valid non-nil UUID"
        ));
    }
    let zone = params.get("zone").map(String::as_str).unwrap_or_default();
    match (method, body) {
        ("compute.instances.insert", Some(b)) => failures.extend(insert_rules(zone, b)),
        ("compute.instances.setLabels", Some(b)) => {
            failures.extend(label_rules("labels", &b["labels"]));
        }
        _ => {}
    }
    failures
        .into_iter()
        .map(|f| {
            if f.starts_with(method) {
                f
            } else {
                format!("{method}: {f}")
            }
        })
        .collect()
}

/// What `instances.insert` rejects beyond its schema (from Google's documentation of
/// instances, GPUs and Spot VMs):
/// - `machineType` is `zones/<the call's zone>/machineTypes/<type>` (or that as a URL);
/// - exactly one boot disk, made from `initializeParams.sourceImage` (or a `source` disk);
/// - at least one network interface;
/// - labels: at most 64; keys `[a-z][-_a-z0-9]{0,62}`; values `[-_a-z0-9]{0,63}`;
/// - metadata keys unique, `startup-script` included at most once;
/// - `guestAccelerators` only on N1 machine types (A2, A3, A4, G2 and G4 types have their
///   GPUs built in), each `zones/<zone>/acceleratorTypes/<type>` with a positive count;
/// - a VM with GPUs (attached or built in) cannot live-migrate: `onHostMaintenance` must be
///   `TERMINATE`;
/// - a Spot VM (`provisioningModel: SPOT`) cannot restart automatically nor migrate
///   (`automaticRestart` not true, `onHostMaintenance: TERMINATE`);
/// - `instanceTerminationAction` only with `SPOT` (Stratus sets no `maxRunDuration`).
pub fn insert_rules(zone: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let machine = body["machineType"].as_str().unwrap_or_default();
    let short = machine
        .split_once("/projects/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or(machine, |(_, rest)| rest);
    let machine_name = short
        .strip_prefix(&format!("zones/{zone}/machineTypes/"))
        .unwrap_or_default();
    if machine_name.is_empty() {
        out.push(format!(
            "resource.machineType '{machine}' is not a machine type of zone {zone}"
        ));
    }
    out.extend(disk_and_network_rules(body));
    out.extend(label_rules("resource.labels", &body["labels"]));
    let mut keys: Vec<&str> = body["metadata"]["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["key"].as_str()).collect())
        .unwrap_or_default();
    let total = keys.len();
    keys.sort_unstable();
    keys.dedup();
    if keys.len() != total {
        out.push("resource.metadata.items: duplicate keys".to_owned());
    }
    out.extend(gpu_and_scheduling_rules(zone, machine_name, body));
    out
}

fn disk_and_network_rules(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let disks = body["disks"].as_array().cloned().unwrap_or_default();
    let boots: Vec<&Value> = disks.iter().filter(|d| d["boot"] == true).collect();
    if boots.len() != 1 {
        out.push(format!(
            "resource.disks: {} boot disks (want exactly 1)",
            boots.len()
        ));
    }
    for d in boots {
        if d["initializeParams"]["sourceImage"].as_str().is_none() && d["source"].as_str().is_none()
        {
            out.push("resource.disks: the boot disk has no sourceImage nor source".to_owned());
        }
    }
    for d in &disks {
        out.extend(label_rules(
            "resource.disks.initializeParams.labels",
            &d["initializeParams"]["labels"],
        ));
    }
    if body["networkInterfaces"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        out.push(
            "resource.networkInterfaces: at least one network interface is required".to_owned(),
        );
    }
    out
}

fn gpu_and_scheduling_rules(zone: &str, machine_name: &str, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let scheduling = &body["scheduling"];
    let maintenance = scheduling["onHostMaintenance"]
        .as_str()
        .unwrap_or("MIGRATE");
    let accelerators = body["guestAccelerators"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let built_in = ["a2-", "a3-", "a4-", "g2-", "g4-"]
        .iter()
        .any(|f| machine_name.starts_with(f));
    if !accelerators.is_empty() && !machine_name.starts_with("n1-") {
        out.push(format!(
            "resource.guestAccelerators: accelerators cannot be attached to {machine_name} \
             (only N1 machine types take them; A2, A3, G2 have theirs built in)"
        ));
    }
    for a in &accelerators {
        let kind = a["acceleratorType"].as_str().unwrap_or_default();
        if !kind.starts_with(&format!("zones/{zone}/acceleratorTypes/")) {
            out.push(format!(
                "resource.guestAccelerators.acceleratorType '{kind}' is not an accelerator type \
                 of zone {zone}"
            ));
        }
        if a["acceleratorCount"].as_i64().unwrap_or(0) < 1 {
            out.push("resource.guestAccelerators.acceleratorCount must be positive".to_owned());
        }
    }
    if (!accelerators.is_empty() || built_in) && maintenance != "TERMINATE" {
        out.push(
            "resource.scheduling.onHostMaintenance: instances with GPUs cannot live migrate \
             (set TERMINATE)"
                .to_owned(),
        );
    }
    if scheduling["provisioningModel"] == "SPOT" {
        if scheduling["automaticRestart"] == true {
            out.push(
                "resource.scheduling.automaticRestart: Spot VMs cannot restart automatically"
                    .to_owned(),
            );
        }
        if maintenance != "TERMINATE" {
            out.push("resource.scheduling.onHostMaintenance: Spot VMs must TERMINATE".to_owned());
        }
    } else if scheduling
        .get("instanceTerminationAction")
        .is_some_and(|a| !a.is_null())
    {
        out.push(
            "resource.scheduling.instanceTerminationAction is only for Spot VMs (or with \
             maxRunDuration)"
                .to_owned(),
        );
    }
    out
}

fn label_rules(path: &str, labels: &Value) -> Vec<String> {
    let Some(labels) = labels.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if labels.len() > 64 {
        out.push(format!("{path}: {} labels (at most 64)", labels.len()));
    }
    for (k, v) in labels {
        if !full_match("[a-z][-_a-z0-9]{0,62}", k).unwrap_or(false) {
            out.push(format!("{path}: invalid label key '{k}'"));
        }
        let v = v.as_str().unwrap_or("<not a string>");
        if !full_match("[-_a-z0-9]{0,63}", v).unwrap_or(false) {
            out.push(format!("{path}: invalid value '{v}' of label '{k}'"));
        }
    }
    out
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
        && s.bytes().any(|b| b.is_ascii_hexdigit() && b != b'0')
}

/// One `field op value` term of a list filter.
#[derive(Debug)]
struct Term {
    field: Vec<String>,
    op: FilterOp,
    value: String,
}

#[derive(Debug, PartialEq, Eq)]
enum FilterOp {
    Eq,
    Ne,
    Has,
}

impl Term {
    fn holds(&self, item: &Value) -> bool {
        let mut v = item;
        for part in &self.field {
            v = &v[part.as_str()];
        }
        let text = match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        match self.op {
            FilterOp::Has if self.value == "*" => text.is_some(),
            FilterOp::Has => text.is_some_and(|t| t.contains(&self.value)),
            FilterOp::Eq => text.as_deref() == Some(self.value.as_str()),
            FilterOp::Ne => text.as_deref() != Some(self.value.as_str()),
        }
    }
}

/// The terms of the `filter` query parameter: `field = "value"`, `field != value`,
/// `field:*`, `field:value`, joined by spaces or `AND`. Anything else (OR, parentheses, a
/// field the listed resource does not have) is a failure: the fake would answer it wrongly.
fn parse_filter(
    discovery: &Discovery,
    method: &discovery::Method,
    query: &[(String, String)],
) -> Result<Vec<Term>, String> {
    let Some((_, filter)) = query.iter().find(|(n, _)| n == "filter") else {
        return Ok(Vec::new());
    };
    let mut terms = Vec::new();
    for word in split_words(filter)? {
        if word == "AND" {
            continue;
        }
        let (field, op, value) = if let Some((f, v)) = word.split_once("!=") {
            (f, FilterOp::Ne, v)
        } else if let Some((f, v)) = word.split_once('=') {
            (f, FilterOp::Eq, v)
        } else if let Some((f, v)) = word.split_once(':') {
            (f, FilterOp::Has, v)
        } else {
            return Err(format!(
                "{}: filter '{filter}' not understood by the fake",
                method.id
            ));
        };
        let field = field.trim();
        if !discovery.item_has_field(method, field) {
            return Err(format!(
                "{}: filter '{filter}': the listed resource has no field '{field}'",
                method.id
            ));
        }
        terms.push(Term {
            field: field.split('.').map(str::to_owned).collect(),
            op,
            value: value.trim().trim_matches('"').to_owned(),
        });
    }
    Ok(terms)
}

/// `filter` split on spaces outside quotes, with `a = b` joined into `a=b`.
fn split_words(filter: &str) -> Result<Vec<String>, String> {
    if filter.contains(['(', ')']) || filter.contains(" OR ") {
        return Err(format!("filter '{filter}' not understood by the fake"));
    }
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in filter.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if quoted {
        return Err(format!("filter '{filter}': unbalanced quotes"));
    }
    if !current.is_empty() {
        words.push(current);
    }
    // Join `a`, `=`, `"b"` (and `a`, `="b"`, and `a=`, `"b"`) into one term.
    let mut joined: Vec<String> = Vec::new();
    for w in words {
        let glue = joined
            .last()
            .is_some_and(|last| last.ends_with(['=', ':']) || w.starts_with(['=', ':', '!']));
        if glue {
            joined.last_mut().expect("checked").push_str(&w);
        } else {
            joined.push(w);
        }
    }
    Ok(joined)
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
