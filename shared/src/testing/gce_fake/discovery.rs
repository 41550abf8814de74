//! Google's own description of an API (`compute.v1.json`, `storage.v1.json`, ...: the
//! discovery documents shipped in the `google-api-python-client` package) and the checks the
//! fakes run with it: which method a request is, and whether its query and body are ones the
//! real API would take.
//!
//! What is checked, for every request:
//! - the method: the HTTP verb and path must be one of the document's methods (`flatPath`, else
//!   `path`, under `servicePath`; literal segments before variables; a segment may be a
//!   variable with a literal tail, as in `{serviceAccountsId}:generateAccessToken`). Path
//!   variables are percent-decoded, as Google decodes them: Cloud Storage object names carry
//!   their `/` as `%2F` in one segment. Media uploads go to the method's
//!   `mediaUpload.protocols.simple.path` (`/upload/storage/v1/b/{bucket}/o`) instead, which
//!   [`Discovery::route_upload`] matches;
//! - the query: every parameter must be the method's (`location: query`) or one of the
//!   document's global parameters, or a front-end system parameter the official clients send
//!   that the document does not list (`$alt`, checked as `alt`; `$apiVersion`); values must
//!   have the parameter's type (`integer` within `minimum`/`maximum`, `boolean`), be one of its
//!   `enum`, and appear more than once only if `repeated`; `required` ones must be there;
//! - the body: absent (or `{}`) for a method without a `request`, else valid against that
//!   schema, recursively through `$ref`s: no property the schema does not have (unless it
//!   has `additionalProperties`), no `readOnly` (output-only) property, JSON types as the
//!   schema says (`int64`/`uint64` as a string or an integer, `int32` within range, `byte`
//!   base64), `enum` values, full-match `pattern`s, and properties whose
//!   `annotations.required` names the method present. A `null` is taken as "unset", as
//!   Google's JSON parser does.
//!
//! The fake also checks each of its own responses against the method's `response` schema (in
//! that direction output-only fields are expected and nothing is required), so that a reply
//! the real API could not give fails the test too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::pattern::full_match;

/// Parameters Google's front end takes on every call that the discovery document does not
/// list; the official Rust client sends both. `$alt` is checked as `alt`.
const SYSTEM_PARAMETERS: [&str; 2] = ["$alt", "$apiVersion"];

/// One method of the API.
#[derive(Debug)]
pub struct Method {
    /// `compute.instances.insert`.
    pub id: String,
    verb: String,
    /// `projects/{project}/zones/{zone}/instances`, split on `/`.
    segments: Vec<Segment>,
    /// The simple media upload path (`/upload/storage/v1/b/{bucket}/o`, from the root), split
    /// on `/` without the leading one; only for methods that take uploads.
    upload: Option<Vec<Segment>>,
    json: Value,
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    /// `{name}`, or `{name}tail` (`{serviceAccountsId}:generateAccessToken`).
    Variable {
        name: String,
        tail: String,
    },
}

/// The discovery document, indexed.
#[derive(Debug)]
pub struct Discovery {
    doc: Value,
    /// `/compute/v1/`.
    service_path: String,
    methods: Vec<Method>,
}

/// Whether a body goes to the API (request) or comes from it (response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

struct Checker<'a> {
    discovery: &'a Discovery,
    method: &'a str,
    direction: Direction,
    failures: Vec<String>,
}

