//! A fake control plane: a tiny HTTP/1.1 server on 127.0.0.1 (std only, one thread per
//! connection, `Connection: close`) serving the agent routes of `shared::agent_protocol` for
//! one node, recording everything it is told, with faults on demand.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use shared::agent_protocol::{
    LogChunk, LogUrls, LogUrlsRequest, NodeTask, Report, Work, WorkAnswer, blob_path,
    log_urls_path, logs_path, report_path, work_path,
};
use shared::job::Phase;

pub const JOB: u64 = 42;
pub const CLUSTER: &str = "train-42-1";
pub const RANK: u32 = 0;
pub const TOKEN: &str = "tok-7f3a9c-agent-secret";

/// What `GET work` answers.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per test fake; boxing buys nothing"
)]
pub enum Mode {
    /// A small controller: `Wait` until `Ready`, then `Setup` until setup exited, then (if it
    /// exited 0) `Run` until run exited, then `Stop`.
    Auto,
    /// Like `Auto`, but never `Setup`: as for an agent restarted after setup.
    RunOnly,
    /// Always this.
    Fixed(Work),
    /// Always this HTTP status.
    Status(u16),
}

/// One thing the agent told the fake, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Report(Report),
    Log(LogChunk),
}

#[derive(Debug)]
pub struct State {
    pub mode: Mode,
    pub task: NodeTask,
    pub blobs: HashMap<String, Vec<u8>>,
    /// Answer the next N `POST report`s with 503.
    pub fail_reports: usize,
    /// Reports answered 503 so far.
    pub failed_reports: usize,
    /// Accepted reports and log chunks.
    pub events: Vec<Event>,
    /// Requests with a wrong or missing token.
    pub bad_auth: usize,
    /// What `work` answers say about followers.
    pub live: bool,
    /// Hand out presigned-style URLs (to this fake's `/put/...`) for log chunks.
    pub presign: bool,
    /// Answer the next N `PUT`s to those URLs with 403 (expired).
    pub expire_puts: usize,
    /// URL batches handed out, and `PUT`s answered 403.
    pub url_batches: usize,
    pub expired_puts: usize,
    /// The `started` query of every `work` poll, in order.
    pub polls: Vec<Option<String>>,
}

impl State {
    /// The reports, with `Exited`'s chunk count left out (see [`State::exited_chunks`]) and
    /// `Spawned`, whose pid varies, too (see [`State::spawned`]).
    pub fn reports(&self) -> Vec<Report> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Report(Report::Exited { phase, code, .. }) => Some(Report::Exited {
                    phase: *phase,
                    code: *code,
                    chunks: None,
                }),
                Event::Report(Report::Spawned { .. }) | Event::Log(_) => None,
                Event::Report(report) => Some(report.clone()),
            })
            .collect()
    }

    /// The phases whose command the agent said it spawned, with the pid, in order.
    pub fn spawned(&self) -> Vec<(Phase, u32)> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Report(Report::Spawned { phase, pid }) => Some((*phase, *pid)),
                _ => None,
            })
            .collect()
    }

    /// The chunk count the agent reported with a phase's `Exited`.
    pub fn exited_chunks(&self, phase: Phase) -> Option<u64> {
        self.events.iter().find_map(|event| match event {
            Event::Report(Report::Exited {
                phase: p, chunks, ..
            }) if *p == phase => *chunks,
            _ => None,
        })
    }

    pub fn chunks(&self, phase: Phase) -> Vec<LogChunk> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Log(chunk) if chunk.phase == phase => Some(chunk.clone()),
                _ => None,
            })
            .collect()
    }

    /// A phase's log as the server would store it: chunks by `seq`, a resend overwriting.
    pub fn log(&self, phase: Phase) -> String {
        let mut by_seq = std::collections::BTreeMap::new();
        for chunk in self.chunks(phase) {
            by_seq.insert(chunk.seq, chunk.data);
        }
        let seqs: Vec<u64> = by_seq.keys().copied().collect();
        assert!(
            seqs.iter().copied().eq(0..seqs.len() as u64),
            "{phase} log has gaps: {seqs:?}"
        );
        by_seq.into_values().collect()
    }

    fn exited(&self, phase: Phase) -> Option<i32> {
        self.reports().into_iter().find_map(|report| match report {
            Report::Exited { phase: p, code, .. } if p == phase => Some(code),
            _ => None,
        })
    }

    fn work(&self) -> Result<Work, u16> {
        let task = || self.task.clone();
        let ready = self.reports().contains(&Report::Ready);
        Ok(match &self.mode {
            Mode::Status(status) => return Err(*status),
            Mode::Fixed(work) => work.clone(),
            Mode::Auto | Mode::RunOnly if !ready => Work::Wait,
            Mode::Auto => match (self.exited(Phase::Setup), self.exited(Phase::Run)) {
                (None, _) => Work::Setup { task: task() },
                (Some(0), None) => Work::Run { task: task() },
                _ => Work::Stop,
            },
            Mode::RunOnly => match self.exited(Phase::Run) {
                None => Work::Run { task: task() },
                Some(_) => Work::Stop,
            },
        })
    }
}

