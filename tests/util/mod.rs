//! Helpers for tests that run the real `dnsward` binary and external programs.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dnsward binary built for these tests.
pub fn dnsward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dnsward"))
}

/// Runs a command to completion with a time bound, returning its output.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "command did not finish within {limit:?}: {cmd:?}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh empty directory under the system temp dir, removed when dropped unless the test
/// is failing (then it stays, with the configurations and logs that say why).
pub fn temp_dir(tag: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dnsward-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TempDir(dir)
}

/// A directory of [`temp_dir`]'s: see there.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl TempDir {
    /// Keeps the directory, printing where it is.
    pub fn keep(self) {
        eprintln!("kept for a look: {}", self.0.display());
        std::mem::forget(self);
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Are the tests running as root (needed to drop privileges or make namespaces)?
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Is `program` on PATH?
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether tests that need external programs must fail (rather than skip) when they are missing.
/// The project's test script sets this, so CI never silently skips them.
pub fn external_tools_required() -> bool {
    std::env::var_os("DNSWARD_REQUIRE_TOOLS").is_some_and(|v| v == "1")
}

/// Skips (returns false) or fails when `programs` are missing.
pub fn require(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !have(p)).collect();
    if missing.is_empty() {
        return true;
    }
    if external_tools_required() {
        panic!("missing programs {missing:?}: run scripts/test, which installs them");
    }
    eprintln!("SKIPPED: missing {missing:?} (scripts/test installs them)");
    false
}

/// A child process killed when dropped.
pub struct Daemon {
    /// The process.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Its files (configuration, log), removed after the process is gone.
    dir: Option<TempDir>,
}

impl Daemon {
    /// Starts `cmd` with stdout/stderr in `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Daemon {
            child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
            log: log.to_path_buf(),
            dir: None,
        }
    }

    /// Keeps `dir` (where its files are) until the process is gone.
    pub fn owning(mut self, dir: TempDir) -> Daemon {
        self.dir = Some(dir);
        self
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns whether it exited 0. If
    /// not, its files are kept for a look.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        let mut clean = false;
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                clean = status.success();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !clean && let Some(dir) = self.dir.take() {
            dir.keep();
        }
        clean
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a TCP connection to `addr` succeeds (bounded).
pub fn wait_for_tcp(addr: SocketAddr, limit: Duration) {
    let started = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < limit,
            "{addr} did not start listening within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