impl Discovery {
    /// The document at `path`, read once per process.
    pub fn load(path: &Path) -> Result<Arc<Discovery>, String> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Discovery>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Mutex::default);
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = cache.get(path) {
            return Ok(d.clone());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
        let discovery = Arc::new(Self::from_document(doc)?);
        cache.insert(path.to_owned(), discovery.clone());
        Ok(discovery)
    }

    fn from_document(doc: Value) -> Result<Self, String> {
        let service_path = format!(
            "/{}",
            doc["servicePath"]
                .as_str()
                .ok_or("the document has no servicePath")?
        );
        let mut methods = Vec::new();
        collect_methods(&doc["resources"], &mut methods);
        if methods.is_empty() {
            return Err("the document has no methods".to_owned());
        }
        Ok(Self {
            doc,
            service_path,
            methods,
        })
    }

    /// The document's revision (`20261106`).
    pub fn revision(&self) -> &str {
        self.doc["revision"].as_str().unwrap_or_default()
    }

    fn schema(&self, name: &str) -> Option<&Value> {
        self.doc["schemas"].get(name)
    }

    /// The method with this id (`compute.instances.insert`).
    pub fn method(&self, id: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.id == id)
    }

    /// The method `verb path` calls, and its (percent-decoded) path parameters.
    pub fn route(&self, verb: &str, path: &str) -> Option<(&Method, BTreeMap<String, String>)> {
        let rest = path.strip_prefix(&self.service_path)?;
        self.best_fit(verb, rest, |m| Some(&m.segments))
    }

    /// The method whose simple media upload path `verb path` is
    /// (`POST /upload/storage/v1/b/{bucket}/o`), and its path parameters. The body of such a
    /// call is the media itself, not the method's `request`.
    pub fn route_upload(
        &self,
        verb: &str,
        path: &str,
    ) -> Option<(&Method, BTreeMap<String, String>)> {
        let rest = path.strip_prefix('/')?;
        self.best_fit(verb, rest, |m| m.upload.as_ref())
    }

    /// The method of verb `verb` whose path (as `path_of` picks it) fits `rest`; where several
    /// fit, the one with the most literal segments.
    fn best_fit<'a>(
        &'a self,
        verb: &str,
        rest: &str,
        path_of: impl Fn(&'a Method) -> Option<&'a Vec<Segment>>,
    ) -> Option<(&'a Method, BTreeMap<String, String>)> {
        let parts: Vec<&str> = rest.split('/').collect();
        let mut best: Option<(&Method, BTreeMap<String, String>, usize)> = None;
        for m in self.methods.iter().filter(|m| m.verb == verb) {
            let Some(segments) = path_of(m) else {
                continue;
            };
            if segments.len() != parts.len() {
                continue;
            }
            let mut vars = BTreeMap::new();
            let mut literals = 0;
            let fits = segments.iter().zip(&parts).all(|(s, p)| match s {
                Segment::Literal(l) => {
                    literals += 1;
                    l == p
                }
                Segment::Variable { name, tail } => {
                    let value = p.strip_suffix(tail.as_str()).and_then(percent_decode);
                    match value {
                        Some(v) if !v.is_empty() => {
                            vars.insert(name.clone(), v);
                            true
                        }
                        _ => false,
                    }
                }
            });
            if fits && best.as_ref().is_none_or(|(_, _, l)| literals > *l) {
                best = Some((m, vars, literals));
            }
        }
        best.map(|(m, vars, _)| (m, vars))
    }

    /// What is wrong with `query` for `method` (nothing: empty).
    pub fn check_query(&self, method: &Method, query: &[(String, String)]) -> Vec<String> {
        let mut failures = Vec::new();
        let params = &method.json["parameters"];
        let globals = &self.doc["parameters"];
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, value) in query {
            *counts.entry(name.as_str()).or_default() += 1;
            let spec = if let Some(p) = params.get(name) {
                if p["location"] == "path" {
                    failures.push(format!(
                        "{}: path parameter '{name}' given in the query",
                        method.id
                    ));
                    continue;
                }
                p
            } else if let Some(p) = globals.get(name) {
                p
            } else if SYSTEM_PARAMETERS.contains(&name.as_str()) {
                match name.as_str() {
                    "$alt" => &globals["alt"],
                    _ => continue,
                }
            } else {
                failures.push(format!(
                    "{}: unknown query parameter '{name}' (= '{value}')",
                    method.id
                ));
                continue;
            };
            if let Err(why) = check_parameter(spec, value) {
                failures.push(format!(
                    "{}: query parameter {name}='{value}': {why}",
                    method.id
                ));
            }
        }
        for (name, count) in counts {
            let repeated = params
                .get(name)
                .or_else(|| globals.get(name))
                .is_some_and(|p| p["repeated"] == true);
            if count > 1 && !repeated {
                failures.push(format!(
                    "{}: query parameter '{name}' given {count} times",
                    method.id
                ));
            }
        }
        if let Some(params) = params.as_object() {
            for (name, p) in params {
                if p["location"] == "query"
                    && p["required"] == true
                    && !query.iter().any(|(n, _)| n == name)
                {
                    failures.push(format!(
                        "{}: required query parameter '{name}' missing",
                        method.id
                    ));
                }
            }
        }
        failures
    }

    /// What is wrong with the request body of a call to `method`.
    pub fn check_request(&self, method: &Method, body: Option<&Value>) -> Vec<String> {
        let Some(schema) = method.json["request"]["$ref"].as_str() else {
            return match body {
                None => Vec::new(),
                Some(Value::Object(o)) if o.is_empty() => Vec::new(),
                Some(other) => vec![format!(
                    "{}: the method takes no body, got {other}",
                    method.id
                )],
            };
        };
        let Some(body) = body else {
            return vec![format!("{}: no request body (a {schema})", method.id)];
        };
        self.check(method, Direction::Request, schema, body)
    }

    /// What is wrong with `value` as a request's `schema` (`GoogleIdentityStsV1Options`): for
    /// JSON a method carries inside a string field, which the request schema cannot see into.
    pub fn check_value(&self, method: &Method, schema: &str, value: &Value) -> Vec<String> {
        self.check(method, Direction::Request, schema, value)
    }

    /// What is wrong with a response of `method` (the fake's own replies).
    pub fn check_response(&self, method: &Method, body: &Value) -> Vec<String> {
        match method.json["response"]["$ref"].as_str() {
            Some(schema) => self.check(method, Direction::Response, schema, body),
            None => Vec::new(),
        }
    }

    /// Whether `field` (`labels.stratus-cluster`, `operationType`) names a property of the
    /// items of `method`'s list response, for checking list filters.
    pub fn item_has_field(&self, method: &Method, field: &str) -> bool {
        let Some(list) = method.json["response"]["$ref"]
            .as_str()
            .and_then(|s| self.schema(s))
        else {
            return false;
        };
        let item = &list["properties"]["items"]["items"];
        let Some(item) = item["$ref"].as_str().and_then(|s| self.schema(s)) else {
            return false;
        };
        let root = field.split('.').next().unwrap_or_default();
        item["properties"].get(root).is_some()
    }

    fn check(
        &self,
        method: &Method,
        direction: Direction,
        schema: &str,
        body: &Value,
    ) -> Vec<String> {
        let mut checker = Checker {
            discovery: self,
            method: &method.id,
            direction,
            failures: Vec::new(),
        };
        let root = serde_json::json!({ "$ref": schema });
        let what = match direction {
            Direction::Request => "request",
            Direction::Response => "response",
        };
        checker.value(&root, body, &format!("{what} {schema}"));
        checker
            .failures
            .into_iter()
            .map(|f| format!("{}: {f}", method.id))
            .collect()
    }
}

