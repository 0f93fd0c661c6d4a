//! Cloud Storage and Application Default Credentials: credentials are found in google-auth's
//! order, tokens are minted by the grants Google checks, every call carries a live bearer
//! token, object names travel as one path segment, listings page, and failures name what
//! failed without secrets.

use std::sync::Arc;

use cbench_gcp::credentials::{discover, SCOPE_CLOUD_PLATFORM};
use cbench_gcp::{GcpError, Storage, TokenSource};
use serde_json::json;

use crate::fake::{env_with, service_account_file, Server, REFRESH_TOKEN, SA_EMAIL};

async fn storage_for(server: &Server, env: &cbench_gcp::AdcEnv) -> Result<Storage, GcpError> {
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
