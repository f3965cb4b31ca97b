//! `ferry serve` (issue 15): the local API on the real binary, spoken to over raw HTTP/1.1
//! (so a test can also send what a hostile page would: no token, another's token, another
//! Host).

use crate::util::{Laptop, s, three};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

/// A running `ferry serve`, stopped (SIGKILL) when dropped.
pub(crate) struct Server {
    child: Child,
    api: Api,
    /// What it prints after its first line.
    out: BufReader<ChildStdout>,
}

/// Where a server listens and the token to give it.
#[derive(Clone)]
pub(crate) struct Api {
    addr: SocketAddr,
    token: String,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(l: &Laptop) -> Server {
    start_with(l, &[])
}

fn start_with(l: &Laptop, extra: &[&str]) -> Server {
    start_with_env(l, extra, &[])
}

/// `ferry serve` with more arguments and environment variables (a mailbox password).
pub(crate) fn start_with_env(l: &Laptop, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
    args.extend(extra);
    let mut child = l
        .cmd(&args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ferry serve");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("ferry serve: listening on http://")
        .unwrap_or_else(|| panic!("first line {first:?}"))
        .parse()
        .unwrap();
    let token = l.ok(&["token"]).trim().to_string();
    Server {
        child,
        api: Api { addr, token },
        out,
    }
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

impl Api {
    pub(crate) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let host = self.addr.to_string();
        self.raw(
            method,
            path,
            body.map(|b| b.to_string()),
            Some(&self.token),
            &host,
        )
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
        host: &str,
    ) -> Reply {
        let mut conn = TcpStream::connect(self.addr).unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method == "PUT" || method == "POST" || method == "PATCH" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).unwrap();
        // A refused request may close before the whole body is read: that is fine.
        let _ = conn.write_all(body.as_bytes());
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a response head");
        let status = head[9..12].parse().unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Reply { status, body }
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

fn error_code(r: &Reply) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

const REC: &str = "/v1/collections/visits/records";

#[test]
fn records_round_trip_batches_are_all_or_nothing_and_bad_requests_are_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let hq = Laptop::new(tmp.path(), "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let srv = start(&hq);

    // A record as JSON goes in and comes out the same, and the CLI (another process on the
    // same home, while the server runs) reads it alike.
    let visit = json!({"village": "Kisumu Ndogo", "age": 34, "weight_kg": 61.5,
        "photo": {"$base64": "AAEC"}, "pregnant": false});
    let r = srv.call("PUT", &format!("{REC}/v-1"), Some(&visit));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], 5);
    let got = srv.call("GET", &format!("{REC}/v-1"), None);
    assert_eq!((got.status, got.json()), (200, visit.clone()));
    let cli: Value = serde_json::from_str(&hq.ok(&["get", "visits", "v-1", "--json"])).unwrap();
    assert_eq!(cli, visit);

    // PATCH sets only what it names (null clears); PUT leaves only what it names.
    let r = srv.call(
        "PATCH",
        &format!("{REC}/v-1"),
        Some(&json!({"age": 35, "village": null})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        srv.call("GET", &format!("{REC}/v-1"), None).json(),
        json!({"age": 35, "weight_kg": 61.5, "photo": {"$base64": "AAEC"}, "pregnant": false})
    );
    let r = srv.call("PUT", &format!("{REC}/v-1"), Some(&json!({"age": 36})));
    assert_eq!(r.json()["fields"], json!({"age": 36}));
    assert_eq!(
        srv.call("GET", &format!("{REC}/v-1"), None).json(),
        json!({"age": 36})
    );
    // The same PUT again changes nothing (and makes no change to send).
    assert_eq!(
        srv.call("PUT", &format!("{REC}/v-1"), Some(&json!({"age": 36})))
            .json()["changed"],
        0
    );

    // Bad input: a 4xx with a sentence, and nothing written.
    for (method, path, body, code) in [
        (
            "PUT",
            format!("{REC}/v-2"),
            "{\"age\": ".to_string(),
            "bad_request",
        ),
        (
            "PUT",
            format!("{REC}/v-2"),
            "[1, 2]".to_string(),
            "bad_request",
        ),
        (
            "PUT",
            format!("{REC}/v-2"),
            r#"{"a": {"b": 1}}"#.to_string(),
            "bad_request",
        ),
        (
            "PUT",
            format!("{REC}/v-2"),
            r#"{"id": 1}"#.to_string(),
            "bad_request",
        ),
        (
            "PUT",
            format!("{REC}/v-2"),
            r#"{"tags": [1]}"#.to_string(),
            "bad_request",
        ),
        (
            "PUT",
            "/v1/collections/_members/records/1".to_string(),
            r#"{"a": 1}"#.to_string(),
            "bad_request",
        ),
        (
            "PATCH",
            format!("{REC}/v-2"),
            "\"text\"".to_string(),
            "bad_request",
        ),
    ] {
        let r = srv.raw(
            method,
            &path,
            Some(body.clone()),
            Some(&srv.token),
            &srv.addr.to_string(),
        );
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (400, code),
            "{method} {path} {body}: {}",
            r.body
        );
        assert!(r.json()["error"]["message"].as_str().unwrap().len() > 10);
    }
    let r = srv.call("GET", &format!("{REC}/v-2"), None);
    assert_eq!((r.status, error_code(&r).as_str()), (404, "not_found"));
    let r = srv.call("GET", "/v1/collections/nothing/records/x", None);
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("visits"),
        "names the collections there are: {}",
        r.body
    );
    let r = srv.call("DELETE", &format!("{REC}/v-2"), None);
    assert_eq!(r.status, 404);
    let too_big = format!("{{\"note\": \"{}\"}}", "x".repeat(33 << 20));
    let r = srv.raw(
        "PUT",
        &format!("{REC}/v-2"),
        Some(too_big),
        Some(&srv.token),
        &srv.addr.to_string(),
    );
    assert_eq!(r.status, 413, "{}", &r.body[..r.body.len().min(200)]);

