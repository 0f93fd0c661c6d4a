//! The cloud providers against local mock servers that check what a real one checks:
//! Vertex AI (a service account's JWT verified with the key's public half), Azure OpenAI
//! (`api-key` at a deployment URL), Bedrock Converse (SigV4 recomputed here from AWS's
//! specification) and OpenAI-compatible hosts. No real network.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cbench_llm::prices::PriceTable;
use cbench_llm::providers::transport::RetryPolicy;
use cbench_llm::providers::{catalog, parse_spec, Credentials, ProviderOptions, Wire};
use cbench_llm::{
    resolve_with, AgentBrief, ChatMessage, Completion, CompletionRequest, LlmError, ModelError,
    Role, Setting, TokenUsage, ToolCall, ToolDefinition,
};
use ring::{digest, hmac, signature};
use serde_json::{json, Value};

// ---------------------------------------------------------------- mock server

/// A request the mock received, raw.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    /// Path and query exactly as sent (percent-encoding kept).
    target: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Handler = dyn Fn(&Seen) -> (u16, Value) + Send + Sync;

#[derive(Clone)]
struct Shared {
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A local HTTP server answering every request with `handler`, recording them all.
struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Mock {
    async fn start(handler: impl Fn(&Seen) -> (u16, Value) + Send + Sync + 'static) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a port");
        let addr = listener.local_addr().expect("address");
        let shared = Shared {
            handler: Arc::new(handler),
            seen: Arc::default(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Mock {
            base: format!("http://{addr}"),
            seen: shared.seen,
            _stop: tx,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, path_prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path().starts_with(path_prefix))
            .count()
    }
}

async fn serve(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        target: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        headers,
        body: body.to_vec(),
    };
    let (status, reply) = (shared.handler)(&seen);
    shared.seen.lock().unwrap().push(seen);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        reply.to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------- helpers

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_total_wait: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    }
}

fn options(vars: &[(&str, &str)]) -> ProviderOptions {
    ProviderOptions {
        api_base: None,
        retry: fast_retries(),
        max_connections: 4,
        prices: PriceTable::builtin(),
        credentials: Credentials::from_vars(vars),
        sampling: Default::default(),
    }
}

fn message(role: Role, content: &str) -> ChatMessage {
    ChatMessage {
        role,
        content: content.into(),
        tool_calls: Vec::new(),
        tool_call_id: None,
    }
}

/// A conversation with a system prompt, an earlier tool call and its result, and a tool.
fn request() -> CompletionRequest {
    let mut earlier = message(Role::Assistant, "Looking.");
    earlier.tool_calls.push(ToolCall {
        id: "call_1".into(),
        name: "bash".into(),
        arguments: r#"{"command":"pwd"}"#.into(),
    });
    let mut result = message(Role::Tool, "/repo");
    result.tool_call_id = Some("call_1".into());
    CompletionRequest {
        messages: vec![
            message(Role::System, "You are a careful engineer."),
            message(Role::User, "List the files."),
            earlier,
            result,
        ],
        tools: vec![ToolDefinition {
            name: "bash".into(),
            description: "Run a command.".into(),
            parameters_schema: r#"{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}"#.into(),
        }],
        options: Default::default(),
    }
}

fn brief() -> AgentBrief {
    AgentBrief {
        agent_id: "agent1".into(),
        teammates: Vec::new(),
        setting: Setting::Solo,
        features: Vec::new(),
        messaging_enabled: false,
        pair_key: String::new(),
    }
}

async fn complete(model: &str, options: &ProviderOptions) -> Result<Completion, LlmError> {
    let model = resolve_with(model, options).unwrap_or_else(|e| panic!("{model}: {e}"));
    model.session(&brief()).complete(&request()).await
}

fn build_error(model: &str, options: &ProviderOptions) -> String {
    match resolve_with(model, options) {
        Ok(_) => panic!("{model}: built without its credentials"),
        Err(e) => e.to_string(),
    }
}

fn cost_of(model: &str, usage: &TokenUsage) -> f64 {
    PriceTable::builtin()
        .lookup(model)
        .unwrap_or_else(|| panic!("{model} is priced"))
        .cost(usage)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `application/x-www-form-urlencoded` fields.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

// ---------------------------------------------------------------- Vertex AI

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const SA_EMAIL: &str = "cbench-test@test-project.iam.gserviceaccount.com";
const SA_KID: &str = "0123456789abcdef-test-key";

fn private_key_pem() -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join("test-service-account-key.pem"))
        .expect("test private key")
}

