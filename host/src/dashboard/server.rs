//! The HTTP side: routes, the token check, server-sent events, files of the report folder.

use super::Dashboard;
use super::live::is_end;
use super::pages;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");
const COOKIE: &str = "nixtest_token";

#[derive(Clone)]
struct AppState {
    d: Arc<Dashboard>,
    /// Becomes true when the server stops: live streams end so that it can.
    closing: watch::Receiver<bool>,
}

/// Serves the dashboard on `listener` until `shutdown` completes; open event streams are
/// ended then, so that the server stops at once.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dashboard: Arc<Dashboard>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (close, closing) = watch::channel(false);
    let state = AppState {
        d: dashboard,
        closing,
    };
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = close.send(true);
        })
        .await
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(runs))
        .route("/failures", get(failures))
        .route("/runs/{run}", get(run))
        .route("/runs/{run}/live", get(live))
        .route("/runs/{run}/logs/{file}", get(raw_log))
        .route("/runs/{run}/files/{file}", get(run_file))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .fallback(|| async { not_found("no such page") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Every response gets headers that keep a page to its own resources; with a token, every
/// request must carry it (a `?token=` query, then a cookie, or an Authorization header).
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let mut from_query = false;
    if let Some(token) = &s.d.token {
        let query = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="));
        let cookie = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("nixtest_token="));
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        from_query = query.is_some_and(|q| same(q, token));
        let ok = from_query
            || [cookie, bearer]
                .into_iter()
                .flatten()
                .any(|t| same(t, token));
        if !ok {
            return secure(
                (
                    StatusCode::UNAUTHORIZED,
                    "this dashboard needs its token: open the address nixtest printed (it ends \
                     with ?token=…)\n",
                )
                    .into_response(),
            );
        }
    }
    let mut resp = next.run(req).await;
    if from_query
        && let Some(token) = &s.d.token
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
        ))
    {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    secure(resp)
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The dashboard's pages: their own script and style only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// report.html: no script at all, its own inline style.
const REPORT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::layout(
            "not found",
            &format!("<h1>Not found</h1><p>{}</p>", crate::report::esc(what)),
            None,
        )),
    )
        .into_response()
}

/// Renders a page off the runtime's thread (it reads files).
async fn render(f: impl FnOnce() -> Option<String> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Some(page)) => Html(page).into_response(),
        Ok(None) => not_found("no such run in the report folder"),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the page failed").into_response(),
    }
}

async fn runs(State(s): State<AppState>) -> Response {
    render(move || Some(pages::runs(&s.d))).await
}

async fn failures(State(s): State<AppState>) -> Response {
    render(move || Some(pages::failures(&s.d))).await
}

async fn run(State(s): State<AppState>, Path(run): Path<String>) -> Response {
    if let Some(r) = s.d.live_run(&run) {
        return Html(pages::live_run(&r)).into_response();
    }
    render(move || {
        let dir = s.d.run_dir(&run)?;
        Some(pages::past_run(&run, &dir))
    })
    .await
}

async fn live(State(s): State<AppState>, Path(run): Path<String>) -> Response {
    let Some(r) = s.d.live_run(&run) else {
        return not_found("this run is not running in this server");
    };
    let sub = r.subscribe();
    let first = stream::once(async move { Ok(Event::default().data(sub.snapshot)) });
    let rest = changes(sub.rx, s.closing.clone(), sub.ended);
    Sse::new(first.chain(rest))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A page's changes until the run ends, the server stops, or the page falls behind (it is
/// dropped; its browser reconnects and starts from a fresh snapshot).
fn changes(
    rx: broadcast::Receiver<Arc<str>>,
    closing: watch::Receiver<bool>,
    ended: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(
        (rx, closing, ended),
        |(mut rx, mut closing, done)| async move {
            if done || *closing.borrow() {
                return None;
            }
            tokio::select! {
                m = rx.recv() => match m {
                    Ok(m) => {
                        let end = is_end(&m);
                        Some((Ok(Event::default().data(&*m)), (rx, closing, end)))
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!("a dashboard page fell {n} messages behind; dropped");
                        None
                    }
                    Err(broadcast::error::RecvError::Closed) => None,
                },
                _ = closing.changed() => None,
            }
        },
    )
}

async fn raw_log(State(s): State<AppState>, Path((run, file)): Path<(String, String)>) -> Response {
    if !file.ends_with(".log") {
        return not_found("only a profile's .log is served here");
    }
    match s.d.run_file(&run, Some("logs"), &file) {
        Some(path) => stream_file(&path, "text/plain; charset=utf-8").await,
        None => not_found("no such log in this run"),
    }
}

async fn run_file(
    State(s): State<AppState>,
    Path((run, file)): Path<(String, String)>,
) -> Response {
    let kind = match file.as_str() {
        "report.json" => "application/json",
        "junit.xml" => "application/xml",
        "report.html" => "text/html; charset=utf-8",
        _ => return not_found("only report.json, junit.xml and report.html are served here"),
    };
    match s.d.run_file(&run, None, &file) {
        Some(path) => {
            let mut resp = stream_file(&path, kind).await;
            if file == "report.html" {
                resp.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(REPORT_CSP),
                );
            }
            resp
        }
        None => not_found("this run has no such file"),
    }
}

/// A file sent as it is read: a long log is never held in memory whole.
async fn stream_file(path: &std::path::Path, kind: &'static str) -> Response {
    match tokio::fs::File::open(path).await {
        Ok(f) => (
            [(header::CONTENT_TYPE, kind)],
            Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        )
            .into_response(),
        Err(_) => not_found("the file cannot be read"),
    }
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
