//! A fake Cloud Storage (the JSON API) with the two services that make the tokens nodes use
//! on it: IAM Credentials' `generateAccessToken` (a token of the stack's node data service
//! account) and STS's token exchange with a Credential Access Boundary (that token downscoped
//! to a task's buckets and prefixes). There is no emulator that checks downscoped tokens, and
//! the boundary is the point: a node must reach its own prefixes and nothing else.
//!
//! Why one file of this length: it is one fake service (Cloud Storage's JSON and XML APIs and
//! signed URLs) whose handlers share one state; splitting it would split that state.
//!
//! Served, all on one local port (the endpoint stands in for `storage.googleapis.com`,
//! `iamcredentials.googleapis.com` and `sts.googleapis.com` alike):
//! - Cloud Storage: `buckets.get`, `.insert`, `.delete`; `objects.list` (`prefix`, paged),
//!   `.get` (metadata, or the bytes with `alt=media`), `.delete`, and `.insert` as a simple
//!   media upload (`POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=...`). Errors
//!   are Cloud Storage's JSON errors.
//! - IAM Credentials: `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken`, for
//!   [`FakeStorage::NODE_SERVICE_ACCOUNT`] only, with the admin token.
//! - STS: `POST /v1/token`, form-encoded, downscoping a token `generateAccessToken` issued.
//!
//! Every request is checked against its discovery document (`storage.v1.json`,
//! `iamcredentials.v1.json`, `sts.v1.json`, found next to `compute.v1.json`) as
//! [`super::FakeCompute`] checks its own, plus the rules the documents cannot say (bucket and
//! object names, labels, the token exchange's fields and boundary). A request the real
//! services would reject is answered 400 and recorded; [`FakeStorage::assert_valid`] fails the
//! test at its end. A query parameter the API takes but the fake does not model (`delimiter`,
//! `versions`, ...) is recorded too, rather than answered as if it were absent.
//!
//! Who may do what, as IAM and the boundary decide it:
//! - the admin token ([`FakeStorage::require_admin_token`]): everything on the project's
//!   buckets, nothing on a foreign one (403; creating one of its name is 409, as names are
//!   global);
//! - a token from `generateAccessToken`: the objects of the project's buckets, no bucket
//!   methods (the node service account is an object user, not a bucket admin);
//! - a downscoped token: no bucket methods; an object method only when a rule of its boundary
//!   names the bucket, grants the permission (`roles/storage.objectViewer`: list and get;
//!   `roles/storage.objectUser`: also create and delete) and its condition holds. Conditions
//!   are `||`s of `resource.name.startsWith('projects/_/buckets/B/objects/P')`,
//!   `resource.name == 'projects/_/buckets/B/objects/N'` and `api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('P')`, with
//!   Google's semantics: a list's resource is the bucket, so only the second kind lets a list
//!   through; other requests have no list prefix, so the second holds for them only when `P`
//!   is empty. Any other condition is refused at the exchange, so a typo in the code that
//!   writes them fails loudly instead of denying at run time.
//!
//! A refused call is answered 401 or 403 and recorded in [`FakeStorage::denied`], not as a
//! validation failure: denying is what the boundary is for, and tests assert on it. The
//! admin's 403 on a foreign bucket is not recorded: like a 404, it is the world as it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::discovery::{self, Discovery, percent_decode};
use super::rules::label_rules;
use super::{FakeCompute, now_millis};

const PROJECT_NUMBER: &str = "123456789";
const FOREIGN_PROJECT_NUMBER: &str = "987654321";

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const STORAGE_SCOPES: [&str; 3] = [
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
];
const RESOURCE_PREFIX: &str = "//storage.googleapis.com/projects/_/buckets/";
const LIST_PREFIX_ATTRIBUTE: &str = "storage.googleapis.com/objectListPrefix";
/// Google's limits on a boundary: rules, and the characters of a condition's expression and
/// of the whole boundary.
const MAX_RULES: usize = 10;
const MAX_EXPRESSION: usize = 2048;
const MAX_BOUNDARY: usize = 2048;

/// The storage methods the fake serves.
const SERVED: [&str; 7] = [
    "storage.buckets.get",
    "storage.buckets.insert",
    "storage.buckets.delete",
    "storage.objects.list",
    "storage.objects.get",
    "storage.objects.insert",
    "storage.objects.delete",
];
/// The query parameters the fake honours or may ignore without answering differently from
/// Google (`fields` only trims a reply; `projection` only adds ACLs the fake has none of).
/// Others the API takes (`delimiter`, `versions`, `ifMetagenerationMatch`, ...) are recorded as
/// failures: answering as if they were absent could pass a test the real API would fail.
const MODELLED_PARAMETERS: [&str; 17] = [
    "alt",
    "$alt",
    "$apiVersion",
    "fields",
    "prettyPrint",
    "quotaUser",
    "userIp",
    "userProject",
    "projection",
    "uploadType",
    "name",
    "project",
    "prefix",
    "pageToken",
    "maxResults",
    "ifGenerationMatch",
    "ifGenerationNotMatch",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    ObjectViewer,
    ObjectUser,
}

impl Role {
    fn parse(permission: &str) -> Option<Role> {
        match permission {
            "inRole:roles/storage.objectViewer" => Some(Role::ObjectViewer),
            "inRole:roles/storage.objectUser" => Some(Role::ObjectUser),
            _ => None,
        }
    }

    fn allows(self, permission: &str) -> bool {
        match self {
            Role::ObjectViewer => {
                matches!(permission, "storage.objects.list" | "storage.objects.get")
            }
            Role::ObjectUser => permission.starts_with("storage.objects."),
        }
    }
}

/// One `||` term of a rule's condition.
#[derive(Debug, Clone)]
enum Term {
    /// `resource.name.startsWith('...')`.
    ResourceName(String),
    /// `resource.name == '...'`.
    ResourceIs(String),
    /// `api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('...')`.
    ListPrefix(String),
}

