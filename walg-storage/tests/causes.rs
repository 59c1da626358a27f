//! Storage failures as a DBA reads them, from real errors: real sockets on
//! 127.0.0.1 (a closed port, a plain-HTTP server asked for TLS, a server
//! that never answers, servers with certificates a client must refuse) and
//! canned provider answers (S3, Azure and GCS error documents) served over
//! HTTP, each through the real backend and opendal's real HTTP client.
//!
//! Every case checks the one line the CLI logs (`StoreError`'s `Display`):
//! the cause, the setting to change, under 250 characters, one line, and
//! none of opendal's `context: {`. The emulator cases (a missing bucket on
//! moto, fake-gcs-server and Azurite, Azurite's signature check) are in the
//! behaviour suite.
//!
//! The TLS fixtures in `tests/data/tls` are test-only keys, valid until
//! 2126: `trusted-ca.pem` signs `wrong-name.pem` (for
//! `s3.wrong-name.example` only); `untrusted.pem` (for 127.0.0.1) is signed
//! by a CA nobody trusts. They were made with `openssl req -x509 -newkey ec`
//! and `openssl x509 -req -CA` (P-256). The process trusts `trusted-ca.pem`
//! through `SSL_CERT_FILE`, set before the first HTTP client exists.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use walg_core::store::error::{Cause, StoreError};
use walg_core::store::{DynStore, PutOptions};
use walg_storage::{Registry, StorageSpec};

/// The longest a storage error's line may be: the CLI adds its command
/// and the file (`ERROR wal-push 000000010000000000000042: `, 41
/// characters), and the whole line must stay under 250.
const BOUND: usize = 205;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tls")
        .join(name)
}

/// Trusts the test CA. reqwest builds its client (and reads the trust
/// store) once per process, on the first request, so every test calls this
/// before opening a storage.
fn trust_test_ca() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("SSL_CERT_FILE", data("trusted-ca.pem")));
}

fn open(spec: &StorageSpec) -> DynStore {
    trust_test_ca();
    Registry::with_builtin()
        .open(spec)
        .unwrap_or_else(|e| panic!("open {spec:?}: {e}"))
}

fn s3(endpoint: &str, retries: u32) -> StorageSpec {
    let mut spec = StorageSpec::new("default", "s3", "walg-bucket/pg");
    spec.settings = [
        ("AWS_ENDPOINT", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "walg-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "walg-test-secret"),
    ]
    .into_iter()
    .collect();
    spec.timeout = Duration::from_secs(5);
    spec.retries = retries;
    spec
}

/// The error's one line names the cause and every word in `words`.
fn check(err: &StoreError, cause: Cause, words: &[&str]) {
    let line = err.to_string();
    assert_eq!(err.cause(), Some(cause), "{line}\n{err:?}");
    for w in words {
        assert!(line.contains(w), "{w:?} is not in {line:?}");
    }
    assert!(line.len() < BOUND, "{} characters: {line}", line.len());
    assert!(
        !line.contains("context: {") && !line.contains('\n'),
        "{line}"
    );
    assert!(!line.contains("walg-test-secret"), "{line}");
}

async fn get_err(store: &DynStore) -> StoreError {
    store
        .get("wal_005/000000010000000000000001.lz4")
        .await
        .err()
        .expect("the get fails")
}

// ---- sockets -----------------------------------------------------------------

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Serves every connection with `handle` on its own thread.
fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || handle(conn));
        }
    });
    port
}

/// Reads one HTTP request (head and a Content-Length body).
fn read_request(conn: &mut BufReader<TcpStream>) -> Option<()> {
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()
}

