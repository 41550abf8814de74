//! The dashboard in a real browser: headless Chromium driven over the W3C `WebDriver` protocol
//! (`chromedriver`, Debian's `chromium-driver`) against a real local control plane.
//!
//! Needs `/usr/bin/chromium` and `chromedriver`; `scripts/test` installs them. Without them
//! the test fails (it does not skip) and says how to install them. It leaves a screenshot of
//! the Jobs page at `<target dir>/dashboard-jobs.png`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Home, example};
use crate::text;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The key of an element reference in `WebDriver` answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session through a chromedriver of its own, ended on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    profile: tempfile::TempDir,
}

fn chromedriver() -> PathBuf {
    let installed = Path::new("/usr/bin/chromedriver");
    assert!(
        Path::new(CHROMIUM).exists() && installed.exists(),
        "the dashboard test needs {CHROMIUM} and /usr/bin/chromedriver: install them with \
         `apt-get install chromium chromium-driver` (scripts/test does it when they are missing)"
    );
    installed.to_path_buf()
}

impl Browser {
    fn start() -> Self {
        let driver_path = chromedriver();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let profile = tempfile::tempdir().unwrap();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_mins(1)))
                .build(),
        );
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http,
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_vec().ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start in 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let user_data = format!("--user-data-dir={}", browser.profile.path().display());
        let session = browser.command(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync",
                             "--disable-dev-shm-usage", user_data, "--window-size=1400,900"],
                },
                "unhandledPromptBehavior": "accept",
            }}}),
        );
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {session}"))
            .to_owned();
        browser.session = id;
        browser
    }

    /// Sends a `WebDriver` command and returns its `value`, or the error as `Err`.
    fn try_command(&self, method: &str, path: &str, body: &Value) -> Result<Value, Value> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.http.get(&url).call(),
            "DELETE" => self.http.delete(&url).call(),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .send(serde_json::to_vec(body).unwrap()),
        };
        let mut response = response.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let ok = response.status().is_success();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_default();
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if ok { Ok(value) } else { Err(value) }
    }

    fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path} failed: {e}"))
    }

    fn session_command(&self, method: &str, path: &str, body: &Value) -> Value {
        self.command(method, &format!("/session/{}{path}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.session_command("POST", "/url", &json!({ "url": url }));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn script(&self, script: &str, args: &[Value]) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": args }),
        )
    }

    /// The first element matching `css`.
    fn find(&self, css: &str) -> String {
        let found = self.session_command(
            "POST",
            "/element",
            &json!({ "using": "css selector", "value": css }),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element id in {found}"))
            .to_owned()
    }

    fn text(&self, element: &str) -> String {
        self.session_command("GET", &format!("/element/{element}/text"), &Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.session_command("POST", &format!("/element/{element}/click"), &json!({}));
    }

    fn body_text(&self) -> String {
        self.script("return document.body.innerText;", &[])
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls `check` until it gives a value, or fails naming `what` and showing the page.
    fn wait<T>(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {what} in {timeout:?}; the page says:\n{}",
                self.body_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&self, path: &Path) {
        let png = self.session_command("GET", "/screenshot", &Value::Null);
        let bytes = base64_decode(png.as_str().expect("base64 PNG"));
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_command(
                "DELETE",
                &format!("/session/{}", self.session),
                &Value::Null,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (screenshots), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// The statuses of the Jobs page's job rows, by job ID.
fn job_rows(browser: &Browser) -> Value {
    browser.script(
        "const rows = {};
         for (const r of document.querySelectorAll('#jobs tr.job')) {
           const badge = r.cells[12].querySelector('.status');
           rows[r.dataset.jobId] = { status: r.dataset.status, shown: badge.textContent,
                                     class: badge.className, name: r.cells[3].textContent };
         }
         return rows;",
        &[],
    )
}

/// `<cargo target dir>/<name>`: `CARGO_TARGET_TMPDIR` is `<target dir>/tmp`.
fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join(name)
}

#[test]
#[allow(clippy::too_many_lines)] // One scenario, told in order, as the acceptance.
fn the_jobs_page_and_a_job_page_in_headless_chromium() {
    let started = Instant::now();
    let browser = Browser::start();
    let home = Home::new();
    let pipeline = home.launch_detached(&example("pipeline.yaml"), &[]);
    let failing = home.launch_detached(
        &home.file("oops.yaml", "name: oops\nrun: echo oops; exit 3\n"),
        &[],
    );
    // 10 MB of output: 131,072 lines of 80 bytes, then a marker.
    let big = home.launch_detached(
        &home.file(
            "big.yaml",
            "name: big\nrun: |\n  yes \"$(printf '%079d' 7)\" | head -n 131072\n  echo the-end\n",
        ),
        &[],
    );
    // Two nodes whose lines interleave, then sleep: its page follows the log live.
    let running = home.launch_detached(
        &home.file(
            "sleeper.yaml",
            "name: sleeper\nnum_nodes: 2\nrun: |\n  for i in $(seq 1 20); do echo \"r$SKYPILOT_NODE_RANK-$i\"; sleep 0.0$((RANDOM % 8)); done\n  echo sleeping; sleep 300\n",
        ),
        &[],
    );

    let out = home.run(&["dashboard", "--no-open"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Dashboard: "))
        .unwrap_or_else(|| panic!("no URL in: {stdout}"))
        .trim()
        .to_owned();
    let (page, token) = url.split_once("#token=").expect("a token in the fragment");
    assert!(
        page.starts_with("http://127.0.0.1:") && page.ends_with("/dashboard") && !token.is_empty(),
        "{url}"
    );

    // Without the token, the page says where to get it.
    browser.goto(page);
    browser.wait("the sign-in notice", Duration::from_secs(10), || {
        let text = browser.body_text();
        text.contains("Open the link printed by stratus dashboard")
            .then_some(())
    });

    // With it: the token leaves the address bar, and the jobs appear with their statuses.
    browser.goto(&url);
    browser.wait(
        "the address without the token",
        Duration::from_secs(5),
        || (browser.script("return location.href;", &[]) == json!(page)).then_some(()),
    );
    let want = [
        (pipeline, "SUCCEEDED", "s-ok"),
        (failing, "FAILED", "s-fail"),
        (running, "RUNNING", "s-run"),
    ];
    let rows = browser.wait(
        "the pipeline SUCCEEDED, the failing job FAILED and the sleeper RUNNING",
        Duration::from_secs(45),
        || {
            let rows = job_rows(&browser);
            want.iter()
                .all(|(id, status, _)| rows[id.to_string()]["shown"] == *status)
                .then_some(rows)
        },
    );
    for (id, status, class) in want {
        let row = &rows[id.to_string()];
        assert_eq!(row["status"], status, "{rows}");
        assert!(
            row["class"].as_str().unwrap().contains(class),
            "job {id}'s status is coloured {class}: {rows}"
        );
    }
    assert_eq!(rows[pipeline.to_string()]["name"], "pipeline");
    assert_eq!(rows[failing.to_string()]["name"], "oops");
    let header = browser.text(&browser.find("#jobs thead"));
    for column in [
        "ID",
        "TASK",
        "NAME",
        "REQUESTED",
        "INFRA",
        "SUBMITTED",
        "TOT. DURATION",
        "JOB DURATION",
        "#RECOVERIES",
        "EST. COST",
        "STATUS",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }

    // Expand the pipeline: its three tasks, each SUCCEEDED.
    let tasks_shown =
        "return [...document.querySelectorAll(`#jobs tr.task[data-parent='${arguments[0]}']`)]
           .filter(r => r.offsetParent !== null)
           .map(r => [r.cells[3].textContent, r.dataset.status]);";
    assert_eq!(
        browser.script(tasks_shown, &[json!(pipeline)]),
        json!([]),
        "tasks start collapsed"
    );
    browser.click(&format!(
        "#jobs tr.job[data-job-id='{pipeline}'] button[data-toggle]"
    ));
    let tasks = browser.wait("the pipeline's tasks", Duration::from_secs(5), || {
        let tasks = browser.script(tasks_shown, &[json!(pipeline)]);
        (tasks.as_array().map_or(0, Vec::len) == 3).then_some(tasks)
    });
    assert_eq!(
        tasks,
        json!([
            ["prepare", "SUCCEEDED"],
            ["train", "SUCCEEDED"],
            ["eval", "SUCCEEDED"]
        ])
    );

    // Filters: by status, and by name.
    let visible_jobs =
        "return [...document.querySelectorAll('#jobs tr.job')].map(r => Number(r.dataset.jobId));";
    let set = |id: &str, value: &str| {
        browser.script(
            "const e = document.getElementById(arguments[0]); e.value = arguments[1];
             e.dispatchEvent(new Event(e.tagName === 'INPUT' ? 'input' : 'change'));",
            &[json!(id), json!(value)],
        );
    };
    set("status-filter", "FAILED");
    assert_eq!(browser.script(visible_jobs, &[]), json!([failing]));
    set("status-filter", "");
    set("search", "sleep");
    assert_eq!(browser.script(visible_jobs, &[]), json!([running]));
    set("search", "");
    let users = browser.script(
        "return [...document.getElementById('user-filter').options].map(o => o.value);",
        &[],
    );
    assert_eq!(users, json!(["", "tester"]));

    let screenshot = artifact("dashboard-jobs.png");
    browser.screenshot(&screenshot);
    println!("screenshot of the Jobs page: {}", screenshot.display());

    // The failing job's page: its log and its controller events.
    browser.click(&format!(
        "#jobs tr.job[data-job-id='{failing}'] td:nth-child(4) a"
    ));
    browser.wait("the failing job's log", Duration::from_secs(15), || {
        let log = browser.text(&browser.find("#log"));
        let done = browser.script(
            "return document.getElementById('log').dataset.done === 'true';",
            &[],
        );
        (log.contains("(oops) oops") && done == json!(true)).then_some(())
    });
    let path = browser.script("return location.pathname;", &[]);
    assert_eq!(path, json!(format!("/dashboard/jobs/{failing}")));
    let events = browser.wait("the failing job's events", Duration::from_secs(10), || {
        let events = browser.text(&browser.find("#events"));
        events
            .contains("failed with exit code(s) [3]")
            .then_some(events)
    });
    assert!(events.contains("Launching oops-"), "{events}");
    assert_eq!(browser.text(&browser.find("#job-status")), "FAILED");
    assert_eq!(
        browser.script(
            "return document.getElementById('cancel').offsetParent === null;",
            &[]
        ),
        json!(true),
        "no Cancel button on a finished job"
    );

    // The running job: Cancel, confirm, and see CANCELLED.
    browser.goto(&format!("{page}/jobs/{running}"));
    browser.wait(
        "the running job's Cancel button",
        Duration::from_secs(10),
        || {
            let status = browser.text(&browser.find("#job-status"));
            let shown = browser.script(
                "return document.getElementById('cancel').offsetParent !== null;",
                &[],
            );
            (status == "RUNNING" && shown == json!(true)).then_some(())
        },
    );
    // Its live log: every line of both ranks, once each, in each rank's order.
    let log = browser.wait("both ranks' lines", Duration::from_secs(20), || {
        let log = browser.text(&browser.find("#log"));
        (log.matches("sleeping").count() == 2).then_some(log)
    });
    for rank in 0..2 {
        let lines: Vec<&str> = log
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("(sleeper, rank={rank}) ")))
            .filter(|l| l.starts_with('r'))
            .collect();
        let expected: Vec<String> = (1..=20).map(|i| format!("r{rank}-{i}")).collect();
        assert_eq!(lines, expected, "rank {rank} in the page's log:\n{log}");
    }
    browser.click("#cancel");
    // The confirmation dialog: read it and accept it.
    let prompt = browser.wait("the confirmation dialog", Duration::from_secs(5), || {
        browser
            .try_command(
                "GET",
                &format!("/session/{}/alert/text", browser.session),
                &Value::Null,
            )
            .ok()
    });
    assert_eq!(
        prompt,
        json!(format!("Cancel managed job {running} (sleeper)?"))
    );
    browser.session_command("POST", "/alert/accept", &json!({}));
    browser.wait("CANCELLED", Duration::from_secs(30), || {
        (browser.text(&browser.find("#job-status")) == "CANCELLED").then_some(())
    });
    assert_eq!(home.job(running)["status"], "CANCELLED");
    browser.screenshot(&artifact("dashboard-job.png"));

    // The 10 MB log, whole in the page, read in pages well under Lambda's 6 MB response limit.
    home.wait_status(big, &["SUCCEEDED"], Duration::from_mins(1));
    browser.goto(&format!("{page}/jobs/{big}"));
    let (length, last) = browser.wait("the whole 10 MB log", Duration::from_mins(1), || {
        let done = browser.script(
            "return document.getElementById('log').dataset.done === 'true';",
            &[],
        );
        (done == json!(true)).then(|| {
            let text = browser.script(
                "const t = document.getElementById('log').textContent;
                 return [t.length, t.trimEnd().split('\\n').pop()];",
                &[],
            );
            (
                text[0].as_u64().unwrap(),
                text[1].as_str().unwrap().to_owned(),
            )
        })
    });
    assert_eq!(last, "(big) the-end");
    let prefix = "(big) ".len() as u64;
    assert_eq!(
        length,
        131_073 * prefix + 131_072 * 80 + "the-end\n".len() as u64
    );
    let sizes = browser.script(
        "return performance.getEntriesByType('resource')
           .filter(e => e.name.includes('/logs'))
           .map(e => e.decodedBodySize);",
        &[],
    );
    let sizes: Vec<u64> = sizes
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s < 6_000_000), "{sizes:?}");
    println!("dashboard scenario took {:?}", started.elapsed());
}