/// The public half (PKCS#1 RSAPublicKey DER), which is all the mock token endpoint knows.
fn public_key_der() -> Vec<u8> {
    let pem = std::fs::read_to_string(Path::new(FIXTURES).join("test-service-account-key.pub.pem"))
        .expect("test public key");
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    STANDARD.decode(b64).expect("public key base64")
}

/// Writes a service-account key file whose token endpoint is `token_uri`.
fn key_file(dir: &Path, token_uri: &str, client_email: &str) -> PathBuf {
    let path = dir.join("service-account.json");
    let key = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": SA_KID,
        "private_key": private_key_pem(),
        "client_email": client_email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    });
    std::fs::write(&path, key.to_string()).expect("writing the key file");
    path
}

/// What Google's token endpoint checks of a JWT-bearer grant; Err is the OAuth error.
fn verify_grant(seen: &Seen, token_uri: &str) -> Result<(), String> {
    if seen.method != Method::POST {
        return Err("not a POST".into());
    }
    if !seen
        .header("content-type")
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(format!("content-type {}", seen.header("content-type")));
    }
    let fields = form_fields(&seen.body);
    let field = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return Err(format!("grant_type {}", field("grant_type")));
    }
    let jwt = field("assertion");
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, sig] = parts[..] else {
        return Err("the assertion is not a JWT".into());
    };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" || header["typ"] != "JWT" || header["kid"] != SA_KID {
        return Err(format!("header {header}"));
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|e| e.to_string())?;
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key_der())
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| "Invalid JWT Signature.".to_string())?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    if claims["iss"] != SA_EMAIL {
        return Err("Invalid grant: account not found".into());
    }
    if claims["aud"] != token_uri {
        return Err(format!("aud {}", claims["aud"]));
    }
    if claims["scope"] != "https://www.googleapis.com/auth/cloud-platform" {
        return Err(format!("scope {}", claims["scope"]));
    }
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    let now = now_secs();
    if exp != iat + 3600 || iat > now + 5 || exp <= now {
        return Err(format!("iat {iat} exp {exp} now {now}"));
    }
    Ok(())
}

const VERTEX_PATH: &str = "/v1/projects/test-project/locations/us-central1/publishers/google/models/gemini-3-flash-preview:generateContent";

/// A Vertex AI mock: `/token` issues `ya29.test-<n>`; the model answers with text, a
/// function call and usage; `unauthorized_first` 401s the first model call.
async fn vertex_mock(unauthorized_first: bool) -> Mock {
    let issued = Arc::new(Mutex::new(0u32));
    let calls = Arc::new(Mutex::new(0u32));
    let token_uri = Arc::new(Mutex::new(String::new()));
    let uri = token_uri.clone();
    let mock = Mock::start(move |seen| {
        if seen.path() == "/token" {
            let expected = uri.lock().unwrap().clone();
            return match verify_grant(seen, &expected) {
                Ok(()) => {
                    let mut n = issued.lock().unwrap();
                    *n += 1;
                    (
                        200,
                        json!({"access_token": format!("ya29.test-{n}"), "expires_in": 3599, "token_type": "Bearer"}),
                    )
                }
                Err(why) => (
                    400,
                    json!({"error": "invalid_grant", "error_description": why}),
                ),
            };
        }
        let mut n = calls.lock().unwrap();
        *n += 1;
        if unauthorized_first && *n == 1 {
            return (
                401,
                json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
            );
        }
        let latest = format!("Bearer ya29.test-{}", issued.lock().unwrap());
        if seen.method != Method::POST || seen.path() != VERTEX_PATH {
            return (404, json!({"error": {"message": format!("no route {}", seen.target)}}));
        }
        if seen.header("authorization") != latest {
            return (401, json!({"error": {"message": "bad token"}}));
        }
        let body = seen.json();
        let shape_ok = body["systemInstruction"]["parts"][0]["text"] == "You are a careful engineer."
            && body["contents"][0]["role"] == "user"
            && body["contents"][1]["role"] == "model"
            && body["contents"][1]["parts"][1]["functionCall"]["name"] == "bash"
            && body["contents"][2]["parts"][0]["functionResponse"]["name"] == "bash"
            && body["tools"][0]["functionDeclarations"][0]["name"] == "bash";
        if !shape_ok {
            return (400, json!({"error": {"message": format!("bad body {body}")}}));
        }
        (
            200,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Listing them."},
                    {"functionCall": {"name": "bash", "args": {"command": "ls"}}}
                ]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 1200, "cachedContentTokenCount": 200,
                                  "candidatesTokenCount": 40, "thoughtsTokenCount": 10}
            }),
        )
    })
    .await;
    *token_uri.lock().unwrap() = format!("{}/token", mock.base);
    mock
}