impl Term {
    fn holds(&self, action: &Action) -> bool {
        match self {
            Term::ResourceName(p) => action.resource_name().starts_with(p.as_str()),
            Term::ResourceIs(name) => action.resource_name() == *name,
            Term::ListPrefix(p) => action.list_prefix().starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Condition {
    expression: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone)]
struct Rule {
    bucket: String,
    role: Role,
    condition: Option<Condition>,
}

/// What a bearer token may do.
#[derive(Debug, Clone)]
enum Grant {
    Admin,
    /// From `generateAccessToken`, with its scopes.
    ServiceAccount {
        scopes: Vec<String>,
    },
    /// From an exchange: the service account's scopes, held to `rules`.
    Downscoped {
        scopes: Vec<String>,
        rules: Vec<Rule>,
    },
}

impl Grant {
    fn scopes_allow(&self, permission: &str) -> bool {
        let scopes = match self {
            Grant::Admin => return true,
            Grant::ServiceAccount { scopes } | Grant::Downscoped { scopes, .. } => scopes,
        };
        let read = matches!(
            permission,
            "storage.objects.list" | "storage.objects.get" | "storage.buckets.get"
        );
        scopes.iter().any(|s| {
            s == CLOUD_PLATFORM
                || s == STORAGE_SCOPES[1]
                || s == STORAGE_SCOPES[2]
                || (read && s == STORAGE_SCOPES[0])
        })
    }
}

#[derive(Debug)]
struct StoredObject {
    resource: Value,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Bucket {
    resource: Value,
    /// Another project's: its name is taken, its contents are not the admin's.
    foreign: bool,
    objects: BTreeMap<String, StoredObject>,
}

#[derive(Debug)]
struct StorageState {
    buckets: BTreeMap<String, Bucket>,
    admin_token: Option<String>,
    /// Every token the fake issued, and what it may do.
    tokens: BTreeMap<String, Grant>,
    /// The `accessBoundary` of each exchange, in order.
    boundaries: Vec<Value>,
    page_size: usize,
    /// The method id of every call routed.
    calls: Vec<String>,
    denied: Vec<String>,
    failures: Vec<String>,
    next: u64,
}

#[derive(Debug)]
struct Shared {
    url: String,
    storage: Arc<Discovery>,
    iam: Arc<Discovery>,
    sts: Arc<Discovery>,
    state: Mutex<StorageState>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, StorageState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake of Cloud Storage, IAM Credentials and STS; it serves until the test process
/// ends.
#[derive(Debug, Clone)]
pub struct FakeStorage {
    /// `http://127.0.0.1:<port>`: the endpoint of all three services.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeStorage {
    /// The project the admin token administers.
    pub const PROJECT: &str = "test-project";
    /// The only service account `generateAccessToken` knows: the one whose downscoped tokens
    /// nodes get for their buckets.
    pub const NODE_SERVICE_ACCOUNT: &str = "stratus-node-data@test-project.iam.gserviceaccount.com";

    /// Starts a fake on a free port, with the discovery documents next to
    /// [`FakeCompute::discovery_path`].
    pub async fn start() -> FakeStorage {
        let load = |name: &str| {
            let path: PathBuf = FakeCompute::discovery_path().with_file_name(name);
            Discovery::load(&path).unwrap_or_else(|e| {
                panic!("{e} (the fake Cloud Storage reads {name} next to compute.v1.json)")
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            storage: load("storage.v1.json"),
            iam: load("iamcredentials.v1.json"),
            sts: load("sts.v1.json"),
            state: Mutex::new(StorageState {
                buckets: BTreeMap::new(),
                admin_token: None,
                tokens: BTreeMap::new(),
                boundaries: Vec::new(),
                page_size: 1000,
                calls: Vec::new(),
                denied: Vec::new(),
                failures: Vec::new(),
                next: 0,
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeStorage { url, shared }
    }

    fn state(&self) -> MutexGuard<'_, StorageState> {
        self.shared.state()
    }

    /// The token of the control plane's own identity: full access to the project's buckets,
    /// and the right to call `generateAccessToken`.
    pub fn require_admin_token(&self, token: &str) {
        self.state().admin_token = Some(token.to_owned());
    }

    /// A bucket of the project in `location` (`us-central1`, `US`), with no labels and no
    /// objects.
    pub fn add_bucket(&self, name: &str, location: &str) {
        let resource = bucket_resource(&self.url, name, location, &json!({}), PROJECT_NUMBER);
        self.state()
            .buckets
            .insert(name.to_owned(), new_bucket(resource, false));
    }

    /// A bucket of another project: its name is taken, and no token of this fake may use it.
    pub fn add_foreign_bucket(&self, name: &str) {
        let resource = bucket_resource(&self.url, name, "US", &json!({}), FOREIGN_PROJECT_NUMBER);
        self.state()
            .buckets
            .insert(name.to_owned(), new_bucket(resource, true));
    }

    /// The bucket resource (any project's), labels included.
    pub fn bucket(&self, name: &str) -> Option<Value> {
        self.state().buckets.get(name).map(|b| b.resource.clone())
    }

    /// The names of the project's buckets (not foreign ones), sorted.
    pub fn buckets(&self) -> Vec<String> {
        self.state()
            .buckets
            .iter()
            .filter(|(_, b)| !b.foreign)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stores an object (in any project's bucket), as an upload would.
    pub fn put_object(&self, bucket: &str, name: &str, bytes: &[u8]) {
        let mut state = self.state();
        let generation = next(&mut state);
        let resource = object_resource(
            &self.url,
            bucket,
            name,
            generation,
            bytes,
            "application/octet-stream",
        );
        let bucket = state
            .buckets
            .get_mut(bucket)
            .unwrap_or_else(|| panic!("no bucket '{bucket}'"));
        let object = StoredObject {
            resource,
            bytes: bytes.to_vec(),
        };
        bucket.objects.insert(name.to_owned(), object);
    }

    /// The bytes of an object.
    pub fn object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let state = self.state();
        let object = state.buckets.get(bucket)?.objects.get(name)?;
        Some(object.bytes.clone())
    }

    /// The names of a bucket's objects, sorted (none when there is no such bucket).
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        self.state()
            .buckets
            .get(bucket)
            .map(|b| b.objects.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// At most `n` objects per `objects.list` page, whatever `maxResults` says (default 1000,
    /// Google's own most).
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    /// Every call refused for want of a token or a permission (but the admin's on a foreign
    /// bucket): the method, the bucket, the object or list prefix, and why.
    /// `generateAccessToken` refusals too (the method, the account, why).
    pub fn denied(&self) -> Vec<String> {
        self.state().denied.clone()
    }

    /// Every check that failed so far (requests the real services would reject, replies they
    /// could not give, calls the fake does not serve or model).
    pub fn validation_failures(&self) -> Vec<String> {
        self.state().failures.clone()
    }

    /// Fails the test if any request did not validate.
    pub fn assert_valid(&self) {
        let failures = self.validation_failures();
        assert!(
            failures.is_empty(),
            "requests Cloud Storage, IAM Credentials or STS would reject (checked against \
             storage.v1.json revision {}):\n  {}",
            self.shared.storage.revision(),
            failures.join("\n  ")
        );
    }

    /// The `accessBoundary` of each token exchange so far, as sent.
    pub fn issued_boundaries(&self) -> Vec<Value> {
        self.state().boundaries.clone()
    }

    /// How many calls `method` got (`storage.objects.list`, `sts.token`,
    /// `iamcredentials.projects.serviceAccounts.generateAccessToken`), refused ones included.
    pub fn count(&self, method: &str) -> usize {
        self.state().calls.iter().filter(|m| *m == method).count()
    }
}

fn new_bucket(resource: Value, foreign: bool) -> Bucket {
    Bucket {
        resource,
        foreign,
        objects: BTreeMap::new(),
    }
}

fn next(state: &mut StorageState) -> u64 {
    state.next += 1;
    state.next
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    verb: Method,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let storage = |upload| {
        let routed = if upload {
            shared.storage.route_upload(verb.as_str(), path)
        } else {
            shared.storage.route(verb.as_str(), path)
        };
        routed.map(|(method, params)| Call {
            method,
            params,
            query: query.clone(),
            upload,
            token: token.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        })
    };
    if let Some(call) = storage(true).or_else(|| storage(false)) {
        return storage_call(&shared, &call);
    }
    if let Some((method, params)) = shared.iam.route(verb.as_str(), path) {
        let call = Call {
            method,
            params,
            query,
            upload: false,
            token,
            content_type,
            body,
        };
        return generate_access_token(&shared, &call);
    }
    if let Some((method, _)) = shared.sts.route(verb.as_str(), path) {
        return exchange(&shared, method, &query, &headers, &body);
    }
    let why =
        format!("{verb} {path}: no Cloud Storage, IAM Credentials or STS method has this path");
    shared.state().failures.push(why.clone());
    storage_error(404, "notFound", &why)
}

/// One request to a method.
struct Call<'a> {
    method: &'a discovery::Method,
    params: BTreeMap<String, String>,
    query: Vec<(String, String)>,
    /// To the method's media upload path: the body is the object.
    upload: bool,
    token: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

impl Call<'_> {
    fn param(&self, name: &str) -> String {
        self.params.get(name).cloned().unwrap_or_default()
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON body, when there is one (`Err`: not JSON).
    fn json(&self) -> Result<Option<Value>, String> {
        if self.upload || self.body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&self.body)
            .map(Some)
            .map_err(|e| format!("{}: the body is not JSON: {e}", self.method.id))
    }
}

/// What a storage call does, for deciding whether the caller may.
struct Action {
    method: String,
    bucket: String,
    object: Option<String>,
    /// An `objects.list`'s `prefix`.
    prefix: Option<String>,
    /// A `buckets.insert`'s `project`.
    project: Option<String>,
}

impl Action {
    fn of(call: &Call<'_>) -> Action {
        let id = call.method.id.as_str();
        let bucket = if id == "storage.buckets.insert" {
            let body = call.json().ok().flatten().unwrap_or_default();
            body["name"].as_str().unwrap_or_default().to_owned()
        } else {
            call.param("bucket")
        };
        let object = match id {
            "storage.objects.insert" => call.query("name").map(str::to_owned),
            "storage.objects.get" | "storage.objects.delete" => Some(call.param("object")),
            _ => None,
        };
        Action {
            method: id.to_owned(),
            bucket,
            object,
            prefix: call.query("prefix").map(str::to_owned),
            project: call.query("project").map(str::to_owned),
        }
    }

    /// The IAM permission the call needs.
    fn permission(&self) -> &'static str {
        match self.method.as_str() {
            "storage.buckets.get" => "storage.buckets.get",
            "storage.buckets.insert" => "storage.buckets.create",
            "storage.buckets.delete" => "storage.buckets.delete",
            "storage.objects.list" => "storage.objects.list",
            "storage.objects.get" => "storage.objects.get",
            "storage.objects.insert" => "storage.objects.create",
            _ => "storage.objects.delete",
        }
    }

    /// The resource a condition's `resource.name` is: the object, or for a list the bucket.
    fn resource_name(&self) -> String {
        match &self.object {
            Some(o) => format!("projects/_/buckets/{}/objects/{o}", self.bucket),
            None => format!("projects/_/buckets/{}", self.bucket),
        }
    }

    /// `api.getAttribute('storage.googleapis.com/objectListPrefix', '')`.
    fn list_prefix(&self) -> &str {
        match (&self.method[..], &self.prefix) {
            ("storage.objects.list", Some(p)) => p,
            _ => "",
        }
    }

    /// `bucket/object`, `bucket (prefix 'p')` or `bucket`, for the record of denials.
    fn target(&self) -> String {
        match (&self.object, self.method == "storage.objects.list") {
            (Some(o), _) => format!("{}/{o}", self.bucket),
            (None, true) => format!(
                "{} (prefix '{}')",
                self.bucket,
                self.prefix.as_deref().unwrap_or_default()
            ),
            (None, false) => self.bucket.clone(),
        }
    }
}

/// A storage method's answer.
enum Reply {
    Json(Value),
    Media {
        content_type: String,
        bytes: Vec<u8>,
    },
    NoContent,
}

/// A Cloud Storage error.
struct GcsError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl GcsError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }
}

fn storage_error(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "errors": [{ "domain": "global", "reason": reason, "message": message }],
        }
    });
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// Checks, authenticates, authorizes and carries out a storage call.
fn storage_call(shared: &Shared, call: &Call<'_>) -> Response {
    let discovery = &shared.storage;
    let mut state = shared.state();
    state.calls.push(call.method.id.clone());
    let failures = check_storage_call(discovery, call);
    if !failures.is_empty() {
        let message = failures.join("; ");
        state.failures.extend(failures);
        return storage_error(400, "invalid", &message);
    }
    let action = Action::of(call);
    let grant = call.token.as_deref().and_then(|t| grant_of(&state, t));
    let Some(grant) = grant else {
        let why = "no valid bearer token";
        state
            .denied
            .push(format!("{} {}: {why}", action.method, action.target()));
        return storage_error(401, "unauthorized", &format!("{}: {why}", action.method));
    };
    if let Err(why) = authorize(&state, &grant, &action) {
        // The admin's 403 on another project's bucket is the world as it is, as a 404 is:
        // the control plane meets it on purpose, checking a name before it uses the bucket.
        let foreign = state.buckets.get(&action.bucket).is_some_and(|b| b.foreign);
        if !(matches!(grant, Grant::Admin) && foreign) {
            state
                .denied
                .push(format!("{} {}: {why}", action.method, action.target()));
        }
        let message = format!(
            "The caller does not have {} access to {}: {why}",
            action.permission(),
            action.target()
        );
        return storage_error(403, "forbidden", &message);
    }
    match act(&mut state, &shared.url, call) {
        Ok(Reply::Json(value)) => {
            let problems = discovery.check_response(call.method, &value);
            state
                .failures
                .extend(problems.into_iter().map(|p| format!("fake reply: {p}")));
            (StatusCode::OK, axum::Json(value)).into_response()
        }
        Ok(Reply::Media {
            content_type,
            bytes,
        }) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type)],
            bytes,
        )
            .into_response(),
        Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            if e.code == 400 {
                // A request only the fake's state could find wrong (a page token it never
                // gave): still one the real API would reject.
                let why = format!("{}: {}", call.method.id, e.message);
                state.failures.push(why);
            }
            storage_error(e.code, e.reason, &e.message)
        }
    }
}

