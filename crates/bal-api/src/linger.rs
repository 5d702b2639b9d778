//! A bounded lingering close: an answer given before the request body was read (a 401 to an
//! upload without a token, a 413, a 403) reaches the client.
//!
//! A client such as Python's `requests` sends the whole body before it reads the answer. When
//! the server answers early and closes, the client is still writing: its kernel gets a reset,
//! and the client reports a broken connection (or, over TLS, an EOF "in violation of protocol")
//! instead of the 401 it was sent (seen: 20 of 20 unauthenticated 4 MB uploads; schemathesis
//! with a fresh seed). So after answering, the server reads and discards what is left of the
//! body, up to the route's body limit and for at most [`LINGER`]; a body declared larger than
//! that is not read at all. What it costs: an attacker can hold a connection for [`LINGER`]
//! and make the server read at most the body limit it could send to a handler anyway; the
//! server keeps no more than one frame of it in memory at a time.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::AppState;

/// How long the server goes on reading an unread body after its answer.
pub(crate) const LINGER: Duration = Duration::from_secs(5);

/// The request body, shared between the handler (which may read it) and the middleware (which
/// drains what the handler left).
type Shared = Arc<Mutex<Option<Body>>>;

struct SharedBody(Shared);

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        body.as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The middleware: runs the request, then drains what its handler left of the body.
pub(crate) async fn drain_unread(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = if request.uri().path() == "/api/measurements" {
        state.config.ingest_body_limit
    } else {
        state.config.body_limit
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client that asked `Expect: 100-continue` has sent no body yet: reading it would only
    // invite it to send one.
    let waits = request.headers().contains_key(header::EXPECT);
    let (parts, body) = request.into_parts();
    let shared: Shared = Arc::new(Mutex::new(Some(body)));
    let response = next
        .run(Request::from_parts(
            parts,
            Body::new(SharedBody(shared.clone())),
        ))
        .await;
    let left = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(body) = left
        && !body.is_end_stream()
        && !waits
        && declared.is_none_or(|n| n <= limit as u64)
    {
        drain(body, limit).await;
    }
    response
}

/// Reads and discards `body`, up to `limit` bytes and for at most [`LINGER`].
async fn drain(mut body: Body, limit: usize) {
    let mut read = 0usize;
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > limit {
                break;
            }
        }
    })
    .await;
}
