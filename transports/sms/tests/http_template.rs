//! The generic HTTP gateway's POST templates (JSON and form bodies, as Android SMS-gateway
//! apps and hosted providers take them) delivering straight to another node's listener,
//! which accepts the same JSON and form posts from such gateways.

use ferry_transport::Transport;
use ferry_transport_sms::{
    Accepted, Event, GatewayKind, HttpMethod, HttpTemplate, Listener, Peer, Phone, SmsConfig,
    SmsTransport,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

fn phone(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

fn exchange(content_type: &str, body: &str, headers: BTreeMap<String, String>) {
    let (a, b) = (phone("+15550001"), phone("+15550002"));
    let listener = Listener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/sms", listener.local_addr());
    let stop = listener.stopper();
    let state_b = tempfile::tempdir().unwrap();
    let mut cb = SmsConfig::new(GatewayKind::Kannel, b.clone());
    cb.sendsms_url = Some("http://127.0.0.1:9/unused".into());
    let mut rb = SmsTransport::open_with_password(cb, state_b.path(), None).unwrap();
    rb.set_peers([Peer::new(a.clone(), "a")]);
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        listener
            .run(&mut rb, |_, e| {
                if let Event::Received(acc) = e {
                    tx.send(acc).unwrap();
                }
            })
            .unwrap();
    });

    let mut ca = SmsConfig::new(GatewayKind::Http, a.clone());
    ca.username = Some("me".into());
    ca.template = Some(HttpTemplate {
        url,
        method: Some(HttpMethod::Post),
        body: Some(body.into()),
        content_type: Some(content_type.into()),
        headers,
        success_contains: Some("stored".into()),
    });
    let state_a = tempfile::tempdir().unwrap();
    let mut ta =
        SmsTransport::open_with_password(ca, state_a.path(), Some("s3cr\"t".into())).unwrap();
    let msg: Vec<u8> = (0..700u32).map(|i| (i * 13 % 256) as u8).collect();
    let r = ta.send_to(&b, "m", &msg).unwrap();
    assert_eq!((r.parts, r.sent_now), (6, 6));
    let mut completed = None;
    for _ in 0..r.parts {
        if let Accepted::Completed { message, .. } =
            rx.recv_timeout(Duration::from_secs(60)).unwrap()
        {
            completed = Some(message);
        }
    }
    stop.stop();
    server.join().unwrap();
    let id = completed.expect("the message completed").id;
    let mut rb = SmsTransport::open_with_password(
        {
            let mut c = SmsConfig::new(GatewayKind::Kannel, b);
            c.sendsms_url = Some("http://127.0.0.1:9/unused".into());
            c
        },
        state_b.path(),
        None,
    )
    .unwrap();
    let mut got = Vec::new();
    rb.open(&id).unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn a_json_template_posts_each_sms() {
    let mut headers = BTreeMap::new();
    headers.insert(
        "Authorization".to_string(),
        "Basic {username}:{password}".to_string(),
    );
    exchange(
        "application/json",
        r#"{"from": "{from}", "to": "{to}", "message": "{text}", "note": "pass {password}"}"#,
        headers,
    );
}

#[test]
fn a_form_template_posts_each_sms() {
    exchange(
        "application/x-www-form-urlencoded",
        "from={from}&to={to}&text={text}",
        BTreeMap::new(),
    );
}
