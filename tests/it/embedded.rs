//! The embedded Postgres, through the real binary: first start, stop on
//! exit, a second process reusing a running server, SIGTERM, and recovery
//! from a crash that leaves a stale postmaster.pid.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pg_bin;

const BIN: &str = env!("CARGO_BIN_EXE_crmsearch");

pub(crate) fn data_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("embedded-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn crmsearch(data: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data)
        .env_remove("DATABASE_URL")
        .env("CRMSEARCH_PG_BIN", pg_bin());
    cmd
}

pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `crmsearch tenant create NAME`: the tenant's id and admin key.
pub(crate) fn create_tenant(data: &Path, name: &str) -> (uuid::Uuid, String) {
    let created: serde_json::Value = serde_json::from_str(
        run_ok(crmsearch(data).args(["tenant", "create", name, "--json"])).trim(),
    )
    .unwrap();
    (
        created["id"].as_str().unwrap().parse().unwrap(),
        created["keys"]["admin"].as_str().unwrap().to_owned(),
    )
}

/// A runtime for a test's own SQL beside the server.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The pid in postmaster.pid if that process is alive.
pub(crate) fn postmaster(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postgres/pgdata/postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Starts `serve` on a free port; returns the child and its address.
pub(crate) fn serve(data: &Path) -> (Child, String) {
    serve_with(data, &[]).expect("serve exited before listening")
}

/// `serve` with more environment; `None` when it exits before listening.
pub(crate) fn serve_with(data: &Path, env: &[(&str, &str)]) -> Option<(Child, String)> {
    serve_on(data, "127.0.0.1:0", env)
}

/// [`serve_with`] on `addr` (a fixed port: a node restarted where its proxy
/// expects it).
pub(crate) fn serve_on(data: &Path, addr: &str, env: &[(&str, &str)]) -> Option<(Child, String)> {
    let mut child = crmsearch(data)
        .env("CRMSEARCH_DURABLE_INTERVAL_MS", "200")
        // tenants made by `tenant create` are of the free tier: only the
        // tests of limits turn them on
        .env("CRMSEARCH_RATE_LIMITS", "off")
        .envs(env.iter().copied())
        .args(["--addr", addr, "--log-format", "json", "serve"])
        .env("CRMSEARCH_MASTER_KEY", crate::common::MASTER_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let addr = loop {
        assert!(Instant::now() < deadline, "serve did not start");
        let Some(Ok(line)) = lines.next() else {
            let _ = child.wait();
            return None;
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            break v["url"]
                .as_str()
                .unwrap()
                .trim_start_matches("http://")
                .to_owned();
        }
    };
    // keep draining the log so the child never blocks on a full pipe, into
    // serve.log beside the data (what a failed test leaves to read)
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("serve.log"));
    std::thread::spawn(move || {
        let mut log = log.ok();
        for line in lines.map_while(Result::ok) {
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    Some((child, addr))
}

pub(crate) fn http(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    try_http(addr, method, path, key, body).expect("an HTTP answer")
}

/// One request; `None` when the server is not there or the connection
/// broke (a server being killed).
pub(crate) fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Option<(u16, String)> {
    try_http_head(addr, method, path, key, body).map(|(status, _, body)| (status, body))
}

/// [`try_http`] with the answer's head (status line and headers) too.
pub(crate) fn try_http_head(
    addr: &str,
    method: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

pub(crate) fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

pub(crate) fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn first_start_second_process_reuse_and_sigterm() {
    let data = data_dir("reuse");
    // a one-shot command starts the server, migrates and stops it on exit
    assert!(run_ok(crmsearch(&data).arg("migrate")).contains("migrations applied"));
    assert!(data.join("postgres/pgdata/PG_VERSION").is_file());
    assert_eq!(postmaster(&data), None, "stopped on exit");

    let (mut server, addr) = serve(&data);
    let pid = postmaster(&data).expect("serve runs postgres");
    // only 127.0.0.1 and no socket in the data folder
    let conf = std::fs::read_to_string(data.join("postgres/pgdata/postgresql.conf")).unwrap();
    assert!(conf.contains("listen_addresses = '127.0.0.1'"));

    // a second command reuses the running server, and leaves it running
    let out = run_ok(crmsearch(&data).args(["tenant", "create", "acme", "--json"]));
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        postmaster(&data),
        Some(pid),
        "the same postgres, never a second one"
    );
    let admin = created["keys"]["admin"].as_str().unwrap();
    // ... and the server sees what the second process wrote: the same database
    let (status, body) = http(&addr, "POST", "/v1/keys", admin, r#"{"role":"search"}"#);
    assert_eq!(status, 201, "{body}");
    let key_out = run_ok(crmsearch(&data).args([
        "key",
        "create",
        "--tenant",
        created["id"].as_str().unwrap(),
        "--role",
        "write",
    ]));
    let write_key = key_out.split_whitespace().nth(2).unwrap();
    let (status, body) = http(
        &addr,
        "POST",
        "/v1/contacts",
        write_key,
        r#"{"first_name":"Ada"}"#,
    );
    assert_eq!(status, 201, "{body}");

    // SIGTERM: a clean exit that stops postgres
    signal(server.id(), "-TERM");
    assert!(wait_exit(&mut server).success());
    assert_eq!(postmaster(&data), None);
    assert!(!data.join("postgres/pgdata/postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn recovers_from_a_crash_and_a_stale_pid_file() {
    let data = data_dir("crash");
    let (mut server, _) = serve(&data);
    let pid = postmaster(&data).unwrap();

    // crmsearch dies hard: postgres survives and the next command reuses it
    signal(server.id(), "-KILL");
    wait_exit(&mut server);
    assert_eq!(postmaster(&data), Some(pid));
    run_ok(crmsearch(&data).args(["tenant", "create", "after-crash"]));
    assert_eq!(postmaster(&data), None, "the last user stopped it");

    // postgres itself dies hard: a stale postmaster.pid is left behind
    let (mut server, _) = serve(&data);
    let pid = postmaster(&data).unwrap();
    signal(server.id(), "-KILL");
    wait_exit(&mut server);
    signal(pid, "-KILL");
    let deadline = Instant::now() + Duration::from_secs(30);
    while postmaster(&data).is_some() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        data.join("postgres/pgdata/postmaster.pid").exists(),
        "the crash left a stale pid file"
    );
    let out = run_ok(crmsearch(&data).args(["tenant", "create", "after-postgres-crash", "--json"]));
    assert!(out.contains("after-postgres-crash"));
    // the data written before the crash is still there
    assert_eq!(postmaster(&data), None);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_server_without_logical_wal_is_refused() {
    // crmsearch follows Postgres by logical replication: a server running
    // with `replica` is refused with a sentence naming the setting
    let data = data_dir("wal");
    assert!(run_ok(crmsearch(&data).arg("migrate")).contains("migrations applied"));
    let conf = data.join("postgres/pgdata/postgresql.conf");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("wal_level = logical", "wal_level = replica");
    std::fs::write(&conf, text).unwrap();
    let out = crmsearch(&data).arg("migrate").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wal_level = replica") && err.contains("logical"),
        "{err}"
    );
    assert_eq!(postmaster(&data), None, "stopped after refusing");
    let _ = std::fs::remove_dir_all(&data);
}
