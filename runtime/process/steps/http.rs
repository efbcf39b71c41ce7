//! The `http` step: POSTs each document to an endpoint and hands it on.
//!
//! ```yaml
//! - http:
//!     url: http://erp.internal/orders
//!     headers: { X-Partner: "{as2_from}" }
//!     retries: 3
//!     retry_backoff_ms: 1000
//!     timeout_seconds: 30
//! ```
//!
//! The step retries by itself first; unreachable, timed out, 408, 429 and
//! 5xx after that are transient, other statuses permanent. The request
//! itself is [`atom_connectors::delivery::http`]'s.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use atom_connectors::delivery::http::{self as delivery, HttpTarget};
use atom_connectors::delivery::template::Template;
use serde::Deserialize;

use super::{with_delivered, Document, LoadContext, ProcessStep, StepContext, StepFailure};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    timeout_seconds: Option<u64>,
}

/// A configured `http` step.
pub struct HttpStep {
    target: HttpTarget,
}

/// The client every `http` step of the runtime shares. Built on first use,
/// on a worker thread (the blocking client may not be created inside the
/// async runtime).
#[derive(Default)]
pub struct SharedClient(OnceLock<Result<reqwest::blocking::Client, String>>);

impl SharedClient {
    pub fn get(&self) -> Result<&reqwest::blocking::Client, String> {
        self.0
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    .user_agent(concat!("atom/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("building the HTTP client of http steps: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Checks the URL, the header names and templates, and the retries.
pub fn load(raw: RawHttp, cx: &LoadContext<'_>) -> Result<HttpStep, (String, String)> {
    let url = Template::parse(&raw.url).map_err(|e| (cx.key("http.url"), e.to_string()))?;
    delivery::check_url(&url).map_err(|r| (cx.key("http.url"), r))?;
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err((
                cx.key("http.headers"),
                format!("{name:?} is not a header name"),
            ));
        }
        let template = Template::parse(&value)
            .map_err(|e| (cx.key(&format!("http.headers.{name}")), e.to_string()))?;
        headers.push((name, template));
    }
    let retries = raw.retries.unwrap_or(3);
    if retries > 20 {
        return Err((cx.key("http.retries"), format!("{retries} is above 20")));
    }
    Ok(HttpStep {
        target: HttpTarget {
            url,
            headers,
            retries,
            first_backoff: Duration::from_millis(raw.retry_backoff_ms.unwrap_or(1000)),
            timeout: Duration::from_secs(raw.timeout_seconds.unwrap_or(30).max(1)),
        },
    })
}

impl ProcessStep for HttpStep {
    fn describe(&self) -> String {
        format!("http {}", self.target.url)
    }

    fn has_effects(&self) -> bool {
        true
    }

    fn run(
        &self,
        mut document: Document,
        cx: &mut StepContext<'_>,
    ) -> Result<Vec<Document>, StepFailure> {
        let where_ = cx.where_;
        let client = cx.http.get().map_err(StepFailure::permanent)?;
        let lookup = cx.lookup(&document.properties);
        let delivered = with_delivered(&document.content, cx.documents, |c| {
            self.target.post(client, c, lookup)
        })
        .map_err(|e| StepFailure::http(where_, &e))?;
        if delivered.attempts > 1 {
            *cx.warned = true;
            cx.log.line(
                "WARN",
                format_args!("{where_}: delivered after {} attempts", delivered.attempts),
            );
        }
        cx.log.line(
            "INFO",
            format_args!(
                "{where_}: POST {} -> HTTP {}",
                delivered.url, delivered.status
            ),
        );
        document.delivered.push(delivered.url);
        Ok(vec![document])
    }
}
