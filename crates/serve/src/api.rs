//! The routes of `/v1`, the access check in front of them, and the JSON forms of records
//! and changes.

use crate::error::ApiError;
use crate::{MAX_BODY, Shared, openapi, writes};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_model::{RecordState, Value};
use ferry_node::{
    Cursor, FeedChange, FieldInput, Node, NodeError, RecordWrite, Status, json as fjson,
};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

type ApiResult = Result<Response, ApiError>;

/// Records per page of a list, unless the request asks for fewer.
const PAGE: usize = 100;
/// The most records one page may hold.
const MAX_PAGE: usize = 1000;
/// Changes per page of the feed, unless the request asks for fewer.
const FEED_PAGE: usize = 500;
/// The longest a long-poll waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub(crate) fn router(shared: Shared) -> Router {
    let v1 = Router::new()
        .route("/openapi.json", get(openapi_doc))
        .route("/status", get(status))
        .route("/members", get(members))
        .route("/collections", get(collections))
        .route("/collections/{c}/records", get(list))
        .route(
            "/collections/{c}/records/{id}",
            get(get_record)
                .put(put_record)
                .patch(patch_record)
                .delete(delete_record),
        )
        .route("/batch", post(batch))
        .route("/changes", get(changes))
        .route("/conflicts", get(conflicts))
        .route("/conflicts/resolve", post(resolve))
        .route("/sync", post(sync))
        .route("/runs", get(runs));
    Router::new()
        .nest("/v1", v1)
        .route("/", get(crate::page::page))
        .route("/login", get(crate::page::login))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Every request: the `Host` names this loopback listener, and the token is the home's —
/// or, from the status page, the session cookie (with its CSRF token on every write).
/// The page itself and its login link check their own way.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let check = if path == "/" || path == "/login" {
        check_host(&s, req.headers())
    } else {
        check_access(&s, req.method(), req.headers())
    };
    if let Err(e) = check {
        return e.into_response();
    }
    next.run(req).await
}

pub(crate) fn check_host(s: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    // Over HTTPS the certificate vouches for the name: a page elsewhere that points a name
    // of its own at this computer fails the handshake in the browser.
    if s.tls {
        return Ok(());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let port = s.addr.port();
    let allowed = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            format!(
                "this server answers only requests addressed to 127.0.0.1:{port} or localhost:{port} (Host was {host:?})"
            ),
        ));
    }
    Ok(())
}

fn check_access(
    s: &Shared,
    method: &axum::http::Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    check_host(s, headers)?;
    if headers.get(header::AUTHORIZATION).is_none()
        && let Some(csrf) = crate::page::session_of(s, headers)
    {
        if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
            return Ok(());
        }
        let given = headers
            .get("x-ferry-csrf")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if same(given.as_bytes(), csrf.as_bytes()) {
            return Ok(());
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a change from the status page must carry its X-Ferry-CSRF header: reload the page",
        ));
    }
    let token =
        s.home.api_token().map_err(ApiError::from)?.ok_or_else(|| {
            ApiError::internal("the home's api.token is gone: restart ferry serve")
        })?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not this home's (was it rotated?): send the one `ferry token` prints",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the token `ferry token` prints, as the header Authorization: Bearer TOKEN",
        )),
    }
}

/// Compares without stopping at the first difference (the time says nothing of where).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such path: the API is under /v1 (GET /v1/openapi.json describes it)")
}

async fn openapi_doc() -> Response {
    axum::Json(openapi::document()).into_response()
}

async fn status(State(s): State<Shared>) -> ApiResult {
    let st: Status = s.read_node(|n| n.status()).await??;
    Ok(axum::Json(st).into_response())
}

async fn members(State(s): State<Shared>) -> ApiResult {
    let st: Status = s.read_node(|n| n.status()).await??;
    Ok(axum::Json(json!({ "members": st.members })).into_response())
}

async fn collections(State(s): State<Shared>) -> ApiResult {
    let all = s.read_node(|n| n.collections()).await??;
    let list: Vec<Json> = all
        .into_iter()
        .map(|(name, records)| json!({ "name": name, "records": records }))
        .collect();
    Ok(axum::Json(json!({ "collections": list })).into_response())
}

/// A record as the API shows it: field → shown value; a field showing `null` is left out
/// (PUT `{"a": 1}` then GET gives `{"a": 1}`).
pub(crate) fn record_json(
    node: &mut Node,
    collection: &str,
    state: &RecordState,
) -> Result<Json, NodeError> {
    let rules = node.rules()?;
    let mut obj = fjson::record_to_json(state, |f| rules.of(collection, f));
    obj.retain(|_, v| !v.is_null());
    Ok(Json::Object(obj))
}

