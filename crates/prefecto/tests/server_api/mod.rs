//! The real Prefect servers the server tests talk to, and their API, for
//! checking what the server recorded. Shared by the test binaries that
//! need a server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prefecto::prefect_api::{ApiConfig, Client, Sent};
use reqwest::Method;
use serde_json::{Value, json};

const API_URL_ENV: &str = "PREFECTO_TEST_PREFECT_API_URL";

pub fn api_url() -> String {
    std::env::var(API_URL_ENV).expect("checked by server_available")
}

/// Whether the Prefect servers these tests need were started for them. A
/// plain `cargo test` has none: each test then says how to run it and
/// passes; `scripts/test.sh` starts them and sets
/// `PREFECTO_TEST_REQUIRE_SERVERS`, so that there a missing server fails.
pub fn server_available(test: &str) -> bool {
    if std::env::var_os(API_URL_ENV).is_some() {
        return true;
    }
    assert!(
        std::env::var_os("PREFECTO_TEST_REQUIRE_SERVERS").is_none(),
        "{API_URL_ENV} is not set, but the servers were required"
    );
    eprintln!(
        "skipped {test}: it needs real Prefect 3.9.1 servers; run scripts/test.sh, which starts them"
    );
    false
}

/// The server's API, for checking what it recorded.
pub struct Api {
    pub client: Client,
    pub runtime: tokio::runtime::Runtime,
}

impl Api {
    pub fn new(url: &str) -> Self {
        Api {
            client: Client::new(ApiConfig::new(url).unwrap()).unwrap(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn open() -> Self {
        Api::new(&api_url())
    }

    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.runtime
            .block_on(
                self.client
                    .send(method, path, body.as_ref(), &mut Sent::default()),
            )
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.call(Method::POST, path, Some(body))
    }

    /// The flow run with this name (names are unique enough here).
    pub fn flow_run_named(&self, name: &str) -> Option<Value> {
        let runs = self.post(
            "/flow_runs/filter",
            json!({ "flow_runs": { "name": { "any_": [name] } } }),
        );
        runs.as_array()?.first().cloned()
    }

    pub fn task_runs(&self, flow_run_id: &str) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let page = self.post(
                "/task_runs/filter",
                json!({
                    "flow_runs": { "id": { "any_": [flow_run_id] } },
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": 200,
                    "offset": all.len(),
                }),
            );
            let page = page.as_array().unwrap().clone();
            let n = page.len();
            all.extend(page);
            if n < 200 {
                return all;
            }
        }
    }

    pub fn logs(&self, flow_run_id: &str) -> Vec<Value> {
        self.post(
            "/logs/filter",
            json!({ "logs": { "flow_run_id": { "any_": [flow_run_id] } }, "sort": "TIMESTAMP_ASC" }),
        )
        .as_array()
        .unwrap()
        .clone()
    }
}

/// The variable that tells a test binary run again which child flow to run.
pub const CHILD_ENV: &str = "PREFECTO_TEST_CHILD";

/// This test binary, run again to run one child flow, reporting to `url`.
pub fn child_process(role: &str, url: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--include-ignored", "--nocapture"])
        .env(CHILD_ENV, role)
        .env("PREFECT_API_URL", url)
        .env("PREFECTO_PROGRESS", "off");
    command
}

/// The flow run's name, from the engine's first log line.
pub fn flow_run_name(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("Created flow run '"))
        .unwrap_or_else(|| panic!("no flow run in: {stderr}"));
    line.split('\'').nth(1).unwrap().to_string()
}

