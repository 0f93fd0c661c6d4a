//! cbench-gcp against a strict local fake of Google's token endpoint, metadata server and Cloud
//! Storage JSON API: Application Default Credentials are found in google-auth's order, tokens
//! are minted by the grants Google checks (a service account's signed JWT, a user's refresh
//! token, the metadata server's), every Storage call carries a live bearer token, object names
//! travel as one path segment, listings page, and failures name what failed without secrets.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cbench_gcp::credentials::{discover, SCOPE_CLOUD_PLATFORM};
use cbench_gcp::{AdcEnv, GcpError, Storage, TokenSource};
use ring::signature;
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../llm/tests/fixtures");
const SA_EMAIL: &str = "cbench-batch@test-project.iam.gserviceaccount.com";
const REFRESH_TOKEN: &str = "1//user-refresh-token-s3cret";

/// What the fake holds and how it misbehaves on request.
#[derive(Default)]
struct Fake {
    /// Tokens it issued and still honours.
    live_tokens: HashSet<String>,
    issued: u32,
    grants: Vec<String>,
    buckets: BTreeMap<String, Value>,
    objects: BTreeMap<(String, String), Vec<u8>>,
    /// Storage calls to answer 503 before serving.
    fail_next: u32,
    /// Every Storage request: method, path and query.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

struct Server {
    base: String,
    addr: SocketAddr,
    state: Shared,
}

impl Server {
    async fn start() -> Server {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/computeMetadata/v1/project/project-id",
                get(metadata_project),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route("/storage/v1/b", post(create_bucket))
            .route("/storage/v1/b/{bucket}", get(get_bucket))
            .route("/storage/v1/b/{bucket}/o", get(list_objects))
            .route(
                "/storage/v1/b/{bucket}/o/{object}",
                axum::routing::delete(delete_object),
            )
            .route("/upload/storage/v1/b/{bucket}/o", post(upload_object))
            .route(
                "/download/storage/v1/b/{bucket}/o/{object}",
                get(download_object),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            base: format!("http://{addr}"),
            addr,
            state,
        }
    }

    fn fake(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.state.lock().unwrap()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn google_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

fn issue(fake: &mut Fake, grant: &str) -> Response {
    fake.issued += 1;
    let token = format!("ya29.test-token-{}", fake.issued);
    fake.live_tokens.insert(token.clone());
    fake.grants.push(grant.to_string());
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

/// Google's token endpoint: the JWT-bearer grant (signature, issuer, audience, scope, expiry
/// checked) and the refresh-token grant.
/// (axum's `Form` refuses a body that is not `application/x-www-form-urlencoded`.)
async fn token(
    State(state): State<Shared>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let refuse = |e: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": e})),
        )
            .into_response()
    };
    let mut fake = state.lock().unwrap();
    match field("grant_type").as_str() {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let jwt = field("assertion");
            let parts: Vec<&str> = jwt.split('.').collect();
            let [_, claims, sig] = parts[..] else {
                return refuse("not a JWT");
            };
            let signed = format!("{}.{}", parts[0], parts[1]);
            let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
                return refuse("bad signature encoding");
            };
            if signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                public_key_der(),
            )
            .verify(signed.as_bytes(), &sig)
            .is_err()
            {
                return refuse("Invalid JWT Signature.");
            }
            let claims: Value = URL_SAFE_NO_PAD
                .decode(claims)
                .ok()
                .and_then(|c| serde_json::from_slice(&c).ok())
                .unwrap_or(Value::Null);
            if claims["iss"] != SA_EMAIL {
                return refuse("Invalid grant: account not found");
            }
            if claims["scope"] != SCOPE_CLOUD_PLATFORM
                || !claims["aud"]
                    .as_str()
                    .is_some_and(|a| a.ends_with("/token"))
                || claims["exp"].as_u64().unwrap_or(0) <= now_secs()
            {
                return refuse("bad claims");
            }
            issue(&mut fake, "service_account")
        }
        "refresh_token" => {
            if field("refresh_token") != REFRESH_TOKEN
                || field("client_id") != "user-client"
                || field("client_secret") != "user-secret"
            {
                return refuse("Token has been expired or revoked.");
            }
            issue(&mut fake, "authorized_user")
        }
        _ => refuse("unsupported grant_type"),
    }
}

fn metadata_ok(headers: &HeaderMap) -> bool {
    headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google")
}

