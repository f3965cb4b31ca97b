//! The server's errors: [`ServeError`] for starting and running it, [`ApiError`] for one
//! request (a status and a JSON body that says what to fix).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_node::{ErrorKind, NodeError};
use std::net::SocketAddr;

/// Why `ferry serve` could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address reaches beyond this computer without the explicit flag and TLS.
    #[error(
        "{0} is reachable from other computers: ferry serve listens there only with --allow-remote and HTTPS (--tls-cert and --tls-key, PEM files); or give --bind 127.0.0.1:PORT"
    )]
    NotLoopback(SocketAddr),
    /// The address could not be listened on.
    #[error(
        "cannot listen on {0}: {1} (is another ferry serve or program using that port? choose another with --bind 127.0.0.1:PORT)"
    )]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the server's threads: {0}")]
    Runtime(#[source] std::io::Error),
    /// Serving failed.
    #[error("the server stopped: {0}")]
    Serve(#[source] std::io::Error),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A request's failure: its HTTP status, a stable code and a sentence for people.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        let (status, code) = match (&e, e.kind()) {
            (NodeError::NoRecord { .. } | NodeError::NoCollection { .. }, _) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            (NodeError::NoConflict { .. }, _) => (StatusCode::NOT_FOUND, "no_conflict"),
            (NodeError::FeedGone { .. }, _) => (StatusCode::GONE, "cursor_gone"),
            (_, ErrorKind::Usage | ErrorKind::Input) => (StatusCode::BAD_REQUEST, "bad_request"),
            (_, ErrorKind::State) => (StatusCode::CONFLICT, "refused"),
            (_, ErrorKind::Medium) => (StatusCode::UNPROCESSABLE_ENTITY, "medium"),
            (_, ErrorKind::Transport) => (StatusCode::BAD_GATEWAY, "transport"),
            (_, ErrorKind::Store) => (StatusCode::SERVICE_UNAVAILABLE, "store"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"ferry\""),
            );
        }
        resp
    }
}
