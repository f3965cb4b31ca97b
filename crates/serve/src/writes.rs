//! Group commit for single-record writes: a PUT, PATCH or DELETE does not take the node for
//! itself but queues its write; one task takes every write waiting (at most [`MAX_GROUP`],
//! one per record) and saves them as one change in one SQLite transaction, then answers each
//! request. Under one client nothing waits longer than before; under many, one commit (and
//! one fsync) serves all of them instead of one each.
//!
//! Each request still gets its own answer: a write refused (a field's rule, an unknown
//! record) is answered with its reason and left out, and the others are saved without it,
//! exactly as if each had been written alone. Only a failure to save the change (the store)
//! is everyone's, and every request of the group is told.

use crate::Shared;
use crate::error::ApiError;
use ferry_node::{Node, RecordWrite};
use serde_json::{Map, Value as Json, json};
use std::collections::{HashSet, VecDeque};
use tokio::sync::{mpsc, oneshot};

/// The most writes saved in one change.
pub(crate) const MAX_GROUP: usize = 512;

/// The most writes waiting; a request beyond waits to be queued.
pub(crate) const MAX_WAITING: usize = 4096;

/// A write waiting for its group, and where its answer goes.
pub(crate) struct Job {
    pub(crate) write: RecordWrite,
    pub(crate) answer: oneshot::Sender<Result<Json, ApiError>>,
}

fn target(w: &RecordWrite) -> (&str, &str) {
    match w {
        RecordWrite::Replace { collection, id, .. }
        | RecordWrite::Merge { collection, id, .. }
        | RecordWrite::Delete { collection, id } => (collection, id),
    }
}

/// Queues one write and waits for its answer: the record as it now shows and how many
/// fields changed (`null` for a delete).
pub(crate) async fn write(s: &Shared, write: RecordWrite) -> Result<Json, ApiError> {
    let (answer, rx) = oneshot::channel();
    s.writes
        .send(Job { write, answer })
        .await
        .map_err(|_| ApiError::internal("the server is stopping"))?;
    rx.await
        .map_err(|_| ApiError::internal("the write was not answered (the server is stopping)"))?
}

/// The task that saves queued writes in groups, until every sender is gone.
pub(crate) async fn group_writer(s: Shared, mut rx: mpsc::Receiver<Job>) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match rx.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while let Ok(job) = rx.try_recv() {
            waiting.push_back(job);
        }
        // One write per record in a group; a second write of the same record waits for the
        // next group, so it sees the first one's result.
        let mut group = Vec::new();
        let mut rest = VecDeque::new();
        let mut records = HashSet::new();
        while let Some(job) = waiting.pop_front() {
            let (c, id) = target(&job.write);
            if group.len() < MAX_GROUP && records.insert((c.to_string(), id.to_string())) {
                group.push(job);
            } else {
                rest.push_back(job);
            }
        }
        waiting = rest;
        // The jobs' answers are sent from inside; if the work itself was lost, the dropped
        // senders tell each request.
        let _ = s.with_node(move |n| save_group(n, group)).await;
    }
}

/// Saves a group as one change, leaving out (and answering) each write that is refused.
fn save_group(n: &mut Node, mut jobs: Vec<Job>) {
    while !jobs.is_empty() {
        let writes: Vec<RecordWrite> = jobs.iter().map(|j| j.write.clone()).collect();
        match n.write_records(&writes) {
            Ok(counts) => {
                for (job, changed) in jobs.into_iter().zip(counts) {
                    let answer = answer(n, &job.write, changed);
                    let _ = job.answer.send(answer);
                }
                return;
            }
            Err(e) if e.saving => {
                let e = ApiError::from(*e.source);
                for job in jobs {
                    let _ = job.answer.send(Err(e.clone()));
                }
                return;
            }
            Err(e) => {
                let job = jobs.remove(e.index.min(jobs.len() - 1));
                let _ = job.answer.send(Err(ApiError::from(*e.source)));
            }
        }
    }
}

/// What a saved write answers: the record as it shows now.
fn answer(n: &mut Node, w: &RecordWrite, changed: usize) -> Result<Json, ApiError> {
    let (c, id) = target(w);
    if matches!(w, RecordWrite::Delete { .. }) {
        return Ok(Json::Null);
    }
    let fields = match n.get(c, id)?.filter(|r| r.is_live()) {
        Some(state) => crate::api::record_json(n, c, &state)?,
        None => Json::Object(Map::new()),
    };
    Ok(json!({ "id": id, "fields": fields, "changed": changed }))
}
