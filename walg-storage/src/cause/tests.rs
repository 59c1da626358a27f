//! The classifier on errors shaped as opendal 0.59 builds them (kind,
//! context with the URI and the response head, the provider's error
//! document as the message). Errors from real servers and sockets are in
//! `tests/causes.rs` and the behaviour suite.

use super::*;

fn s3_site() -> Site {
    let mut site = Site::new(Backend::S3, "s3://nobucket/pg", "nobucket");
    site.endpoint = Some("http://127.0.0.1:9000".to_string());
    site.identity = Identity::new(
        "key id \"walg\"",
        "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
    site.secrets = vec!["change-me".to_string()];
    site
}

/// An error as opendal's S3 service returns it for an HTTP answer.
fn answered(kind: opendal::ErrorKind, status: u16, headers: &str, message: &str) -> opendal::Error {
    opendal::Error::new(kind, message)
        .with_operation("read")
        .with_context("service_operation", "GetObject")
        .with_context("uri", "http://127.0.0.1:9000/nobucket/pg/wal_005/x.lz4")
        .with_context(
            "response",
            format!("Parts {{ status: {status}, version: HTTP/1.1, headers: {{{headers}}} }}"),
        )
        .with_context("service", "s3")
}

fn s3_error(code: &str, message: &str) -> String {
    format!("S3Error {{ code: \"{code}\", message: \"{message}\", resource: \"\", request_id: \"ABC\" }}")
}

/// Classifies `err` of `op` with the kind opendal_store gives it and checks
/// the cause and the words of the line.
fn check(site: &Site, op: &str, err: &opendal::Error, cause: Cause, words: &[&str]) {
    let kind = crate::opendal_store::map_error("get", "default", site, "k", err).kind;
    let x = site.explain(op, kind, err).expect("a failure is explained");
    let line = format!("{}; {}", x.what, x.fix);
    assert_eq!(x.cause, cause, "{line}");
    for w in words {
        assert!(line.contains(w), "{w:?} missing in {line:?}");
    }
    assert!(!line.contains("context: {"), "{line}");
    assert!(line.len() < 200, "{} chars: {line}", line.len());
}

#[test]
fn provider_answers() {
    use opendal::ErrorKind as O;
    let site = s3_site();
    check(
        &site,
        "get",
        &answered(
            O::ConfigInvalid,
            404,
            "\"server\": \"Werkzeug\"",
            &s3_error("NoSuchBucket", "The specified bucket does not exist"),
        ),
        Cause::BucketMissing,
        &[
            "the bucket \"nobucket\" does not exist at http://127.0.0.1:9000",
            "create it or fix WALG_S3_PREFIX",
        ],
    );
    check(
        &site,
        "put",
        &answered(
            O::PermissionDenied,
            403,
            "",
            &s3_error(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match",
            ),
        ),
        Cause::CredentialsRejected,
        &[
            "the storage rejected key id \"walg\" (403 SignatureDoesNotMatch)",
            "SignatureDoesNotMatch",
            "fix AWS_ACCESS_KEY_ID",
        ],
    );
    check(
        &site,
        "put",
        &answered(
            O::PermissionDenied,
            403,
            "",
            &s3_error("AccessDenied", "Access Denied"),
        ),
        Cause::PermissionMissing,
        &[
            "key id \"walg\" may not write objects in s3://nobucket/pg",
            "grant s3:PutObject",
        ],
    );
    check(
        &site,
        "list",
        &answered(
            O::Unexpected,
            301,
            "\"x-amz-bucket-region\": \"eu-central-1\"",
            &s3_error("PermanentRedirect", "The bucket you are attempting to access must be addressed using the specified endpoint."),
        ),
        Cause::WrongRegion,
        &["is in region eu-central-1, not us-east-1", "set AWS_REGION=eu-central-1"],
    );
    check(
        &site,
        "get",
        &answered(
            O::Unexpected,
            400,
            "",
            &s3_error(
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'",
            ),
        ),
        Cause::WrongRegion,
        &["set AWS_REGION=eu-west-1"],
    );
    check(
        &site,
        "put",
        &answered(
            O::RateLimited,
            503,
            "",
            &s3_error("SlowDown", "Please reduce your request rate."),
        )
        .set_temporary(),
        Cause::Throttled,
        &[
            "asks for fewer requests (503 SlowDown)",
            "WALG_UPLOAD_CONCURRENCY",
        ],
    );
    check(
        &site,
        "put",
        &answered(
            O::Unexpected,
            413,
            "",
            "<html><head><title>413 Request Entity Too Large</title></head></html>",
        ),
        Cause::TooLarge,
        &["refused the object as too large (413)"],
    );
    check(
        &site,
        "get",
        &answered(
            O::Unexpected,
            500,
            "",
            &s3_error(
                "InternalError",
                "We encountered an internal error. Please try again.",
            ),
        )
        .set_temporary(),
        Cause::Unexpected,
        &["500 InternalError: We encountered an internal error"],
    );
}

#[test]
fn azure_and_gcs_answers() {
    use opendal::ErrorKind as O;
    let mut az = Site::new(Backend::Azure, "azure://nocontainer/pg", "nocontainer");
    az.identity = Identity::new(
        "the account key of \"acct\"",
        "fix AZURE_STORAGE_ACCESS_KEY",
    );
    check(
        &az,
        "get",
        &answered(
            O::NotFound,
            404,
            "\"x-ms-error-code\": \"ContainerNotFound\"",
            "AzblobError { code: \"ContainerNotFound\", message: \"The specified container does not exist.\\nRequestId:0a80 Time:2026\" }",
        ),
        Cause::BucketMissing,
        &["the container \"nocontainer\" does not exist", "fix WALG_AZ_PREFIX"],
    );
    check(
        &az,
        "put",
        &answered(
            O::PermissionDenied,
            403,
            "\"x-ms-error-code\": \"AuthorizationFailure\"",
            "AzblobError { code: \"AuthorizationFailure\", message: \"Server failed to authenticate the request. Make sure the value of the Authorization header is formed correctly including the signature.\\nRequestId:8cec\" }",
        ),
        Cause::CredentialsRejected,
        &["the account key of \"acct\"", "fix AZURE_STORAGE_ACCESS_KEY"],
    );
    let mut gs = Site::new(Backend::Gcs, "gs://b/p", "b");
    gs.identity = Identity::new(
        "the service account in /etc/sa.json",
        "fix GOOGLE_APPLICATION_CREDENTIALS",
    );
    check(
        &gs,
        "put",
        &answered(
            O::PermissionDenied,
            403,
            "",
            "GcsErrorResponse { error: GcsError { code: 403, message: \"sa@p.iam does not have storage.objects.create access\", errors: [GcsErrorDetail { domain: \"global\", location: \"\", location_type: \"\", message: \"denied\", reason: \"forbidden\" }] } }",
        ),
        Cause::PermissionMissing,
        &["the service account in /etc/sa.json may not write objects", "storage.objects.create"],
    );
    check(
        &gs,
        "get",
        &answered(
            O::Unexpected,
            401,
            "",
            "GcsErrorResponse { error: GcsError { code: 401, message: \"Invalid Credentials\", errors: [GcsErrorDetail { domain: \"global\", location: \"\", location_type: \"\", message: \"Invalid Credentials\", reason: \"authError\" }] } }",
        ),
        Cause::CredentialsRejected,
        &["rejected the service account in /etc/sa.json (401 authError)", "fix GOOGLE_APPLICATION_CREDENTIALS"],
    );
}

/// Errors below HTTP, with causes as reqwest and the OS chain them.
#[test]
fn transport_failures() {
    #[derive(Debug)]
    struct Wrap(&'static str, std::io::Error);
    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }
    let sent = |io: std::io::Error, what: &'static str| {
        opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .with_operation("read")
            .with_context("url", "https://change-me.invalid:443/b/pg/x")
            .with_context("called", "reqwest::send")
            .set_source(Wrap(what, io))
            .set_temporary()
    };
    let site = s3_site();
    use std::io::{Error, ErrorKind as K};
    check(
        &site,
        "get",
        &sent(
            Error::other("failed to lookup address information: Name or service not known"),
            "dns error",
        ),
        Cause::NameResolution,
        &[
            "cannot resolve the host name \"change-me.invalid\"",
            "fix AWS_ENDPOINT",
        ],
    );
    check(
        &site,
        "get",
        &sent(Error::from(K::ConnectionRefused), "tcp connect error"),
        Cause::ConnectionRefused,
        &[
            "the connection to https://change-me.invalid:443 was refused",
            "fix AWS_ENDPOINT",
        ],
    );
    check(
        &site,
        "get",
        &sent(Error::from(K::ConnectionReset), "connection error"),
        Cause::ConnectionReset,
        &["closed mid-request"],
    );
    check(
        &site,
        "get",
        &sent(
            Error::new(
                K::InvalidData,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            ),
            "client error (Connect)",
        ),
        Cause::TlsToPlainHttp,
        &[
            "speaks plain HTTP, not TLS",
            "write http:// in AWS_ENDPOINT",
        ],
    );
    check(
        &site,
        "get",
        &sent(
            Error::new(
                K::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
            "client error (Connect)",
        ),
        Cause::TlsUntrusted,
        &["not signed by a trusted CA", "SSL_CERT_FILE"],
    );
    check(
        &site,
        "get",
        &sent(
            Error::new(
                K::InvalidData,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext {
                        expected: rustls::pki_types::ServerName::try_from("change-me.invalid")
                            .expect("name")
                            .to_owned(),
                        presented: vec!["DnsName(\"s3.example\")".to_string()],
                    },
                ),
            ),
            "client error (Connect)",
        ),
        Cause::TlsNameMismatch,
        &[
            "names s3.example, not \"change-me.invalid\"",
            "s3.example",
            "AWS_ENDPOINT",
        ],
    );
}