fn grant_of(state: &StorageState, token: &str) -> Option<Grant> {
    if state.admin_token.as_deref() == Some(token) {
        return Some(Grant::Admin);
    }
    state.tokens.get(token).cloned()
}

/// What the real API would reject in `call`, or the fake cannot answer faithfully.
fn check_storage_call(discovery: &Discovery, call: &Call<'_>) -> Vec<String> {
    let id = call.method.id.as_str();
    if !SERVED.contains(&id) {
        return vec![format!("{id}: not served by the fake Cloud Storage")];
    }
    let mut failures = discovery.check_query(call.method, &call.query);
    for (name, _) in &call.query {
        if !MODELLED_PARAMETERS.contains(&name.as_str()) {
            failures.push(format!(
                "{id}: query parameter '{name}' is the API's, but the fake does not model it"
            ));
        }
    }
    let body = match call.json() {
        Ok(body) => body,
        Err(why) => {
            failures.push(why);
            return failures;
        }
    };
    if !call.upload {
        failures.extend(discovery.check_request(call.method, body.as_ref()));
    }
    match (id, call.upload) {
        ("storage.objects.insert", false) => failures.push(format!(
            "{id}: the fake takes objects only as simple media uploads (POST \
             /upload/storage/v1/b/{{bucket}}/o?uploadType=media&name=...)"
        )),
        ("storage.objects.insert", true) => {
            if call.query("uploadType") != Some("media") {
                failures.push(format!(
                    "{id}: uploadType is {:?}; the fake serves simple media uploads only \
                     (uploadType=media)",
                    call.query("uploadType")
                ));
            }
            match call.query("name") {
                Some(name) => failures.extend(object_name_rules(name)),
                None => failures.push(format!(
                    "{id}: a media upload needs the object's name in the `name` parameter"
                )),
            }
        }
        ("storage.buckets.insert", _) => {
            let body = body.unwrap_or_default();
            if let Some(name) = body["name"].as_str() {
                failures.extend(bucket_name_rules(name));
            }
            failures.extend(label_rules("resource.labels", &body["labels"]));
        }
        _ => {}
    }
    failures
        .into_iter()
        .map(|f| {
            if f.starts_with(id) {
                f
            } else {
                format!("{id}: {f}")
            }
        })
        .collect()
}