async fn metadata_project(headers: HeaderMap) -> Response {
    if !metadata_ok(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    ([("metadata-flavor", "Google")], "vm-project").into_response()
}

async fn metadata_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if !metadata_ok(&headers)
        || query.get("scopes").map(String::as_str) != Some(SCOPE_CLOUD_PLATFORM)
    {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut fake = state.lock().unwrap();
    let mut response = issue(&mut fake, "metadata");
    response
        .headers_mut()
        .insert("metadata-flavor", "Google".parse().unwrap());
    response
}

/// Every Storage call: a live bearer token, then a planned failure if any.
fn storage_gate(fake: &mut Fake, headers: &HeaderMap, line: String) -> Option<Response> {
    fake.requests.push(line);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !fake.live_tokens.contains(token) {
        return Some(google_error(
            StatusCode::UNAUTHORIZED,
            "Invalid Credentials",
        ));
    }
    if fake.fail_next > 0 {
        fake.fail_next -= 1;
        return Some(google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Backend Error",
        ));
    }
    None
}

async fn create_bucket(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = storage_gate(&mut fake, &headers, "POST /storage/v1/b".into()) {
        return r;
    }
    if query.get("project").map(String::as_str) != Some("test-project") {
        return google_error(StatusCode::BAD_REQUEST, "Invalid project");
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    if fake.buckets.contains_key(&name) {
        return google_error(
            StatusCode::CONFLICT,
            "Your previous request to create the named bucket succeeded and you already own it.",
        );
    }
    fake.buckets.insert(name, body.clone());
    Json(body).into_response()
}

async fn get_bucket(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(bucket): UrlPath<String>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = storage_gate(&mut fake, &headers, format!("GET /storage/v1/b/{bucket}")) {
        return r;
    }
    if fake.buckets.contains_key(&bucket) {
        Json(json!({"name": bucket})).into_response()
    } else {
        google_error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
        )
    }
}

async fn upload_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(bucket): UrlPath<String>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = storage_gate(&mut fake, &headers, format!("POST upload {bucket}")) {
        return r;
    }
    if query.get("uploadType").map(String::as_str) != Some("media") {
        return google_error(StatusCode::BAD_REQUEST, "uploadType");
    }
    if !fake.buckets.contains_key(&bucket) {
        return google_error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
        );
    }
    let Some(name) = query.get("name").cloned() else {
        return google_error(StatusCode::BAD_REQUEST, "Required parameter: name");
    };
    fake.objects
        .insert((bucket.clone(), name.clone()), body.to_vec());
    Json(json!({"bucket": bucket, "name": name, "size": body.len().to_string()})).into_response()
}

async fn download_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((bucket, object)): UrlPath<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = storage_gate(&mut fake, &headers, format!("GET download {object}")) {
        return r;
    }
    if query.get("alt").map(String::as_str) != Some("media") {
        return google_error(StatusCode::BAD_REQUEST, "alt=media");
    }
    match fake.objects.get(&(bucket, object)) {
        Some(bytes) => bytes.clone().into_response(),
        None => google_error(StatusCode::NOT_FOUND, "No such object"),
    }
}

/// Two names a page, so paging is exercised.
async fn list_objects(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath(bucket): UrlPath<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = storage_gate(&mut fake, &headers, format!("GET list {bucket}")) {
        return r;
    }
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let names: Vec<String> = fake
        .objects
        .keys()
        .filter(|(b, n)| *b == bucket && n.starts_with(&prefix))
        .map(|(_, n)| n.clone())
        .collect();
    let start: usize = query
        .get("pageToken")
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = names
        .iter()
        .skip(start)
        .take(2)
        .map(|n| json!({"name": n}))
        .collect();
    let mut body = json!({"kind": "storage#objects"});
    if !page.is_empty() {
        body["items"] = json!(page);
    }
    if start + 2 < names.len() {
        body["nextPageToken"] = json!(format!("page-{}", start + 2));
    }
    Json(body).into_response()
}

async fn delete_object(
    State(state): State<Shared>,
    headers: HeaderMap,
    UrlPath((bucket, object)): UrlPath<(String, String)>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if let Some(r) = storage_gate(&mut fake, &headers, format!("DELETE {object}")) {
        return r;
    }
    match fake.objects.remove(&(bucket, object)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => google_error(StatusCode::NOT_FOUND, "No such object"),
    }
}

fn private_key_pem() -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join("test-service-account-key.pem")).unwrap()
}

fn public_key_der() -> Vec<u8> {
    let pem = std::fs::read_to_string(Path::new(FIXTURES).join("test-service-account-key.pub.pem"))
        .unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

fn service_account_file(dir: &Path, server: &Server, email: &str) -> String {
    let path = dir.join("key.json");
    let key = json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "test-kid",
        "private_key": private_key_pem(),
        "client_email": email,
        "token_uri": format!("{}/token", server.base),
    });
    std::fs::write(&path, key.to_string()).unwrap();
    path.display().to_string()
}