async fn list(
    State(s): State<Shared>,
    Path(c): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    let mut limit = PAGE;
    let mut after = String::new();
    let mut filter = Vec::new();
    for (k, v) in q {
        match k.as_str() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|&n| (1..=MAX_PAGE).contains(&n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}"))
                    })?
            }
            "after" => after = v,
            _ => match k.strip_prefix("where.") {
                Some(f) if !f.is_empty() => filter.push((f.to_string(), Value::parse(&v))),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {k:?}: give limit, after, or where.FIELD=VALUE"
                    )));
                }
            },
        }
    }
    let body = s
        .read_node(move |n| -> Result<Json, NodeError> {
            let cursor = n.feed_cursor()?;
            let page = n.records_page(&c, &after, limit, &filter)?;
            let next = page.next;
            let mut records = Vec::with_capacity(page.records.len());
            for (id, state) in &page.records {
                records.push(json!({ "id": id, "fields": record_json(n, &c, state)? }));
            }
            Ok(json!({ "records": records, "next": next, "cursor": cursor.to_string() }))
        })
        .await??;
    Ok(axum::Json(body).into_response())
}

async fn get_record(State(s): State<Shared>, Path((c, id)): Path<(String, String)>) -> ApiResult {
    let body = s
        .read_node(move |n| -> Result<Json, NodeError> {
            ferry_node::check_collection(&c)?;
            match n.get(&c, &id)?.filter(|r| r.is_live()) {
                Some(state) => record_json(n, &c, &state),
                None => {
                    n.require_collection(&c)?;
                    Err(NodeError::NoRecord { collection: c, id })
                }
            }
        })
        .await??;
    Ok(axum::Json(body).into_response())
}

async fn put_record(
    State(s): State<Shared>,
    Path((c, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let fields = fields_of(&read_json(body).await?)?;
    write_one(
        s,
        RecordWrite::Replace {
            collection: c,
            id,
            fields,
        },
    )
    .await
}

async fn patch_record(
    State(s): State<Shared>,
    Path((c, id)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let fields = fields_of(&read_json(body).await?)?;
    write_one(
        s,
        RecordWrite::Merge {
            collection: c,
            id,
            fields,
        },
    )
    .await
}

async fn delete_record(
    State(s): State<Shared>,
    Path((c, id)): Path<(String, String)>,
) -> ApiResult {
    writes::write(&s, RecordWrite::Delete { collection: c, id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A put or patch: answers with the record as it now shows and how many fields changed.
async fn write_one(s: Shared, w: RecordWrite) -> ApiResult {
    Ok(axum::Json(writes::write(&s, w).await?).into_response())
}

async fn batch(State(s): State<Shared>, body: Body) -> ApiResult {
    let doc = read_json(body).await?;
    let Some(items) = doc.get("writes").and_then(Json::as_array) else {
        return Err(ApiError::bad_request(
            "give {\"writes\": [{\"op\": \"put\"|\"patch\"|\"delete\", \"collection\": …, \"id\": …, \"fields\": {…}}, …]}",
        ));
    };
    let mut writes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        writes
            .push(batch_write(item).map_err(|m| ApiError::bad_request(format!("write {i}: {m}")))?);
    }
    let n = writes.len();
    let counts = s
        .with_node(move |node| node.write_records(&writes))
        .await?
        .map_err(|e| {
            let mut api = ApiError::from(*e.source);
            api.message = match e.saving {
                true => format!(
                    "the batch could not be saved: {} (nothing was written)",
                    api.message
                ),
                false => format!("write {}: {} (nothing was written)", e.index, api.message),
            };
            api
        })?;
    Ok(axum::Json(json!({ "written": n, "changed": counts })).into_response())
}

fn batch_write(item: &Json) -> Result<RecordWrite, String> {
    let text = |k: &str| {
        item.get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("\"{k}\" must be a string"))
    };
    let (op, collection, id) = (text("op")?, text("collection")?, text("id")?);
    let fields = || -> Result<Vec<(String, FieldInput)>, String> {
        let f = item.get("fields").ok_or("\"fields\" is missing")?;
        fields_of(f).map_err(|e| e.message)
    };
    Ok(match op.as_str() {
        "put" => RecordWrite::Replace {
            collection,
            id,
            fields: fields()?,
        },
        "patch" => RecordWrite::Merge {
            collection,
            id,
            fields: fields()?,
        },
        "delete" => RecordWrite::Delete { collection, id },
        other => return Err(format!("op {other:?}: give put, patch or delete")),
    })
}

/// A request body as JSON (at most [`MAX_BODY`] bytes).
async fn read_json(body: Body) -> Result<Json, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a request body holds at most {MAX_BODY} bytes: split the batch"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// A JSON object of field → value as a write's fields (a list of strings for a set field).
fn fields_of(doc: &Json) -> Result<Vec<(String, FieldInput)>, ApiError> {
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::bad_request(
            "give the record as a JSON object of field → value, e.g. {\"village\": \"Kisumu\", \"age\": 34}",
        ));
    };
    obj.iter()
        .map(|(f, v)| {
            let input = match v {
                Json::Array(items) => FieldInput::Set(
                    items
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<_>>()
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "field {f:?}: a list holds the texts of a set field, nothing else"
                            ))
                        })?,
                ),
                _ => FieldInput::Value(
                    fjson::from_json(v)
                        .map_err(|m| ApiError::bad_request(format!("field {f:?}: {m}")))?,
                ),
            };
            Ok((f.clone(), input))
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    limit: Option<usize>,
    wait: Option<f64>,
}

