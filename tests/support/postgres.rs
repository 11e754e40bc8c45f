//! A real PostgreSQL for the tests: a throwaway cluster made by `initdb` in a temporary
//! directory (as the `postgres` user when the tests run as root: initdb refuses root), started
//! by `pg_ctl` on a loopback port with its socket in that directory, and stopped by its PID
//! when dropped. Debian's `postgresql-15` (installed by `.ci/run`) provides the binaries.
//! Password authentication (SCRAM) for the superuser `dg`, as a site's server would ask.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The cluster's superuser.
pub const USER: &str = "dg";
/// Its password (in `password_file`, 0600).
pub const PASSWORD: &str = "dg-test-password-0123456789";

/// The newest PostgreSQL 15+ installed under /usr/lib/postgresql, or `None` (skip) outside CI.
pub fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (version >= 15 && bin.join("initdb").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    assert!(std::env::var("CI").is_err(), "CI run without PostgreSQL (.ci/run installs postgresql-15)");
    eprintln!("skipping: PostgreSQL 15+ not installed (apt install postgresql-15)");
    None
}

/// A running cluster.
pub struct Postgres {
    bin: PathBuf,
    /// Data directory, socket, log and password file.
    pub dir: tempfile::TempDir,
    /// The loopback port.
    pub port: u16,
    pid: Option<u32>,
    /// The uid the server runs as (`postgres` when the tests are root).
    run_as: Option<String>,
    /// TLS on (certificate and key copied into the directory).
    tls: bool,
    /// Server settings added to the defaults (`-c name=value ...`).
    extra: String,
}

