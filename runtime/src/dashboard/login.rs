//! Logging in and out: the login form, the `POST` that trades the token for
//! a session cookie, and the one that ends the session. The sessions
//! themselves are [`auth`]'s.

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::actions::{ActionForm, back_to};
use super::auth;
use super::pages::{Ctx, Error, layout};
use super::{App, authorize, session};

/// `?next=PATH`: where to go once logged in.
#[derive(Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`.
pub(super) async fn login_form(Query(q): Query<LoginQuery>) -> Html<String> {
    let ctx = Ctx {
        csrf: None,
        here: "/login".into(),
        now_ms: 0,
    };
    Html(login_page(&ctx, q.next.as_deref().unwrap_or("/"), false).into_string())
}

/// The login form: the token, and where to go next.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: the token, for a session cookie.
pub(super) async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
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
                Html(login_page(&ctx, &form.next, true).into_string()),
            )
                .into_response()
        }
    }
}

/// `POST /logout`.
pub(super) async fn logout(
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

/// The login form.
pub fn login_page(ctx: &Ctx, next: &str, failed: bool) -> Markup {
    let body = html! {
        @if failed { p.error { "That is not the dashboard token." } }
        form.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label { "Token " input type="password" name="token" autocomplete="current-password" autofocus; }
            button type="submit" { "Log in" }
        }
        p.hint { "The token is the one given to " code { "stoker dashboard --token" } " (or " code { "STOKER_DASHBOARD_TOKEN" } "); without one, the dashboard prints a fresh token when it starts." }
    };
    layout(ctx, "Log in", body)
}
