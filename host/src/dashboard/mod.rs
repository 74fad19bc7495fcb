//! The live dashboard (`nixtest serve`, `nixtest test --serve`): runs, one run's profiles as
//! they go, and the failure signatures, in a browser, from the nixtest binary alone.
//!
//! It is a consumer of the run's events ([`live::Feed`]); past runs are read from the report
//! folder (report.json and the events files). Pages are rendered on the server with every
//! string from the guest or a plugin escaped, so a past run needs no JavaScript; a live run's
//! page runs one small embedded script that applies the server's rendered fragments as they
//! arrive over server-sent events. Assets are embedded: nothing is fetched from elsewhere.
//!
//! Safety: loopback by default; any other address needs a token, and every request without
//! it is refused. The server reads files only inside the report folder, named by a run id and
//! a profile name that must each be one plain path component.

pub mod live;
mod pages;
mod server;
pub mod view;

pub use live::{Feed, LiveRun};
pub use server::serve;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use thiserror::Error;

/// Where `nixtest serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Debug, Error)]
pub enum DashboardError {
    #[error(
        "listening on {0} would show every run to anyone who can reach it; pass --token \
         (a token is generated and printed) or --token VALUE, or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    #[error(
        "a token must be 16 to 256 letters, digits, '-', '_', '.' or '~' (it goes in a URL as it is)"
    )]
    BadToken,
    #[error(
        "cannot listen on {addr}: {source} (is another server using it? try --listen 127.0.0.1:0)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot make a token: {0}")]
    Random(std::io::Error),
}

/// What the server shows and who may see it.
pub struct Dashboard {
    report_dir: PathBuf,
    /// The user's data folder, for the failure database (none: no failures page data).
    data_dir: Option<PathBuf>,
    token: Option<String>,
    live: Mutex<Vec<Arc<LiveRun>>>,
}

impl Dashboard {
    pub fn new(report_dir: &Path, data_dir: Option<PathBuf>, token: Option<String>) -> Arc<Self> {
        Arc::new(Dashboard {
            report_dir: report_dir.to_path_buf(),
            data_dir,
            token,
            live: Mutex::new(Vec::new()),
        })
    }

    /// A run of this process, shown live until the process ends.
    pub fn add_live(&self, run: Arc<LiveRun>) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(run);
    }

    fn live_runs(&self) -> Vec<Arc<LiveRun>> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn live_run(&self, id: &str) -> Option<Arc<LiveRun>> {
        self.live_runs().into_iter().find(|r| r.id == id)
    }

    /// The folder of a run named in a URL, only when the name is one plain component and the
    /// folder (symlinks resolved) is inside the report folder.
    fn run_dir(&self, run: &str) -> Option<PathBuf> {
        if !view::safe_component(run) {
            return None;
        }
        let root = self.report_dir.canonicalize().ok()?;
        let dir = root.join(run).canonicalize().ok()?;
        (dir.starts_with(&root) && dir != root && dir.is_dir()).then_some(dir)
    }

    /// A file inside a run's folder, by names that are each one plain component.
    fn run_file(&self, run: &str, folder: Option<&str>, name: &str) -> Option<PathBuf> {
        let dir = self.run_dir(run)?;
        if !view::safe_component(name) || folder.is_some_and(|f| !view::safe_component(f)) {
            return None;
        }
        let path = match folder {
            Some(f) => dir.join(f).join(name),
            None => dir.join(name),
        };
        let path = path.canonicalize().ok()?;
        (path.starts_with(&dir) && path.is_file()).then_some(path)
    }
}

/// Checks where the server may listen: loopback freely, anything else only with a token.
pub fn check_listen(addr: SocketAddr, token: Option<&str>) -> Result<(), DashboardError> {
    if let Some(t) = token
        && (!(16..=256).contains(&t.len())
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')))
    {
        return Err(DashboardError::BadToken);
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(DashboardError::TokenRequired(addr));
    }
    Ok(())
}

/// A new random token (128 bits, hex).
pub fn generate_token() -> Result<String, DashboardError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(DashboardError::Random)?;
    Ok(hex::encode(bytes))
}

/// Binds the listener (loopback or with a token, see [`check_listen`]).
pub async fn bind(
    addr: SocketAddr,
    token: Option<&str>,
) -> Result<tokio::net::TcpListener, DashboardError> {
    check_listen(addr, token)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DashboardError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_goes_without_a_token() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let lo6: SocketAddr = "[::1]:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "192.168.1.4:8080".parse().unwrap();
        assert!(check_listen(lo, None).is_ok());
        assert!(check_listen(lo6, None).is_ok());
        for a in [any, lan] {
            let e = check_listen(a, None).unwrap_err();
            assert!(e.to_string().contains("--token"), "{e}");
            assert!(check_listen(a, Some("0123456789abcdef0123")).is_ok());
        }
        for bad in ["short", "0123456789abcdef&x=1", "0123456789abcdef 0123"] {
            assert!(
                matches!(check_listen(any, Some(bad)), Err(DashboardError::BadToken)),
                "{bad}"
            );
        }
        let t = generate_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, generate_token().unwrap());
    }

    #[test]
    fn urls_cannot_leave_the_report_folder() {
        let root = tempfile::tempdir().unwrap();
        let reports = root.path().join("reports");
        std::fs::create_dir_all(reports.join("run1/logs")).unwrap();
        std::fs::write(reports.join("run1/logs/vm.log"), "x").unwrap();
        std::fs::write(root.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(root.path(), reports.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), reports.join("run1/logs/s.log"))
            .unwrap();
        let d = Dashboard::new(&reports, None, None);
        assert!(d.run_file("run1", Some("logs"), "vm.log").is_some());
        assert!(d.run_dir("..").is_none());
        assert!(d.run_dir("escape").is_none(), "a symlink out is refused");
        assert!(d.run_file("run1", Some("logs"), "s.log").is_none());
        assert!(d.run_file("run1", Some(".."), "secret").is_none());
        assert!(d.run_file("run1", Some("logs"), "../../secret").is_none());
    }
}
