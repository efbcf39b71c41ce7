//! The HTTP connector: POSTs a document to a URL with headers made from
//! templates over its properties. Connection failures, 408, 429 and 5xx
//! are retried with doubling back-off; other statuses fail at once.
//!
//! A property value goes into the URL percent-encoded for the component
//! it lands in (a path segment, a query value, the fragment): it can add
//! no `/`, `?`, `&`, `#` or `..` segment of its own. The scheme, host and
//! port are literal: [`check_url`] refuses a template there at deploy.

use std::time::Duration;

use super::template::{Piece, Template};
use super::Content;

/// A configured http step.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    /// Attempts after the first.
    pub retries: u32,
    pub first_backoff: Duration,
    pub timeout: Duration,
}

/// A delivered document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub status: u16,
    pub attempts: u32,
    pub url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Template(String),
    #[error("POST {url}: HTTP {status} after {attempts} attempt(s): {body}")]
    Status {
        url: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    #[error("POST {url}: {reason} after {attempts} attempt(s)")]
    Transport {
        url: String,
        reason: String,
        attempts: u32,
    },
}

impl HttpError {
    /// True when posting again later may succeed: the endpoint could not
    /// be reached or timed out, or answered 408, 429 or 5xx, even after
    /// the step's own retries. A bad template or a 4xx refusal is
    /// permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Template(_) => false,
            HttpError::Status { status, .. } => retryable(*status),
            HttpError::Transport { .. } => true,
        }
    }
}

fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// Where in a URL a piece of text lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlPart {
    Path,
    Query,
    Fragment,
}

