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

pub mod auth;
pub mod batches;
pub mod data;
pub mod graph;
pub mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use self::auth::Auth;
use self::data::{Acted, Set};
use self::pages::Ctx;
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
        .route("/", get(overview))
        .route("/busy", get(busy))
        .route("/classes", get(classes))
        .route("/limits", get(limits))
        .route("/jobs/{id}", get(job))
        .route("/batches", get(batch_list))
        .route("/batches/{id}", get(batch))
        .route("/queues/{queue}/{set}", get(set_page))
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/queues/{queue}/{set}/{action}", post(act))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .fallback(not_found)
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

/// A page's request context.
async fn ctx(app: &App, headers: &HeaderMap, here: String) -> Result<Ctx, Error> {
    let now_ms = queue::redis_now_ms(&mut app.conn.clone()).await?;
    Ok(Ctx {
        csrf: session(app, headers).map(|(_, s)| s.csrf),
        here,
        now_ms,
    })
}

/// A failed request, as a page.
enum Error {
    Redis(redis::RedisError),
    NotFound(String),
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Error {
        Error::Redis(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Error::Redis(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Redis failed",
                e.to_string(),
            ),
            Error::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            Error::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "Log in first", m),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m),
        };
        let ctx = Ctx {
            csrf: None,
            here: "/".into(),
            now_ms: 0,
        };
        (
            status,
            Html(pages::error(&ctx, title, &message).into_string()),
        )
            .into_response()
    }
}

type Page = Result<Html<String>, Error>;

