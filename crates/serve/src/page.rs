//! The status page for staff (`/`): opened through a one-time link (`ferry page` prints
//! one; `ferry serve` prints one at start) that sets a session cookie (HttpOnly,
//! SameSite=Strict). The page calls the same `/v1` API with that cookie; every change it
//! makes carries the session's CSRF token in `X-Ferry-CSRF`, which only the page knows.
//! Sessions live as long as the server.

use crate::Shared;
use crate::api::same;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use ferry_node::{Home, NodeError};

const COOKIE: &str = "ferry_session";
const PAGE: &str = include_str!("page.html");

/// A one-time link that opens the page.
pub(crate) fn link(home: &Home, url: &str) -> Result<String, NodeError> {
    Ok(format!("{url}/login?key={}", home.new_page_key()?))
}

/// The CSRF token of the session the request's cookie names, if it names one.
pub(crate) fn session_of(s: &Shared, headers: &HeaderMap) -> Option<String> {
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())?;
    let sessions = s.sessions.lock().unwrap_or_else(|p| p.into_inner());
    sessions
        .iter()
        .find(|(k, _)| same(k.as_bytes(), id.as_bytes()))
        .map(|(_, csrf)| csrf.clone())
}

fn plain_page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\"><title>ferry</title><body style=\"font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em\"><h1>{title}</h1><p>{text}</p></body></html>"
    );
    (status, Html(html)).into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    key: Option<String>,
}

/// `GET /login?key=…`: a one-time key becomes a session cookie.
pub(crate) async fn login(State(s): State<Shared>, Query(q): Query<LoginQuery>) -> Response {
    let key = q.key.unwrap_or_default();
    let home = s.home.clone();
    let ok = tokio::task::spawn_blocking(move || home.take_page_key(&key))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !ok {
        return plain_page(
            StatusCode::FORBIDDEN,
            "This link does not open the page",
            "It was used already, or it is more than 10 minutes old. On this computer, run <code>ferry page</code> and open the link it prints.",
        );
    }
    let id = ferry_node::new_secret();
    s.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), ferry_node::new_secret());
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{}",
        if s.tls { "; Secure" } else { "" }
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /`: the page, for a session; else how to open it.
pub(crate) async fn page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    match session_of(&s, &headers) {
        Some(csrf) => {
            // Only the page's own script runs: a nonce fresh for each response, so markup
            // that ever reached the page (an `onerror=` in a record) could not run.
            let nonce = ferry_node::new_secret();
            let html = PAGE
                .replace("{{CSRF}}", &csrf)
                .replace("<script>", &format!("<script nonce=\"{nonce}\">"));
            let mut resp = Html(html).into_response();
            let policy = format!(
                "default-src 'self'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
            );
            resp.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&policy).expect("hex and ASCII"),
            );
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        None => plain_page(
            StatusCode::UNAUTHORIZED,
            "Open the page with its link",
            "On this computer, run <code>ferry page</code> and open the link it prints (a link works once, for 10 minutes).",
        ),
    }
}