#[test]
fn local_failures() {
    use std::io::{Error, ErrorKind as K};
    let site = Site::new(Backend::File, "file:///var/lib/walg", "/var/lib/walg");
    let path = Path::new("/var/lib/walg/wal_005/x.lz4");
    let x = site
        .explain_io("write", path, &Error::from(K::StorageFull))
        .expect("explained");
    assert_eq!(x.cause, Cause::DiskFull);
    assert!(
        x.what == "no space left on the file system of /var/lib/walg"
            && x.fix.contains("WALG_FILE_PREFIX"),
        "{x:?}"
    );
    let x = site
        .explain_io("create directory", path, &Error::from(K::PermissionDenied))
        .expect("explained");
    assert_eq!(x.cause, Cause::LocalPermission);
    assert!(
        x.what
            .contains("create directory /var/lib/walg/wal_005/x.lz4 as ")
            && x.what.contains("uid ")
            && x.fix.contains("chown"),
        "{x:?}"
    );
    let tmp = Path::new("/var/lib/walg/.walg-tmp-dir/x.walg-tmp-vm_1_2_3");
    let x = site
        .explain_io("write", tmp, &Error::from(K::PermissionDenied))
        .expect("explained");
    assert!(
        x.what
            .starts_with("permission denied to write /var/lib/walg as "),
        "{x:?}"
    );
    assert!(site
        .explain_io("read", path, &Error::from(K::NotFound))
        .is_none());
}