    // A batch whose last write is refused writes nothing; a good one writes all, in one
    // change.
    let changes_before = hq.status()["members"][0].clone();
    let bad = json!({"writes": [
        {"op": "put", "collection": "visits", "id": "v-10", "fields": {"village": "Kibera"}},
        {"op": "patch", "collection": "visits", "id": "v-1", "fields": {"age": 40}},
        {"op": "delete", "collection": "visits", "id": "v-missing"}]});
    let r = srv.call("POST", "/v1/batch", Some(&bad));
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("write 2:"),
        "{}",
        r.body
    );
    assert_eq!(srv.call("GET", &format!("{REC}/v-10"), None).status, 404);
    assert_eq!(
        srv.call("GET", &format!("{REC}/v-1"), None).json(),
        json!({"age": 36})
    );
    assert_eq!(
        hq.status()["members"][0],
        changes_before,
        "nothing was committed"
    );
    let good = json!({"writes": [
        {"op": "put", "collection": "visits", "id": "v-10", "fields": {"village": "Kibera", "age": 20}},
        {"op": "put", "collection": "visits", "id": "v-11", "fields": {"village": "Kisumu", "age": 30}},
        {"op": "put", "collection": "visits", "id": "v-12", "fields": {"village": "Kibera", "age": 40}},
        {"op": "delete", "collection": "visits", "id": "v-1"}]});
    let r = srv.call("POST", "/v1/batch", Some(&good));
    assert_eq!(
        (r.status, r.json()["written"].clone()),
        (200, json!(4)),
        "{}",
        r.body
    );
    assert_eq!(srv.call("GET", &format!("{REC}/v-1"), None).status, 404);

    // Lists: filtered by a field's value (typed as on the command line), paged by id.
    let r = srv
        .call("GET", &format!("{REC}?where.village=Kibera"), None)
        .json();
    let ids: Vec<&str> = r["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["v-10", "v-12"]);
    let r = srv.call("GET", &format!("{REC}?where.age=30"), None).json();
    assert_eq!(
        r["records"][0]["fields"],
        json!({"village": "Kisumu", "age": 30})
    );
    let mut after = String::new();
    let mut paged = Vec::new();
    loop {
        let r = srv
            .call("GET", &format!("{REC}?limit=2&after={after}"), None)
            .json();
        paged.extend(
            r["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].as_str().unwrap().to_string()),
        );
        match r["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => break,
        }
    }
    assert_eq!(paged, ["v-10", "v-11", "v-12"]);
    let r = srv.call("GET", &format!("{REC}?limit=0"), None);
    assert_eq!(r.status, 400);

    // Every operation the description names answers (none falls through to "no such path").
    let doc = srv.call("GET", "/v1/openapi.json", None).json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    for (path, ops) in paths {
        let path = path
            .replace("{collection}", "visits")
            .replace("{id}", "v-10");
        for method in ops.as_object().unwrap().keys() {
            let r = srv.call(&method.to_uppercase(), &path, Some(&json!({})));
            let fell_through = r.body.contains("no such path");
            assert!(!fell_through, "{method} {path}: {}", r.body);
        }
    }
    let r = srv.call("GET", "/v2/whatever", None);
    assert!(
        r.status == 404 && r.body.contains("no such path"),
        "{}",
        r.body
    );
}

/// Single writes sent at the same moment are saved together (group commit), yet each is
/// answered as if written alone: refused ones get their reason and take nothing with them,
/// two writes of one record both land in the order they were saved, and a feed reader who
/// stops in the middle of a change that holds several records misses none of them.
#[test]
fn writes_sent_together_are_saved_together_but_answered_and_refused_one_by_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (_hq, a, _b) = three(tmp.path());
    let srv = start(&a);
    let c0 = srv.call("GET", "/v1/changes?since=now", None).json()["next"]
        .as_str()
        .unwrap()
        .to_string();
    let mut threads = Vec::new();
    for t in 0..16 {
        let api = srv.api.clone();
        threads.push(std::thread::spawn(move || {
            let mut refused = Vec::new();
            for i in 0..20 {
                let (method, path, body) = match i % 5 {
                    // A delete of a record that is not there: refused alone.
                    3 => ("DELETE", format!("{REC}/none-{t}-{i}"), None),
                    // ferry's own collection: refused alone.
                    4 => (
                        "PUT",
                        format!("/v1/collections/_members/records/{t}{i}"),
                        Some(json!({"a": 1})),
                    ),
                    _ => (
                        "PUT",
                        format!("{REC}/g-{t}-{i}"),
                        Some(json!({"n": i, "t": t})),
                    ),
                };
                let r = api.call(method, &path, body.as_ref());
                match i % 5 {
                    3 | 4 => {
                        assert!(r.status == 404 || r.status == 400, "{path}: {}", r.body);
                        refused.push(path);
                    }
                    _ => assert_eq!(r.status, 200, "{path}: {}", r.body),
                }
                // Everyone also patches one shared record, each a field of its own.
                let r = api.call(
                    "PATCH",
                    &format!("{REC}/shared"),
                    Some(&json!({ format!("f{t}"): i })),
                );
                assert_eq!(r.status, 200, "{}", r.body);
                assert_eq!(r.json()["fields"][format!("f{t}")], json!(i), "{}", r.body);
            }
            refused
        }));
    }
    let mut refused = 0;
    for t in threads {
        refused += t.join().unwrap().len();
    }
    assert_eq!(refused, 16 * 8);
    for t in 0..16 {
        for i in (0..20).filter(|i| i % 5 < 3) {
            assert_eq!(
                srv.call("GET", &format!("{REC}/g-{t}-{i}"), None).json(),
                json!({"n": i, "t": t})
            );
        }
    }
    let shared = srv.call("GET", &format!("{REC}/shared"), None).json();
    for t in 0..16 {
        assert_eq!(shared[format!("f{t}")], json!(19), "{shared}");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut since = c0.clone();
    loop {
        let page = srv
            .call("GET", &format!("/v1/changes?since={since}"), None)
            .json();
        for c in page["changes"].as_array().unwrap() {
            seen.insert(c["id"].as_str().unwrap().to_string());
        }
        if page["more"] != json!(true) {
            break;
        }
        since = page["next"].as_str().unwrap().to_string();
    }
    assert_eq!(seen.len(), 16 * 12 + 1, "every saved record is on the feed");
    assert!(!seen.iter().any(|id| id.starts_with("none")));

    // A batch is one change: a reader who kept the cursor of its first record and comes
    // back reads the whole change again, never only its tail.
    let now = srv.call("GET", "/v1/changes?since=now", None).json()["next"]
        .as_str()
        .unwrap()
        .to_string();
    let batch = json!({"writes": [
        {"op": "put", "collection": "visits", "id": "m-1", "fields": {"k": 1}},
        {"op": "put", "collection": "visits", "id": "m-2", "fields": {"k": 2}},
        {"op": "put", "collection": "visits", "id": "m-3", "fields": {"k": 3}}]});
    assert_eq!(srv.call("POST", "/v1/batch", Some(&batch)).status, 200);
    let page = srv
        .call("GET", &format!("/v1/changes?since={now}"), None)
        .json();
    let changes = page["changes"].as_array().unwrap();
    let ids: Vec<&str> = changes.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3"]);
    assert_eq!(
        changes[0]["cursor"],
        json!(now),
        "mid-change: the cursor before it"
    );
    assert_eq!(changes[1]["cursor"], json!(now));
    assert_eq!(
        changes[2]["cursor"], page["next"],
        "its last: the cursor after it"
    );
    let again = srv
        .call(
            "GET",
            &format!(
                "/v1/changes?since={}",
                changes[0]["cursor"].as_str().unwrap()
            ),
            None,
        )
        .json();
    assert_eq!(again["changes"].as_array().unwrap().len(), 3, "{again}");
}

#[test]
fn only_requests_with_this_homes_token_and_host_get_in_and_a_rotation_shuts_the_old_token_out() {
    let tmp = tempfile::tempdir().unwrap();
    let hq = Laptop::new(tmp.path(), "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    hq.ok(&["put", "visits", "v-1", "age=3"]);
    let other = Laptop::new(tmp.path(), "other");
    other.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let srv = start(&hq);
    let host = srv.addr.to_string();
    let path = format!("{REC}/v-1");
    let r = srv.raw("GET", &path, None, None, &host);
    assert_eq!((r.status, error_code(&r).as_str()), (401, "unauthorized"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ferry token")
    );
    // Another home's token, a truncated token, and the token as a query are all refused.
    let foreign = other.ok(&["token"]).trim().to_string();
    assert_ne!(foreign, srv.token);
    for t in [foreign.as_str(), &srv.token[..63], ""] {
        assert_eq!(
            srv.raw("GET", &path, None, Some(t), &host).status,
            401,
            "token {t:?}"
        );
    }
    let r = srv.raw(
        "GET",
        &format!("{path}?token={}", srv.token),
        None,
        None,
        &host,
    );
    assert_eq!(r.status, 401);
    // A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) sends its Host.
    for h in [
        "evil.example:80",
        &format!("evil.example:{}", srv.addr.port()),
        "127.0.0.1",
    ] {
        let r = srv.raw("GET", &path, None, Some(&srv.token), h);
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (421, "wrong_host"),
            "Host {h}"
        );
    }
    let port = srv.addr.port();
    assert_eq!(
        srv.raw(
            "GET",
            &path,
            None,
            Some(&srv.token),
            &format!("localhost:{port}")
        )
        .status,
        200
    );

    // The token file is the owner's alone; a rotation takes effect on the running server.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(hq.home.join("api.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let new = hq.ok(&["token", "--rotate"]).trim().to_string();
    assert_ne!(new, srv.token);
    assert_eq!(
        hq.ok(&["token"]).trim(),
        new,
        "`ferry token` prints the current one"
    );
    assert_eq!(
        srv.raw("GET", &path, None, Some(&srv.token), &host).status,
        401
    );
    assert_eq!(srv.raw("GET", &path, None, Some(&new), &host).status, 200);

    // Beyond loopback: refused at start, with what to do.
    let (_, err) = hq.fails(&["serve", "--bind", "0.0.0.0:0"]);
    assert!(
        err.contains("--allow-remote") && err.contains("--bind 127.0.0.1"),
        "{err}"
    );
    // A port in use: said plainly.
    let (_, err) = hq.fails(&["serve", "--bind", &host]);
    assert!(err.contains("cannot listen on"), "{err}");
}

/// Reads Server-Sent Events from `conn` until `want` change events came (or the time is up).
fn read_events(conn: &mut BufReader<TcpStream>, want: usize) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let (mut id, mut data) = (String::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.len() < want && Instant::now() < deadline {
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if let Some(v) = line
            .strip_prefix("id: ")
            .or_else(|| line.strip_prefix("id:"))
        {
            id = v.to_string();
        } else if let Some(v) = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
        {
            data = v.to_string();
        } else if line.is_empty() && !data.is_empty() {
            events.push((
                std::mem::take(&mut id),
                serde_json::from_str(&data).unwrap(),
            ));
            data.clear();
        }
    }
    events
}

#[test]
fn the_feed_carries_local_writes_and_changes_from_other_laptops_by_long_poll_and_sse() {
    let tmp = tempfile::tempdir().unwrap();
    let (hq, a, _b) = three(tmp.path());
    let stick = tmp.path().join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let srv = start(&a);
    let now = srv.call("GET", "/v1/changes?since=now", None).json();
    assert_eq!(now["changes"], json!([]));
    let c0 = now["next"].as_str().unwrap().to_string();

    // Long-poll: waits, and returns when a change from HQ arrives by a stick that a
    // command in a terminal imports on the same home.
    let poll = {
        let (api, c0) = (srv.api.clone(), c0.clone());
        std::thread::spawn(move || {
            let r = api.call("GET", &format!("/v1/changes?since={c0}&wait=30"), None);
            (r.status, r.json())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    hq.ok(&["put", "visits", "v-7", "village=Kibera", "age=7"]);
    hq.ok(&["sync", s(&stick)]);
    a.ok(&["sync", s(&stick)]);
    let (status, page) = poll.join().unwrap();
    assert_eq!(status, 200);
    let got: Vec<_> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["collection"] == "visits")
        .collect();
    assert_eq!(got.len(), 1, "{page}");
    assert_eq!(got[0]["id"], "v-7");
    assert_eq!(got[0]["author"], "hq");
    assert_eq!(got[0]["record"], json!({"village": "Kibera", "age": 7}));
    let c1 = page["next"].as_str().unwrap().to_string();
    // Nothing new after it: an immediate poll is empty, and its cursor is the same.
    let again = srv
        .call("GET", &format!("/v1/changes?since={c1}"), None)
        .json();
    assert_eq!(again["changes"], json!([]), "no change told twice");

    // SSE from c1: a local write through the API, then HQ's edit and delete by stick (the
    // server's own sync route this time).
    let mut conn = TcpStream::connect(srv.addr).unwrap();
    write!(conn, "GET /v1/changes?since={c1} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n", srv.addr, srv.token).unwrap();
    let mut conn = BufReader::new(conn);
    let r = srv.call(
        "PUT",
        &format!("{REC}/v-8"),
        Some(&json!({"village": "Kisumu"})),
    );
    assert_eq!(r.status, 200);
    let first = read_events(&mut conn, 1);
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].1["id"].clone(), first[0].1["author"].clone()),
        (json!("v-8"), json!("clinic-a"))
    );
    hq.ok(&["put", "visits", "v-7", "age=8"]);
    hq.ok(&["delete", "visits", "v-7"]);
    hq.ok(&["sync", s(&stick)]);
    let r = srv.call("POST", "/v1/sync", Some(&json!({"folder": s(&stick)})));
    assert_eq!(r.status, 200, "{}", r.body);
    let more = read_events(&mut conn, 2);
    let seen: Vec<(String, bool)> = more
        .iter()
        .filter(|(_, e)| e["collection"] == "visits")
        .map(|(_, e)| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("v-7".to_string(), false), ("v-7".to_string(), true)],
        "{more:?}"
    );
    assert_eq!(
        more[1].1["record"],
        Value::Null,
        "a deleted record shows null"
    );
    // Each event's id is a cursor: resuming from the last one misses nothing and repeats
    // nothing.
    let last = &more.last().unwrap().0;
    assert_eq!(more.last().unwrap().1["cursor"], json!(last));
    let resumed = srv
        .call("GET", &format!("/v1/changes?since={last}"), None)
        .json();
    assert_eq!(resumed["changes"], json!([]));
    let from_first = srv
        .call("GET", &format!("/v1/changes?since={}", first[0].0), None)
        .json();
    let ids: Vec<_> = from_first["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["collection"] == "visits")
        .map(|c| (c["id"].clone(), c["deleted"].clone()))
        .collect();
    assert_eq!(
        ids,
        [(json!("v-7"), json!(false)), (json!("v-7"), json!(true))]
    );

    // A cursor that is not one is refused, saying what to give.
    for bad in ["abc", "1.0", "1.2-1.3", "-", "1.2.3"] {
        let r = srv.call("GET", &format!("/v1/changes?since={bad}"), None);
        assert_eq!(r.status, 400, "since={bad}: {}", r.body);
    }
}

#[test]
fn a_stick_that_appears_in_a_watched_folder_is_synced_at_once_and_said_safe_to_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let (hq, a, _b) = three(tmp.path());
    let media = tmp.path().join("media");
    std::fs::create_dir_all(media.join("not-a-stick")).unwrap();
    // A watched folder that is not there is refused at start, by name.
    let (_, err) = a.fails(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--watch",
        s(&media.join("nope")),
    ]);
    assert!(err.contains("--watch") && err.contains("nope"), "{err}");
    let mut srv = start_with(&a, &["--watch", s(&media)]);
    // So is a folder to sync with that is not there: named, and no run is made of it.
    let r = srv.call(
        "POST",
        "/v1/sync",
        Some(&json!({"folder": s(&media.join("nope"))})),
    );
    assert_eq!(
        (r.status, error_code(&r)),
        (400, "bad_request".to_string()),
        "{}",
        r.body
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
    assert_eq!(srv.call("GET", "/v1/runs", None).json()["runs"], json!([]));
    // HQ writes on a stick elsewhere; then the stick "is mounted" under the watched folder.
    let stick = tmp.path().join("usb");
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["put", "visits", "v-1", "village=Kibera"]);
    hq.ok(&["sync", s(&stick)]);
    a.ok(&["put", "visits", "v-2", "village=Kisumu"]);
    std::fs::rename(&stick, media.join("usb")).unwrap();
    let mut said = Vec::new();
    while !said.iter().any(|l: &String| l.contains("safe to remove")) {
        let mut line = String::new();
        assert!(
            srv.out.read_line(&mut line).unwrap() > 0,
            "server ended: {said:?}"
        );
        said.push(line.trim().to_string());
    }
    let appeared = said
        .iter()
        .position(|l| l.contains("appeared: syncing, do not remove it yet"));
    assert!(
        appeared.is_some_and(|i| i + 1 < said.len()),
        "said before the sync ended: {said:?}"
    );
    assert!(
        said.last()
            .unwrap()
            .contains(&format!("synced {}", s(&media.join("usb")))),
        "{said:?}"
    );
    // HQ's record arrived, and clinic-a's was written on the stick for the others.
    let got = srv.call("GET", &format!("{REC}/v-1"), None);
    assert_eq!(got.json(), json!({"village": "Kibera"}));
    let runs = srv.call("GET", "/v1/runs", None).json();
    let run = &runs["runs"][0];
    assert_eq!(
        (
            run["by"].clone(),
            run["ok"].clone(),
            run["safe_to_remove"].clone()
        ),
        (json!("watch"), json!(true), json!(true)),
        "{runs}"
    );
    assert!(
        run["records_in"].as_u64().unwrap() >= 1 && run["wrote_changes"].as_u64().unwrap() >= 1,
        "{run}"
    );
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "the folder without ferry/ is left alone"
    );
    hq.ok(&["sync", s(&media.join("usb"))]);
    assert!(hq.list("visits").contains("Kisumu"));
    // Still there a second later: not synced again. Taken out and back: synced again.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        srv.call("GET", "/v1/runs", None).json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    std::fs::rename(media.join("usb"), tmp.path().join("usb")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::rename(tmp.path().join("usb"), media.join("usb")).unwrap();
    let mut line = String::new();
    while !line.contains("safe to remove") {
        line.clear();
        assert!(srv.out.read_line(&mut line).unwrap() > 0);
    }
    assert_eq!(
        srv.call("GET", "/v1/runs", None).json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Stopped and started again: the runs are still listed, newest first.
    let before = srv.call("GET", "/v1/runs", None).json();
    drop(srv);
    let srv = start(&a);
    assert_eq!(srv.call("GET", "/v1/runs", None).json(), before);
    drop(srv);
    // A watched folder that is not one: refused at start.
    let (_, err) = a.fails(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--watch",
        s(&tmp.path().join("nowhere")),
    ]);
    assert!(err.contains("nowhere"), "{err}");
}

