#!/usr/bin/env python3
"""A tiny clinic app on top of `ferry serve`, with Python's standard library only.

It records a visit through the local API, then prints every change that arrives -- from
this laptop's other programs and, above all, from other laptops by stick, mail, SMS or
radio -- as it arrives.

    ferry serve &
    python3 clinic_app.py --url http://127.0.0.1:7040 --visit v-2026-0000125 village=Kibera age=34

The token is read from $FERRY_TOKEN, else from `ferry token`. --changes N stops after N
changes from other laptops (otherwise it follows the feed until Ctrl-C).
"""
import argparse, json, os, subprocess, sys, urllib.error, urllib.request


def call(url, token, method, path, body=None, timeout=70):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:  # every refusal says what to fix
        sys.exit(f"{method} {path}: {e.code} {json.loads(e.read())['error']['message']}")


def value(text):
    try:
        return json.loads(text)  # 34 -> integer, 61.5 -> float, "x" -> text
    except ValueError:
        return text


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="http://127.0.0.1:7040")
    p.add_argument("--visit", nargs="+", metavar=("ID", "FIELD=VALUE"))
    p.add_argument("--changes", type=int, default=0)
    a = p.parse_args()
    token = os.environ.get("FERRY_TOKEN") or subprocess.run(
        ["ferry", "token"], check=True, capture_output=True, text=True).stdout.strip()
    me = call(a.url, token, "GET", "/v1/status")["label"]
    # Start following before writing, so nothing that arrives in between is missed.
    cursor = call(a.url, token, "GET", "/v1/changes?since=now")["next"]
    if a.visit:
        vid, *fields = a.visit
        record = {k: value(v) for k, v in (f.split("=", 1) for f in fields)}
        call(a.url, token, "PUT", f"/v1/collections/visits/records/{vid}", record)
        print(f"saved visit {vid}", flush=True)
    seen = 0
    while not a.changes or seen < a.changes:
        page = call(a.url, token, "GET", f"/v1/changes?since={cursor}&wait=60")
        for ch in page["changes"]:
            if ch["author"] != me:
                seen += 1
                shown = "deleted" if ch["record"] is None else json.dumps(ch["record"], sort_keys=True)
                print(f"from {ch['author']}: {ch['collection']}/{ch['id']} {shown}", flush=True)
        cursor = page["next"]


if __name__ == "__main__":
    main()
