//! How CLI commands reach the running Atom: the admin API address from the
//! configuration, the token from the data directory.

use std::net::SocketAddr;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::CliError;
use crate::admin;

/// A connection to the admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl AdminClient {
    pub fn connect(address: SocketAddr, data_dir: &Path) -> Result<AdminClient, CliError> {
        let token_path = admin::token_path(data_dir);
        let token = std::fs::read_to_string(&token_path)
            .map_err(|e| {
                CliError::Usage(format!(
                    "{}: {e}; is the Atom running with this data directory?",
                    token_path.display()
                ))
            })?
            .trim()
            .to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Usage(format!("starting the client runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::Usage(format!("building the HTTP client: {e}")))?;
        Ok(AdminClient {
            base: format!("http://{address}"),
            token,
            http,
            runtime,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        self.send(request)
    }

    /// Writes a download to `out` as it arrives, a piece at a time.
    pub fn download(&self, path: &str, out: &mut dyn std::io::Write) -> Result<(), CliError> {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        self.runtime.block_on(async move {
            let mut response = self.answered(request).await?;
            while let Some(piece) = response
                .chunk()
                .await
                .map_err(|e| CliError::Remote(format!("reading the download: {e}")))?
            {
                out.write_all(&piece)
                    .map_err(|e| CliError::Failed(format!("writing the download: {e}")))?;
            }
            out.flush()
                .map_err(|e| CliError::Failed(format!("writing the download: {e}")))
        })
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body);
        self.send(request)
    }

    fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, CliError> {
        self.runtime.block_on(async move {
            self.answered(request)
                .await?
                .json::<T>()
                .await
                .map_err(|e| CliError::Remote(format!("unexpected admin API answer: {e}")))
        })
    }

    /// Sends `request`: its response when the admin API said yes, else
    /// what it said (or why it could not be reached).
    async fn answered(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = request.send().await.map_err(|e| {
            CliError::Remote(format!(
                "cannot reach the admin API at {}: {e}; is `atom run` up?",
                self.base
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(CliError::Remote(format!(
                "admin API answered {status}: {}",
                text.trim()
            )));
        }
        Ok(response)
    }
}

/// `path?limit=N&key=value...` with the filters that are set, each value
/// percent-encoded.
pub fn query_path(path: &str, limit: u32, filters: &[(&str, Option<&str>)]) -> String {
    let mut query = format!("{path}?limit={limit}");
    for (key, value) in filters {
        if let Some(v) = value {
            let encoded: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            query.push_str(&format!("&{key}={encoded}"));
        }
    }
    query
}