#[tokio::test]
async fn vertex_calls_generate_content_with_a_service_account_token() {
    let mock = vertex_mock(false).await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &format!("{}/token", mock.base), SA_EMAIL);
    let opts = options(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap()),
        ("VERTEXAI_API_BASE", &mock.base),
    ]);
    let model = resolve_with("vertex_ai/gemini-3-flash-preview", &opts).expect("builds");
    assert!(model.priced());
    let mut session = model.session(&brief());
    let first = session.complete(&request()).await.expect("first call");
    assert_eq!(first.content, "Listing them.");
    assert_eq!(first.tool_calls.len(), 1);
    assert_eq!(first.tool_calls[0].name, "bash");
    assert_eq!(
        serde_json::from_str::<Value>(&first.tool_calls[0].arguments).unwrap(),
        json!({"command": "ls"})
    );
    let usage = TokenUsage {
        input_tokens: 1000,
        output_tokens: 50,
        cache_read_tokens: 200,
        cache_write_tokens: 0,
    };
    assert_eq!(first.usage, usage);
    let cost = first.cost_usd.expect("priced");
    assert!((cost - cost_of("gemini-3-flash-preview", &usage)).abs() < 1e-12);
    assert!((cost - (1000.0 * 0.50 + 50.0 * 3.00 + 200.0 * 0.05) / 1e6).abs() < 1e-12);
    // The token is cached: a second call asks the token endpoint nothing.
    session.complete(&request()).await.expect("second call");
    assert_eq!(mock.count("/token"), 1);
    assert_eq!(mock.count("/v1/projects"), 2);

    // The mock really checks the signature: the same grant with altered claims fails.
    let token_uri = format!("{}/token", mock.base);
    let grant = mock
        .seen()
        .into_iter()
        .find(|s| s.path() == "/token")
        .expect("a token request");
    assert_eq!(verify_grant(&grant, &token_uri), Ok(()));
    let fields = form_fields(&grant.body);
    let jwt = &fields
        .iter()
        .find(|(k, _)| k == "assertion")
        .expect("assertion")
        .1;
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("https://www.googleapis.com/auth/everything");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let mut tampered = grant.clone();
    tampered.body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={forged}"
    )
    .into_bytes();
    assert_eq!(
        verify_grant(&tampered, &token_uri),
        Err("Invalid JWT Signature.".to_string())
    );
}

#[tokio::test]
async fn vertex_refreshes_the_token_once_after_a_401() {
    let mock = vertex_mock(true).await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &format!("{}/token", mock.base), SA_EMAIL);
    let opts = options(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap()),
        ("VERTEXAI_API_BASE", &mock.base),
    ]);
    let done = complete("vertex_ai/gemini-3-flash-preview", &opts)
        .await
        .expect("succeeds with a fresh token");
    assert_eq!(done.content, "Listing them.");
    assert_eq!(mock.count("/token"), 2);
    assert_eq!(done.retries.len(), 1, "{:?}", done.retries);
}