/// The feed: a page of changes after `since` (`now`: from this moment; absent or `0`: from
/// the start of what is held). With `wait=SECONDS`, an empty page waits for a change; with
/// `Accept: text/event-stream`, a stream of Server-Sent Events that never ends.
async fn changes(
    State(s): State<Shared>,
    Query(q): Query<ChangesQuery>,
    headers: HeaderMap,
) -> ApiResult {
    let since = match q.since.as_deref() {
        Some("now") => s.read_node(|n| n.feed_cursor()).await??,
        Some(text) => text
            .parse::<Cursor>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Cursor::default(),
    };
    let limit = q.limit.unwrap_or(FEED_PAGE).clamp(1, FEED_PAGE * 10);
    let stream = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if stream {
        return Ok(event_stream(s, since, limit).into_response());
    }
    let wait = Duration::from_secs_f64(q.wait.unwrap_or(0.0).clamp(0.0, MAX_WAIT.as_secs_f64()));
    let deadline = tokio::time::Instant::now() + wait;
    let mut seen = s.cursor.clone();
    let mut stopping = s.stopping.clone();
    loop {
        seen.borrow_and_update();
        let since2 = since.clone();
        let page = s.read_node(move |n| feed_page(n, &since2, limit)).await??;
        if !page.0.is_empty() || tokio::time::Instant::now() >= deadline || *stopping.borrow() {
            let (changes, next, more) = page;
            return Ok(axum::Json(
                json!({ "changes": changes, "next": next.to_string(), "more": more }),
            )
            .into_response());
        }
        tokio::select! {
            _ = seen.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopping.changed() => {}
        }
    }
}

/// A page of the feed with each change's record as it shows now (`null` once deleted) and
/// the cursor right after it.
fn feed_page(
    n: &mut Node,
    since: &Cursor,
    limit: usize,
) -> Result<(Vec<Json>, Cursor, bool), NodeError> {
    let page = n.changes_since(since, limit)?;
    let labels = n.labels()?;
    let mut states: HashMap<(String, String), Json> = HashMap::new();
    let mut running = since.clone();
    let mut out = Vec::with_capacity(page.changes.len());
    for (i, ch) in page.changes.iter().enumerate() {
        let key = (ch.collection.clone(), ch.id.clone());
        if !states.contains_key(&key) {
            let shown = match n.get(&ch.collection, &ch.id)?.filter(|r| r.is_live()) {
                Some(st) => record_json(n, &ch.collection, &st)?,
                None => Json::Null,
            };
            states.insert(key.clone(), shown);
        }
        // A change's cursor is the one after its whole commit, told on the commit's last
        // change; the others carry the cursor before the commit, so a reader that stops in
        // the middle of a commit (a batch) and resumes from the cursor it kept reads that
        // commit again rather than missing its rest.
        let last_of_commit = page
            .changes
            .get(i + 1)
            .is_none_or(|next| (next.author, next.seq) != (ch.author, ch.seq));
        if last_of_commit {
            running.advance(ch.author, ch.seq);
        }
        out.push(change_json(
            ch,
            &labels,
            &states[&key],
            &running.to_string(),
        ));
    }
    Ok((out, page.next, page.more))
}

fn change_json(
    ch: &FeedChange,
    labels: &BTreeMap<ferry_model::MemberId, String>,
    record: &Json,
    cursor: &str,
) -> Json {
    let author = labels
        .get(&ferry_model::MemberId(ch.author))
        .cloned()
        .unwrap_or_else(|| format!("member #{}", ch.author));
    json!({
        "collection": ch.collection,
        "id": ch.id,
        "deleted": ch.deleted,
        "author": author,
        "member": ch.author,
        "seq": ch.seq,
        "at": ch.at,
        "record": record,
        "cursor": cursor,
    })
}