/// Google's bucket naming rules: 3 to 63 characters (up to 222 in dot-separated parts of
/// 63), lowercase letters, digits, `-`, `_` and `.`, starting and ending with a letter or a
/// digit, not starting with `goog` nor containing `google`.
fn bucket_name_rules(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts_fit = name.split('.').all(|p| !p.is_empty() && p.len() <= 63);
    let length_fits =
        name.len() >= 3 && (name.len() <= 63 || name.contains('.') && name.len() <= 222);
    let chars_fit = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    let ends_fit = [name.bytes().next(), name.bytes().last()]
        .iter()
        .all(|b| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if !(length_fits && chars_fit && ends_fit && parts_fit) {
        out.push(format!(
            "resource.name: invalid bucket name '{name}' (3-63 of a-z 0-9 - _ ., starting and \
             ending with a letter or digit)"
        ));
    }
    if name.starts_with("goog") || name.contains("google") {
        out.push(format!(
            "resource.name: bucket name '{name}' may not start with 'goog' nor contain 'google'"
        ));
    }
    out
}

/// Google's object naming rules: 1 to 1024 bytes of UTF-8, no carriage return or line feed,
/// not `.` nor `..`.
fn object_name_rules(name: &str) -> Vec<String> {
    if name.is_empty()
        || name.len() > 1024
        || name.contains(['\r', '\n'])
        || name == "."
        || name == ".."
    {
        vec![format!("invalid object name '{}'", name.escape_debug())]
    } else {
        Vec::new()
    }
}

/// Whether `grant` may do `action`, as IAM and the token's boundary decide; `Err` says why not.
fn authorize(state: &StorageState, grant: &Grant, action: &Action) -> Result<(), String> {
    let permission = action.permission();
    if !grant.scopes_allow(permission) {
        return Err(format!(
            "the token's OAuth scopes do not cover {permission}"
        ));
    }
    let foreign = state.buckets.get(&action.bucket).is_some_and(|b| b.foreign);
    let foreign_why = || format!("bucket '{}' belongs to another project", action.bucket);
    match grant {
        Grant::Admin if action.method == "storage.buckets.insert" => {
            match action.project.as_deref() {
                // A taken name is a 409 conflict, whoever holds it.
                Some(FakeStorage::PROJECT) => Ok(()),
                other => Err(format!("no {permission} on project {other:?}")),
            }
        }
        Grant::Admin if foreign => Err(foreign_why()),
        Grant::Admin => Ok(()),
        _ if permission.starts_with("storage.buckets.") => Err(format!(
            "{} has object permissions only, not {permission}",
            FakeStorage::NODE_SERVICE_ACCOUNT
        )),
        _ if foreign => Err(foreign_why()),
        Grant::ServiceAccount { .. } => Ok(()),
        Grant::Downscoped { rules, .. } => boundary_allows(rules, action),
    }
}

/// Whether some rule of a downscoped token's boundary lets `action` through.
fn boundary_allows(rules: &[Rule], action: &Action) -> Result<(), String> {
    let permission = action.permission();
    let mut why = Vec::new();
    for rule in rules.iter().filter(|r| r.bucket == action.bucket) {
        if !rule.role.allows(permission) {
            why.push(format!("{:?} does not grant {permission}", rule.role));
            continue;
        }
        match &rule.condition {
            None => return Ok(()),
            Some(c) if c.terms.iter().any(|t| t.holds(action)) => return Ok(()),
            Some(c) => why.push(format!(
                "condition \"{}\" does not hold for {} (list prefix '{}')",
                c.expression,
                action.resource_name(),
                action.list_prefix()
            )),
        }
    }
    if why.is_empty() {
        why.push(format!(
            "no rule of the token's access boundary names bucket '{}'",
            action.bucket
        ));
    }
    Err(why.join("; "))
}

/// What the method answers (its checks passed, the caller may).
fn act(state: &mut StorageState, url: &str, call: &Call<'_>) -> Result<Reply, GcsError> {
    let name = call.param("bucket");
    let no_bucket = || GcsError::new(404, "notFound", "The specified bucket does not exist.");
    match call.method.id.as_str() {
        "storage.buckets.insert" => insert_bucket(state, url, call),
        "storage.buckets.get" => match state.buckets.get(&name) {
            Some(b) => Ok(Reply::Json(b.resource.clone())),
            None => Err(no_bucket()),
        },
        "storage.buckets.delete" => match state.buckets.get(&name) {
            None => Err(no_bucket()),
            Some(b) if !b.objects.is_empty() => Err(GcsError::new(
                409,
                "conflict",
                "The bucket you tried to delete is not empty.",
            )),
            Some(_) => {
                state.buckets.remove(&name);
                Ok(Reply::NoContent)
            }
        },
        _ => {
            let page_size = state.page_size;
            let generation = next(state);
            let bucket = state.buckets.get_mut(&name).ok_or_else(no_bucket)?;
            match call.method.id.as_str() {
                "storage.objects.list" => list_objects(bucket, &name, page_size, call),
                "storage.objects.insert" => insert_object(bucket, url, &name, generation, call),
                _ => object_call(bucket, &name, call),
            }
        }
    }
}

fn insert_bucket(state: &mut StorageState, url: &str, call: &Call<'_>) -> Result<Reply, GcsError> {
    let body = call.json().ok().flatten().unwrap_or_default();
    let name = body["name"].as_str().unwrap_or_default();
    if let Some(existing) = state.buckets.get(name) {
        let message = if existing.foreign {
            "The requested bucket name is not available. The bucket namespace is shared by all \
             users of the system. Please select a different name and try again."
        } else {
            "Your previous request to create the named bucket succeeded and you already own it."
        };
        return Err(GcsError::new(409, "conflict", message));
    }
    let location = body["location"].as_str().unwrap_or("US");
    let labels = body.get("labels").cloned().unwrap_or_else(|| json!({}));
    let resource = bucket_resource(url, name, location, &labels, PROJECT_NUMBER);
    state
        .buckets
        .insert(name.to_owned(), new_bucket(resource.clone(), false));
    Ok(Reply::Json(resource))
}

/// One page of a bucket's objects under `prefix`, by name; the page token is the last name
/// of the previous page (hex), so deleting listed objects between pages skips nothing.
fn list_objects(
    bucket: &Bucket,
    name: &str,
    page_size: usize,
    call: &Call<'_>,
) -> Result<Reply, GcsError> {
    let size = call
        .query("maxResults")
        .and_then(|m| m.parse::<usize>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(1000)
        .min(page_size);
    let after = match call.query("pageToken") {
        None => None,
        Some(token) => Some(from_hex(token).ok_or_else(|| {
            GcsError::new(
                400,
                "invalid",
                format!("Invalid pageToken '{token}' for bucket {name}"),
            )
        })?),
    };
    let prefix = call.query("prefix").unwrap_or_default();
    let mut names = bucket
        .objects
        .iter()
        .filter(|(n, _)| n.starts_with(prefix) && after.as_ref().is_none_or(|a| *n > a));
    let items: Vec<Value> = names
        .by_ref()
        .take(size)
        .map(|(_, o)| o.resource.clone())
        .collect();
    let mut out = json!({ "kind": "storage#objects" });
    if names.next().is_some()
        && let Some(last) = items.last()
    {
        out["nextPageToken"] = json!(to_hex(last["name"].as_str().unwrap_or_default()));
    }
    if !items.is_empty() {
        out["items"] = Value::Array(items);
    }
    Ok(Reply::Json(out))
}

fn insert_object(
    bucket: &mut Bucket,
    url: &str,
    name: &str,
    generation: u64,
    call: &Call<'_>,
) -> Result<Reply, GcsError> {
    let object = call.query("name").unwrap_or_default();
    let current = bucket
        .objects
        .get(object)
        .map(|o| generation_of(&o.resource));
    preconditions(call, current)?;
    let content_type = call
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let resource = object_resource(url, name, object, generation, &call.body, content_type);
    let stored = StoredObject {
        resource: resource.clone(),
        bytes: call.body.to_vec(),
    };
    bucket.objects.insert(object.to_owned(), stored);
    Ok(Reply::Json(resource))
}

/// `objects.get` (metadata, or the bytes with `alt=media`) and `objects.delete`.
fn object_call(bucket: &mut Bucket, name: &str, call: &Call<'_>) -> Result<Reply, GcsError> {
    let object = call.param("object");
    let Some(stored) = bucket.objects.get(&object) else {
        return Err(GcsError::new(
            404,
            "notFound",
            format!("No such object: {name}/{object}"),
        ));
    };
    preconditions(call, Some(generation_of(&stored.resource)))?;
    if call.method.id == "storage.objects.delete" {
        bucket.objects.remove(&object);
        return Ok(Reply::NoContent);
    }
    let media = call.query("alt").or(call.query("$alt")) == Some("media");
    if media {
        Ok(Reply::Media {
            content_type: stored.resource["contentType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .to_owned(),
            bytes: stored.bytes.clone(),
        })
    } else {
        Ok(Reply::Json(stored.resource.clone()))
    }
}

fn generation_of(resource: &Value) -> u64 {
    resource["generation"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or_default()
}

/// `ifGenerationMatch` / `ifGenerationNotMatch` against the object's generation (`0`: the
/// object does not exist).
fn preconditions(call: &Call<'_>, current: Option<u64>) -> Result<(), GcsError> {
    let current = current.unwrap_or(0);
    let want = |k: &str| call.query(k).and_then(|v| v.parse::<u64>().ok());
    let fails = want("ifGenerationMatch").is_some_and(|g| g != current)
        || want("ifGenerationNotMatch").is_some_and(|g| g == current);
    if fails {
        return Err(GcsError::new(
            412,
            "conditionNotMet",
            "At least one of the pre-conditions you specified did not hold.",
        ));
    }
    Ok(())
}

/// `generateAccessToken` for [`FakeStorage::NODE_SERVICE_ACCOUNT`], with the admin token.
fn generate_access_token(shared: &Shared, call: &Call<'_>) -> Response {
    let discovery = &shared.iam;
    let id = call.method.id.as_str();
    let mut state = shared.state();
    state.calls.push(id.to_owned());
    let mut failures = Vec::new();
    if id == "iamcredentials.projects.serviceAccounts.generateAccessToken" {
        failures.extend(discovery.check_query(call.method, &call.query));
        match call.json() {
            Ok(body) => {
                failures.extend(discovery.check_request(call.method, body.as_ref()));
                failures.extend(token_request_rules(call, &body.unwrap_or_default()));
            }
            Err(why) => failures.push(why),
        }
    } else {
        failures.push(format!("{id}: not served by the fake IAM Credentials API"));
    }
    if !failures.is_empty() {
        let message = failures.join("; ");
        state.failures.extend(failures);
        return super::error(400, "INVALID_ARGUMENT", "badRequest", &message);
    }
    let account = call.param("serviceAccountsId");
    let grant = call.token.as_deref().and_then(|t| grant_of(&state, t));
    let refusal = match grant {
        None => Some((
            401,
            "UNAUTHENTICATED",
            "authError",
            "no valid bearer token".to_owned(),
        )),
        Some(Grant::Admin) if account == FakeStorage::NODE_SERVICE_ACCOUNT => None,
        Some(Grant::Admin) => Some((
            404,
            "NOT_FOUND",
            "notFound",
            format!("Not found; Gaia id not found for email {account}"),
        )),
        Some(_) => Some((
            403,
            "PERMISSION_DENIED",
            "forbidden",
            format!("Permission 'iam.serviceAccounts.getAccessToken' denied on {account}"),
        )),
    };
    if let Some((code, status, reason, why)) = refusal {
        state.denied.push(format!("{id} {account}: {why}"));
        return super::error(code, status, reason, &why);
    }
    let body = call.json().ok().flatten().unwrap_or_default();
    let scopes: Vec<String> = body["scope"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let token = format!("ya29.sa-{}", next(&mut state));
    state
        .tokens
        .insert(token.clone(), Grant::ServiceAccount { scopes });
    let reply = json!({
        "accessToken": token,
        "expireTime": utc(now_millis() + 3_600_000),
    });
    let problems = discovery.check_response(call.method, &reply);
    state
        .failures
        .extend(problems.into_iter().map(|p| format!("fake reply: {p}")));
    axum::Json(reply).into_response()
}

/// What Google documents for `generateAccessToken` that its schema cannot say: the project
/// is the `-` wildcard, at least one scope, a `lifetime` in seconds of at most an hour (the
/// default most), no delegation (the fake models none).
fn token_request_rules(call: &Call<'_>, body: &Value) -> Vec<String> {
    let id = &call.method.id;
    let mut out = Vec::new();
    if call.param("projectsId") != "-" {
        out.push(format!(
            "{id}: the project must be the '-' wildcard (projects/-/serviceAccounts/...), not \
             '{}'",
            call.param("projectsId")
        ));
    }
    if body["scope"].as_array().is_none_or(Vec::is_empty) {
        out.push(format!("{id}: scope: at least one scope is required"));
    }
    if let Some(lifetime) = body.get("lifetime").and_then(Value::as_str) {
        let seconds = lifetime
            .strip_suffix('s')
            .and_then(|s| s.parse::<f64>().ok());
        if !seconds.is_some_and(|s| s > 0.0 && s <= 3600.0) {
            out.push(format!(
                "{id}: lifetime '{lifetime}' is not a duration of at most 3600s"
            ));
        }
    }
    if body.get("delegates").is_some() {
        out.push(format!("{id}: delegates: the fake models no delegation"));
    }
    out
}

/// STS's token exchange, downscoping a service account's token to an access boundary.
fn exchange(
    shared: &Shared,
    method: &discovery::Method,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let discovery = &shared.sts;
    let mut state = shared.state();
    state.calls.push(method.id.clone());
    let checked = if method.id == "sts.token" {
        check_exchange(discovery, method, query, headers, body)
    } else {
        Err(format!("{}: not served by the fake STS", method.id))
    };
    let form = checked.and_then(|form| {
        let subject = form.get("subject_token").map_or("", String::as_str);
        match state.tokens.get(subject) {
            Some(Grant::ServiceAccount { scopes }) => {
                let scopes = scopes.clone();
                boundary_of(discovery, method, &form).map(|b| (scopes, b))
            }
            _ => Err(format!(
                "sts.token: subject_token is no token generateAccessToken issued \
                 ('{subject}')"
            )),
        }
    });
    let (scopes, (boundary, rules)) = match form {
        Ok(ok) => ok,
        Err(why) => {
            state.failures.push(why.clone());
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": "invalid_request", "error_description": why })),
            )
                .into_response();
        }
    };
    let token = format!("ya29.down-{}", next(&mut state));
    state
        .tokens
        .insert(token.clone(), Grant::Downscoped { scopes, rules });
    state.boundaries.push(boundary);
    let reply = json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": 3600,
    });
    let problems = discovery.check_response(method, &reply);
    state
        .failures
        .extend(problems.into_iter().map(|p| format!("fake reply: {p}")));
    axum::Json(reply).into_response()
}

/// The exchange's form, checked: form-encoded, each field once, the fields of the request
/// schema (`grant_type` as `grantType`), a token exchange of access tokens, and no
/// `Authorization` header (the method's documentation: it "can cause the request to fail").
fn check_exchange(
    discovery: &Discovery,
    method: &discovery::Method,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, String> {
    let mut wrong = discovery.check_query(method, query);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        wrong.push(format!(
            "the body is '{content_type}', not application/x-www-form-urlencoded"
        ));
    }
    if headers.contains_key(header::AUTHORIZATION) {
        wrong.push("the request has an Authorization header; sts.token takes none".to_owned());
    }
    let mut form = BTreeMap::new();
    for pair in String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        match (decode(k), decode(v)) {
            (Some(k), Some(v)) => {
                if form.insert(k.clone(), v).is_some() {
                    wrong.push(format!("form field '{k}' given twice"));
                }
            }
            _ => wrong.push(format!("form field '{pair}' is not URL-encoded UTF-8")),
        }
    }
    let as_json: serde_json::Map<String, Value> = form
        .iter()
        .map(|(k, v)| (camel_case(k), json!(v)))
        .collect();
    wrong.extend(discovery.check_request(method, Some(&Value::Object(as_json))));
    let field = |name: &str| form.get(name).map_or("", String::as_str);
    for (name, want) in [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
    ] {
        if field(name) != want {
            wrong.push(format!("{name} is '{}', not '{want}'", field(name)));
        }
    }
    if wrong.is_empty() {
        Ok(form)
    } else {
        Err(format!("sts.token: {}", wrong.join("; ")))
    }
}

/// `grant_type` → `grantType`: the form's names as the request schema spells them.
fn camel_case(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The `accessBoundary` of the exchange's `options`, and its rules parsed.
fn boundary_of(
    discovery: &Discovery,
    method: &discovery::Method,
    form: &BTreeMap<String, String>,
) -> Result<(Value, Vec<Rule>), String> {
    let options = form
        .get("options")
        .ok_or("sts.token: no options (no access boundary)")?;
    let options: Value = serde_json::from_str(options)
        .map_err(|e| format!("sts.token: options is not JSON: {e}"))?;
    let wrong = discovery.check_value(method, "GoogleIdentityStsV1Options", &options);
    if !wrong.is_empty() {
        return Err(format!("sts.token: options: {}", wrong.join("; ")));
    }
    let boundary = options["accessBoundary"].clone();
    let size = boundary.to_string().len();
    if size > MAX_BOUNDARY {
        return Err(format!(
            "sts.token: the access boundary is {size} characters (at most {MAX_BOUNDARY})"
        ));
    }
    let rules = boundary["accessBoundaryRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(format!(
            "sts.token: the access boundary has {} rules (1 to {MAX_RULES})",
            rules.len()
        ));
    }
    let rules = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            parse_rule(r).map_err(|why| format!("sts.token: accessBoundaryRules[{i}]: {why}"))
        })
        .collect::<Result<Vec<Rule>, String>>()?;
    Ok((boundary, rules))
}