fn uri_of(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

async fn overview(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/".into()).await?;
    let mut conn = app.conn.clone();
    let status = crate::inspect::status(&mut conn).await?;
    let names: Vec<String> = status.queues.iter().map(|q| q.name.clone()).collect();
    let latencies = data::latencies(&mut conn, &names).await?;
    let classes: Vec<String> = status
        .classes
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let history = graph::history(&mut conn, &classes, ctx.now_ms).await?;
    let recent: Vec<Option<f64>> = names.iter().map(|q| app.samples.recent(q)).collect();
    Ok(Html(
        pages::overview(&ctx, &status, &latencies, &history, &recent).into_string(),
    ))
}

async fn busy(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/busy".into()).await?;
    let jobs = data::busy(&mut app.conn.clone()).await?;
    Ok(Html(pages::busy(&ctx, &jobs).into_string()))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<usize>,
    per: Option<usize>,
}

async fn set_page(
    State(app): State<Arc<App>>,
    Path((queue, set)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let set = Set::parse(&set).ok_or_else(|| {
        Error::NotFound(format!(
            "no list `{set}`: pending, scheduled, retry or dead"
        ))
    })?;
    let mut conn = app.conn.clone();
    if !data::known_queue(&mut conn, &queue).await? {
        return Err(Error::NotFound(format!("no queue `{queue}`")));
    }
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let page = data::page(
        &mut conn,
        &queue,
        set,
        q.page.unwrap_or(1),
        q.per.unwrap_or(data::PER_PAGE),
    )
    .await?;
    let paused: bool = redis::AsyncCommands::exists(
        &mut conn,
        crate::queue::keys::QueueKeys::new(&queue).paused(),
    )
    .await?;
    Ok(Html(
        pages::set_page(&ctx, &queue, set, &page, paused).into_string(),
    ))
}

#[derive(Deserialize)]
struct JobQuery {
    queue: Option<String>,
}

async fn job(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let mut conn = app.conn.clone();
    let record = match q
        .queue
        .filter(|q| crate::job::check_name("queue", q).is_ok())
    {
        Some(queue) if crate::job::check_id(&id).is_ok() => {
            let fields: std::collections::HashMap<String, String> = redis::AsyncCommands::hgetall(
                &mut conn,
                crate::queue::keys::QueueKeys::new(&queue).job(&id),
            )
            .await?;
            (!fields.is_empty()).then_some(crate::inspect::JobRecord { queue, fields })
        }
        _ => crate::inspect::find_job(&mut conn, &id).await?,
    };
    let record = record.ok_or_else(|| {
        Error::NotFound(format!(
            "no job `{id}` (done jobs are kept 24 h, dead ones 180 days)"
        ))
    })?;
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let doc = record.to_json();
    let class = match doc["class"].as_str() {
        Some(c) => crate::registry::class(&mut conn, c).await?,
        None => None,
    };
    let dead = record.state() == Some(crate::job::State::Dead);
    let member = dead.then_some(id.as_str());
    Ok(Html(
        pages::job(&ctx, &doc, class.as_ref(), member).into_string(),
    ))
}

async fn batch_list(
    State(app): State<Arc<App>>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let list = batches::list(
        &mut app.conn.clone(),
        q.page.unwrap_or(1),
        q.per.unwrap_or(data::PER_PAGE),
    )
    .await?;
    Ok(Html(batches::list_page(&ctx, &list).into_string()))
}

#[derive(Deserialize)]
struct MembersQuery {
    show: Option<String>,
    cursor: Option<u64>,
    per: Option<usize>,
}

async fn batch(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(q): Query<MembersQuery>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Page {
    let show = q.show.as_deref().unwrap_or("all");
    let show = batches::Show::parse(show).ok_or_else(|| {
        Error::NotFound(format!(
            "no list `{show}` of a batch's jobs: all, done or dead"
        ))
    })?;
    let mut conn = app.conn.clone();
    let status = crate::batch::status(&mut conn, &id).await?.ok_or_else(|| {
        Error::NotFound(format!(
            "no batch `{id}` (a finished batch is kept 30 days)"
        ))
    })?;
    let ctx = ctx(&app, &headers, uri_of(uri.path(), uri.query())).await?;
    let cursor = q.cursor.unwrap_or(0);
    let members = batches::members(
        &mut conn,
        &crate::queue::keys::BatchKeys::new(&status.id),
        show,
        cursor,
        q.per.unwrap_or(data::PER_PAGE),
    )
    .await?;
    Ok(Html(
        batches::batch_page(&ctx, &status, show, cursor, &members).into_string(),
    ))
}

async fn classes(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/classes".into()).await?;
    let mut list: Vec<_> = crate::registry::classes(&mut app.conn.clone())
        .await?
        .into_values()
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let report = crate::observe::report::report(&mut app.conn.clone(), REPORT_MINUTES).await?;
    Ok(Html(pages::classes(&ctx, &list, &report).into_string()))
}

async fn limits(State(app): State<Arc<App>>, headers: HeaderMap) -> Page {
    let ctx = ctx(&app, &headers, "/limits".into()).await?;
    let mut conn = app.conn.clone();
    let status = crate::inspect::status(&mut conn).await?;
    let deployed = crate::registry::classes(&mut conn).await?;
    // Each limiter once, with the classes and destinations that use it.
    let mut by_name: std::collections::BTreeMap<String, (crate::config::Limiter, Vec<String>)> =
        Default::default();
    for c in deployed.values() {
        for l in &c.limiters {
            let e = by_name
                .entry(l.name.clone())
                .or_insert((l.clone(), Vec::new()));
            e.1.push(format!("class {}", c.name));
        }
        for d in &c.http.destinations {
            for l in &d.limiters {
                let e = by_name
                    .entry(l.name.clone())
                    .or_insert((l.clone(), Vec::new()));
                let user = format!("{}", d.origin);
                if !e.1.contains(&user) {
                    e.1.push(user);
                }
            }
        }
    }
    let limiters: Vec<_> = by_name.into_values().collect();
    let only: Vec<_> = limiters.iter().map(|(l, _)| l.clone()).collect();
    let readings = data::limiter_readings(&mut conn, &only).await?;
    Ok(Html(
        pages::limits(&ctx, &limiters, &readings, &status).into_string(),
    ))
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    back: String,
    #[serde(default)]
    member: String,
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

/// Where an action sends the browser: its page, if it is a path here.
fn back_to(back: &str, default: &str) -> Redirect {
    let ok = back.starts_with('/') && !back.starts_with("//") && !back.contains('\\');
    Redirect::to(if ok { back } else { default })
}

async fn act(
    State(app): State<Arc<App>>,
    Path((queue, set, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    authorize(&app, &headers, &form.csrf)?;
    let set = Set::parse(&set)
        .filter(|s| s.has_actions())
        .ok_or_else(|| Error::NotFound(format!("no actions on `{set}`")))?;
    crate::job::check_name("queue", &queue).map_err(Error::BadRequest)?;
    let mut conn = app.conn.clone();
    let acted = match action.as_str() {
        "retry" => data::retry_now(&mut conn, &queue, set, &form.member).await?,
        "delete" => data::delete(&mut conn, &queue, set, &form.member).await?,
        other => return Err(Error::NotFound(format!("no action `{other}`"))),
    };
    tracing::info!(%queue, set = set.as_str(), %action, done = acted == Acted::Done, "dashboard action");
    if let Acted::Refused(why) = acted {
        return Ok((StatusCode::CONFLICT, format!("{why}\n")).into_response());
    }
    if acted == Acted::Gone && form.back.is_empty() {
        return Ok((StatusCode::CONFLICT, "the job is no longer there\n").into_response());
    }
    let default = format!("/queues/{queue}/{}", set.as_str());
    Ok(back_to(&form.back, &default).into_response())
}

async fn pause(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    set_paused(app, queue, headers, form, true).await
}

async fn resume(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    set_paused(app, queue, headers, form, false).await
}

async fn set_paused(
    app: Arc<App>,
    queue: String,
    headers: HeaderMap,
    form: ActionForm,
    paused: bool,
) -> Result<Response, Error> {
    authorize(&app, &headers, &form.csrf)?;
    crate::job::check_name("queue", &queue).map_err(Error::BadRequest)?;
    let mut conn = app.conn.clone();
    if !data::known_queue(&mut conn, &queue).await? {
        return Err(Error::NotFound(format!("no queue `{queue}`")));
    }
    queue::set_paused(&mut conn, &queue, paused).await?;
    tracing::info!(%queue, paused, "dashboard action");
    Ok(back_to(&form.back, "/").into_response())
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_form(Query(q): Query<LoginQuery>) -> Html<String> {
    let ctx = Ctx {
        csrf: None,
        here: "/login".into(),
        now_ms: 0,
    };
    Html(pages::login(&ctx, q.next.as_deref().unwrap_or("/"), false).into_string())
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    match app.auth.login(&form.token) {
        Some((id, _)) => {
            let cookie = format!(
                "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
                auth::COOKIE,
                auth::SESSION_TTL.as_secs()
            );
            let mut r = back_to(&form.next, "/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => {
            tracing::warn!("dashboard: a login with a wrong token");
            let ctx = Ctx {
                csrf: None,
                here: "/login".into(),
                now_ms: 0,
            };
            (
                StatusCode::UNAUTHORIZED,
                Html(pages::login(&ctx, &form.next, true).into_string()),
            )
                .into_response()
        }
    }
}

async fn logout(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, Error> {
    authorize(&app, &headers, &form.csrf)?;
    if let Some((id, _)) = session(&app, &headers) {
        app.auth.logout(&id);
    }
    let mut r = Redirect::to("/").into_response();
    let clear = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::COOKIE
    );
    if let Ok(v) = HeaderValue::from_str(&clear) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn not_found() -> Error {
    Error::NotFound("no such page".into())
}

/// The token actions need: `given`, or a fresh random one (printed by the
/// caller) when none is given.
pub fn token_or_fresh(given: Option<String>) -> (String, bool) {
    match given {
        Some(t) => (t, false),
        None => (auth::random_hex(), true),
    }
}
