//! The OpenAPI 3.1 description `GET /v1/openapi.json` serves. A test checks that every
//! route the router has is described here and that every path described answers.

use serde_json::{Value, json};

/// The routes as (method, path) — what the router serves under `/v1`.
#[cfg(test)]
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/openapi.json"),
    ("get", "/v1/status"),
    ("get", "/v1/members"),
    ("get", "/v1/collections"),
    ("get", "/v1/collections/{collection}/records"),
    ("get", "/v1/collections/{collection}/records/{id}"),
    ("put", "/v1/collections/{collection}/records/{id}"),
    ("patch", "/v1/collections/{collection}/records/{id}"),
    ("delete", "/v1/collections/{collection}/records/{id}"),
    ("post", "/v1/batch"),
    ("get", "/v1/changes"),
    ("get", "/v1/conflicts"),
    ("post", "/v1/conflicts/resolve"),
    ("post", "/v1/sync"),
    ("get", "/v1/runs"),
];

fn error_responses() -> Value {
    json!({
        "400": { "$ref": "#/components/responses/Error" },
        "401": { "$ref": "#/components/responses/Error" },
        "404": { "$ref": "#/components/responses/Error" },
    })
}

fn op(summary: &str, extra: Value) -> Value {
    let mut o = json!({ "summary": summary, "responses": error_responses() });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "responses" {
                if let (Some(r), Some(v)) = (o["responses"].as_object_mut(), v.as_object()) {
                    r.extend(v.clone());
                }
            } else {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    o
}

fn ok(schema: Value) -> Value {
    json!({ "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": schema } } } } })
}

