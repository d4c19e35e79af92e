//! Test harness: starts the real `plinth` binary on an ephemeral port with a temporary data
//! directory, and restarts or `kill -9`s it on demand.
#![allow(dead_code)]

pub mod cluster;
pub mod linearizability;
pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub addr: String,
    log: PathBuf,
    /// Flags given to every start of this server, after the data directory and address.
    flags: Vec<String>,
    /// Environment variables set for every start.
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A fresh server on a new temporary data directory.
    pub fn start() -> Server {
        Server::start_in(None, &[])
    }

    /// A fresh server started with `flags` besides its data directory and address.
    pub fn start_with(flags: &[&str]) -> Server {
        Server::start_in(None, flags)
    }

    /// A server on `data_dir`, which the caller prepared (a restored backup).
    pub fn start_on(data_dir: PathBuf) -> Server {
        Server::start_in(Some(data_dir), &[])
    }

    /// A fresh server started with `flags` and the environment variables `env`.
    pub fn start_with_env(flags: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_full(None, flags, env)
    }

    fn start_in(data_dir: Option<PathBuf>, flags: &[&str]) -> Server {
        Server::start_full(data_dir, flags, &[])
    }

    fn start_full(data_dir: Option<PathBuf>, flags: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = data_dir.unwrap_or_else(|| tmp.path().join("data"));
        let log = tmp.path().join("server.log");
        let mut server = Server {
            child: None,
            data_dir,
            addr: "127.0.0.1:0".into(),
            log,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _tmp: Some(tmp),
        };
        server.spawn();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// POSTs `body` to the HTTP/JSON API at `path` and answers the reply's JSON, whatever its
    /// status.
    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}{path}", self.endpoint()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_plinth")
    }

    /// Starts `plinth serve` on this server's data directory, address, flags and environment,
    /// its stderr appended to the log.
    fn serve(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        Command::new(Self::binary())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.addr)
            .args(&self.flags)
            .env("PLINTH_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn plinth")
    }

    fn spawn(&mut self) {
        let mut child = self.serve();
        let Some(line) = serving_line(&mut child) else {
            panic!("plinth did not start; its log:\n{}", self.log_text());
        };
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line from plinth: {line}"));
        self.addr = addr.to_string();
        self.child = Some(child);
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        status.success(),
                        "plinth exited with {status}; log:\n{}",
                        self.log_text()
                    );
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("plinth did not stop on SIGTERM; log:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Waits (at most `within`) for the server to exit by itself and answers how it exited;
    /// `None` if it is still running then.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory of this server's temporary files (its log, its default data directory).
    pub fn scratch(&self) -> &Path {
        self.log
            .parent()
            .expect("the log is in the scratch directory")
    }

    /// Starts again on the same data directory and port, expecting the start to fail: answers
    /// how the process exited and its log.
    pub fn restart_failing(&mut self) -> (std::process::ExitStatus, String) {
        assert!(self.child.is_none(), "stop or kill the server first");
        let mut child = self.serve();
        if let Some(line) = serving_line(&mut child) {
            self.child = Some(child);
            panic!("plinth started ({line}); its log:\n{}", self.log_text());
        }
        let status = child.wait().expect("reap");
        (status, self.log_text())
    }

    /// Starts again on the same data directory and the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs the CLI against this server (named in PLINTH_ENDPOINT, so that arguments after `--`
    /// stay the caller's) and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        use std::io::Write as _;
        let mut child = Command::new(Self::binary())
            .args(args)
            .env("PLINTH_ENDPOINT", self.endpoint())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cli");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
        drop(input);
        let out = child.wait_with_output().expect("cli output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Waits (up to a minute) for the line a started `plinth serve` prints once it serves, and
/// returns it; `None`, with the child killed, if it never comes. The rest of its stdout is
/// drained so the child never blocks on a full pipe.
pub fn serving_line(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).ok();
    if line.is_none() {
        let _ = child.kill();
    }
    line
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An SDK client connected to `server`.
pub async fn client(server: &Server) -> plinth_client::Client {
    plinth_client::Client::connect(server.endpoint())
        .await
        .expect("connect")
}

/// Sends `request` to the gRPC method at `path` as it is, whatever message that method takes:
/// for calls the SDK cannot make (a wrong message, a service that does not exist).
pub async fn raw_grpc<Req, Resp>(
    server: &Server,
    path: &'static str,
    request: Req,
) -> Result<Resp, tonic::Status>
where
    Req: tonic_prost::prost::Message + Send + Sync + 'static,
    Resp: tonic_prost::prost::Message + Default + Send + Sync + 'static,
{
    let channel = tonic::transport::Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec: tonic_prost::ProstCodec<Req, Resp> = Default::default();
    let reply = grpc
        .unary(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await?;
    Ok(reply.into_inner())
}

/// Retries an async call while the server is restarting.
pub async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, plinth_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("call failed: {e}"),
        }
    }
}

/// Polls `f` until it answers true, for at most `within`; fails the test naming `what` if not.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process's stdout, read line by line on a thread as it comes, so a test can wait for
/// what the process has printed before it signals it.
pub struct Lines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Killed if the test gives up on it (a failed wait), so that no process outlives the test.
    pid: u32,
}

impl Lines {
    /// Starts reading `child`'s piped stdout.
    pub fn follow(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Lines {
            lines,
            reader: Some(reader),
            pid: child.id(),
        }
    }

    /// Waits (up to 30 s) until a line printed so far satisfies `f`; fails the test naming
    /// `what`, with the lines, if none does.
    pub fn wait_for(&self, what: &str, f: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.lines.lock().unwrap().clone();
            if f(&lines) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line, once the process has closed its stdout (it exited).
    pub fn finish(mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stdout reader");
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .status();
        }
    }
}

/// Flips a byte in the payload of the last record of the newest segment of the write-ahead log
/// in `wal_dir`, as bit rot on a disk would: its checksum no longer matches and no record
/// follows it. Answers the segment and the record's offset.
pub fn damage_last_record(wal_dir: &Path) -> (PathBuf, u64) {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(wal_dir)
        .expect("the log's directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let newest = segments.pop().expect("a segment");
    let mut bytes = std::fs::read(&newest).expect("read the segment");
    // Records are `len: u32 | crc: u32 | lsn: u64 | payload`, `len` counting the lsn and the
    // payload; zeros after the last one are the segment's room.
    let (mut at, mut last) = (0usize, None);
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        last = Some(at);
        at += 8 + len;
    }
    let last = last.expect("a record in the newest segment");
    bytes[last + 16] ^= 0xff;
    std::fs::write(&newest, &bytes).expect("write the segment");
    (newest, last as u64)
}
