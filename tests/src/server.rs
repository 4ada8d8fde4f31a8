//! The server under test as a child process, plus admin commands on its database
//! (a SQLite file, or a PostgreSQL database shared by several server processes).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `buurtsync` binary: `$BUURTSYNC_BIN`, or `target/<profile>/buurtsync` beside
/// the test executable (`cargo build --bins` puts it there; `.ci/run` does that).
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("BUURTSYNC_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("buurtsync");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --bins` first (the README test command does)",
        bin.display()
    );
    bin
}

/// A temporary directory with a database, and the server processes started on it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub db_url: String,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_url = format!(
            "sqlite://{}",
            dir.path().join("buurtsync.sqlite3").display()
        );
        Fixture { dir, db_url }
    }

    /// A fresh database of its own in the PostgreSQL cluster named by
    /// `BUURTSYNC_TEST_POSTGRES_URL` (scripts/test.sh starts one and sets it), for
    /// several server processes at once. Unset is a failure, never a skip.
    pub fn postgres() -> Self {
        let admin = postgres_admin_url();
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!(
            "bs_e2e_{}",
            sync_core::protocol::DocumentId::random()
                .to_string()
                .to_lowercase()
        );
        let out = Command::new("psql")
            .arg(&admin)
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("run psql (Debian package postgresql-client)");
        assert!(
            out.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (base, _) = admin.rsplit_once('/').expect("URL with a database name");
        Fixture {
            dir,
            db_url: format!("{base}/{name}"),
        }
    }

    /// Runs an admin command with `--json`; panics with its stderr if it fails.
    pub fn admin(&self, args: &[&str]) -> Value {
        let out = self.admin_raw(args);
        assert!(
            out.status.success(),
            "buurtsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "buurtsync {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs an admin command and returns its raw output.
    pub fn admin_raw(&self, args: &[&str]) -> std::process::Output {
        Command::new(binary())
            .arg("--database")
            .arg(&self.db_url)
            .arg("--json")
            .args(args)
            .output()
            .expect("run buurtsync")
    }

    /// Issues a token for `user` and returns the secret.
    pub fn token(&self, user: &str) -> String {
        self.admin(&["token", "issue", user])["token"]
            .as_str()
            .expect("token in output")
            .to_owned()
    }

    /// Seeds wijken `noord` and `zuid` with a professional and a volunteer in noord
    /// and a professional in zuid.
    pub fn seed(&self) -> Seeded {
        for wijk in ["noord", "zuid"] {
            self.admin(&["wijk", "add", wijk]);
        }
        for (user, role, wijk) in [
            ("prof-noord", "professional", "noord"),
            ("prof2-noord", "professional", "noord"),
            ("vol-noord", "volunteer", "noord"),
            ("prof-zuid", "professional", "zuid"),
        ] {
            self.admin(&["user", "add", user]);
            self.admin(&["grant", user, role, "--wijk", wijk]);
        }
        Seeded {
            prof_noord: self.token("prof-noord"),
            prof2_noord: self.token("prof2-noord"),
            vol_noord: self.token("vol-noord"),
            prof_zuid: self.token("prof-zuid"),
        }
    }

    /// Starts `buurtsync serve` on a free loopback port.
    pub fn start(&self, extra: &[&str]) -> ServerProcess {
        ServerProcess::start(&self.db_url, self.dir.path(), "127.0.0.1:0", extra)
    }

    /// Starts `buurtsync serve` on a given address: a server restarted where clients
    /// that cannot be re-pointed (a browser page) expect it.
    pub fn start_on(&self, addr: SocketAddr, extra: &[&str]) -> ServerProcess {
        ServerProcess::start(&self.db_url, self.dir.path(), &addr.to_string(), extra)
    }

    /// `doc info` of a stored document: catalog row and heads, read from the database.
    pub fn doc_info(&self, id: &str) -> Value {
        self.admin(&["doc", "info", id])
    }
}

/// The PostgreSQL cluster for multi-node tests; panics with how to get one if unset.
pub fn postgres_admin_url() -> String {
    std::env::var("BUURTSYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "BUURTSYNC_TEST_POSTGRES_URL is not set, so this PostgreSQL test cannot run. \
             Run `bash scripts/test.sh`, or start a cluster with \
             `bash scripts/ensure-postgres.sh start /tmp/bs-pg` and export the URL it prints."
        )
    })
}

/// Tokens of the seeded users.
pub struct Seeded {
    pub prof_noord: String,
    pub prof2_noord: String,
    pub vol_noord: String,
    pub prof_zuid: String,
}

/// A running `buurtsync serve`. Killed on drop.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The metrics listener (`/metrics`), on a port of its own.
    pub metrics_addr: Option<SocketAddr>,
    log: mpsc::Receiver<String>,
    log_lines: Vec<String>,
}

impl ServerProcess {
    fn start(db_url: &str, _dir: &Path, listen: &str, extra: &[&str]) -> ServerProcess {
        // Tests speak plain ws:// on loopback unless they bring TLS files.
        let plain: &[&str] = if extra.contains(&"--tls-cert") {
            &[]
        } else {
            &["--insecure-plain-http"]
        };

        let mut child = Command::new(binary())
            .arg("--database")
            .arg(db_url)
            .arg("--log-json")
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .args(plain)
            .args(extra)
            .env("BUURTSYNC_LOG", "info")
            // Metrics on a free loopback port of their own (the default port is one per
            // host); a `--metrics-listen` in `extra` wins over the environment.
            .env("BUURTSYNC_METRICS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn buurtsync serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + crate::WAIT;
        let mut lines = Vec::new();
        let mut metrics_addr = None;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let logged = |message: &str| {
                        serde_json::from_str::<Value>(&line).ok().and_then(|v| {
                            (v["fields"]["message"] == message)
                                .then(|| v["fields"]["addr"].as_str().and_then(|a| a.parse().ok()))
                                .flatten()
                        })
                    };
                    let addr: Option<SocketAddr> = logged("buurtsync listening");
                    metrics_addr = logged("metrics listening").or(metrics_addr);
                    lines.push(line);
                    if let Some(addr) = addr {
                        return ServerProcess {
                            child,
                            addr,
                            metrics_addr,
                            log: rx,
                            log_lines: lines,
                        };
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("server exited with {status} before listening: {lines:#?}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not start listening: {lines:#?}");
    }

    /// The metrics listener's address; panics if the server started none.
    pub fn metrics(&self) -> SocketAddr {
        self.metrics_addr
            .expect("the server logged no metrics listener")
    }

    /// `ws://addr/sync`.
    pub fn url(&self) -> String {
        format!("ws://{}/sync", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&mut self) -> &[String] {
        while let Ok(line) = self.log.try_recv() {
            self.log_lines.push(line);
        }
        &self.log_lines
    }

    /// Is the process still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + crate::WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
