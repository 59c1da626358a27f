//! Incomplete S3 multipart uploads: listed and aborted for `walg st clean`.
//!
//! A `wal-push` killed during a multipart upload leaves the parts on S3,
//! invisible to listings and billed until aborted. opendal has no API for
//! other processes' uploads, so this module speaks the two S3 calls itself
//! (`ListMultipartUploads`, `AbortMultipartUpload`) with a small AWS
//! Signature V4 signer over the static keys from the settings. Without
//! static keys (instance profiles) it says so instead of guessing.
//!
//! What this module does not do: follow `IsTruncated` beyond 20 pages of
//! 1000 uploads, or handle credentials other than static keys.

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::clean::CleanItem;
use crate::spec::{StorageError, StorageSpec};

const SETTING: &str = "WALG_S3_PREFIX";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// RFC 3986 encoding as SigV4 wants it (`/` kept in paths only).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Civil date from Unix days (Howard Hinnant's algorithm).
fn ymd(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn amz_date(t: SystemTime) -> (String, String) {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = ymd(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let date = format!("{y:04}{m:02}{d:02}");
    (
        format!("{date}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60),
        date,
    )
}

/// Parses `2024-01-02T03:04:05.000Z` into Unix seconds.
fn parse_iso(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.trim_end_matches('Z').split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss = t.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Days from civil (inverse of `ymd`).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

struct S3 {
    client: reqwest::Client,
    /// `http(s)://host[:port]`
    origin: String,
    host: String,
    /// Path of the bucket: `/bucket` (path style) or empty.
    bucket_path: String,
    /// Key prefix inside the bucket (`path/`), or empty.
    prefix: String,
    region: String,
    key_id: String,
    secret: String,
    token: Option<String>,
}

impl S3 {
    fn from_spec(spec: &StorageSpec) -> Result<Result<S3, String>, StorageError> {
        let s = &spec.settings;
        let location = spec.location.trim();
        let (bucket, path) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() {
            return Err(spec.config_error(SETTING, "no bucket"));
        }
        let (Some(key_id), Some(secret)) =
            (s.get("AWS_ACCESS_KEY_ID"), s.get("AWS_SECRET_ACCESS_KEY"))
        else {
            return Ok(Err(
                "listing incomplete multipart uploads needs static keys (AWS_ACCESS_KEY_ID, \
                 AWS_SECRET_ACCESS_KEY); abort them with a bucket lifecycle rule \
                 (AbortIncompleteMultipartUpload) instead"
                    .to_string(),
            ));
        };
        let region = s.get("AWS_REGION").unwrap_or("us-east-1").to_string();
        let endpoint = s.get("AWS_ENDPOINT");
        let path_style = match s
            .get("AWS_S3_FORCE_PATH_STYLE")
            .map(str::to_ascii_lowercase)
        {
            Some(v) => ["true", "1", "yes", "on"].contains(&v.as_str()),
            None => endpoint.is_some(),
        };
        let base = endpoint
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let (scheme, host) = base.split_once("://").ok_or_else(|| {
            spec.config_error("AWS_ENDPOINT", "expected an http:// or https:// URL")
        })?;
        let (host, bucket_path) = if path_style {
            (host.to_string(), format!("/{}", encode(bucket, false)))
        } else {
            (format!("{bucket}.{host}"), String::new())
        };
        let prefix = path.trim_matches('/');
        let client = reqwest::Client::builder()
            .timeout(spec.timeout)
            .build()
            .map_err(|e| spec.unavailable(format!("build an HTTP client: {e}")))?;
        Ok(Ok(S3 {
            client,
            origin: format!("{scheme}://{host}"),
            host,
            bucket_path,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            region,
            key_id: key_id.to_string(),
            secret: secret.to_string(),
            token: s.get("AWS_SESSION_TOKEN").map(str::to_string),
        }))
    }

    /// Sends a signed request; `path` is the key part after the bucket
    /// (`/` for the bucket itself), `query` unencoded pairs.
    async fn send(
        &self,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let path = format!("{}/{}", self.bucket_path, encode(key, true));
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (encode(k, false), encode(v, false)))
            .collect();
        q.sort();
        let query = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let (stamp, date) = amz_date(SystemTime::now());
        let payload = hex(&Sha256::digest(b""));
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            ("x-amz-content-sha256".to_string(), payload.clone()),
            ("x-amz-date".to_string(), stamp.clone()),
        ];
        if let Some(t) = &self.token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        let signed = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical = format!(
            "{method}\n{path}\n{query}\n{}\n{signed}\n{payload}",
            headers
                .iter()
                .map(|(k, v)| format!("{k}:{}\n", v.trim()))
                .collect::<String>()
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut k = hmac(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        let signature = hex(&hmac(&k, to_sign.as_bytes()));
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            self.key_id
        );
        let url = if query.is_empty() {
            format!("{}{path}", self.origin)
        } else {
            format!("{}{path}?{query}", self.origin)
        };
        let mut req = self
            .client
            .request(method, url)
            .header("authorization", auth);
        for (k, v) in &headers {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Ok((status, body))
    }
}

fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Lists (and with `confirm` aborts) the incomplete multipart uploads under
/// the prefix that were started more than `older_than` ago.
pub async fn clean(
    spec: &StorageSpec,
    older_than: Duration,
    confirm: bool,
) -> Result<Vec<CleanItem>, StorageError> {
    let s3 = match S3::from_spec(spec)? {
        Ok(s) => s,
        Err(why) => return Err(spec.unavailable(why)),
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut items = Vec::new();
    let (mut key_marker, mut id_marker) = (String::new(), String::new());
    for _page in 0..20 {
        let mut query = vec![("uploads", ""), ("prefix", s3.prefix.as_str())];
        if !key_marker.is_empty() {
            query.push(("key-marker", key_marker.as_str()));
            query.push(("upload-id-marker", id_marker.as_str()));
        }
        let (status, body) = s3
            .send(reqwest::Method::GET, "", &query)
            .await
            .map_err(|e| spec.unavailable(format!("list multipart uploads: {e}")))?;
        if status != 200 {
            return Err(spec.unavailable(format!(
                "list multipart uploads: HTTP {status}: {}",
                tag(&body, "Message").unwrap_or("")
            )));
        }
        for upload in body.split("<Upload>").skip(1) {
            let (Some(key), Some(id), Some(started)) = (
                tag(upload, "Key"),
                tag(upload, "UploadId"),
                tag(upload, "Initiated"),
            ) else {
                continue;
            };
            let (key, id) = (unescape(key), unescape(id));
            let age = (now - parse_iso(started).unwrap_or(now)).max(0) as u64;
            if age < older_than.as_secs() {
                continue;
            }
            let mut item = CleanItem {
                kind: "multipart upload",
                key: key.clone(),
                age_secs: age,
                removed: false,
                error: None,
            };
            if confirm {
                match s3
                    .send(reqwest::Method::DELETE, &key, &[("uploadId", id.as_str())])
                    .await
                {
                    Ok((204 | 200, _)) => item.removed = true,
                    Ok((status, body)) => {
                        item.error = Some(format!(
                            "HTTP {status}: {}",
                            tag(&body, "Message").unwrap_or("")
                        ))
                    }
                    Err(e) => item.error = Some(e),
                }
            }
            items.push(item);
        }
        if tag(&body, "IsTruncated") != Some("true") {
            break;
        }
        key_marker = tag(&body, "NextKeyMarker")
            .map(unescape)
            .unwrap_or_default();
        id_marker = tag(&body, "NextUploadIdMarker")
            .map(unescape)
            .unwrap_or_default();
        if key_marker.is_empty() {
            break;
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_aws_reference() {
        // The signing-key example of the AWS SigV4 documentation.
        let mut k = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", b"20120215");
        for part in ["us-east-1", "iam", "aws4_request"] {
            k = hmac(&k, part.as_bytes());
        }
        assert_eq!(
            hex(&k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn dates_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(amz_date(t).0, "20231114T221320Z");
        assert_eq!(parse_iso("2023-11-14T22:13:20.000Z"), Some(1_700_000_000));
        assert_eq!(encode("a b/c~", true), "a%20b/c~");
    }
}
