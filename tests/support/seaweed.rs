//! A real S3 server for the tests: SeaweedFS's `weed mini` (from the pinned PyPI wheel,
//! installed into `target/seaweedfs/weed` by `scripts/seaweedfs.sh`), on loopback only
//! (`-ip=127.0.0.1 -ip.bind=127.0.0.1`, every port chosen free), in a temporary directory,
//! stopped by its PID. SSE-S3 is enabled with a test key; one identity with full rights.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// The test identity.
pub const ACCESS_KEY: &str = "dgtestaccess";
/// Its secret.
pub const SECRET_KEY: &str = "dgtestsecret0123456789abcdef";

/// Where `scripts/seaweedfs.sh` installs `weed`, or `None` (skip) outside CI.
pub fn weed_binary() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/seaweedfs/weed");
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var("CI").is_err(), "CI run without target/seaweedfs/weed (scripts/seaweedfs.sh)");
    eprintln!("skipping: SeaweedFS not installed; run scripts/seaweedfs.sh");
    None
}

/// A running SeaweedFS.
pub struct Seaweed {
    child: Option<Child>,
    /// Its data, configuration and log.
    pub dir: tempfile::TempDir,
    ports: Vec<(&'static str, u16)>,
    /// The S3 port.
    pub s3_port: u16,
    /// The S3 port with TLS, when started with a certificate.
    pub https_port: Option<u16>,
    tls: Option<(PathBuf, PathBuf)>,
    runtime: tokio::runtime::Runtime,
}

/// `count` free loopback ports below the kernel's ephemeral range, so that no outgoing
/// connection of another test takes one between this choice and weed's bind (SeaweedFS binds
/// eleven ports seconds after they are chosen). Held together so no two are the same;
/// released just before the server binds them.
fn free_ports(count: usize) -> Vec<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next().and_then(|low| low.parse::<u32>().ok()))
        .unwrap_or(32_768);
    let (low, span) = (10_000u32, ephemeral_low.saturating_sub(10_000).max(1_000));
    let seed = std::process::id()
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut listeners = Vec::new();
    for step in 0..span {
        if listeners.len() == count {
            break;
        }
        let port = u16::try_from(low + (seed.wrapping_mul(7_919).wrapping_add(step)) % span).unwrap();
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    // Fall back to the kernel's choice should that range be full.
    while listeners.len() < count {
        listeners.push(TcpListener::bind("127.0.0.1:0").unwrap());
    }
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl Seaweed {
    /// Starts a fresh server, or `None` where SeaweedFS is not installed (outside CI).
    pub fn start() -> Option<Self> {
        Self::start_inner(None)
    }

    /// As [`Self::start`], with S3 over TLS too (certificate and key PEM files).
    pub fn start_with_tls(cert: &Path, key: &Path) -> Option<Self> {
        Self::start_inner(Some((cert.to_path_buf(), key.to_path_buf())))
    }

    fn start_inner(tls: Option<(PathBuf, PathBuf)>) -> Option<Self> {
        let _ = weed_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let identities = serde_json::json!({"identities": [{"name": "dg", "credentials": [{"accessKey": ACCESS_KEY,
            "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(dir.path().join("s3.json"), identities.to_string()).unwrap();
        let names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ];
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut server = Self { child: None, dir, ports: Vec::new(), s3_port: 0, https_port: None, tls, runtime };
        // A port found free can be taken by another test's process before weed binds it:
        // then weed exits with "address already in use", and it starts again on new ports.
        for attempt in 1..=3 {
            // Each attempt starts from an empty directory and log.
            let _ = std::fs::remove_file(server.dir.path().join("weed.log"));
            let data = server.dir.path().join("data");
            let _ = std::fs::remove_dir_all(&data);
            std::fs::create_dir_all(&data).unwrap();
            // One choice for every port, the last for S3 over TLS: ports from two choices
            // could be the same.
            let ports = free_ports(names.len() + 1);
            server.ports = names.into_iter().zip(ports.iter().copied()).collect();
            server.s3_port = server.ports.iter().find(|(name, _)| *name == "s3.port").unwrap().1;
            server.https_port = server.tls.as_ref().and(ports.last().copied());
            if let Some(port) = server.https_port {
                server.ports.push(("s3.port.https", port));
            }
            match server.try_launch() {
                Ok(()) => return Some(server),
                Err(log) if attempt < 3 && log.contains("address already in use") => continue,
                Err(log) => panic!("weed exited before it was ready:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The S3 endpoint over TLS, `https://127.0.0.1:PORT`.
    pub fn https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port.expect("started with TLS"))
    }

    /// The server's process id.
    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.child.as_ref().expect("running"))
    }

    /// Collects the server after something else killed it.
    pub fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on its directory and ports, and waits until S3 answers.
    pub fn launch(&mut self) {
        if let Err(log) = self.try_launch() {
            panic!("weed exited before it was ready:\n{log}");
        }
    }

    /// As [`Self::launch`]; `Err` with its log when weed exits before it is ready.
    fn try_launch(&mut self) -> Result<(), String> {
        let weed = weed_binary().unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("weed.log")).unwrap();
        let mut command = Command::new(weed);
        command
            .current_dir(self.dir.path())
            .arg("mini")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", self.dir.path().join("s3.json").display()))
            .env("WEED_S3_SSE_KEY", "dg-appliance-tests-sse-s3-key")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (name, port) in &self.ports {
            command.arg(format!("-{name}={port}"));
        }
        if let Some((cert, key)) = &self.tls {
            command.arg(format!("-s3.cert.file={}", cert.display())).arg(format!("-s3.key.file={}", key.display()));
        }
        self.child = Some(command.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = self.client();
        loop {
            // Ready when S3 answers a signed request (the filer behind it is up too).
            if self.runtime.block_on(client.list_buckets().send()).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("({status})\n{}", self.log()));
            }
            assert!(Instant::now() < deadline, "weed not ready in 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Kills the server at once (SIGKILL), as a crash or a pulled cable would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client with full rights (the test's own view of the bucket).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Runs a future on the helper's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Creates a bucket, with Object Lock (and so versioning) when `locked`.
    pub fn create_bucket(&self, bucket: &str, locked: bool) {
        let client = self.client();
        let mut request = client.create_bucket().bucket(bucket);
        if locked {
            request = request.object_lock_enabled_for_bucket(true);
        }
        self.block_on(request.send()).unwrap();
    }

    /// A credentials file (0600) for the appliance, in `dir`.
    pub fn credentials_file(&self, dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("s3-credentials");
        std::fs::write(&path, format!("access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            crate::support::stop_by_pid(child, Duration::from_secs(10));
        }
    }
}
