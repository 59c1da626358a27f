//! Fake cloud identity services on 127.0.0.1 for end-to-end tests: one HTTP
//! server (std threads, one per connection, `Connection: close`) that
//! answers as
//!
//! - AWS STS `AssumeRoleWithWebIdentity` (`POST /sts/`),
//! - the EC2 instance metadata service, IMDSv2 (`/imds/latest/...`),
//! - an ECS / EKS Pod Identity container endpoint (`GET /container/creds`),
//! - the GCE metadata server (`/computeMetadata/v1/...`) and Google's STS for
//!   workload identity federation (`POST /gcp/token`),
//! - Microsoft Entra ID's token endpoint for Azure workload identity
//!   (`POST /<tenant>/oauth2/v2.0/token`) and a managed identity endpoint
//!   (`GET /msi/token`, App Service style with `X-IDENTITY-HEADER`),
//!
//! and, under `/hang/...`, an endpoint that accepts and never answers.
//!
//! Each checks what it was sent (the web identity or federated token against
//! the token file's contents, the container authorization token, the IMDSv2
//! session token, the identity header, `Metadata-Flavor`), refuses anything
//! else as the real service would, and hands out short-lived credentials the
//! emulators accept: random AWS keys (moto accepts any), bearer tokens
//! (fake-gcs-server ignores them), and JWTs Azurite's `--oauth basic`
//! accepts (audience `https://storage.azure.com`, a `sts.windows.net`
//! issuer, a live `exp`; the signature is not checked). Every call is
//! counted by route, and every secret handed out is kept so a scenario can
//! assert none reached a log line.
//!
//! What it does not do: TLS, keep-alive, or check signatures.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// A tenant id that Azurite's issuer check accepts.
pub const TENANT: &str = "ab1f708d-50f6-404c-a006-d71b2ac7a606";
/// The role the fake IMDS says the instance has.
pub const NODE_ROLE: &str = "walg-node-role";

/// What the services expect and how they answer; changed between calls.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// The web identity / federated / subject token the token file holds.
    pub token: String,
    /// The container endpoint's authorization token.
    pub container_auth: String,
    /// Azure's `IDENTITY_HEADER`.
    pub identity_header: String,
    /// The client id a user-assigned managed identity must ask for.
    pub client_id: String,
    /// How long handed-out credentials live.
    pub lifetime: Duration,
    /// STS refuses every call with 403 AccessDenied.
    pub sts_denies: bool,
}

#[derive(Debug, Default)]
struct State {
    calls: BTreeMap<String, usize>,
    refused: BTreeMap<String, usize>,
    issued: Vec<String>,
    /// What each route last saw that was wrong (for a failure message).
    problems: Vec<String>,
}