fn collect_methods(resources: &Value, out: &mut Vec<Method>) {
    let Some(resources) = resources.as_object() else {
        return;
    };
    for resource in resources.values() {
        if let Some(methods) = resource["methods"].as_object() {
            for m in methods.values() {
                let path = m["flatPath"]
                    .as_str()
                    .or(m["path"].as_str())
                    .unwrap_or_default();
                let upload = m["mediaUpload"]["protocols"]["simple"]["path"]
                    .as_str()
                    .map(|p| segments(p.trim_start_matches('/')));
                out.push(Method {
                    id: m["id"].as_str().unwrap_or_default().to_owned(),
                    verb: m["httpMethod"].as_str().unwrap_or_default().to_owned(),
                    segments: segments(path),
                    upload,
                    json: m.clone(),
                });
            }
        }
        collect_methods(&resource["resources"], out);
    }
}

/// `projects/{project}/zones/{zone}` as segments; `{+name}` is a variable `name`.
fn segments(path: &str) -> Vec<Segment> {
    path.split('/')
        .map(|s| {
            let variable = s.strip_prefix('{').and_then(|s| s.split_once('}'));
            match variable {
                Some((name, tail)) => Segment::Variable {
                    name: name.trim_start_matches('+').to_owned(),
                    tail: tail.to_owned(),
                },
                None => Segment::Literal(s.to_owned()),
            }
        })
        .collect()
}

/// `s` with its `%XX` escapes decoded; `None` when an escape is broken or the result is not
/// UTF-8 (Google answers such paths 400).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn check_parameter(spec: &Value, value: &str) -> Result<(), String> {
    match spec["type"].as_str().unwrap_or("string") {
        "integer" => {
            let n: i128 = value.parse().map_err(|_| "not an integer".to_owned())?;
            let bound = |k: &str| spec[k].as_str().and_then(|b| b.parse::<i128>().ok());
            if bound("minimum").is_some_and(|min| n < min)
                || bound("maximum").is_some_and(|max| n > max)
            {
                return Err("out of range".to_owned());
            }
        }
        "boolean" if value != "true" && value != "false" => {
            return Err("not a boolean".to_owned());
        }
        _ => {}
    }
    if let Some(values) = spec["enum"].as_array()
        && !values.iter().any(|v| v == value)
    {
        return Err(format!("not one of {values:?}"));
    }
    Ok(())
}