/// ADC with nothing configured, and a metadata server address where nothing listens.
fn env_with(_server: &Server) -> AdcEnv {
    AdcEnv {
        application_credentials: None,
        gcloud_config_dir: None,
        metadata_host: format!("127.0.0.1:{}", unused_port()),
        project: None,
    }
}

fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn storage_for(server: &Server, env: &AdcEnv) -> Result<Storage, GcpError> {
    let adc = discover(env, &reqwest::Client::new()).await?;
    let tokens = Arc::new(TokenSource::new(adc, SCOPE_CLOUD_PLATFORM));
    Storage::new(tokens, Some(&server.base))
}

#[tokio::test]
async fn objects_round_trip_with_a_service_account_token_and_names_stay_one_segment() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_with(&server);
    env.application_credentials = Some(service_account_file(dir.path(), &server, SA_EMAIL));
    let storage = storage_for(&server, &env).await.expect("a client");
    let bucket = "cooperbench-eval-test-project";
    assert!(!storage.bucket_exists(bucket).await.unwrap());
    storage
        .create_bucket("test-project", bucket, "us-central1", 7)
        .await
        .unwrap();
    assert!(storage.bucket_exists(bucket).await.unwrap());
    assert_eq!(
        server.fake().buckets[bucket]["lifecycle"]["rule"][0]["condition"]["age"],
        7
    );
    let names = [
        "eval-1/tasks/0/patch1.patch",
        "eval-1/tasks/0/tests1.patch",
        "eval-1/tasks/1/patch1.patch",
        "eval-1/a name with spaces?#%.txt",
        "eval-2/manifest.json",
    ];
    for (i, name) in names.iter().enumerate() {
        storage
            .upload(bucket, name, format!("content {i}\n").into())
            .await
            .unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let got = storage.download(bucket, name, 1 << 20).await.unwrap();
        assert_eq!(got, Some(format!("content {i}\n").into_bytes()), "{name}");
    }
    assert_eq!(
        storage
            .download(bucket, "eval-1/missing", 1 << 20)
            .await
            .unwrap(),
        None
    );
    // Five names under two prefixes, two a page: every page is read.
    let mut listed = storage.list(bucket, "eval-1/").await.unwrap();
    listed.sort();
    assert_eq!(listed.len(), 4, "{listed:?}");
    // A size cap holds against an object larger than the caller expects.
    let err = storage
        .download(bucket, "eval-1/tasks/0/patch1.patch", 4)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("larger than 4 bytes") && err.contains("gs://"),
        "{err}"
    );
    assert_eq!(storage.delete_prefix(bucket, "eval-1/").await.unwrap(), 4);
    assert_eq!(
        storage.list(bucket, "").await.unwrap(),
        vec!["eval-2/manifest.json"]
    );
    assert!(!storage
        .delete(bucket, "eval-1/tasks/0/patch1.patch")
        .await
        .unwrap());
    // One token served every call.
    assert_eq!(server.fake().grants, vec!["service_account"]);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_transient_errors_are_retried() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_with(&server);
    env.application_credentials = Some(service_account_file(dir.path(), &server, SA_EMAIL));
    let storage = storage_for(&server, &env).await.unwrap();
    let bucket = "bucket-one";
    storage
        .create_bucket("test-project", bucket, "us-central1", 7)
        .await
        .unwrap();
    // The service stops honouring the token: the next call gets a new one and goes through.
    server.fake().live_tokens.clear();
    storage.upload(bucket, "x", "1".into()).await.unwrap();
    assert_eq!(server.fake().grants.len(), 2);
    // Two 503s, then success.
    server.fake().fail_next = 2;
    assert_eq!(
        storage.download(bucket, "x", 16).await.unwrap(),
        Some(b"1".to_vec())
    );
    // Past the retries, the error names the object and the service's message.
    server.fake().fail_next = 10;
    let err = storage
        .download(bucket, "x", 16)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gs://bucket-one/x")
            && err.contains("Backend Error")
            && err.contains("after 4 attempts"),
        "{err}"
    );
    server.fake().fail_next = 0;
    // A refusal is final and says where the credentials came from.
    let err = storage
        .create_bucket("test-project", bucket, "us-central1", 7)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 409") && err.contains("already own it"),
        "{err}"
    );
}

