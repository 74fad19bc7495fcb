//! Helpers shared by the corpus and end-to-end tests.

use nixtest::vm::VmSettings;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root (the folder of the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `../shared/corpus` beside the checkout, or `NIXTEST_CORPUS`.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("NIXTEST_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"))
}

/// The `nixtest` binary of this checkout, built once per test process.
pub fn nixtest_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "-q", "-p", "nixtest"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building nixtest failed");
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("debug/nixtest")
    })
}

/// Where the end-to-end tests keep their state: their own VM name prefix (never a user's
/// VMs), and a data dir that persists so the guest image (keyed by nixtest's SSH key) stays
/// cached between runs.
pub const E2E_PREFIX: &str = "nixtest-e2e";
pub const E2E_HOME: &str = "/var/cache/nixtest-e2e";

pub fn e2e_env(cmd: &mut Command) -> &mut Command {
    cmd.env("NIXTEST_VM_PREFIX", E2E_PREFIX)
        .env("NIXTEST_DATA_DIR", format!("{E2E_HOME}/data"))
        .env("NIXTEST_CACHE_DIR", format!("{E2E_HOME}/cache"))
        .env_remove("NIXTEST_LIBVIRT_URI")
        .env_remove("VM_MEMORY")
        .env_remove("VM_DISK_SIZE")
}

pub fn e2e_settings() -> VmSettings {
    VmSettings {
        uri: "qemu:///system".into(),
        memory_mib: 512,
        disk_bytes: 4 << 30,
        vcpus: 1,
        dir: "/var/lib/nixtest".into(),
        prefix: E2E_PREFIX.into(),
        open_network: false,
    }
}

/// VM tests share the base VM: one at a time.
pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds a plugin crate of the workspace for wasm32-wasip2 and returns its component.
pub fn plugin_wasm(package: &str) -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("fixtures");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {package} failed");
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// `nixtest test vm --inject disk` with its dashboard on the loopback `port` (the dashboard
/// test and bench): output goes to `report_dir/stdout.txt` and `stderr.txt`.
pub fn served_disk_run(port: u16, report_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(nixtest_bin());
    let file = |name: &str| std::fs::File::create(report_dir.join(name)).unwrap();
    e2e_env(&mut cmd)
        .args(["test", "vm", "--inject", "disk"])
        .arg(format!("--serve=127.0.0.1:{port}"))
        .arg("--report-dir")
        .arg(report_dir)
        .stdin(std::process::Stdio::null())
        .stdout(file("stdout.txt"))
        .stderr(file("stderr.txt"));
    cmd
}

/// A port nothing listens on now (the OS's pick on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on the loopback port.
pub fn wait_listening(port: u16, within: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// One HTTP/1.1 GET on loopback, the path sent exactly as given (no normalisation, unlike a
/// browser or an HTTP library): status, headers, body.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A child process killed when the test ends, however it ends.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Headless Chromium driven through chromedriver (WebDriver), as `scripts/setup.sh`
/// installs them.
pub struct Browser {
    _driver: Killed,
    _profile: tempfile::TempDir,
    pub client: fantoccini::Client,
}

impl Browser {
    /// A browser with JavaScript on or off.
    pub async fn start(javascript: bool) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is installed by scripts/setup.sh (chromium-driver)");
        let driver = Killed(driver);
        assert!(
            wait_listening(port, std::time::Duration::from_secs(20)),
            "chromedriver did not start"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--no-first-run".into(),
            "--window-size=1280,1400".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": args }),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromedriver starts a headless Chromium");
        Browser {
            _driver: driver,
            _profile: profile,
            client,
        }
    }

    /// The value of a script run in the page (`return …;`).
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Text of the first element matching `css`, or none.
    pub async fn text(&self, css: &str) -> Option<String> {
        match self.client.find(fantoccini::Locator::Css(css)).await {
            Ok(e) => e.text().await.ok(),
            Err(_) => None,
        }
    }

    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .map_or(0, |v| v.len())
    }

    /// Waits until an element matches `css` (and returns its text) or the time is up.
    pub async fn wait_for(&self, css: &str, within: std::time::Duration) -> Option<String> {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            if let Some(t) = self.text(css).await {
                return Some(t);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    }
}

/// How long lines took to appear in a live page: from the host receiving each (the events
/// file's time) and from the guest printing it (the guest's line times, its clock paired with
/// the host's), to the page showing it (the page's own record, `#measure`).
pub struct LineLatency {
    pub host_to_page: Vec<f64>,
    pub guest_to_page: Vec<f64>,
    pub clock_error_ms: f64,
}

impl LineLatency {
    /// `seen`: the page's `window.nixtestSeen` ([profile, line, host ms, page ms] each).
    pub fn of(seen: &serde_json::Value, run_dir: &std::path::Path) -> LineLatency {
        use serde_json::Value;
        let seen: &[Value] = seen.as_array().map_or(&[], Vec::as_slice);
        let mut host_to_page: Vec<f64> = seen
            .iter()
            .filter_map(|s| Some(s[3].as_f64()? - s[2].as_f64()?))
            .collect();
        host_to_page.sort_by(f64::total_cmp);
        let times: Value = std::fs::read(run_dir.join("logs/vm.times.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let epoch = std::fs::read_to_string(run_dir.join("events/vm.jsonl"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| serde_json::from_str::<Value>(l).ok()?["epoch_ms"].as_f64());
        let (at, uptime) = (
            times["clock"]["at_ms"].as_f64(),
            times["clock"]["uptime"].as_f64(),
        );
        let mut guest_to_page: Vec<f64> = match (epoch, at, uptime) {
            (Some(epoch), Some(at), Some(uptime)) => seen
                .iter()
                .filter_map(|s| {
                    let n = s[1].as_u64()? as usize;
                    let printed = times["times"][n.checked_sub(1)?].as_f64()?;
                    Some(s[3].as_f64()? - (epoch + at + (printed - uptime) * 1e3))
                })
                .collect(),
            _ => Vec::new(),
        };
        guest_to_page.sort_by(f64::total_cmp);
        LineLatency {
            host_to_page,
            guest_to_page,
            clock_error_ms: times["clock"]["error_ms"].as_f64().unwrap_or(f64::NAN),
        }
    }
}

/// A percentile of sorted values (NaN when there are none).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

impl std::fmt::Display for LineLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host→page over {} lines p50 {:.0} ms p99 {:.0} ms; guest→page over {} lines (clock ±{:.1} ms) p50 {:.0} ms p99 {:.0} ms",
            self.host_to_page.len(),
            percentile(&self.host_to_page, 0.5),
            percentile(&self.host_to_page, 0.99),
            self.guest_to_page.len(),
            self.clock_error_ms,
            percentile(&self.guest_to_page, 0.5),
            percentile(&self.guest_to_page, 0.99),
        )
    }
}