fn parse_rule(rule: &Value) -> Result<Rule, String> {
    let resource = rule["availableResource"].as_str().unwrap_or_default();
    let bucket = resource
        .strip_prefix(RESOURCE_PREFIX)
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| {
            format!("availableResource '{resource}' is not {RESOURCE_PREFIX}<bucket>")
        })?;
    let permissions = rule["availablePermissions"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or("availablePermissions is missing or empty")?;
    let mut granted = None;
    for p in permissions {
        let p = p.as_str().unwrap_or_default();
        let parsed = Role::parse(p).ok_or_else(|| {
            format!(
                "availablePermissions: '{p}' is not inRole:roles/storage.objectViewer nor \
                 inRole:roles/storage.objectUser"
            )
        })?;
        granted = granted.max(Some(parsed));
    }
    let condition = match rule.get("availabilityCondition") {
        None | Some(Value::Null) => None,
        Some(c) => {
            let expression = c["expression"]
                .as_str()
                .ok_or("availabilityCondition has no expression")?;
            if expression.len() > MAX_EXPRESSION {
                return Err(format!(
                    "the condition is {} characters (at most {MAX_EXPRESSION})",
                    expression.len()
                ));
            }
            let terms = expression
                .split(" || ")
                .map(|t| parse_term(bucket, t.trim()))
                .collect::<Result<Vec<Term>, String>>()?;
            Some(Condition {
                expression: expression.to_owned(),
                terms,
            })
        }
    };
    Ok(Rule {
        bucket: bucket.to_owned(),
        role: granted.expect("checked: at least one permission"),
        condition,
    })
}