impl UrlPart {
    /// The component after `text` is appended in this one.
    fn after(mut self, text: &str) -> UrlPart {
        for c in text.chars() {
            self = match (self, c) {
                (UrlPart::Path, '?') => UrlPart::Query,
                (UrlPart::Path | UrlPart::Query, '#') => UrlPart::Fragment,
                (part, _) => part,
            };
        }
        self
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters: safe as
/// a path segment, a query name or value, and a fragment.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The literal `scheme://authority` of a URL template and the index in
/// its first text piece where the path, query or fragment begins.
fn literal_origin(template: &Template) -> Result<usize, String> {
    let source = template.source();
    let mut pieces = template.pieces();
    let first = match pieces.next() {
        Some(Piece::Text(text)) => text,
        _ => return Err(format!("{source:?} must start with http:// or https://")),
    };
    let rest = first
        .strip_prefix("http://")
        .or_else(|| first.strip_prefix("https://"))
        .ok_or_else(|| format!("{source:?} must start with http:// or https://"))?;
    let origin_len = first.len() - rest.len();
    let end = rest.find(['/', '?', '#']);
    let authority = &rest[..end.unwrap_or(rest.len())];
    let more = pieces.next().is_some();
    if (end.is_none() && more) || authority.contains(['{', '}']) {
        return Err(format!(
            "{source:?}: the scheme, host and port must be literal; templates may \
             only fill the path, the query and the fragment"
        ));
    }
    Ok(origin_len + end.unwrap_or(rest.len()))
}

/// Checks a URL template at deploy: http or https, a literal origin, and
/// a URL that parses once filled in.
pub fn check_url(template: &Template) -> Result<(), String> {
    literal_origin(template)?;
    let sample = render_url(template, |_| Some("x")).map_err(|e| e.to_string())?;
    let parsed = reqwest::Url::parse(&sample)
        .map_err(|e| format!("{:?} is not a valid URL: {e}", template.source()))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{:?} names no host", template.source()));
    }
    Ok(())
}

/// Fills in a URL template, each value encoded for its component; a path
/// that would hold a `.` or `..` segment is refused (URL parsers resolve
/// them, even percent-encoded).
pub fn render_url<'a>(
    template: &Template,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, HttpError> {
    let error =
        |reason: String| HttpError::Template(format!("url {:?}: {reason}", template.source()));
    let origin_end = literal_origin(template).map_err(error)?;
    let mut out = String::new();
    let mut part = UrlPart::Path;
    for (i, piece) in template.pieces().enumerate() {
        match piece {
            Piece::Text(text) if i == 0 => {
                out.push_str(text);
                part = part.after(&text[origin_end..]);
            }
            Piece::Text(text) => {
                out.push_str(text);
                part = part.after(text);
            }
            Piece::Property(name) => {
                let value = lookup(name)
                    .ok_or_else(|| error(format!("the document has no property {name:?}")))?;
                out.push_str(&encode_component(value));
            }
        }
    }
    let path_end = out[origin_end..]
        .find(['?', '#'])
        .map_or(out.len(), |i| origin_end + i);
    let dot_segment = out[origin_end..path_end].split('/').any(|segment| {
        let plain = segment.to_ascii_lowercase().replace("%2e", ".");
        plain == "." || plain == ".."
    });
    if dot_segment {
        return Err(error(format!("{out:?} has a '.' or '..' path segment")));
    }
    Ok(out)
}

impl HttpTarget {
    /// Sends one document.
    pub fn post<'a>(
        &self,
        client: &reqwest::blocking::Client,
        content: Content<'_>,
        lookup: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Delivered, HttpError> {
        let url = render_url(&self.url, lookup)?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, template) in &self.headers {
            let value = template
                .render(lookup, |v| v.replace(['\r', '\n'], " "))
                .map_err(|e| HttpError::Template(format!("header {name}: {e}")))?;
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| HttpError::Template(format!("header name {name:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|e| HttpError::Template(format!("header {name} value: {e}")))?;
            headers.insert(name, value);
        }
        let mut backoff = self.first_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            // A stored document is opened again for each attempt and sent
            // as it is read, with its length.
            let body = match content {
                Content::Bytes(bytes) => Ok(reqwest::blocking::Body::from(bytes.to_vec())),
                Content::Stream { open, len } => {
                    open().map(|reader| reqwest::blocking::Body::sized(reader, len))
                }
            };
            let body = match body {
                Ok(body) => body,
                Err(e) => {
                    return Err(HttpError::Transport {
                        url,
                        reason: format!("reading the stored document: {e}"),
                        attempts,
                    })
                }
            };
            let sent = client
                .post(&url)
                .headers(headers.clone())
                .timeout(self.timeout)
                .body(body)
                .send();
            let last = attempts > self.retries;
            match sent {
                Ok(response) if response.status().is_success() => {
                    return Ok(Delivered {
                        status: response.status().as_u16(),
                        attempts,
                        url,
                    })
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    if last || !retryable(status) {
                        let body: String = response
                            .text()
                            .unwrap_or_default()
                            .chars()
                            .take(300)
                            .collect();
                        return Err(HttpError::Status {
                            url,
                            status,
                            attempts,
                            body,
                        });
                    }
                    tracing::warn!(%url, status, attempts, "http step: retrying");
                }
                Err(e) => {
                    if last {
                        return Err(HttpError::Transport {
                            url,
                            reason: e.to_string(),
                            attempts,
                        });
                    }
                    tracing::warn!(%url, error = %e, attempts, "http step: retrying");
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(template: &str, value: &str) -> Result<String, HttpError> {
        render_url(&Template::parse(template).expect("parses"), |_| Some(value))
    }

    #[test]
    fn values_are_encoded_for_the_component_they_land_in() {
        let hostile = "../../admin?x=1";
        assert_eq!(
            url("http://erp/in/{s}", hostile).expect("renders"),
            "http://erp/in/..%2F..%2Fadmin%3Fx%3D1"
        );
        assert_eq!(
            url("http://erp/in?subject={s}&k=v", "a&b=c #d").expect("renders"),
            "http://erp/in?subject=a%26b%3Dc%20%23d&k=v"
        );
        assert_eq!(
            url("http://erp/in#{s}", "x/y").expect("renders"),
            "http://erp/in#x%2Fy"
        );
        // A value that is a whole dot segment would climb even encoded.
        for dots in [".", "..", "%2e%2E"] {
            let value = dots.replace("%2e", ".").replace("%2E", ".");
            let refused = url("http://erp/in/{s}/x", &value).expect_err("refused");
            assert!(
                refused.to_string().contains("'..' path segment"),
                "{refused}"
            );
            assert!(!refused.is_transient());
        }
        assert_eq!(
            url("http://erp/in/a{s}", "..").expect("not a whole segment"),
            "http://erp/in/a.."
        );
    }

    #[test]
    fn the_origin_cannot_be_templated() {
        for bad in [
            "http://{host}/in",
            "http://erp{s}/in",
            "http://erp:{port}/in",
            "https://{s}",
            "{base}/in",
            "ftp://erp/{s}",
            "http://a{{b}}/in",
        ] {
            let t = Template::parse(bad).expect("parses");
            assert!(check_url(&t).is_err(), "{bad}");
        }
        for good in [
            "http://erp.internal:8080/in/{s}",
            "https://erp/in?x={s}",
            "http://127.0.0.1:9/",
            "http://erp",
        ] {
            let t = Template::parse(good).expect("parses");
            assert_eq!(check_url(&t), Ok(()), "{good}");
        }
        let literal_dots = Template::parse("http://erp/a/../b").expect("parses");
        assert!(check_url(&literal_dots).is_err());
    }

    #[test]
    fn unreachable_endpoints_and_5xx_are_transient_4xx_and_templates_are_not() {
        let status = |status: u16| HttpError::Status {
            url: "http://erp/orders".into(),
            status,
            attempts: 4,
            body: String::new(),
        };
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).is_transient(), "HTTP {code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(!status(code).is_transient(), "HTTP {code}");
        }
        assert!(HttpError::Transport {
            url: "http://erp/orders".into(),
            reason: "connection refused".into(),
            attempts: 4,
        }
        .is_transient());
        assert!(!HttpError::Template("url: no property x".into()).is_transient());
    }
}