#[tokio::test]
async fn adc_is_found_in_google_auths_order_and_names_what_it_read() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    // Nothing anywhere: one error naming all three ways.
    let env = env_with(&server);
    let err = discover(&env, &client).await.err().unwrap().to_string();
    assert!(
        err.contains("GOOGLE_APPLICATION_CREDENTIALS")
            && err.contains("gcloud auth application-default login")
            && err.contains("metadata server"),
        "{err}"
    );
    // The metadata server, when it answers as Google's.
    let mut on_vm = env_with(&server);
    on_vm.metadata_host = server.addr.to_string();
    let storage = storage_for(&server, &on_vm).await.unwrap();
    let adc = discover(&on_vm, &client).await.unwrap();
    assert_eq!(adc.project.as_deref(), Some("vm-project"));
    assert!(adc.origin.contains("metadata server"), "{}", adc.origin);
    assert!(!storage.bucket_exists("some-bucket").await.unwrap());
    assert_eq!(server.fake().grants, vec!["metadata"]);
    // gcloud's file beats the metadata server; its user credentials refresh.
    let gcloud = dir.path().join("gcloud");
    std::fs::create_dir_all(gcloud.join("configurations")).unwrap();
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        json!({"type": "authorized_user", "client_id": "user-client",
               "client_secret": "user-secret", "refresh_token": REFRESH_TOKEN,
               "token_uri": format!("{}/token", server.base)})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        gcloud.join("configurations/config_default"),
        "[core]\nproject = gcloud-project\n",
    )
    .unwrap();
    let mut with_gcloud = on_vm.clone();
    with_gcloud.gcloud_config_dir = Some(gcloud.clone());
    let adc = discover(&with_gcloud, &client).await.unwrap();
    assert_eq!(adc.project.as_deref(), Some("gcloud-project"));
    assert!(adc.origin.contains("application_default_credentials.json"));
    let tokens = TokenSource::new(adc, SCOPE_CLOUD_PLATFORM);
    tokens.token().await.unwrap();
    assert_eq!(
        server.fake().grants.last().map(String::as_str),
        Some("authorized_user")
    );
    // GOOGLE_APPLICATION_CREDENTIALS beats both; GOOGLE_CLOUD_PROJECT beats the key's project.
    let mut explicit = with_gcloud.clone();
    explicit.application_credentials = Some(service_account_file(dir.path(), &server, SA_EMAIL));
    explicit.project = Some("env-project".into());
    let adc = discover(&explicit, &client).await.unwrap();
    assert!(
        adc.origin.starts_with("GOOGLE_APPLICATION_CREDENTIALS ("),
        "{}",
        adc.origin
    );
    assert_eq!(adc.project.as_deref(), Some("env-project"));
    // A named file that is broken is an error, not a reason to look further.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"type\": \"service_account\"").unwrap();
    explicit.application_credentials = Some(broken.display().to_string());
    let err = discover(&explicit, &client)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("broken.json") && err.contains("not JSON"),
        "{err}"
    );
}

#[tokio::test]
async fn refused_credentials_name_their_origin_and_never_the_secret() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_with(&server);
    env.application_credentials = Some(service_account_file(
        dir.path(),
        &server,
        "stranger@elsewhere.iam.gserviceaccount.com",
    ));
    let storage = storage_for(&server, &env).await.unwrap();
    let err = storage
        .bucket_exists("any-bucket")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GOOGLE_APPLICATION_CREDENTIALS") && err.contains("invalid_grant"),
        "{err}"
    );
    assert!(
        !err.contains("PRIVATE KEY") && !err.contains("eyJ"),
        "{err}"
    );
    assert!(
        server.fake().requests.is_empty(),
        "called Storage without a token"
    );

    // A revoked user token: the refresh token never appears in the error.
    let gcloud = dir.path().join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    std::fs::write(
        gcloud.join("application_default_credentials.json"),
        json!({"type": "authorized_user", "client_id": "user-client",
               "client_secret": "wrong", "refresh_token": REFRESH_TOKEN,
               "token_uri": format!("{}/token", server.base)})
        .to_string(),
    )
    .unwrap();
    let mut user = env_with(&server);
    user.gcloud_config_dir = Some(gcloud);
    user.project = Some("p".into());
    let storage = storage_for(&server, &user).await.unwrap();
    let err = storage
        .bucket_exists("any-bucket")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expired or revoked"), "{err}");
    assert!(!err.contains(REFRESH_TOKEN), "{err}");
    // Plain http to another machine is refused before any token is sent.
    let err = Storage::new(
        Arc::new(TokenSource::new(
            discover(&user, &reqwest::Client::new()).await.unwrap(),
            SCOPE_CLOUD_PLATFORM,
        )),
        Some("http://storage.example.com"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("not https://"), "{err}");
}