/// One `||` term of a condition on `bucket`'s rule. A `resource.name` prefix outside the
/// rule's bucket could never hold; it is refused as the mistake it must be.
fn parse_term(bucket: &str, term: &str) -> Result<Term, String> {
    let understood = || {
        format!(
            "condition term `{term}` is not one the fake understands: \
             resource.name.startsWith('projects/_/buckets/{bucket}/objects/...'), \
             resource.name == 'projects/_/buckets/{bucket}/objects/...' or \
             api.getAttribute('{LIST_PREFIX_ATTRIBUTE}', '').startsWith('...')"
        )
    };
    let objects = format!("projects/_/buckets/{bucket}/objects/");
    if let Some(name) = term
        .strip_prefix("resource.name == ")
        .and_then(string_literal)
    {
        if !name.starts_with(&objects) {
            return Err(format!(
                "condition term `{term}`: the name is not under {objects}, so it never holds"
            ));
        }
        return Ok(Term::ResourceIs(name.to_owned()));
    }
    if let Some(rest) = term.strip_prefix("resource.name.startsWith(") {
        let prefix = rest
            .strip_suffix(')')
            .and_then(string_literal)
            .ok_or_else(understood)?;
        if !prefix.starts_with(&objects) {
            return Err(format!(
                "condition term `{term}`: the prefix is not under {objects}, so it never holds"
            ));
        }
        return Ok(Term::ResourceName(prefix.to_owned()));
    }
    let rest = term
        .strip_prefix("api.getAttribute(")
        .ok_or_else(understood)?;
    let (args, rest) = rest.split_once(')').ok_or_else(understood)?;
    let args: Vec<Option<&str>> = args.split(',').map(|a| string_literal(a.trim())).collect();
    if args != [Some(LIST_PREFIX_ATTRIBUTE), Some("")] {
        return Err(understood());
    }
    let prefix = rest
        .strip_prefix(".startsWith(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(string_literal)
        .ok_or_else(understood)?;
    Ok(Term::ListPrefix(prefix.to_owned()))
}

/// The text of a CEL string literal in single or double quotes, without escapes.
fn string_literal(s: &str) -> Option<&str> {
    let quote = s.chars().next().filter(|c| matches!(c, '\'' | '"'))?;
    let inner = s.strip_prefix(quote)?.strip_suffix(quote)?;
    (!inner.contains([quote, '\\'])).then_some(inner)
}

fn bucket_resource(url: &str, name: &str, location: &str, labels: &Value, project: &str) -> Value {
    let location = location.to_ascii_uppercase();
    let location_type = match location.as_str() {
        "US" | "EU" | "ASIA" => "multi-region",
        "NAM4" | "EUR4" | "ASIA1" | "EUR5" | "EUR7" | "EUR8" => "dual-region",
        _ => "region",
    };
    let now = utc(now_millis());
    let mut bucket = json!({
        "kind": "storage#bucket",
        "id": name,
        "name": name,
        "selfLink": format!("{url}/storage/v1/b/{name}"),
        "projectNumber": project,
        "location": location,
        "locationType": location_type,
        "storageClass": "STANDARD",
        "metageneration": "1",
        "etag": "CAE=",
        "timeCreated": now,
        "updated": now,
    });
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        bucket["labels"] = labels.clone();
    }
    bucket
}