/// A minimal W3C WebDriver client over chromedriver (raw HTTP/1.1 with JSON).
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start(profile: &std::path::Path) -> Browser {
        for prog in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(prog).exists(),
                "{prog} is missing: run tests/run as root (it installs chromium and chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
        };
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display()), "--window-size=412,915"]}}}});
        let r = b.call("POST", "/session", Some(&caps));
        b.session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        // One write: chromedriver resets a connection whose request arrives in pieces.
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        conn.write_all(request.as_bytes()).unwrap();
        // chromedriver keeps the connection open despite `Connection: close`: read the
        // head, then exactly the body its length announces.
        let mut reader = BufReader::new(conn);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let lower = head.to_ascii_lowercase();
        let rest = if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
        {
            let mut body = vec![0; len.trim().parse().unwrap()];
            reader.read_exact(&mut body).unwrap();
            String::from_utf8(body).unwrap()
        } else {
            let mut raw = String::new();
            reader.read_to_string(&mut raw).unwrap();
            if lower.contains("transfer-encoding: chunked") {
                dechunk(&raw)
            } else {
                raw
            }
        };
        serde_json::from_str(&rest).unwrap_or(Value::Null)
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(&json!({"url": url})));
    }

    /// Runs a script in the page and returns its value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(&json!({"script": script, "args": []})),
        )["value"]
            .clone()
    }

    /// Waits until `script` returns something truthy (a page that refreshes on its own).
    fn wait_for(&self, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed: {script}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn click(&self, css: &str) {
        let found = self.call(
            "POST",
            &self.s("/element"),
            Some(&json!({"using": "css selector", "value": css})),
        );
        let id = found["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string();
        let r = self.call(
            "POST",
            &self.s(&format!("/element/{id}/click")),
            Some(&json!({})),
        );
        assert!(r["value"].is_null(), "click {css}: {r}");
    }
}

#[test]
#[ignore = "needs chromium and chromium-driver — run tests/run"]
fn staff_resolve_a_conflict_on_the_status_page_in_a_real_browser_and_it_reaches_another_laptop() {
    let tmp = tempfile::tempdir().unwrap();
    let (hq, a, b) = three(tmp.path());
    let stick = tmp.path().join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    // The same visit edited on two clinics at once: a conflict on clinic-a.
    a.ok(&["put", "visits", "v-9", "weight_kg=61.5"]);
    crate::util::exchange(&[&a, &b], &stick);
    a.ok(&["put", "visits", "v-9", "weight_kg=61.8"]);
    b.ok(&["put", "visits", "v-9", "weight_kg=62.0"]);
    // A value written to look like markup, from another laptop: shown as text, never run.
    b.ok(&[
        "put",
        "visits",
        "v-10",
        "note=<img src=x onerror=\"document.title='pwned'\">",
    ]);
    b.ok(&["sync", s(&stick)]);
    a.ok(&["sync", s(&stick)]);
    assert_eq!(crate::util::conflicts(&a).as_array().unwrap().len(), 1);

    let srv = start(&a);
    let browser = Browser::start(&tmp.path().join("profile"));
    // Without the link: the page says how to open it, and the API refuses the browser.
    browser.go(&format!("http://{}/", srv.addr));
    let text = browser.wait_for("return document.body && document.body.innerText");
    assert!(text.as_str().unwrap().contains("ferry page"), "{text}");
    let link = a.ok(&["page"]).trim().to_string();
    assert!(
        link.starts_with(&format!("http://{}/login?key=", srv.addr)),
        "{link}"
    );
    browser.go(&link);
    let summary = browser
        .wait_for("const e = document.getElementById('summary-line'); return e && e.innerText");
    assert!(
        summary
            .as_str()
            .unwrap()
            .contains("not received everything")
            || summary.as_str().unwrap().contains("up to date"),
        "{summary}"
    );
    // The conflict shows with a button per value; staff click the one to keep.
    browser.wait_for("return document.querySelectorAll('.conflict button.choose').length === 2");
    browser.click(".conflict button.choose[data-value='62']");
    browser.wait_for("return document.querySelectorAll('.conflict').length === 0");
    assert_eq!(crate::util::conflicts(&a), json!([]));
    let got: Value = serde_json::from_str(&a.ok(&["get", "visits", "v-9", "--json"])).unwrap();
    assert_eq!(got["weight_kg"], json!(62.0));
    // The markup stayed text.
    browser.wait_for("return document.getElementById('records').innerText.includes('onerror')");
    assert_ne!(browser.eval("return document.title"), json!("pwned"));
    assert_eq!(
        browser.eval("return document.querySelectorAll('#records img').length"),
        json!(0)
    );
    // The same link does not open the page twice.
    let r = srv.raw(
        "GET",
        &link.replace(&format!("http://{}", srv.addr), ""),
        None,
        None,
        &srv.addr.to_string(),
    );
    assert_eq!(r.status, 403);
    // The page's own session cannot write without its CSRF header (another tab's form).
    let cookie = browser.call("GET", &browser.s("/cookie/ferry_session"), None)["value"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conn = TcpStream::connect(srv.addr).unwrap();
    let body =
        json!({"collection": "visits", "id": "v-9", "field": "weight_kg", "value": 1}).to_string();
    write!(conn, "POST /v1/conflicts/resolve HTTP/1.1\r\nHost: {}\r\nCookie: ferry_session={cookie}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", srv.addr, body.len()).unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    // The choice reaches the other clinic by the stick.
    a.ok(&["sync", s(&stick)]);
    b.ok(&["sync", s(&stick)]);
    let on_b: Value = serde_json::from_str(&b.ok(&["get", "visits", "v-9", "--json"])).unwrap();
    assert_eq!(on_b["weight_kg"], json!(62.0));
    assert_eq!(crate::util::conflicts(&b), json!([]));
    drop(hq);
}

#[test]
fn the_python_example_app_writes_through_the_api_and_prints_another_laptops_changes() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../serve/examples/clinic_app.py");
    let tmp = tempfile::tempdir().unwrap();
    let (_hq, a, b) = three(tmp.path());
    let stick = tmp.path().join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    b.ok(&["put", "visits", "v-60", "village=Obunga"]);
    crate::util::exchange(&[&a, &b], &stick);
    let srv = start(&a);
    let mut app = std::process::Command::new("python3")
        .arg(&script)
        .args(["--url", &format!("http://{}", srv.addr), "--changes", "2"])
        .args([
            "--visit",
            "v-50",
            "village=Kibera",
            "age=34",
            "weight_kg=61.5",
        ])
        .env("FERRY_TOKEN", &srv.token)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is installed by tests/run");
    let mut out = BufReader::new(app.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "saved visit v-50");
    // The app's record is in ferry, with its kinds: an integer, a float, a text.
    assert_eq!(
        srv.call("GET", &format!("{REC}/v-50"), None).json(),
        json!({"age": 34, "village": "Kibera", "weight_kg": 61.5})
    );
    // clinic-b edits and deletes; the stick reaches clinic-a, imported by the CLI.
    b.ok(&["put", "visits", "v-61", "village=Kisumu", "age=41"]);
    b.ok(&["delete", "visits", "v-60"]);
    b.ok(&["sync", s(&stick)]);
    a.ok(&["sync", s(&stick)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = app.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = app.kill();
            panic!("the example app never printed two changes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest.lines().collect::<Vec<_>>(),
        [
            "from clinic-b: visits/v-61 {\"age\": 41, \"village\": \"Kisumu\"}",
            "from clinic-b: visits/v-60 deleted",
        ]
    );
}

#[test]
fn ferry_page_gives_a_one_time_link_only_while_the_server_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let hq = Laptop::new(tmp.path(), "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let (_, err) = hq.fails(&["page"]);
    assert!(err.contains("has not run on this home yet"), "{err}");
    let srv = start(&hq);
    let links: Vec<String> = (0..2)
        .map(|_| hq.ok(&["page"]).trim().to_string())
        .collect();
    assert_ne!(links[0], links[1]);
    let host = srv.addr.to_string();
    let path = |l: &str| l.replace(&format!("http://{host}"), "");
    // A made-up key opens nothing; each real one opens the page once.
    let forged = path(&links[0]).replace("key=", "key=00");
    assert_eq!(srv.raw("GET", &forged, None, None, &host).status, 403);
    assert_eq!(
        srv.raw("GET", &path(&links[1]), None, None, &host).status,
        303
    );
    assert_eq!(
        srv.raw("GET", &path(&links[1]), None, None, &host).status,
        403
    );
    assert_eq!(
        srv.raw("GET", &path(&links[0]), None, None, &host).status,
        303
    );
    // Without a session, the page itself says how to open it.
    let r = srv.raw("GET", "/", None, None, &host);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("ferry page"), "{}", r.body);
    drop(srv);
    let (_, err) = hq.fails(&["page"]);
    assert!(err.contains("ferry serve is not running"), "{err}");
}

/// `ferry serve --install` writes a systemd user unit for this home and these options, and
/// the command the unit runs really serves this home (systemd itself is not run here).
#[test]
fn ferry_serve_install_writes_a_unit_whose_command_serves_this_home() {
    let tmp = tempfile::tempdir().unwrap();
    let (_hq, a, _b) = three(tmp.path());
    let media = tmp.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let config = tmp.path().join("config");
    let out = a
        .cmd(&[
            "serve",
            "--install",
            "--bind",
            "127.0.0.1:0",
            "--watch",
            s(&media),
            "--email-every",
            "off",
        ])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = config.join("systemd/user/ferry-a.service");
    assert!(text.contains(&unit.display().to_string()), "{text}");
    assert!(
        text.contains("systemctl --user"),
        "says how to enable it: {text}"
    );
    let body = std::fs::read_to_string(&unit).unwrap();
    let exec = body
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let words: Vec<&str> = exec.split(' ').collect();
    assert_eq!(words[0], crate::util::ferry_bin());
    assert!(
        exec.contains(&format!("--home {}", a.home.display())),
        "{exec}"
    );
    assert!(
        exec.contains(&format!("--watch {}", media.display())),
        "{exec}"
    );
    assert!(
        exec.contains("--email-every off") && !exec.contains("--install"),
        "{exec}"
    );
    // Installing again with the same options changes nothing, and says so.
    let again = a
        .cmd(&[
            "serve",
            "--install",
            "--bind",
            "127.0.0.1:0",
            "--watch",
            s(&media),
            "--email-every",
            "off",
        ])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("unchanged:"));
    // What systemd would start: the server for this home.
    let mut child = std::process::Command::new(words[0])
        .args(&words[1..])
        .env_remove("FERRY_HOME")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("ferry serve: listening on http://127.0.0.1:"),
        "{first}"
    );
    // No node, no unit.
    let out = crate::util::Laptop::new(tmp.path(), "nobody")
        .cmd(&["serve", "--install"])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ferry init"));
}