/// A free loopback port (held only while chosen; `start` retries should another process take
/// it before the server binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// Makes and starts a fresh cluster, or `None` where PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        Self::start_inner(None, "")
    }

    /// As [`Self::start`], with server settings added (`-c name=value ...`: a profile's
    /// `shared_preload_libraries`, say).
    pub fn start_with_settings(extra: &str) -> Option<Self> {
        Self::start_inner(None, extra)
    }

    /// As [`Self::start`], serving TLS with this certificate and key (PEM files).
    pub fn start_with_tls(cert: &Path, key: &Path) -> Option<Self> {
        Self::start_inner(Some((cert, key)), "")
    }

    fn start_inner(tls: Option<(&Path, &Path)>, extra: &str) -> Option<Self> {
        let bin = pg_bin()?;
        let dir = tempfile::Builder::new().prefix("dg-pg-").tempdir().unwrap();
        let run_as = rustix::process::geteuid().is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            // The server's user owns the directory; nobody else may enter it.
            let status = Command::new("chown").arg(user).arg(dir.path()).status().unwrap();
            assert!(status.success(), "chown {user} {}", dir.path().display());
        }
        let mut cluster = Self { bin, dir, port: 0, pid: None, run_as, tls: tls.is_some(), extra: extra.to_string() };
        if let Some((cert, key)) = tls {
            cluster.write_owned(&cluster.dir.path().join("server.crt"), &std::fs::read_to_string(cert).unwrap());
            cluster.write_owned(&cluster.dir.path().join("server.key"), &std::fs::read_to_string(key).unwrap());
        }
        let pwfile = cluster.dir.path().join("initdb-password");
        cluster.write_owned(&pwfile, PASSWORD);
        let out = cluster.as_server_user(cluster.bin.join("initdb"), |c| {
            c.arg("-D")
                .arg(cluster.data())
                .args(["-U", USER, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
                .arg(format!("--pwfile={}", pwfile.display()));
        });
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::remove_file(&pwfile).unwrap();
        cluster.write_owned(&cluster.password_file(), PASSWORD);
        for attempt in 0..3 {
            cluster.port = free_port();
            if cluster.start_server() {
                return Some(cluster);
            }
            eprintln!("postgres did not start on port {} (attempt {attempt}); trying another", cluster.port);
        }
        panic!("postgres did not start: {}", cluster.log());
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The password file (0600) a store's settings name.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("password")
    }

    fn write_owned(&self, path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(user) = &self.run_as {
            assert!(Command::new("chown").arg(user).arg(path).status().unwrap().success());
        }
    }

    fn as_server_user(&self, program: PathBuf, args: impl FnOnce(&mut Command)) -> Output {
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        args(&mut command);
        command.current_dir(self.dir.path()).env_remove("PGDATA").output().unwrap()
    }

    /// Starts the server on `self.port`; false when it did not come up (the port was taken).
    fn start_server(&mut self) -> bool {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' -c max_connections=200 \
             -c shared_buffers=32MB -c fsync=on -c log_min_messages=warning",
            self.port,
            self.dir.path().display()
        );
        if !self.extra.is_empty() {
            options.push(' ');
            options.push_str(&self.extra);
        }
        if self.tls {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file='{dir}/server.crt' -c ssl_key_file='{dir}/server.key'"
            ));
        }
        let out = self.as_server_user(self.bin.join("pg_ctl"), |c| {
            c.arg("-D").arg(self.data()).arg("-l").arg(self.dir.path().join("server.log"));
            c.args(["-o", &options, "-w", "-t", "30", "start"]);
        });
        if !out.status.success() {
            return false;
        }
        let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().and_then(|line| line.trim().parse::<u32>().ok()));
        self.pid = pid;
        pid.is_some()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no checkpoint, as a crash).
    pub fn stop_immediate(&mut self) {
        let out = self.as_server_user(self.bin.join("pg_ctl"), |c| {
            c.arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        });
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.pid = None;
    }

    /// Starts it again on the same port after [`Self::stop_immediate`].
    pub fn restart(&mut self) {
        assert!(self.start_server(), "postgres did not start again: {}", self.log());
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Creates a database and returns its name.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        name.to_string()
    }

    /// The store settings for database `dbname`: loopback TCP, no TLS (loopback only), the
    /// given pool size.
    pub fn settings(&self, dbname: &str, pool_size: usize) -> dg_storage::postgres::PgSettings {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(self.port).user(USER).dbname(dbname);
        dg_storage::postgres::PgSettings {
            config,
            tls: None,
            password: Some(PASSWORD.to_string()),
            pool_size,
            statement_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Runs SQL through `psql` (as an operator would, outside the appliance) and returns its
    /// unaligned output; panics on an error.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let out = self.psql_command(dbname, sql).output().unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Postgres {
    /// Starts `sql` through `psql` without waiting for it (a session that holds a lock for a
    /// while, say); the caller waits for the child.
    pub fn psql_in_background(&self, dbname: &str, sql: &str) -> std::process::Child {
        self.psql_command(dbname, sql).stdout(std::process::Stdio::null()).spawn().unwrap()
    }

    /// Waits (bounded: 10 s) until `n` sessions of `dbname` run the query `condition` picks
    /// out of `pg_stat_activity` (a session started with [`Self::psql_in_background`] that
    /// reached its `pg_sleep`, so holds every lock it took before; a write waiting for a
    /// lock). For tests that need a lock held before they go on, whatever the machine's load.
    pub fn wait_for_sessions(&self, dbname: &str, condition: &str, n: usize) {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{dbname}' AND ({condition})");
        for _ in 0..400 {
            if self.psql(dbname, &sql).trim() == n.to_string() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("never {n} sessions of {dbname} with {condition}");
    }

    /// [`Self::wait_for_sessions`]: one session of `dbname` sleeping in `pg_sleep`.
    pub fn wait_for_sleeper(&self, dbname: &str) {
        self.wait_for_sessions(dbname, "wait_event = 'PgSleep'", 1);
    }

    fn psql_command(&self, dbname: &str, sql: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", dbname])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGPASSWORD", PASSWORD);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        let Some(pid) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()) else { return };
        // Fast shutdown, then a bounded wait, then kill.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::Int);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if rustix::process::test_kill_process(pid).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::Kill);
    }
}