#[tokio::test]
async fn vertex_location_and_project_come_from_the_environment() {
    let mock = Mock::start(|seen| {
        if seen.path() == "/token" {
            return (200, json!({"access_token": "ya29.t", "expires_in": 3600}));
        }
        let ok = seen.path()
            == "/v1/projects/other-project/locations/global/publishers/google/models/gemini-2.5-pro:generateContent";
        if !ok {
            return (404, json!({"error": {"message": seen.target.clone()}}));
        }
        (200, json!({"candidates": [{"content": {"parts": [{"text": "ok"}]}}]}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), &format!("{}/token", mock.base), SA_EMAIL);
    let json_text = std::fs::read_to_string(&key).unwrap();
    let mut opts = options(&[
        ("VERTEXAI_CREDENTIALS", &json_text),
        ("VERTEXAI_PROJECT", "other-project"),
        ("VERTEX_LOCATION", "global"),
    ]);
    opts.api_base = Some(mock.base.clone());
    let done = complete("vertex_ai/gemini-2.5-pro", &opts)
        .await
        .expect("inline JSON credentials, global location");
    assert_eq!(done.content, "ok");
}

#[tokio::test]
async fn vertex_token_refusal_names_the_credentials_never_the_key() {
    let mock = vertex_mock(false).await;
    let dir = tempfile::tempdir().unwrap();
    // A service account the token endpoint does not know.
    let key = key_file(
        dir.path(),
        &format!("{}/token", mock.base),
        "stranger@elsewhere.iam.gserviceaccount.com",
    );
    let opts = options(&[
        ("GOOGLE_APPLICATION_CREDENTIALS", key.to_str().unwrap()),
        ("VERTEXAI_API_BASE", &mock.base),
    ]);
    let err = complete("vertex_ai/gemini-3-flash-preview", &opts)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
    assert!(err.contains(key.to_str().unwrap()), "{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert_no_key_material(&err);
    assert_eq!(
        mock.count("/v1/projects"),
        0,
        "called the model without a token"
    );
}

/// No line of the private key, nor its header, in `text`.
fn assert_no_key_material(text: &str) {
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for line in private_key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
    {
        assert!(!text.contains(line), "key material leaked: {text}");
    }
}

#[test]
fn vertex_credential_problems_name_the_variable_and_the_file() {
    let err = build_error("vertex_ai/gemini-3-flash-preview", &options(&[]));
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");

    let err = build_error(
        "vertex_ai/gemini-3-flash-preview",
        &options(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")]),
    );
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
    assert!(err.contains("/nonexistent/key.json"), "{err}");

    // A key file whose private key is damaged: named, never shown.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    let damaged = private_key_pem().replacen("MII", "XXX", 1);
    let text = json!({"type": "service_account", "client_email": SA_EMAIL,
                      "private_key": damaged, "project_id": "p"})
    .to_string();
    std::fs::write(&path, text).unwrap();
    let err = build_error(
        "vertex_ai/gemini-3-flash-preview",
        &options(&[("GOOGLE_APPLICATION_CREDENTIALS", path.to_str().unwrap())]),
    );
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
    assert!(err.contains("broken.json"), "{err}");
    assert!(err.contains("private_key"), "{err}");
    assert_no_key_material(&err);

    // Not JSON at all.
    std::fs::write(&path, "not json").unwrap();
    let err = build_error(
        "vertex_ai/gemini-3-flash-preview",
        &options(&[("GOOGLE_APPLICATION_CREDENTIALS", path.to_str().unwrap())]),
    );
    assert!(err.contains("not JSON"), "{err}");
}

// ---------------------------------------------------------------- Azure OpenAI

const AZURE_KEY: &str = "azure-key-0123456789abcdef";

fn openai_reply() -> Value {
    json!({
        "choices": [{"message": {"role": "assistant", "content": "Listing.",
            "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 20,
                  "prompt_tokens_details": {"cached_tokens": 400}}
    })
}

/// Checks the OpenAI chat body of [`request`].
fn openai_body_ok(body: &Value, model: &str) -> bool {
    body["model"] == model
        && body["messages"][0]["role"] == "system"
        && body["messages"][2]["tool_calls"][0]["id"] == "call_1"
        && body["messages"][3]["tool_call_id"] == "call_1"
        && body["tools"][0]["function"]["name"] == "bash"
}

async fn azure_mock() -> Mock {
    Mock::start(|seen| {
        if seen.method != Method::POST
            || seen.path() != "/openai/deployments/gpt-4o/chat/completions"
        {
            return (404, json!({"error": {"message": format!("no route {}", seen.target)}}));
        }
        if !seen.query().starts_with("api-version=") {
            return (400, json!({"error": {"message": "missing api-version"}}));
        }
        if seen.header("api-key") != AZURE_KEY || !seen.header("authorization").is_empty() {
            return (
                401,
                json!({"error": {"code": "401", "message": format!("Access denied due to invalid subscription key {}", seen.header("api-key"))}}),
            );
        }
        if !openai_body_ok(&seen.json(), "gpt-4o") {
            return (400, json!({"error": {"message": "bad body"}}));
        }
        (200, openai_reply())
    })
    .await
}

#[tokio::test]
async fn azure_posts_to_the_deployment_with_an_api_key_header() {
    let mock = azure_mock().await;
    let opts = options(&[
        ("AZURE_API_BASE", &mock.base),
        ("AZURE_API_KEY", AZURE_KEY),
        ("AZURE_API_VERSION", "2024-10-21"),
    ]);
    let done = complete("azure/gpt-4o", &opts).await.expect("azure call");
    assert_eq!(done.content, "Listing.");
    assert_eq!(done.tool_calls[0].id, "call_9");
    assert_eq!(done.tool_calls[0].arguments, r#"{"command":"ls"}"#);
    let usage = TokenUsage {
        input_tokens: 600,
        output_tokens: 20,
        cache_read_tokens: 400,
        cache_write_tokens: 0,
    };
    assert_eq!(done.usage, usage);
    let cost = done
        .cost_usd
        .expect("a deployment named gpt-4o is priced as gpt-4o");
    assert!((cost - cost_of("gpt-4o", &usage)).abs() < 1e-12);
    assert_eq!(mock.seen()[0].query(), "api-version=2024-10-21");

    // Without AZURE_API_VERSION: LiteLLM's default.
    let opts = options(&[("AZURE_API_BASE", &mock.base), ("AZURE_API_KEY", AZURE_KEY)]);
    complete("azure/gpt-4o", &opts)
        .await
        .expect("default version");
    assert_eq!(
        mock.seen()[1].query(),
        format!(
            "api-version={}",
            cbench_llm::providers::AZURE_DEFAULT_API_VERSION
        )
    );
}

#[tokio::test]
async fn azure_problems_name_the_variable_never_the_key() {
    let err = build_error("azure/gpt-4o", &options(&[("AZURE_API_KEY", AZURE_KEY)]));
    assert!(err.contains("AZURE_API_BASE"), "{err}");
    let err = build_error(
        "azure/gpt-4o",
        &options(&[("AZURE_API_BASE", "https://example.openai.azure.com")]),
    );
    assert!(err.contains("AZURE_API_KEY"), "{err}");

    let mock = azure_mock().await;
    let wrong = "wrong-azure-key-42";
    let opts = options(&[("AZURE_API_BASE", &mock.base), ("AZURE_API_KEY", wrong)]);
    let err = complete("azure/gpt-4o", &opts)
        .await
        .expect_err("401")
        .to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("AZURE_API_KEY"), "{err}");
    assert!(!err.contains(wrong), "the key leaked: {err}");
    assert_eq!(
        mock.seen().len(),
        1,
        "a 401 with a static key is not retried"
    );
}

// ---------------------------------------------------------------- Bedrock

const AWS_ID: &str = "AKIDEXAMPLETEST00001";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AWS_TOKEN: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN//abc+def=";
const BEDROCK_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// RFC 3986 encoding of everything but unreserved characters, as AWS's `UriEncode`.
fn aws_uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// The signature AWS would compute for `seen` with `secret`, following the SigV4
/// specification step by step; Err says what is malformed.
fn expected_signature(seen: &Seen, secret: &str) -> Result<(String, String), String> {
    let auth = seen.header("authorization");
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = v,
            Some(("SignedHeaders", v)) => signed_headers = v,
            Some(("Signature", v)) => signature = v,
            _ => return Err(format!("unexpected part {part}")),
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, terminal] = scope[..] else {
        return Err(format!("credential {credential}"));
    };
    if access_key != AWS_ID || service != "bedrock" || terminal != "aws4_request" {
        return Err(format!("credential {credential}"));
    }
    let amz_date = seen.header("x-amz-date");
    if !amz_date.starts_with(date) {
        return Err("x-amz-date and the scope disagree".into());
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date", "content-type"] {
        if !names.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    // Canonical request: method, doubly-encoded path, query, headers, signed list, body hash.
    let canonical_uri = seen
        .path()
        .split('/')
        .map(aws_uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    let canonical_headers: String = names
        .iter()
        .map(|n| format!("{n}:{}\n", seen.header(n).trim()))
        .collect();
    let canonical_request = format!(
        "{}\n{canonical_uri}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        seen.method,
        seen.query(),
        hex::encode(digest::digest(&digest::SHA256, &seen.body))
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        hex::encode(digest::digest(
            &digest::SHA256,
            canonical_request.as_bytes()
        ))
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac_sha256(&k_date, region);
    let k_service = hmac_sha256(&k_region, service);
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    let expected = hex::encode(hmac_sha256(&k_signing, &string_to_sign));
    Ok((expected, signature.to_string()))
}

/// A Bedrock runtime mock: 403 on a bad signature, `failures` 503s first, then a reply.
async fn bedrock_mock(failures: usize) -> Mock {
    let script: Arc<Mutex<VecDeque<u16>>> = Arc::new(Mutex::new(vec![503; failures].into()));
    Mock::start(move |seen| {
        let signature_ok = match expected_signature(seen, AWS_SECRET) {
            Ok((expected, given)) => expected == given,
            Err(why) => {
                return (403, json!({"message": format!("malformed authorization: {why}")}))
            }
        };
        if !signature_ok {
            return (
                403,
                json!({"message": "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."}),
            );
        }
        if seen.header("x-amz-security-token") != AWS_TOKEN {
            return (403, json!({"message": "The security token included in the request is invalid."}));
        }
        if let Some(status) = script.lock().unwrap().pop_front() {
            return (status, json!({"message": "ServiceUnavailable"}));
        }
        if seen.method != Method::POST
            || seen.path() != "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        {
            return (404, json!({"message": format!("no route {}", seen.target)}));
        }
        let b = seen.json();
        let shape_ok = b["system"][0]["text"] == "You are a careful engineer."
            && b["messages"][0]["role"] == "user"
            && b["messages"][0]["content"][0]["text"] == "List the files."
            && b["messages"][1]["role"] == "assistant"
            && b["messages"][1]["content"][1]["toolUse"]
                == json!({"toolUseId": "call_1", "name": "bash", "input": {"command": "pwd"}})
            && b["messages"][2]["role"] == "user"
            && b["messages"][2]["content"][0]["toolResult"]
                == json!({"toolUseId": "call_1", "content": [{"text": "/repo"}]})
            && b["inferenceConfig"]["maxTokens"] == 512
            && b["toolConfig"]["tools"][0]["toolSpec"]["name"] == "bash"
            && b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"] == "object";
        if !shape_ok {
            return (400, json!({"message": format!("ValidationException: {b}")}));
        }
        (
            200,
            json!({
                "output": {"message": {"role": "assistant", "content": [
                    {"text": "Listing."},
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "bash", "input": {"command": "ls"}}}
                ]}},
                "stopReason": "tool_use",
                "usage": {"inputTokens": 900, "outputTokens": 30, "totalTokens": 1230,
                          "cacheReadInputTokens": 250, "cacheWriteInputTokens": 50}
            }),
        )
    })
    .await
}

fn bedrock_options(mock: &Mock, secret: &str) -> ProviderOptions {
    let mut opts = options(&[
        ("AWS_ACCESS_KEY_ID", AWS_ID),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_SESSION_TOKEN", AWS_TOKEN),
        ("AWS_REGION_NAME", "us-west-2"),
        ("AWS_BEDROCK_RUNTIME_ENDPOINT", &mock.base),
    ]);
    opts.sampling.max_output_tokens = Some(512);
    opts
}

#[tokio::test]
async fn bedrock_converse_is_signed_with_sigv4_on_every_attempt() {
    let mock = bedrock_mock(1).await;
    let opts = bedrock_options(&mock, AWS_SECRET);
    for model in [
        format!("bedrock/{BEDROCK_MODEL}"),
        format!("bedrock/converse/{BEDROCK_MODEL}"),
    ] {
        let done = complete(&model, &opts).await.expect("bedrock call");
        assert_eq!(done.content, "Listing.");
        assert_eq!(
            done.tool_calls,
            vec![ToolCall {
                id: "tooluse_1".into(),
                name: "bash".into(),
                arguments: r#"{"command":"ls"}"#.into()
            }]
        );
        let usage = TokenUsage {
            input_tokens: 900,
            output_tokens: 30,
            cache_read_tokens: 250,
            cache_write_tokens: 50,
        };
        assert_eq!(done.usage, usage);
        let cost = done.cost_usd.expect("priced");
        assert!((cost - cost_of(BEDROCK_MODEL, &usage)).abs() < 1e-12);
    }
    // The first attempt met a 503 and the retry carried a valid signature of its own.
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[0]
        .header("authorization")
        .contains("/us-west-2/bedrock/aws4_request"));
    assert!(
        seen.iter().all(|s| expected_signature(s, AWS_SECRET)
            .map(|(e, g)| e == g)
            .unwrap_or(false)),
        "every attempt is signed"
    );
}

#[tokio::test]
async fn bedrock_problems_name_the_variables_never_the_secret() {
    let err = build_error(
        &format!("bedrock/{BEDROCK_MODEL}"),
        &options(&[
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("AWS_REGION", "us-east-1"),
        ]),
    );
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    let err = build_error(
        &format!("bedrock/{BEDROCK_MODEL}"),
        &options(&[("AWS_ACCESS_KEY_ID", AWS_ID), ("AWS_REGION", "us-east-1")]),
    );
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    let err = build_error(
        &format!("bedrock/{BEDROCK_MODEL}"),
        &options(&[
            ("AWS_ACCESS_KEY_ID", AWS_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ]),
    );
    assert!(err.contains("AWS_REGION_NAME"), "{err}");
    assert!(!err.contains(AWS_SECRET), "{err}");

    // A wrong secret: the mock's own signature differs, 403, no retry.
    let mock = bedrock_mock(0).await;
    let wrong = "not-the-secret-0000000000000000000000000";
    let err = complete(
        &format!("bedrock/{BEDROCK_MODEL}"),
        &bedrock_options(&mock, wrong),
    )
    .await
    .expect_err("403")
    .to_string();
    assert!(err.contains("HTTP 403"), "{err}");
    assert!(err.contains("signature"), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(AWS_TOKEN), "{err}");
    assert_eq!(mock.seen().len(), 1);
}

// ---------------------------------------------------------------- OpenAI-compatible hosts

const HOST_KEY: &str = "host-key-abcdef0123456789";

async fn openai_compatible_mock(path: &'static str, model: &'static str) -> Mock {
    Mock::start(move |seen| {
        if seen.method != Method::POST || seen.path() != path {
            return (
                404,
                json!({"error": {"message": format!("no route {}", seen.target)}}),
            );
        }
        if seen.header("authorization") != format!("Bearer {HOST_KEY}") {
            return (401, json!({"error": {"message": "Invalid API key"}}));
        }
        if !openai_body_ok(&seen.json(), model) {
            return (400, json!({"error": {"message": "bad body"}}));
        }
        (200, openai_reply())
    })
    .await
}

#[tokio::test]
async fn together_ai_reads_litellms_variables() {
    let model = "meta-llama/Llama-3.3-70B-Instruct-Turbo";
    let mock = openai_compatible_mock("/v1/chat/completions", model).await;
    let base = format!("{}/v1", mock.base);
    let opts = options(&[
        ("TOGETHERAI_API_KEY", HOST_KEY),
        ("TOGETHER_AI_API_BASE", &base),
    ]);
    let id = format!("together_ai/{model}");
    let done = complete(&id, &opts).await.expect("together call");
    assert_eq!(done.content, "Listing.");
    assert_eq!(done.tool_calls[0].name, "bash");
    let cost = done.cost_usd.expect("priced");
    assert!((cost - cost_of(&id, &done.usage)).abs() < 1e-12);

    let err = build_error(&id, &options(&[]));
    assert!(err.contains("TOGETHERAI_API_KEY"), "{err}");
    assert!(err.contains("TOGETHER_API_KEY"), "{err}");

    let wrong = "wrong-together-key";
    let opts = options(&[("TOGETHER_API_KEY", wrong), ("TOGETHER_AI_API_BASE", &base)]);
    let err = complete(&id, &opts).await.expect_err("401").to_string();
    assert!(
        err.contains("TOGETHER_API_KEY") && !err.contains(wrong),
        "{err}"
    );
}

#[tokio::test]
async fn mistral_and_groq_use_their_own_keys_and_bases() {
    // LiteLLM's MISTRAL_API_BASE is the bare origin; /v1 is added.
    let mock = openai_compatible_mock("/v1/chat/completions", "mistral-large-latest").await;
    let opts = options(&[
        ("MISTRAL_API_KEY", HOST_KEY),
        ("MISTRAL_API_BASE", &mock.base),
    ]);
    let done = complete("mistral/mistral-large-latest", &opts)
        .await
        .expect("mistral call");
    assert_eq!(done.usage.input_tokens, 600);
    assert_eq!(done.cost_usd, None, "unpriced stays unknown");

    let mock =
        openai_compatible_mock("/openai/v1/chat/completions", "llama-3.3-70b-versatile").await;
    let base = format!("{}/openai/v1", mock.base);
    let opts = options(&[("GROQ_API_KEY", HOST_KEY), ("GROQ_API_BASE", &base)]);
    let done = complete("groq/llama-3.3-70b-versatile", &opts)
        .await
        .expect("groq call");
    assert!(done.cost_usd.is_some());
    let err = build_error("groq/llama-3.3-70b-versatile", &options(&[]));
    assert!(err.contains("GROQ_API_KEY"), "{err}");
}

// ---------------------------------------------------------------- catalog

#[test]
fn every_catalog_form_parses_its_example_and_lists_its_variables() {
    let forms = catalog();
    for form in &forms {
        let spec = parse_spec(form.example).unwrap_or_else(|| panic!("{}", form.example));
        assert_eq!(spec.wire, form.wire, "{}", form.form);
        assert!(!form.vars.is_empty(), "{}", form.form);
    }
    let form = |prefix: &str| {
        forms
            .iter()
            .find(|f| f.form.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix}"))
    };
    let names = |prefix: &str| -> Vec<&str> {
        form(prefix)
            .vars
            .iter()
            .flat_map(|v| v.names.iter().copied())
            .collect()
    };
    assert!(names("vertex_ai/").contains(&"GOOGLE_APPLICATION_CREDENTIALS"));
    assert!(names("vertex_ai/").contains(&"VERTEXAI_PROJECT"));
    assert!(names("bedrock/").contains(&"AWS_REGION_NAME"));
    assert!(names("azure/").contains(&"AZURE_API_VERSION"));
    assert!(names("together_ai/").contains(&"TOGETHERAI_API_KEY"));
    for prefix in [
        "groq/",
        "deepseek/",
        "mistral/",
        "fireworks_ai/",
        "xai/",
        "ollama_chat/",
        "hosted_vllm/",
        "openrouter/",
    ] {
        form(prefix);
    }
    assert_eq!(form("gpt-").wire, Wire::OpenAi);

    let creds =
        Credentials::from_vars(&[("AWS_REGION", "us-east-1"), ("AWS_SECRET_ACCESS_KEY", " ")]);
    assert!(creds.is_set("AWS_REGION"));
    assert!(!creds.is_set("AWS_SECRET_ACCESS_KEY"), "blank is unset");
    let region = form("bedrock/")
        .vars
        .iter()
        .find(|v| v.names.contains(&"AWS_REGION"))
        .expect("region variable");
    assert_eq!(region.set_in(&creds), Some("AWS_REGION"));

    let spec = parse_spec("fireworks_ai/llama-v3p3-70b-instruct").unwrap();
    assert_eq!(
        spec.model,
        "accounts/fireworks/models/llama-v3p3-70b-instruct"
    );
    assert_eq!(
        parse_spec("bedrock/converse/x.y-v1:0").unwrap().model,
        "x.y-v1:0"
    );

    let err = ModelError::Unknown("mystery-model".into()).to_string();
    for form in [
        "anthropic/<model>",
        "vertex_ai/<model>",
        "azure/<deployment>",
        "bedrock/<model>",
        "together_ai/<model>",
    ] {
        assert!(err.contains(form), "{err}");
    }
}
