//! A local HTTP server that plays an LLM provider: scripted replies (status,
//! headers, body, delay) in order, or a handler function; every request recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// An error status with a body.
    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

#[derive(Clone)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    handler: Option<Arc<Handler>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests being answered now, and the most ever at once.
    in_flight: Arc<Mutex<(usize, usize)>>,
}

/// A running mock provider (stopped when dropped with its thread's runtime).
pub struct MockLlm {
    pub base_url: String,
    shared: Shared,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl MockLlm {
    /// Serves `replies` in order (a 599 when they run out).
    pub fn scripted(replies: Vec<Reply>) -> MockLlm {
        MockLlm::start(Shared {
            script: Arc::new(Mutex::new(replies.into())),
            handler: None,
            received: Arc::default(),
            in_flight: Arc::default(),
        })
    }

    /// Answers every request with `handler`.
    pub fn with_handler(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> MockLlm {
        MockLlm::start(Shared {
            script: Arc::default(),
            handler: Some(Arc::new(handler)),
            received: Arc::default(),
            in_flight: Arc::default(),
        })
    }

    fn start(shared: Shared) -> MockLlm {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("mock runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(serve).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        MockLlm {
            base_url: format!("http://{addr}"),
            shared,
            _shutdown: tx,
        }
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.in_flight.lock().unwrap().1
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }
}

async fn serve(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        path: uri.to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let reply = match &shared.handler {
        Some(h) => h(&received),
        None => shared
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Reply::status(599, "no more scripted replies")),
    };
    shared.received.lock().unwrap().push(received);
    {
        let mut f = shared.in_flight.lock().unwrap();
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    shared.in_flight.lock().unwrap().0 -= 1;
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        reply.body,
    )
        .into_response();
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    response
}