pub struct Fake {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Fake {
    pub fn start(task: NodeTask) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Auto,
            task,
            blobs: HashMap::new(),
            fail_reports: 0,
            failed_reports: 0,
            events: Vec::new(),
            bad_auth: 0,
            live: false,
            presign: false,
            expire_puts: 0,
            url_batches: 0,
            expired_puts: 0,
            polls: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &state));
            }
        });
        Fake { addr, state }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Waits until `done` holds (polling every 10 ms), or panics after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&State) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.state()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}: {:#?}",
                self.state().events
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let (mut length, mut authorization) = (0, None);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "authorization" => authorization = Some(value.trim().to_owned()),
            "transfer-encoding" => panic!("the fake does not do chunked bodies"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        authorization,
        body,
    })
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let Ok(request) = read_request(&stream) else {
        return;
    };
    let addr = stream.local_addr().unwrap();
    let (status, body) = route(&request, &mut state.lock().unwrap(), addr);
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn route(request: &Request, state: &mut State, addr: SocketAddr) -> (u16, Vec<u8>) {
    // Presigned URLs carry no token: object storage checks the signature instead.
    if let ("PUT", Some(rest)) = (request.method.as_str(), request.path.strip_prefix("/put/")) {
        if request.authorization.is_some() {
            return (400, Vec::new());
        }
        if state.expire_puts > 0 {
            state.expire_puts -= 1;
            state.expired_puts += 1;
            return (403, Vec::new());
        }
        let (phase, seq) = rest.split_once('/').unwrap();
        let phase = if phase == "setup" {
            Phase::Setup
        } else {
            Phase::Run
        };
        state.events.push(Event::Log(LogChunk {
            phase,
            seq: seq.parse().unwrap(),
            data: String::from_utf8(request.body.clone()).unwrap(),
        }));
        return (200, Vec::new());
    }
    if request.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        state.bad_auth += 1;
        return (401, Vec::new());
    }
    let blobs = blob_path(JOB, "");
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    match (request.method.as_str(), path) {
        ("GET", path) if path == work_path(JOB, CLUSTER, RANK) => {
            state
                .polls
                .push(query.strip_prefix("started=").map(str::to_owned));
            match state.work() {
                Ok(work) => (
                    200,
                    serde_json::to_vec(&WorkAnswer {
                        work,
                        live_logs: state.live,
                    })
                    .unwrap(),
                ),
                Err(status) => (status, Vec::new()),
            }
        }
        ("POST", path) if path == log_urls_path(JOB, CLUSTER, RANK) => {
            let asked: LogUrlsRequest = serde_json::from_slice(&request.body).unwrap();
            let urls = if state.presign {
                state.url_batches += 1;
                (asked.first_seq..asked.first_seq + u64::from(asked.count))
                    .map(|seq| format!("http://{addr}/put/{}/{seq}", asked.phase))
                    .collect()
            } else {
                Vec::new()
            };
            let answer = LogUrls {
                first_seq: asked.first_seq,
                urls,
            };
            (200, serde_json::to_vec(&answer).unwrap())
        }
        ("POST", path) if path == report_path(JOB, CLUSTER, RANK) => {
            if state.fail_reports > 0 {
                state.fail_reports -= 1;
                state.failed_reports += 1;
                return (503, Vec::new());
            }
            let report: Report = serde_json::from_slice(&request.body).unwrap();
            state.events.push(Event::Report(report));
            (204, Vec::new())
        }
        ("POST", path) if path == logs_path(JOB, CLUSTER, RANK) => {
            let chunk: LogChunk = serde_json::from_slice(&request.body).unwrap();
            state.events.push(Event::Log(chunk));
            (204, Vec::new())
        }
        ("GET", path) if path.starts_with(&blobs) => match state.blobs.get(&path[blobs.len()..]) {
            Some(bytes) => (200, bytes.clone()),
            None => (404, Vec::new()),
        },
        _ => (404, Vec::new()),
    }
}