/// One HTTPS request to `port` on 127.0.0.1, trusting only `ca` (PEM): the status line and
/// headers, and the body.
fn https(port: u16, ca: &str, req: &str) -> (String, String) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // A server that closes without close_notify is an error for rustls; what came is kept.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

/// Beyond loopback only with the explicit flag and HTTPS (ferry's one listener policy);
/// then the API answers over TLS to the token alone, the page's cookie is `Secure`, and
/// plain HTTP gets nothing.
#[test]
fn ferry_serve_beyond_loopback_only_with_allow_remote_and_https_and_then_only_with_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (_hq, a, _b) = three(tmp.path());
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();

    // Refused: no TLS; TLS without the explicit yes; a broken certificate.
    let (_, err) = a.fails(&["serve", "--bind", "0.0.0.0:0", "--allow-remote"]);
    assert!(
        err.contains("--tls-cert") && err.contains("0.0.0.0:0"),
        "{err}"
    );
    let (_, err) = a.fails(&[
        "serve",
        "--bind",
        "0.0.0.0:0",
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
    ]);
    assert!(err.contains("--allow-remote"), "{err}");
    let (_, err) = a.fails(&[
        "serve",
        "--bind",
        "0.0.0.0:0",
        "--allow-remote",
        "--tls-cert",
        s(&key),
        "--tls-key",
        s(&key),
    ]);
    assert!(
        err.contains("--tls-cert") && err.contains("key.pem"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let mut child = a
        .cmd(&[
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--allow-remote",
            "--tls-cert",
            s(&cert),
            "--tls-key",
            s(&key),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port: u16 = first
        .trim()
        .strip_prefix("ferry serve: listening on https://127.0.0.1:")
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    let token = a.ok(&["token"]).trim().to_string();
    let ca = ck.cert.pem();
    let get = |path: &str, auth: Option<&str>, host: &str| {
        let auth = auth
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        https(
            port,
            &ca,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"),
        )
    };
    let (head, body) = get("/v1/status", Some(&token), "clinic-a.lan:443");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("records"), "{body}");
    let (head, _) = get("/v1/status", None, "localhost");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = get("/v1/status", Some("not-the-token-0123456789"), "localhost");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // The page's one-time link is https and its cookie Secure.
    let link = a.ok(&["page"]);
    let path = link
        .trim()
        .strip_prefix(&format!("https://127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("{link}"));
    let (head, _) = get(path, None, "localhost");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP to the same port: no answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(12)))
        .unwrap();
    // The server may close before the request is even written (it is no TLS hello): fine.
    let _ = write!(
        plain,
        "GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("records"),
        "{got:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
