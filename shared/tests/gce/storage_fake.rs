//! The fake Cloud Storage on its own, over HTTP as production calls it: the admin's round
//! trip through every served method, what validation catches, and a downscoped token held to
//! its boundary. The requests go through a few lines of HTTP/1.1 over a socket, so that what
//! is sent is exactly what the test wrote (no client adds or normalises headers).

use std::fmt::Write as _;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fake::storage::FakeStorage;

const ADMIN: &str = "ya29.admin-token";
const READ_WRITE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// One answer of the fake.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `error.errors[0].reason` of a Cloud Storage error.
    fn reason(&self) -> String {
        self.json()["error"]["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `verb path` with `Connection: close`, the body (if any) with its content type.
async fn call(
    fake: &FakeStorage,
    verb: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Reply {
    let host = fake.url.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let (content_type, bytes) = body.unwrap_or(("", b""));
    let mut head = format!(
        "{verb} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        bytes.len()
    );
    if let Some(token) = token {
        write!(head, "Authorization: Bearer {token}\r\n").unwrap();
    }
    if !content_type.is_empty() {
        write!(head, "Content-Type: {content_type}\r\n").unwrap();
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_default()
            .to_owned()
    };
    let mut body = raw[split + 4..].to_vec();
    if header("transfer-encoding") == "chunked" {
        body = dechunk(&body);
    }
    Reply {
        status,
        content_type: header("content-type"),
        body,
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 4 + size..];
    }
}

fn encode(s: &str) -> String {
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

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

async fn upload(fake: &FakeStorage, token: &str, bucket: &str, name: &str, bytes: &[u8]) -> Reply {
    let path = format!(
        "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
        encode(name)
    );
    let body = Some(("application/octet-stream", bytes));
    call(fake, "POST", &path, Some(token), body).await
}

async fn get_object(fake: &FakeStorage, token: &str, bucket: &str, name: &str) -> Reply {
    let path = format!("/storage/v1/b/{bucket}/o/{}?alt=media", encode(name));
    call(fake, "GET", &path, Some(token), None).await
}

async fn list(fake: &FakeStorage, token: &str, bucket: &str, query: &str) -> Reply {
    let path = format!("/storage/v1/b/{bucket}/o?{query}");
    call(fake, "GET", &path, Some(token), None).await
}

fn generate_path(account: &str) -> String {
    format!("/v1/projects/-/serviceAccounts/{account}:generateAccessToken")
}

/// A token of the node service account, as the control plane gets one.
async fn service_account_token(fake: &FakeStorage) -> String {
    let body = json!({ "scope": [READ_WRITE], "lifetime": "3600s" });
    let path = generate_path(FakeStorage::NODE_SERVICE_ACCOUNT);
    let reply = admin(fake, "POST", &path, Some(&body)).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    assert!(
        reply.json()["expireTime"].as_str().unwrap().ends_with('Z'),
        "{}",
        reply.json()
    );
    reply.json()["accessToken"].as_str().unwrap().to_owned()
}

/// STS's exchange of `subject` for a token held to `boundary`.
async fn downscope(fake: &FakeStorage, subject: &str, boundary: &Value) -> Reply {
    let options = json!({ "accessBoundary": boundary }).to_string();
    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        (
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("subject_token", subject),
        ("options", &options),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    let body = Some(("application/x-www-form-urlencoded", form.as_bytes()));
    call(fake, "POST", "/v1/token", None, body).await
}

fn rule(bucket: &str, role: &str, expression: Option<&str>) -> Value {
    let mut out = json!({
        "availableResource": format!("//storage.googleapis.com/projects/_/buckets/{bucket}"),
        "availablePermissions": [format!("inRole:roles/storage.{role}")],
    });
    if let Some(e) = expression {
        out["availabilityCondition"] = json!({ "expression": e });
    }
    out
}

/// A condition letting through the objects under `prefix` of `bucket` and lists of them.
fn under(bucket: &str, prefix: &str) -> String {
    format!(
        "resource.name.startsWith('projects/_/buckets/{bucket}/objects/{prefix}') || \
         api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('{prefix}')"
    )
}

async fn started() -> FakeStorage {
    let fake = FakeStorage::start().await;
    fake.require_admin_token(ADMIN);
    fake
}

/// `verb path` with the admin token, and a JSON body if any.
async fn admin(fake: &FakeStorage, verb: &str, path: &str, body: Option<&Value>) -> Reply {
    let body = body.map(json_body);
    let body = body.as_deref().map(|b| ("application/json", b));
    call(fake, verb, path, Some(ADMIN), body).await
}

#[tokio::test]
async fn the_admin_makes_and_deletes_buckets() {
    let fake = started().await;
    let insert = format!("/storage/v1/b?project={}", FakeStorage::PROJECT);
    let bucket = json!({
        "name": "stratus-data",
        "location": "us-central1",
        "labels": { "stratus-owner": "alice" },
    });
    let made = admin(&fake, "POST", &insert, Some(&bucket)).await;
    assert_eq!(made.status, 200, "{}", made.json());
    assert_eq!(made.json()["location"], "US-CENTRAL1");
    let labels = &fake.bucket("stratus-data").unwrap()["labels"];
    assert_eq!(labels["stratus-owner"], "alice");
    let again = admin(&fake, "POST", &insert, Some(&bucket)).await;
    assert_eq!((again.status, again.reason().as_str()), (409, "conflict"));
    let got = admin(&fake, "GET", "/storage/v1/b/stratus-data", None).await;
    assert_eq!(got.json()["name"], "stratus-data");
    assert_eq!(fake.buckets(), ["stratus-data"]);

    fake.put_object("stratus-data", "left/behind", b"x");
    let busy = admin(&fake, "DELETE", "/storage/v1/b/stratus-data", None).await;
    assert_eq!((busy.status, busy.reason().as_str()), (409, "conflict"));
    let path = "/storage/v1/b/stratus-data/o/left%2Fbehind";
    assert_eq!(admin(&fake, "DELETE", path, None).await.status, 204);
    let deleted = admin(&fake, "DELETE", "/storage/v1/b/stratus-data", None).await;
    assert_eq!(deleted.status, 204);
    let missing = admin(&fake, "GET", "/storage/v1/b/stratus-data", None).await;
    assert_eq!(
        (missing.status, missing.reason().as_str()),
        (404, "notFound")
    );
    assert!(fake.buckets().is_empty());

    // No token; a bucket of another project.
    fake.add_foreign_bucket("someone-elses");
    let anonymous = call(&fake, "GET", "/storage/v1/b/someone-elses", None, None).await;
    assert_eq!(anonymous.status, 401);
    let foreign = admin(&fake, "GET", "/storage/v1/b/someone-elses", None).await;
    assert_eq!(
        (foreign.status, foreign.reason().as_str()),
        (403, "forbidden")
    );
    let name_taken = json!({ "name": "someone-elses" });
    let conflict = admin(&fake, "POST", &insert, Some(&name_taken)).await;
    assert_eq!(conflict.status, 409);
    // The 401 only: the admin's 403 on a foreign bucket is no denial of a token's.
    assert_eq!(fake.denied().len(), 1, "{:?}", fake.denied());
    assert_eq!(fake.count("storage.buckets.insert"), 3);
    fake.assert_valid();
}

#[tokio::test]
async fn the_admin_uploads_lists_downloads_and_deletes_objects() {
    let fake = started().await;
    fake.add_bucket("stratus-data", "US");
    for name in ["ckpt/a", "ckpt/b", "ckpt/c", "logs/x"] {
        let reply = upload(&fake, ADMIN, "stratus-data", name, name.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.json());
        assert_eq!(reply.json()["size"], name.len().to_string());
    }
    assert_eq!(fake.object("stratus-data", "ckpt/b").unwrap(), b"ckpt/b");

    // Two a page, under a prefix.
    fake.set_page_size(2);
    let names = |page: &Value| -> Vec<String> {
        let items = page["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = list(&fake, ADMIN, "stratus-data", "prefix=ckpt%2F").await;
    let first = first.json();
    assert_eq!(names(&first), ["ckpt/a", "ckpt/b"]);
    let page = first["nextPageToken"].as_str().unwrap();
    let query = format!("prefix=ckpt%2F&pageToken={page}&maxResults=10");
    let second = list(&fake, ADMIN, "stratus-data", &query).await.json();
    assert_eq!(names(&second), ["ckpt/c"]);
    assert!(second.get("nextPageToken").is_none(), "{second}");

    let bytes = get_object(&fake, ADMIN, "stratus-data", "logs/x").await;
    assert_eq!((bytes.status, bytes.body.as_slice()), (200, &b"logs/x"[..]));
    assert_eq!(bytes.content_type, "application/octet-stream");
    let meta = admin(&fake, "GET", "/storage/v1/b/stratus-data/o/logs%2Fx", None).await;
    assert_eq!(meta.json()["bucket"], "stratus-data");
    assert_eq!(meta.json()["size"], "6");

    for name in fake.objects("stratus-data") {
        let path = format!("/storage/v1/b/stratus-data/o/{}", encode(&name));
        assert_eq!(admin(&fake, "DELETE", &path, None).await.status, 204);
    }
    let gone = get_object(&fake, ADMIN, "stratus-data", "logs/x").await;
    assert_eq!((gone.status, gone.reason().as_str()), (404, "notFound"));
    let again = admin(
        &fake,
        "DELETE",
        "/storage/v1/b/stratus-data/o/logs%2Fx",
        None,
    )
    .await;
    assert_eq!(again.status, 404);
    assert!(fake.objects("stratus-data").is_empty());
    assert_eq!(fake.count("storage.objects.list"), 2);
    assert_eq!(fake.count("storage.objects.insert"), 4);
    assert!(fake.denied().is_empty(), "{:?}", fake.denied());
    fake.assert_valid();
}

#[tokio::test]
async fn the_fake_rejects_what_the_real_api_would() {
    let fake = started().await;
    fake.add_bucket("data", "US");
    let typo = list(&fake, ADMIN, "data", "prefx=a").await;
    assert_eq!((typo.status, typo.reason().as_str()), (400, "invalid"));
    let no_project = json!({ "name": "fine-name" });
    let no_project = admin(&fake, "POST", "/storage/v1/b", Some(&no_project)).await;
    assert_eq!(no_project.status, 400);
    let insert = format!("/storage/v1/b?project={}", FakeStorage::PROJECT);
    for body in [
        json!({ "name": "Bad_Name", "labels": { "Team": "x" } }),
        json!({ "name": "ab" }),
        json!({ "name": "data", "locaton": "US" }),
    ] {
        assert_eq!(admin(&fake, "POST", &insert, Some(&body)).await.status, 400);
    }
    let resumable = "/upload/storage/v1/b/data/o?uploadType=resumable&name=x";
    let body = Some(("text/plain", &b"x"[..]));
    call(&fake, "POST", resumable, Some(ADMIN), body).await;
    let unmodelled = list(&fake, ADMIN, "data", "delimiter=%2F").await;
    assert_eq!(unmodelled.status, 400);
    let made_up = list(&fake, ADMIN, "data", "pageToken=zz").await;
    assert_eq!(made_up.status, 400);
    let failures = fake.validation_failures();
    for want in [
        "unknown query parameter 'prefx'",
        "required query parameter 'project' missing",
        "invalid bucket name 'Bad_Name'",
        "invalid label key 'Team'",
        "invalid bucket name 'ab'",
        "request Bucket.locaton: unknown field",
        "simple media uploads only",
        "'delimiter' is the API's, but the fake does not model it",
        "Invalid pageToken 'zz'",
    ] {
        let found = failures.iter().any(|f| f.contains(want));
        assert!(found, "{want}: {failures:#?}");
    }
    assert!(fake.objects("data").is_empty());
    assert!(fake.denied().is_empty(), "{:?}", fake.denied());
}

#[tokio::test]
async fn a_downscoped_token_is_held_to_its_boundary() {
    let fake = started().await;
    fake.add_bucket("data", "US");
    fake.add_bucket("other", "US");
    for (bucket, name) in [("data", "in/a"), ("data", "secret"), ("other", "in/a")] {
        fake.put_object(bucket, name, b"bytes");
    }
    let subject = service_account_token(&fake).await;
    let boundary = json!({ "accessBoundaryRules": [
        rule("data", "objectViewer", Some(&under("data", "in/"))),
        rule("data", "objectUser", Some(&under("data", "out/"))),
    ]});
    let reply = downscope(&fake, &subject, &boundary).await;
    assert_eq!(reply.status, 200, "{}", reply.json());
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ya29.down-"), "{token}");
    assert_eq!(fake.issued_boundaries(), [boundary]);

    // Allowed: reading under in/, writing and deleting under out/.
    assert_eq!(get_object(&fake, &token, "data", "in/a").await.status, 200);
    let listed = list(&fake, &token, "data", "prefix=in%2F").await;
    assert_eq!(listed.json()["items"][0]["name"], "in/a");
    assert_eq!(
        upload(&fake, &token, "data", "out/b", b"new").await.status,
        200
    );
    let delete = call(
        &fake,
        "DELETE",
        "/storage/v1/b/data/o/out%2Fb",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(delete.status, 204);
    assert!(fake.denied().is_empty(), "{:?}", fake.denied());

    // Denied: outside the prefix, a whole-bucket list, a write with objectViewer, another
    // bucket, a bucket method.
    let denials = [
        get_object(&fake, &token, "data", "secret").await,
        list(&fake, &token, "data", "").await,
        upload(&fake, &token, "data", "in/c", b"x").await,
        get_object(&fake, &token, "other", "in/a").await,
        call(&fake, "GET", "/storage/v1/b/data", Some(&token), None).await,
    ];
    for (i, reply) in denials.iter().enumerate() {
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (403, "forbidden"),
            "{i}"
        );
    }
    let denied = fake.denied();
    assert_eq!(denied.len(), 5, "{denied:#?}");
    assert!(
        denied[0].starts_with("storage.objects.get data/secret: condition"),
        "{denied:#?}"
    );
    assert!(denied[1].contains("data (prefix '')"), "{denied:#?}");
    assert!(
        denied[2].contains("ObjectViewer does not grant storage.objects.create"),
        "{denied:#?}"
    );
    assert!(denied[3].contains("no rule of the token's access boundary names bucket 'other'"));
    assert!(denied[4].contains("object permissions only"), "{denied:#?}");
    assert_eq!(fake.objects("data"), ["in/a", "secret"]);

    // As Google's: a list's resource is the bucket, so a condition on object names alone
    // lets objects through and no list.
    let objects_only = "resource.name.startsWith('projects/_/buckets/data/objects/in/')";
    let boundary =
        json!({ "accessBoundaryRules": [rule("data", "objectViewer", Some(objects_only))] });
    let reply = downscope(&fake, &subject, &boundary).await;
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get_object(&fake, &token, "data", "in/a").await.status, 200);
    assert_eq!(
        list(&fake, &token, "data", "prefix=in%2F").await.status,
        403
    );
    assert_eq!(fake.denied().len(), 6);
    fake.assert_valid();
}

#[tokio::test]
async fn the_token_services_refuse_what_google_would() {
    let fake = started().await;
    // generateAccessToken: only the node service account, only for the admin.
    let someone = "someone@test-project.iam.gserviceaccount.com";
    let scope = json!({ "scope": [READ_WRITE] });
    let unknown = admin(&fake, "POST", &generate_path(someone), Some(&scope)).await;
    assert_eq!(unknown.status, 404);
    let node = generate_path(FakeStorage::NODE_SERVICE_ACCOUNT);
    let body = json_body(&scope);
    let anonymous = call(
        &fake,
        "POST",
        &node,
        None,
        Some(("application/json", &body)),
    )
    .await;
    assert_eq!(anonymous.status, 401);
    let subject = service_account_token(&fake).await;
    let body = Some(("application/json", body.as_slice()));
    let not_admin = call(&fake, "POST", &node, Some(&subject), body).await;
    assert_eq!(not_admin.status, 403);
    assert_eq!(fake.denied().len(), 3, "{:?}", fake.denied());
    fake.assert_valid();

    // The exchange: a subject generateAccessToken issued, a boundary the fake understands.
    let downscoped = downscoped_token(&fake).await;
    let viewer = |expression: Option<&str>| {
        let rules = [rule("data", "objectViewer", expression)];
        json!({ "accessBoundaryRules": rules })
    };
    let eleven: Vec<Value> = (0..11)
        .map(|i| rule(&format!("b{i}"), "objectViewer", None))
        .collect();
    let typo = "resource.name.startWith('projects/_/buckets/data/objects/in/')";
    let elsewhere = "resource.name.startsWith('projects/_/buckets/other/objects/in/')";
    let cases = [
        (viewer(None), "ya29.made-up", "subject_token is no token"),
        (viewer(None), &downscoped, "subject_token is no token"),
        (
            viewer(Some(typo)),
            &subject,
            "is not one the fake understands",
        ),
        (viewer(Some(elsewhere)), &subject, "never holds"),
        (
            json!({ "accessBoundaryRules": [rule("data", "objectAdmin", None)] }),
            &subject,
            "is not inRole:roles/storage.objectViewer",
        ),
        (
            json!({ "accessBoundaryRules": eleven }),
            &subject,
            "11 rules",
        ),
        (json!({ "accessBoundaryRules": [] }), &subject, "0 rules"),
        (
            json!({ "accessBoundaryRules": [{ "availableResourse": "x" }] }),
            &subject,
            "unknown field",
        ),
    ];
    for (boundary, subject, want) in cases {
        let reply = downscope(&fake, subject, &boundary).await;
        assert_eq!(reply.status, 400, "{want}");
        assert_eq!(reply.json()["error"], "invalid_request");
        let why = reply.json()["error_description"].to_string();
        assert!(why.contains(want), "{want}: {why}");
    }
    assert_eq!(fake.validation_failures().len(), 8);
    assert_eq!(fake.count("sts.token"), 9);
    assert_eq!(fake.issued_boundaries().len(), 1);
}

/// A downscoped token: not a valid subject for another exchange.
async fn downscoped_token(fake: &FakeStorage) -> String {
    let subject = service_account_token(fake).await;
    let boundary = json!({ "accessBoundaryRules": [rule("data", "objectViewer", None)] });
    let reply = downscope(fake, &subject, &boundary).await;
    reply.json()["access_token"].as_str().unwrap().to_owned()
}