/// The running fake; dropping it stops the server.
pub struct FakeIdentity {
    port: u16,
    state: Arc<Mutex<State>>,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdentity")
            .field("port", &self.port)
            .finish()
    }
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-01-02T03:04:05Z` for a Unix time (civil from days, proleptic
/// Gregorian; no date crate in xtask).
pub fn iso8601(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned-looking JWT with `claims` (the signature part is junk).
pub fn jwt(claims: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(claims.as_bytes()),
        b64url(format!("sig-{}", SERIAL.fetch_add(1, Ordering::Relaxed)).as_bytes())
    )
}

/// A projected service-account token as the kubelet writes it, expiring
/// `exp_in` seconds from now (negative: already expired).
pub fn service_account_token(exp_in: i64) -> String {
    let t = now() as i64;
    jwt(&format!(
        r#"{{"aud":["sts.amazonaws.com"],"iss":"https://oidc.eks.local/id/walg","sub":"system:serviceaccount:db:postgres","iat":{},"exp":{}}}"#,
        t - 10,
        t + exp_in
    ))
}

fn form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: String,
}

fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
        if buf.len() > 64 << 10 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request {
        method,
        path: path.to_string(),
        query: form(query),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

impl FakeIdentity {
    /// Starts the server on a free port of 127.0.0.1.
    pub fn start(behaviour: Behaviour) -> Result<FakeIdentity> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the fake identity server")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let state = Arc::new(Mutex::new(State::default()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, bh, sp) = (state.clone(), behaviour.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let (st, bh, sp) = (st.clone(), bh.clone(), sp.clone());
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                            if let Some(req) = read_request(&mut conn) {
                                handle(&mut conn, &req, &st, &bh, &sp);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FakeIdentity {
            port,
            state,
            behaviour,
            stop,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` (for `GCE_METADATA_HOST`).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes how the services answer from now on.
    pub fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Calls answered with credentials, by route (`sts`, `imds-credentials`,
    /// `container`, `gce-metadata`, `gcp-sts`, `entra`, `msi`).
    pub fn calls(&self, route: &str) -> usize {
        self.state().calls.get(route).copied().unwrap_or(0)
    }

    /// Calls refused, by route.
    pub fn refused(&self, route: &str) -> usize {
        self.state().refused.get(route).copied().unwrap_or(0)
    }

    /// Every count, for a report line.
    pub fn summary(&self) -> String {
        let s = self.state();
        format!("answered {:?}, refused {:?}", s.calls, s.refused)
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        let mut s = self.state();
        s.calls.clear();
        s.refused.clear();
        s.problems.clear();
    }

    /// Why calls were refused.
    pub fn problems(&self) -> Vec<String> {
        self.state().problems.clone()
    }

    /// Every secret handed out so far (keys, session tokens, access tokens).
    pub fn issued_secrets(&self) -> Vec<String> {
        self.state().issued.clone()
    }
}

