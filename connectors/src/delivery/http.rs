//! The HTTP connector: POSTs a document to a URL with headers made from
//! templates over its properties. Connection failures, 408, 429 and 5xx
//! are retried with doubling back-off; other statuses fail at once.

use std::time::Duration;

use super::template::Template;

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

impl HttpTarget {
    /// Sends one document.
    pub fn post<'a>(
        &self,
        client: &reqwest::blocking::Client,
        bytes: &[u8],
        lookup: impl Fn(&str) -> Option<&'a str> + Copy,
    ) -> Result<Delivered, HttpError> {
        let url = self
            .url
            .render(lookup, |v| v.to_string())
            .map_err(|e| HttpError::Template(format!("url {:?}: {e}", self.url.source())))?;
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
            let sent = client
                .post(&url)
                .headers(headers.clone())
                .timeout(self.timeout)
                .body(bytes.to_vec())
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