impl Checker<'_> {
    fn fail(&mut self, path: &str, why: impl std::fmt::Display) {
        self.failures.push(format!("{path}: {why}"));
    }

    fn value(&mut self, schema: &Value, v: &Value, path: &str) {
        if let Some(name) = schema["$ref"].as_str() {
            match self.discovery.schema(name) {
                Some(s) => self.value(s, v, path),
                None => self.fail(path, format!("unknown schema {name}")),
            }
            return;
        }
        if v.is_null() {
            return;
        }
        match schema["type"].as_str() {
            Some("object") => self.object(schema, v, path),
            Some("array") => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.value(&schema["items"], item, &format!("{path}[{i}]"));
                    }
                }
                None => self.fail(path, format!("expected an array, got {v}")),
            },
            Some("string") => self.string(schema, v, path),
            Some("integer") => self.integer(schema, v, path),
            Some("number") => {
                if !(v.is_number() || v.is_string()) {
                    self.fail(path, format!("expected a number, got {v}"));
                }
            }
            Some("boolean") => {
                if !v.is_boolean() {
                    self.fail(path, format!("expected a boolean, got {v}"));
                }
            }
            Some("any") => {}
            other => self.fail(path, format!("schema type {other:?} not understood")),
        }
    }

    fn object(&mut self, schema: &Value, v: &Value, path: &str) {
        let Some(fields) = v.as_object() else {
            self.fail(path, format!("expected an object, got {v}"));
            return;
        };
        let properties = schema["properties"].as_object();
        let additional = schema.get("additionalProperties");
        for (key, value) in fields {
            let here = format!("{path}.{key}");
            match properties.and_then(|p| p.get(key)) {
                Some(prop) => {
                    if self.direction == Direction::Request && prop["readOnly"] == true {
                        self.fail(&here, "output-only field sent in a request");
                    }
                    self.value(prop, value, &here);
                }
                None => match additional {
                    Some(extra) if extra.is_object() => self.value(extra, value, &here),
                    _ => self.fail(&here, "unknown field"),
                },
            }
        }
        if self.direction == Direction::Request
            && let Some(properties) = properties
        {
            for (key, prop) in properties {
                let required = prop["annotations"]["required"]
                    .as_array()
                    .is_some_and(|methods| methods.iter().any(|m| m == self.method));
                if required && fields.get(key).is_none_or(Value::is_null) {
                    self.fail(&format!("{path}.{key}"), "required field missing");
                }
            }
        }
    }

    fn string(&mut self, schema: &Value, v: &Value, path: &str) {
        let format = schema["format"].as_str().unwrap_or_default();
        if matches!(format, "int64" | "uint64" | "int32" | "uint32") {
            let ok = match v {
                Value::String(s) => integer_text(s, format.starts_with('u')),
                Value::Number(n) => n.is_i64() || n.is_u64(),
                _ => false,
            };
            if !ok {
                self.fail(path, format!("expected a {format} (as a string), got {v}"));
            }
            return;
        }
        let Some(s) = v.as_str() else {
            self.fail(path, format!("expected a string, got {v}"));
            return;
        };
        if format == "byte" && !is_base64(s) {
            self.fail(path, format!("expected base64 bytes, got '{s}'"));
        }
        if let Some(values) = schema["enum"].as_array()
            && !values.iter().any(|e| e == s)
        {
            let values: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
            self.fail(path, format!("'{s}' is not one of {}", values.join(", ")));
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            match full_match(pattern, s) {
                Ok(true) => {}
                Ok(false) => self.fail(path, format!("'{s}' does not match {pattern}")),
                Err(e) => self.fail(path, format!("pattern {pattern} not understood: {e}")),
            }
        }
    }

    fn integer(&mut self, schema: &Value, v: &Value, path: &str) {
        let format = schema["format"].as_str().unwrap_or("int32");
        let n: Option<i128> = match v {
            Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
            Value::String(s) if integer_text(s, false) => s.parse().ok(),
            _ => None,
        };
        let Some(n) = n else {
            self.fail(path, format!("expected an integer, got {v}"));
            return;
        };
        let (lo, hi) = match format {
            "uint32" => (0, i128::from(u32::MAX)),
            "int32" => (i128::from(i32::MIN), i128::from(i32::MAX)),
            "uint64" => (0, i128::from(u64::MAX)),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
        };
        if n < lo || n > hi {
            self.fail(path, format!("{n} is out of range for {format}"));
        }
    }
}

fn integer_text(s: &str, unsigned: bool) -> bool {
    let digits = if unsigned {
        s
    } else {
        s.strip_prefix('-').unwrap_or(s)
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}