/// An HTTP server that answers every request with `status`, `headers` and
/// `body`: a provider's error answer.
fn canned(status: &'static str, headers: &'static str, body: &'static str) -> u16 {
    serve(move |conn| {
        let mut conn = BufReader::new(conn);
        while read_request(&mut conn).is_some() {
            let answer = format!(
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.get_mut().write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// A TLS server with the certificate and key in `name.pem`, `name.key`,
/// answering 200 to whatever gets through the handshake.
fn tls_server(name: &str) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(data(&format!("{name}.pem")))
            .expect("read certificate")
            .collect::<Result<_, _>>()
            .expect("parse certificate");
    let key = PrivateKeyDer::from_pem_file(data(&format!("{name}.key"))).expect("read key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    let config = Arc::new(config);
    serve(move |mut conn| {
        let Ok(mut tls) = rustls::ServerConnection::new(config.clone()) else {
            return;
        };
        // The client refuses the certificate: the handshake ends there.
        while tls.is_handshaking() {
            if tls.complete_io(&mut conn).is_err() {
                return;
            }
        }
    })
}

// ---- below HTTP ---------------------------------------------------------------

#[tokio::test]
async fn refused_connection_names_the_endpoint_setting() {
    let port = closed_port();
    let store = open(&s3(&format!("http://127.0.0.1:{port}"), 1));
    let err = get_err(&store).await;
    check(
        &err,
        Cause::ConnectionRefused,
        &[
            "storage \"default\" (s3://walg-bucket/pg): the connection to",
            &format!("127.0.0.1:{port} was refused"),
            "2 attempts",
            "AWS_ENDPOINT",
        ],
    );
}

/// An HTTP server that answers a TLS hello as the garbage it is to it: a
/// 400 in plain text (as nginx, MinIO and moto do), or a hang-up.
fn plain_http(answer: bool) -> u16 {
    serve(move |mut conn| {
        let mut hello = [0u8; 512];
        if conn.read(&mut hello).is_ok() && answer {
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    })
}

#[tokio::test]
async fn tls_to_a_plain_http_endpoint_says_so() {
    let store = open(&s3(&format!("https://127.0.0.1:{}", plain_http(true)), 0));
    check(
        &get_err(&store).await,
        Cause::TlsToPlainHttp,
        &[
            "speaks plain HTTP, not TLS",
            "write http:// in AWS_ENDPOINT",
        ],
    );
    // A server that hangs up instead cannot be told from a broken TLS
    // server; the fix still names the setting.
    let store = open(&s3(&format!("https://127.0.0.1:{}", plain_http(false)), 0));
    check(
        &get_err(&store).await,
        Cause::Tls,
        &["failed: the server hung up", "http:// in AWS_ENDPOINT"],
    );
}

#[tokio::test]
async fn an_untrusted_certificate_names_ssl_cert_file() {
    let port = tls_server("untrusted");
    let store = open(&s3(&format!("https://127.0.0.1:{port}"), 0));
    check(
        &get_err(&store).await,
        Cause::TlsUntrusted,
        &["is not signed by a trusted CA", "SSL_CERT_FILE"],
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_says_which() {
    let port = tls_server("wrong-name");
    let store = open(&s3(&format!("https://127.0.0.1:{port}"), 0));
    check(
        &get_err(&store).await,
        Cause::TlsNameMismatch,
        &[
            "names s3.wrong-name.example, not \"127.0.0.1\"",
            "s3.wrong-name.example",
            "AWS_ENDPOINT",
        ],
    );
}

#[tokio::test]
async fn an_unresolvable_host_names_the_host() {
    let store = open(&s3("https://walg-no-such-host.invalid", 0));
    check(
        &get_err(&store).await,
        Cause::NameResolution,
        &["walg-no-such-host.invalid", "AWS_ENDPOINT"],
    );
}

/// A server that accepts connections and never answers fails within the
/// deadline, naming it and WALG_STORAGE_TIMEOUT.
#[tokio::test]
async fn a_silent_endpoint_names_the_timeout_setting() {
    let port = serve(|conn| {
        std::thread::sleep(Duration::from_secs(30));
        drop(conn);
    });
    let mut spec = s3(&format!("http://127.0.0.1:{port}"), 0);
    spec.timeout = Duration::from_millis(500);
    let store = open(&spec);
    let start = Instant::now();
    let err = get_err(&store).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    check(
        &err,
        Cause::Timeout,
        &["timed out after 500ms", "WALG_STORAGE_TIMEOUT"],
    );
}

// ---- provider answers -------------------------------------------------------------

const XML: &str = "Content-Type: application/xml\r\n";

#[tokio::test]
async fn s3_answers() {
    struct Case {
        status: &'static str,
        headers: &'static str,
        body: &'static str,
        cause: Cause,
        words: &'static [&'static str],
    }
    let cases = [
        Case {
            status: "403 Forbidden",
            headers: XML,
            body: "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error>",
            cause: Cause::CredentialsRejected,
            words: &["the storage rejected key id \"walg-key-id\" (403 SignatureDoesNotMatch)", "403 SignatureDoesNotMatch", "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"],
        },
        Case {
            status: "403 Forbidden",
            headers: XML,
            body: "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>",
            cause: Cause::CredentialsRejected,
            words: &["InvalidAccessKeyId", "fix AWS_ACCESS_KEY_ID"],
        },
        Case {
            status: "403 Forbidden",
            headers: XML,
            body: "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
            cause: Cause::PermissionMissing,
            words: &["key id \"walg-key-id\" may not read objects in s3://walg-bucket/pg", "grant s3:GetObject"],
        },
        Case {
            status: "301 Moved Permanently",
            headers: "Content-Type: application/xml\r\nx-amz-bucket-region: eu-central-1\r\n",
            body: "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>",
            cause: Cause::WrongRegion,
            words: &["the bucket \"walg-bucket\" is in region eu-central-1, not us-east-1", "set AWS_REGION=eu-central-1"],
        },
        Case {
            status: "400 Bad Request",
            headers: XML,
            body: "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message></Error>",
            cause: Cause::WrongRegion,
            words: &["in region eu-west-1", "set AWS_REGION=eu-west-1"],
        },
        Case {
            status: "503 Slow Down",
            headers: XML,
            body: "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            cause: Cause::Throttled,
            words: &["asks for fewer requests (503 SlowDown", "2 attempts", "WALG_DOWNLOAD_CONCURRENCY"],
        },
        Case {
            status: "429 Too Many Requests",
            headers: "",
            body: "",
            cause: Cause::Throttled,
            words: &["asks for fewer requests (429"],
        },
        Case {
            status: "413 Request Entity Too Large",
            headers: "Content-Type: text/html\r\n",
            body: "<html><head><title>413 Request Entity Too Large</title></head><body>nginx</body></html>",
            cause: Cause::TooLarge,
            words: &["refused the object as too large (413)", "proxy"],
        },
        Case {
            status: "500 Internal Server Error",
            headers: XML,
            body: "<Error><Code>XMinioStorageFull</Code><Message>Storage backend has reached its minimum free drive threshold.</Message></Error>",
            cause: Cause::Unexpected,
            words: &["storage \"default\" (s3://walg-bucket/pg): 500 XMinioStorageFull: Storage backend has reached its minimum", "2 attempts"],
        },
    ];
    for c in cases {
        let port = canned(c.status, c.headers, c.body);
        let store = open(&s3(&format!("http://127.0.0.1:{port}"), 1));
        let err = get_err(&store).await;
        check(&err, c.cause, c.words);
    }
}

#[tokio::test]
async fn s3_upload_answers() {
    let port = canned(
        "403 Forbidden",
        XML,
        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    );
    let store = open(&s3(&format!("http://127.0.0.1:{port}"), 0));
    let err = store
        .put(
            "wal_005/x.lz4",
            &Bytes::from_static(b"segment"),
            PutOptions::default(),
        )
        .await
        .expect_err("put");
    check(
        &err,
        Cause::PermissionMissing,
        &["may not write objects", "grant s3:PutObject"],
    );
}

#[tokio::test]
async fn azure_answers() {
    let azure = |port: u16, key: Option<&str>| {
        let mut spec = StorageSpec::new("default", "azure", "walg-container/pg");
        spec.settings = [
            ("WALG_AZ_ENDPOINT", format!("http://127.0.0.1:{port}/acct")),
            ("AZURE_STORAGE_ACCOUNT", "acct".to_string()),
        ]
        .into_iter()
        .collect();
        match key {
            Some(k) => spec.settings.set("AZURE_STORAGE_ACCESS_KEY", k),
            None => spec.settings.set(
                "AZURE_STORAGE_SAS_TOKEN",
                "sv=2022-11-02&ss=b&sp=r&sig=c2VjcmV0c2ln",
            ),
        }
        spec.retries = 0;
        spec
    };
    let key = "d2FsZy10ZXN0LWtleS13YWxnLXRlc3Qta2V5LXdhbGctdGVzdC1rZXktd2FsZy10ZXN0LWtleQ==";
    let port = canned(
        "403 Server failed to authenticate the request.",
        "Content-Type: application/xml\r\nx-ms-error-code: AuthenticationFailed\r\n",
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.\nRequestId:1b2c</Message></Error>",
    );
    let store = open(&azure(port, Some(key)));
    check(
        &get_err(&store).await,
        Cause::CredentialsRejected,
        &[
            "the account key of \"acct\"",
            "AuthenticationFailed",
            "fix AZURE_STORAGE_ACCESS_KEY",
        ],
    );
    let port = canned(
        "403 This request is not authorized to perform this permission.",
        "Content-Type: application/xml\r\nx-ms-error-code: AuthorizationPermissionMismatch\r\n",
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized to perform this operation using this permission.</Message></Error>",
    );
    let store = open(&azure(port, None));
    let err = store
        .put(
            "wal_005/x.lz4",
            &Bytes::from_static(b"segment"),
            PutOptions::default(),
        )
        .await
        .expect_err("put");
    check(
        &err,
        Cause::PermissionMissing,
        &[
            "the SAS token may not write objects",
            "AZURE_STORAGE_SAS_TOKEN with the w permission",
        ],
    );
    assert!(
        !format!("{err} {err:?}").contains("c2VjcmV0c2ln"),
        "{err:?}"
    );
}

#[tokio::test]
async fn gcs_answers() {
    let gcs = |port: u16| {
        let mut spec = StorageSpec::new("default", "gs", "walg-bucket/pg");
        spec.settings = [("WALG_GS_ENDPOINT", format!("http://127.0.0.1:{port}"))]
            .into_iter()
            .collect();
        spec.retries = 0;
        spec
    };
    let port = canned(
        "401 Unauthorized",
        "Content-Type: application/json\r\n",
        r#"{"error":{"code":401,"message":"Invalid Credentials","errors":[{"message":"Invalid Credentials","domain":"global","reason":"authError"}]}}"#,
    );
    check(
        &get_err(&open(&gcs(port))).await,
        Cause::CredentialsRejected,
        &[
            "the storage rejected anonymous requests (401 authError)",
            "set GOOGLE_APPLICATION_CREDENTIALS",
        ],
    );
    let port = canned(
        "404 Not Found",
        "Content-Type: application/json\r\n",
        r#"{"error":{"code":404,"message":"The specified bucket does not exist.","errors":[{"message":"The specified bucket does not exist.","domain":"global","reason":"notFound"}]}}"#,
    );
    check(
        &get_err(&open(&gcs(port))).await,
        Cause::BucketMissing,
        &[
            &format!("the bucket \"walg-bucket\" does not exist at http://127.0.0.1:{port}"),
            "create it or fix WALG_GS_PREFIX",
        ],
    );
}
