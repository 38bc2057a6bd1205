//! The web dashboard: `stoker dashboard`, or `stoker worker --dashboard ADDR`.
//!
//! Duties:
//! 1. serve server-rendered pages (overview, busy jobs, a queue's pending,
//!    scheduled, retry and dead jobs, one job, batches, classes, limiters and
//!    breakers), each read with a bounded number of round trips (see
//!    [`data`], [`batches`]), so pages stay fast with millions of jobs;
//! 2. take actions (retry now, delete, pause, resume) as `POST`s from a
//!    logged-in browser with its CSRF token, or from a script with the token
//!    (see [`auth`]);
//! 3. draw the throughput graph from the per-minute rollups in Redis, and
//!    sample the queues' counters for the live jobs/s figure (see [`graph`]).
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles from the dashboard's own files only, no inline code, no framing),
//! and on a loopback address a request must name that address in its `Host`
//! header, so a page of another site cannot reach the dashboard through DNS
//! rebinding.
//!
//! Routes:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | overview: totals, throughput graph, queues, workers with heartbeat ages, schedules |
//! | GET | `/busy` | jobs running now, with progress |
//! | GET | `/queues/{queue}/{set}?page=N&per=M` | `pending`, `scheduled`, `retry` or `dead`, paged |
//! | GET | `/jobs/{id}?queue=Q` | one job |
//! | GET | `/batches?page=N&per=M` | batches of the last 30 days, newest first, paged |
//! | GET | `/batches/{id}?show=S&cursor=C` | one batch and its members (`all`, `done` or `dead`), paged by cursor |
//! | GET | `/classes` | deployed classes: observed figures of the last hour against their quotas |
//! | GET | `/limits` | limiters and circuit breakers |
//! | GET, POST | `/login` | the token for a session |
//! | POST | `/logout` | ends the session |
//! | POST | `/queues/{queue}/pause`, `/resume` | pause or resume a queue |
//! | POST | `/queues/{queue}/{set}/retry`, `/delete` | form field `member`: the job (its payload, or its id in `dead`) |
//!
//! Each page's handler sits with its template, by what the page shows:
//! [`overview`] (the overview and busy jobs), [`queues`] (a queue's sets),
//! [`jobs`] (one job), [`batches`], [`classes`] (classes, limiters and
//! breakers) and [`login`]; [`actions`] takes the `POST`s that change
//! something; [`pages`] is what every page shares. This file serves them:
//! the router, and the checks every request passes.

pub mod actions;
pub mod auth;
pub mod batches;
pub mod classes;
pub mod data;
pub mod graph;
pub mod jobs;
pub mod login;
pub mod overview;
pub mod pages;
pub mod queues;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use self::auth::Auth;
use self::pages::Error;
use crate::queue::{self, Conn};

/// The Content-Security-Policy of every response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The window of the classes page's observed figures, minutes.
pub const REPORT_MINUTES: u64 = 60;

const APP_CSS: &str = include_str!("static/app.css");
const APP_JS: &str = include_str!("static/app.js");

/// A dashboard bound to its address, ready to serve.
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    sampler: tokio::task::JoinHandle<()>,
}

/// What the handlers share.
struct App {
    conn: Conn,
    auth: Auth,
    samples: Arc<graph::Samples>,
    /// `Host` header values accepted (empty: any).
    hosts: Vec<String>,
    /// Whether pages need a session too (not on a loopback address).
    private: bool,
}

impl Dashboard {
    /// Connects to Redis at `redis_url`, binds `addr` and starts sampling the
    /// counters. Actions need `token`.
    pub async fn bind(
        redis_url: &str,
        addr: SocketAddr,
        token: String,
    ) -> anyhow::Result<Dashboard> {
        anyhow::ensure!(
            !token.is_empty(),
            "the dashboard token is empty: give --token or STOKER_DASHBOARD_TOKEN, or neither for a fresh one"
        );
        let conn = queue::connect(redis_url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {redis_url}: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve the dashboard on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        let loopback = bound.ip().is_loopback();
        let hosts = if loopback {
            let port = bound.port();
            ["127.0.0.1", "localhost", "[::1]"]
                .iter()
                .flat_map(|h| [format!("{h}:{port}"), (*h).to_owned()])
                .collect()
        } else {
            Vec::new()
        };
        let samples = Arc::new(graph::Samples::default());
        let sampler = tokio::spawn(graph::sample(conn.clone(), samples.clone()));
        Ok(Dashboard {
            listener,
            app: Arc::new(App {
                conn,
                auth: Auth::new(token),
                samples,
                hosts,
                private: !loopback,
            }),
            sampler,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = router(self.app);
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        self.sampler.abort();
        served
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(overview::overview))
        .route("/busy", get(overview::busy))
        .route("/classes", get(classes::classes))
        .route("/limits", get(classes::limits))
        .route("/jobs/{id}", get(jobs::job))
        .route("/batches", get(batches::batch_list))
        .route("/batches/{id}", get(batches::batch))
        .route("/queues/{queue}/{set}", get(queues::set))
        .route("/queues/{queue}/pause", post(actions::pause))
        .route("/queues/{queue}/resume", post(actions::resume))
        .route("/queues/{queue}/{set}/{action}", post(actions::act))
        .route("/login", get(login::login_form).post(login::login))
        .route("/logout", post(login::logout))
        .route(
            "/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Checks the `Host` header (and, off loopback, the session) before any
/// handler runs, and adds the security headers to every response.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let mut response = if !app.hosts.is_empty() && !app.hosts.iter().any(|h| h == host) {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only to its loopback address\n",
        )
            .into_response()
    } else if app.private
        && !matches!(
            request.uri().path(),
            "/login" | "/static/app.css" | "/static/app.js"
        )
        && session(&app, request.headers()).is_none()
    {
        let next = request
            .uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string());
        Redirect::to(&format!("/login?next={}", pages::urlencode(&next))).into_response()
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The request's live session: (session id, session).
fn session(app: &App, headers: &HeaderMap) -> Option<(String, auth::Session)> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let id = auth::cookie(cookies, auth::COOKIE)?;
    app.auth.session(id).map(|s| (id.to_owned(), s))
}

/// Lets a state-changing request through: the token as a bearer, or a
/// session with its CSRF token; and, from a browser, only from this origin.
fn authorize(app: &App, headers: &HeaderMap, csrf: &str) -> Result<(), Error> {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if origin != format!("http://{host}") && origin != format!("https://{host}") {
            return Err(Error::Forbidden(format!(
                "a request from {origin} may not act here"
            )));
        }
    }
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
    {
        return if app.auth.is_token(bearer.trim()) {
            Ok(())
        } else {
            Err(Error::Unauthorized("the bearer token is wrong".into()))
        };
    }
    match session(app, headers) {
        None => Err(Error::Unauthorized(
            "log in with the dashboard token (or send it as a bearer token) to act".into(),
        )),
        Some((_, s)) if !s.csrf_ok(csrf) => Err(Error::Forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// The token actions need: `given`, or a fresh random one (printed by the
/// caller) when none is given.
pub fn token_or_fresh(given: Option<String>) -> (String, bool) {
    match given {
        Some(t) => (t, false),
        None => (auth::random_hex(), true),
    }
}