/// The feed as Server-Sent Events: one `change` event per change (its `id` is the cursor
/// right after it, so a client that reconnects with `since=` that id misses nothing), an
/// `error` event and the end when the cursor is older than what is held.
fn event_stream(
    s: Shared,
    since: Cursor,
    limit: usize,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    struct St {
        s: Shared,
        since: Cursor,
        limit: usize,
        queued: VecDeque<Event>,
        done: bool,
    }
    let st = St {
        s,
        since,
        limit,
        queued: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.queued.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done || *st.s.stopping.borrow() {
                return None;
            }
            let mut seen = st.s.cursor.clone();
            let mut stopping = st.s.stopping.clone();
            seen.borrow_and_update();
            let (since, limit) = (st.since.clone(), st.limit);
            match st.s.read_node(move |n| feed_page(n, &since, limit)).await {
                Ok(Ok((changes, next, _))) => {
                    st.since = next;
                    if changes.is_empty() {
                        tokio::select! {
                            _ = seen.changed() => {}
                            _ = stopping.changed() => {}
                        }
                        continue;
                    }
                    for c in changes {
                        let id = c["cursor"].as_str().unwrap_or("0").to_string();
                        st.queued
                            .push_back(Event::default().event("change").id(id).data(c.to_string()));
                    }
                }
                Ok(Err(e)) => {
                    let e = ApiError::from(e);
                    st.queued.push_back(
                        Event::default()
                            .event("error")
                            .data(json!({ "code": e.code, "message": e.message }).to_string()),
                    );
                    st.done = true;
                }
                Err(e) => {
                    st.queued.push_back(
                        Event::default()
                            .event("error")
                            .data(json!({ "code": e.code, "message": e.message }).to_string()),
                    );
                    st.done = true;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn conflicts(State(s): State<Shared>) -> ApiResult {
    let all = s.read_node(|n| n.conflicts()).await??;
    Ok(axum::Json(json!({ "conflicts": all })).into_response())
}

async fn resolve(State(s): State<Shared>, body: Body) -> ApiResult {
    let doc = read_json(body).await?;
    let text = |k: &str| {
        doc.get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "\"{k}\" must be a string: give {{\"collection\", \"id\", \"field\", \"value\"}}"
                ))
            })
    };
    let (c, id, f) = (text("collection")?, text("id")?, text("field")?);
    let value = doc.get("value").ok_or_else(|| {
        ApiError::bad_request("\"value\" is missing: the value the field should show")
    })?;
    let value =
        fjson::from_json(value).map_err(|m| ApiError::bad_request(format!("value: {m}")))?;
    s.with_node(move |n| n.resolve(&c, &id, &f, value))
        .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn sync(State(s): State<Shared>, body: Body) -> ApiResult {
    let doc = read_json(body).await?;
    let run = match (
        doc.get("folder").and_then(Json::as_str),
        doc.get("transport").and_then(Json::as_str),
    ) {
        (Some(folder), None) => {
            let folder = std::path::PathBuf::from(folder);
            if !folder.is_dir() {
                return Err(ApiError::bad_request(format!(
                    "{} is not a folder here: give the folder of the stick or shared drive, as this computer mounts it",
                    folder.display()
                )));
            }
            crate::runs::sync_folder(&s, folder, "api").await
        }
        (None, Some(t)) => {
            let run = match t {
                "email" => crate::schedule::carrier_run(&s, crate::Carrier::Email, "api").await,
                "sms" => crate::schedule::carrier_run(&s, crate::Carrier::Sms, "api").await,
                "serial" => crate::schedule::serial_run(&s, "api").await,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "no transport {other:?}: give \"email\", \"sms\" or \"serial\" (or {{\"folder\": …}} for a stick)"
                    )));
                }
            };
            s.record(run.clone());
            run
        }
        _ => {
            return Err(ApiError::bad_request(
                "give {\"folder\": \"/media/usb\"} (a stick to sync with) or {\"transport\": \"email\" | \"sms\" | \"serial\"}",
            ));
        }
    };
    let status = match run.ok {
        true => StatusCode::OK,
        false => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Ok((status, axum::Json(run)).into_response())
}

async fn runs(State(s): State<Shared>) -> ApiResult {
    let list = s.runs.lock().unwrap_or_else(|p| p.into_inner()).list();
    Ok(axum::Json(json!({ "runs": list })).into_response())
}