impl Drop for FakeIdentity {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn handle(
    conn: &mut TcpStream,
    req: &Request,
    state: &Mutex<State>,
    behaviour: &Mutex<Behaviour>,
    stop: &AtomicBool,
) {
    let b = behaviour.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let exp = now() + b.lifetime.as_secs();
    let refuse = |st: &mut State, route: &str, why: String| {
        *st.refused.entry(route.to_string()).or_default() += 1;
        st.problems.push(format!("{route}: {why}"));
    };
    let path = req.path.as_str();
    if path.starts_with("/hang") {
        *st.calls.entry("hang".to_string()).or_default() += 1;
        drop(st);
        // Accept and never answer, until the server stops.
        for _ in 0..600 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        return;
    }
    // --- AWS STS AssumeRoleWithWebIdentity
    if path.starts_with("/sts") && req.method == "POST" {
        let f = form(&req.body);
        if f.get("Action").map(String::as_str) != Some("AssumeRoleWithWebIdentity") {
            refuse(&mut st, "sts", format!("action {:?}", f.get("Action")));
            return respond(
                conn,
                "400 Bad Request",
                "text/xml",
                &sts_error("InvalidAction", "unknown action"),
            );
        }
        if b.sts_denies {
            refuse(&mut st, "sts", "told to deny".into());
            return respond(
                conn,
                "403 Forbidden",
                "text/xml",
                &sts_error(
                    "AccessDenied",
                    "Not authorized to perform sts:AssumeRoleWithWebIdentity",
                ),
            );
        }
        if f.get("WebIdentityToken") != Some(&b.token) {
            refuse(
                &mut st,
                "sts",
                "the web identity token is not the token file's".into(),
            );
            return respond(
                conn,
                "400 Bad Request",
                "text/xml",
                &sts_error(
                    "InvalidIdentityToken",
                    "Couldn't retrieve verification key from your identity provider",
                ),
            );
        }
        let (key, secret, token) = aws_keys(&mut st, serial, "ASIASTS");
        *st.calls.entry("sts".into()).or_default() += 1;
        st.problems.push(format!(
            "sts: role {} session {}",
            f.get("RoleArn").cloned().unwrap_or_default(),
            f.get("RoleSessionName").cloned().unwrap_or_default()
        ));
        let body = format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken><Expiration>{}</Expiration></Credentials><SubjectFromWebIdentityToken>system:serviceaccount:db:postgres</SubjectFromWebIdentityToken><AssumedRoleUser><Arn>{}/walg</Arn><AssumedRoleId>AROAFAKE:walg</AssumedRoleId></AssumedRoleUser></AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>fake-{serial}</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>",
            iso8601(exp),
            f.get("RoleArn").cloned().unwrap_or_default()
        );
        return respond(conn, "200 OK", "text/xml", &body);
    }
    // --- IMDSv2
    if let Some(rest) = path.strip_prefix("/imds") {
        let session = "imds-session-token-of-the-fake";
        if rest == "/latest/api/token" {
            if req.method != "PUT"
                || !req
                    .headers
                    .contains_key("x-aws-ec2-metadata-token-ttl-seconds")
            {
                refuse(&mut st, "imds-token", "not an IMDSv2 token PUT".into());
                return respond(conn, "400 Bad Request", "text/plain", "");
            }
            *st.calls.entry("imds-token".into()).or_default() += 1;
            return respond(conn, "200 OK", "text/plain", session);
        }
        if req
            .headers
            .get("x-aws-ec2-metadata-token")
            .map(String::as_str)
            != Some(session)
        {
            refuse(
                &mut st,
                "imds-credentials",
                "no IMDSv2 session token".into(),
            );
            return respond(conn, "401 Unauthorized", "text/plain", "");
        }
        if rest == "/latest/meta-data/iam/security-credentials/" {
            return respond(conn, "200 OK", "text/plain", NODE_ROLE);
        }
        if rest == format!("/latest/meta-data/iam/security-credentials/{NODE_ROLE}") {
            let (key, secret, token) = aws_keys(&mut st, serial, "ASIAIMDS");
            *st.calls.entry("imds-credentials".into()).or_default() += 1;
            let body = format!(
                r#"{{"Code":"Success","LastUpdated":"{}","Type":"AWS-HMAC","AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"{token}","Expiration":"{}","Message":""}}"#,
                iso8601(now()),
                iso8601(exp)
            );
            return respond(conn, "200 OK", "application/json", &body);
        }
        refuse(&mut st, "imds", format!("unknown path {rest}"));
        return respond(conn, "404 Not Found", "text/plain", "");
    }
    // --- ECS / EKS Pod Identity
    if path == "/container/creds" {
        if req.headers.get("authorization") != Some(&b.container_auth) {
            refuse(&mut st, "container", "wrong authorization token".into());
            return respond(
                conn,
                "401 Unauthorized",
                "application/json",
                r#"{"code":"InvalidToken","message":"Invalid authorization token"}"#,
            );
        }
        let (key, secret, token) = aws_keys(&mut st, serial, "ASIAPOD");
        *st.calls.entry("container".into()).or_default() += 1;
        let body = format!(
            r#"{{"AccessKeyId":"{key}","SecretAccessKey":"{secret}","Token":"{token}","AccountId":"123456789012","Expiration":"{}"}}"#,
            iso8601(exp)
        );
        return respond(conn, "200 OK", "application/json", &body);
    }
    // --- GCE metadata server
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if req.headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            refuse(&mut st, "gce-metadata", "no Metadata-Flavor: Google".into());
            return respond(
                conn,
                "403 Forbidden",
                "text/plain",
                "Missing Metadata-Flavor:Google header.",
            );
        }
        let token = format!("ya29.fake-gce-{serial}-{}", now());
        st.issued.push(token.clone());
        *st.calls.entry("gce-metadata".into()).or_default() += 1;
        let body = format!(
            r#"{{"access_token":"{token}","expires_in":{},"token_type":"Bearer"}}"#,
            b.lifetime.as_secs()
        );
        return respond(conn, "200 OK", "application/json", &body);
    }
    // --- Google STS (workload identity federation)
    if path == "/gcp/token" && req.method == "POST" {
        let f = form(&req.body);
        if f.get("subject_token") != Some(&b.token) {
            refuse(
                &mut st,
                "gcp-sts",
                "the subject token is not the token file's".into(),
            );
            return respond(
                conn,
                "400 Bad Request",
                "application/json",
                r#"{"error":"invalid_grant","error_description":"The subject token is invalid"}"#,
            );
        }
        let token = format!("ya29.fake-wif-{serial}-{}", now());
        st.issued.push(token.clone());
        *st.calls.entry("gcp-sts".into()).or_default() += 1;
        let body = format!(
            r#"{{"access_token":"{token}","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":{}}}"#,
            b.lifetime.as_secs()
        );
        return respond(conn, "200 OK", "application/json", &body);
    }
    // --- Microsoft Entra ID (Azure workload identity)
    if path == format!("/{TENANT}/oauth2/v2.0/token") && req.method == "POST" {
        let f = form(&req.body);
        if f.get("client_assertion") != Some(&b.token) || f.get("client_id") != Some(&b.client_id) {
            refuse(
                &mut st,
                "entra",
                "the client assertion is not the token file's, or another client id".into(),
            );
            return respond(
                conn,
                "401 Unauthorized",
                "application/json",
                r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range."}"#,
            );
        }
        let token = azure_token(&mut st, exp);
        *st.calls.entry("entra".into()).or_default() += 1;
        let body = format!(
            r#"{{"token_type":"Bearer","expires_in":{},"ext_expires_in":{},"access_token":"{token}"}}"#,
            b.lifetime.as_secs(),
            b.lifetime.as_secs()
        );
        return respond(conn, "200 OK", "application/json", &body);
    }
    // --- Azure managed identity (App Service style)
    if path == "/msi/token" {
        if req.headers.get("x-identity-header") != Some(&b.identity_header) {
            refuse(&mut st, "msi", "wrong or missing X-IDENTITY-HEADER".into());
            return respond(
                conn,
                "401 Unauthorized",
                "application/json",
                r#"{"error":"unauthorized"}"#,
            );
        }
        if req.query.get("client_id") != Some(&b.client_id) {
            refuse(
                &mut st,
                "msi",
                format!("client_id {:?}", req.query.get("client_id")),
            );
            return respond(
                conn,
                "400 Bad Request",
                "application/json",
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
            );
        }
        let token = azure_token(&mut st, exp);
        *st.calls.entry("msi".into()).or_default() += 1;
        let body = format!(
            r#"{{"access_token":"{token}","expires_on":"{exp}","resource":"https://storage.azure.com/","token_type":"Bearer","client_id":"{}"}}"#,
            b.client_id
        );
        return respond(conn, "200 OK", "application/json", &body);
    }
    refuse(&mut st, "unknown", format!("{} {}", req.method, req.path));
    respond(conn, "404 Not Found", "text/plain", "")
}

fn sts_error(code: &str, message: &str) -> String {
    format!("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fake</RequestId></ErrorResponse>")
}

fn aws_keys(st: &mut State, serial: u64, prefix: &str) -> (String, String, String) {
    let t = now();
    let key = format!("{prefix}{serial:08}");
    let secret = format!("fakeSecret{serial}x{t}xAbCdEfGh");
    let token = format!("FakeSessionToken{serial}x{t}xIjKlMnOp");
    st.issued.push(secret.clone());
    st.issued.push(token.clone());
    (key, secret, token)
}

fn azure_token(st: &mut State, exp: u64) -> String {
    let t = now();
    let token = jwt(&format!(
        r#"{{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/{TENANT}/","iat":{},"nbf":{},"exp":{exp},"oid":"00000000-0000-0000-0000-00000000beef","tid":"{TENANT}","sub":"walg"}}"#,
        t - 60,
        t - 60
    ));
    st.issued.push(token.clone());
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_tokens() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(b64url(b"{\"a\":1}"), "eyJhIjoxfQ");
        assert_eq!(decode("a%3Ab+c"), "a:b c");
    }
}