pub fn by_name(task_runs: &[Value]) -> std::collections::BTreeMap<String, Value> {
    task_runs
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// A Prefect server of a test's own, to stop and start again.
pub struct OwnServer {
    pub home: PathBuf,
    port: u16,
    /// `PREFECT_API_DATABASE_CONNECTION_URL`; `None`: SQLite in `home`.
    database: Option<String>,
    process: Option<std::process::Child>,
}

impl OwnServer {
    pub fn start(name: &str) -> Self {
        Self::start_on(name, None)
    }

    /// A server on a database of its own in the PostgreSQL cluster that
    /// `scripts/test.sh` starts (`PREFECTO_TEST_POSTGRES`): one that keeps up
    /// with many flow runs reporting at once, where SQLite answers 503 on 2
    /// cores. Without that cluster, SQLite, said on stderr; a required
    /// server set (`PREFECTO_TEST_REQUIRE_SERVERS`) without it fails.
    pub fn start_on_postgres(name: &str) -> Self {
        let Ok(address) = std::env::var("PREFECTO_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("PREFECTO_TEST_REQUIRE_SERVERS").is_none(),
                "PREFECTO_TEST_POSTGRES is not set: run the tests with scripts/test.sh"
            );
            eprintln!(
                "{name}: no PostgreSQL (PREFECTO_TEST_POSTGRES): the server runs on SQLite, \
                 which may answer 503 under load; scripts/test.sh starts one"
            );
            return Self::start(name);
        };
        let (host, port) = address
            .rsplit_once(':')
            .expect("PREFECTO_TEST_POSTGRES is host:port");
        let database = format!("{}_{}", name.replace('-', "_"), std::process::id());
        let bin = std::env::var("PREFECTO_TEST_POSTGRES_BIN").unwrap_or_default();
        let createdb = if bin.is_empty() {
            PathBuf::from("createdb")
        } else {
            PathBuf::from(bin).join("createdb")
        };
        let created = Command::new(&createdb)
            .args(["-h", host, "-p", port, "-U", "prefect", &database])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", createdb.display()));
        assert!(
            created.status.success(),
            "createdb {database}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Self::start_on(
            name,
            Some(format!("postgresql+asyncpg://prefect@{address}/{database}")),
        )
    }

    fn start_on(name: &str, database: Option<String>) -> Self {
        let work = PathBuf::from(std::env::var("PREFECTO_TEST_WORK").unwrap());
        let home = work.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = OwnServer {
            home,
            port,
            database,
            process: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api", self.port)
    }

    /// Starts the server on its port and database, and waits until it is healthy.
    pub fn restart(&mut self) {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.home.join("server.log")).unwrap();
        let mut command = Command::new(std::env::var("PREFECTO_TEST_PREFECT_BIN").unwrap());
        if let Some(database) = &self.database {
            command.env("PREFECT_API_DATABASE_CONNECTION_URL", database);
        }
        let process = command
            .args(["server", "start", "--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .env("PREFECT_HOME", &self.home)
            .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            .env("PREFECT_SERVER_UI_ENABLED", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.process = Some(process);
        let api = Api::new(&self.url());
        let deadline = Instant::now() + Duration::from_secs(120);
        while api.runtime.block_on(api.client.check()).is_err() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let group = format!("-{}", process.id());
            let kill = |signal: &str| {
                let _ = Command::new("kill")
                    .args([signal, "--", &group])
                    .stderr(Stdio::null())
                    .status();
            };
            kill("-TERM");
            let _ = process.wait();
            // Whatever of the group is left (uvicorn's workers).
            kill("-KILL");
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn examples_dir() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples")
}

/// Reads a child's stdout until it names its flow run, and keeps draining
/// it, so that the child never writes into a closed pipe.
pub fn named_flow_run(process: &mut std::process::Child) -> String {
    let stdout = BufReader::new(process.stdout.take().unwrap());
    let (name, named) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("flow run: ") {
                let _ = name.send(n.to_string());
            }
        }
    });
    named
        .recv_timeout(Duration::from_secs(120))
        .expect("the child names its flow run")
}

/// Prints the current flow run's name for [`named_flow_run`] to read.
pub fn announce_flow_run() {
    println!(
        "flow run: {}",
        prefecto::flow::current_flow_run().unwrap().name
    );
}