#[test]
fn answers_are_not_failures() {
    let site = s3_site();
    let e = answered(
        opendal::ErrorKind::NotFound,
        404,
        "",
        &s3_error("NoSuchKey", "gone"),
    );
    assert!(site.explain("get", ErrorKind::NotFound, &e).is_none());
}

#[test]
fn secrets_are_masked_as_whole_values_only() {
    let check = |text: &str, secrets: &[&str], expected: &str| {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        assert_eq!(redact(text, &secrets), expected);
    };
    // The packaged example's placeholder key is part of its bucket name.
    check(
        "url: https://change-me-bucket.s3.eu-west-1.amazonaws.com/ key change-me",
        &["change-me"],
        "url: https://change-me-bucket.s3.eu-west-1.amazonaws.com/ key ***",
    );
    check("secret=s3cr3tvalue&x", &["s3cr3tvalue"], "secret=***&x");
    check("\"s3cr3tvalue\"", &["s3cr3tvalue"], "\"***\"");
    check(
        "xs3cr3tvalue s3cr3tvaluex",
        &["s3cr3tvalue"],
        "xs3cr3tvalue s3cr3tvaluex",
    );
    check(
        "https://change-me.example.com/",
        &["change-me"],
        "https://change-me.example.com/",
    );
    check(
        "the key is s3cr3tvalue.",
        &["s3cr3tvalue"],
        "the key is ***.",
    );
    // Too short to mask without hiding ordinary words.
    check("a key", &["key"], "a key");
    // SAS signatures in URLs, whatever their value.
    check(
        "url: https://a/b?sv=1&sig=abc%2Fdef&se=2",
        &[],
        "url: https://a/b?sv=1&sig=***&se=2",
    );
}

#[test]
fn reads_the_answer() {
    let e = answered(
        opendal::ErrorKind::Unexpected,
        400,
        "\"x-amz-bucket-region\": \"ap-south-1\"",
        "<Error><Code>IncorrectEndpoint</Code><Message>wrong one</Message></Error>",
    );
    let a = Answer::of(&e);
    assert_eq!(a.status, Some(400));
    assert_eq!(a.code.as_deref(), Some("IncorrectEndpoint"));
    assert_eq!(a.message.as_deref(), Some("wrong one"));
    assert_eq!(a.origin.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(a.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(a.region.as_deref(), Some("ap-south-1"));
    assert_eq!(quote(&"x".repeat(300)).len(), QUOTE + 3);
    assert_eq!(
        debug_string(r#"A { code: "a\"b", message: "" }"#, "code: ").as_deref(),
        Some("a\"b")
    );
}