fn object_resource(
    url: &str,
    bucket: &str,
    name: &str,
    generation: u64,
    bytes: &[u8],
    content_type: &str,
) -> Value {
    // Real generations are microsecond timestamps; any increasing number will do.
    let generation = 1_700_000_000_000_000 + generation;
    let now = utc(now_millis());
    let link = format!("{url}/storage/v1/b/{bucket}/o/{}", encode_segment(name));
    json!({
        "kind": "storage#object",
        "id": format!("{bucket}/{name}/{generation}"),
        "selfLink": link,
        "mediaLink": format!("{link}?alt=media"),
        "name": name,
        "bucket": bucket,
        "generation": generation.to_string(),
        "metageneration": "1",
        "contentType": content_type,
        "storageClass": "STANDARD",
        "size": bytes.len().to_string(),
        "crc32c": base64(&crc32c(bytes).to_be_bytes()),
        "etag": base64(&generation.to_be_bytes()),
        "timeCreated": now,
        "updated": now,
        "timeStorageClassUpdated": now,
    })
}

/// A path segment as Google's clients encode object names (`/` as `%2F`).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn to_hex(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").expect("writing to a String");
        out
    })
}

fn from_hex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// CRC32C (Castagnoli), as Cloud Storage reports it in `crc32c`.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `millis` since the epoch as Cloud Storage writes times (`2026-11-27T11:12:00.123Z`).
fn utc(millis: u128) -> String {
    let at = i64::try_from(millis)
        .ok()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