/// The document.
pub(crate) fn document() -> Value {
    let coll = json!({ "name": "collection", "in": "path", "required": true, "schema": { "type": "string" } });
    let id =
        json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } });
    let record_body = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Fields" } } } });
    let written = json!({ "type": "object", "properties": {
        "id": { "type": "string" },
        "fields": { "$ref": "#/components/schemas/Fields" },
        "changed": { "type": "integer", "description": "fields this write changed (0: it changed nothing and made no change to send)" } } });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ferry local API",
            "version": "1",
            "description": "The API `ferry serve` offers the apps on this computer. Every request carries `Authorization: Bearer TOKEN` (`ferry token` prints it). Values are JSON as `ferry get --json` prints them: integers stay integers, floats keep a fraction, bytes are {\"$base64\": \"…\"}, a set field is a list of texts; a field showing null is left out of a record."
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/openapi.json": { "get": op("This description", ok(json!({ "type": "object" }))) },
            "/v1/status": { "get": op("What ferry status tells: members, what waits, quarantine, conflicts", ok(json!({ "type": "object" }))) },
            "/v1/members": { "get": op("The members and what each holds", ok(json!({ "type": "object" }))) },
            "/v1/collections": { "get": op("Collections with their number of live records", ok(json!({ "type": "object", "properties": { "collections": { "type": "array", "items": { "type": "object", "properties": { "name": { "type": "string" }, "records": { "type": "integer" } } } } } }))) },
            "/v1/collections/{collection}/records": { "get": op("A page of live records in id order", json!({
                "parameters": [coll,
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "after", "in": "query", "description": "the `next` of the page before", "schema": { "type": "string" } },
                    { "name": "where.FIELD", "in": "query", "description": "only records whose FIELD shows this value (written as on the command line: 34 is a number, Kisumu a text); several are all required", "schema": { "type": "string" } }],
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": {
                    "records": { "type": "array", "items": { "type": "object", "properties": { "id": { "type": "string" }, "fields": { "$ref": "#/components/schemas/Fields" } } } },
                    "next": { "type": ["string", "null"], "description": "give as `after` for the next page; null on the last" },
                    "cursor": { "type": "string", "description": "the changes feed's cursor when this page was read: follow /v1/changes from it to miss nothing" } } } } } } }
            })) },
            "/v1/collections/{collection}/records/{id}": {
                "get": op("One record: field → value", json!({ "parameters": [coll, id], "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Fields" } } } } } })),
                "put": op("The record becomes exactly these fields (others are cleared; the record is created if new)", json!({ "parameters": [coll, id], "requestBody": record_body, "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": written } } } } })),
                "patch": op("Sets only these fields (null clears one)", json!({ "parameters": [coll, id], "requestBody": record_body, "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": written } } } } })),
                "delete": op("Deletes the record", json!({ "parameters": [coll, id], "responses": { "204": { "description": "Deleted" } } }))
            },
            "/v1/batch": { "post": op("Writes several records in one change: all or nothing", json!({
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["writes"], "properties": { "writes": { "type": "array", "items": {
                    "type": "object", "required": ["op", "collection", "id"], "properties": {
                        "op": { "enum": ["put", "patch", "delete"] }, "collection": { "type": "string" }, "id": { "type": "string" }, "fields": { "$ref": "#/components/schemas/Fields" } } } } } } } } },
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": { "written": { "type": "integer" }, "changed": { "type": "array", "items": { "type": "integer" } } } } } } } }
            })) },
            "/v1/changes": { "get": op("Changes after a cursor: local writes and changes from other laptops. With Accept: text/event-stream, Server-Sent Events (event `change`, id = the cursor after it)", json!({
                "parameters": [
                    { "name": "since", "in": "query", "description": "a cursor (`next`, an event id, a list's `cursor`), `now`, or 0 / absent for everything held", "schema": { "type": "string" } },
                    { "name": "wait", "in": "query", "description": "seconds to wait for a change when there is none yet (long-poll, at most 60)", "schema": { "type": "number" } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "default": 500 } }],
                "responses": {
                    "200": { "description": "OK", "content": {
                        "application/json": { "schema": { "type": "object", "properties": { "changes": { "type": "array", "items": { "$ref": "#/components/schemas/Change" } }, "next": { "type": "string" }, "more": { "type": "boolean" } } } },
                        "text/event-stream": { "schema": { "type": "string" } } } },
                    "410": { "$ref": "#/components/responses/Error" } }
            })) },
            "/v1/conflicts": { "get": op("Fields with concurrent values, each with every value", ok(json!({ "type": "object" }))) },
            "/v1/conflicts/resolve": { "post": op("Chooses the value a conflicted field shows", json!({
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["collection", "id", "field", "value"], "properties": { "collection": { "type": "string" }, "id": { "type": "string" }, "field": { "type": "string" }, "value": {} } } } } },
                "responses": { "204": { "description": "Resolved" } } })) },
            "/v1/sync": { "post": op("Syncs now with a folder (a stick: imports its bundles, writes this laptop's) or by a transport (email: receive then send; sms: the same; serial: one exchange with the station at the other end); answers the run (422 when it failed)", json!({
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "folder": { "type": "string" }, "transport": { "enum": ["email", "sms", "serial"] } } } } } },
                "responses": { "200": { "description": "The run", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Run" } } } } } })) },
            "/v1/runs": { "get": op("The latest sync runs, newest first: by a watched folder (a stick plugged in), by the schedule (email, SMS), by a serial device that appeared, or by this API", ok(json!({ "type": "object", "properties": { "runs": { "type": "array", "items": { "$ref": "#/components/schemas/Run" } } } }))) }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Fields": { "type": "object", "description": "field → value", "additionalProperties": {} },
                "Change": { "type": "object", "properties": {
                    "collection": { "type": "string" }, "id": { "type": "string" }, "deleted": { "type": "boolean" },
                    "author": { "type": "string", "description": "the label of the laptop that made it" }, "member": { "type": "integer" }, "seq": { "type": "integer" },
                    "at": { "type": "string" }, "record": { "description": "the record as it shows now; null once deleted" },
                    "cursor": { "type": "string", "description": "the feed's cursor right after this change" } } },
                "Run": { "type": "object", "properties": {
                    "at": { "type": "string" }, "took_ms": { "type": "integer" }, "transport": { "type": "string" }, "target": { "type": "string" },
                    "by": { "enum": ["watch", "schedule", "device", "api"] }, "ok": { "type": "boolean" }, "applied": { "type": "integer" }, "records_in": { "type": "integer" },
                    "refused": { "type": "integer" }, "wrote_bytes": { "type": ["integer", "null"] }, "wrote_changes": { "type": ["integer", "null"] },
                    "error": { "type": ["string", "null"] }, "safe_to_remove": { "type": "boolean" },
                    "next_in_s": { "type": ["integer", "null"], "description": "on a schedule: seconds to the next run (longer after failures)" },
                    "sent": { "type": ["string", "null"], "description": "email, SMS, radio: what was sent" }, "summary": { "type": "string" } } },
                "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": { "code": { "type": "string" }, "message": { "type": "string" } } } } }
            },
            "responses": { "Error": { "description": "What went wrong and what to do", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut described = Vec::new();
        for (p, ops) in paths {
            for m in ops.as_object().unwrap().keys() {
                described.push((m.clone(), p.clone()));
            }
        }
        described.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(described, routes);
    }
}
