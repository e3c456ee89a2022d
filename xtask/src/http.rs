//! Blocking HTTP for talking to a guest's API through QEMU's port forward:
//! the workspace's ureq client with connect and whole-request timeouts, so a
//! dead guest fails a test instead of hanging it, and non-2xx answers
//! returned as values (tests assert on the status).

use std::time::Duration;

use anyhow::Context;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Test bodies are small JSON documents and blobs of a few hundred KiB.
const BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first header called `name` (lower case), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response is not JSON: {}", self.text()))
    }
}

pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Response> {
    request_within(port, method, path, body, TIMEOUT)
}

/// [`request`] bounded by `timeout` instead of the default 30 s: for a
/// probe that expects no answer and must not outlast what it probes.
pub fn request_within(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Response> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            .build(),
    );
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = match method {
        "GET" => agent.get(&url).call(),
        "POST" => agent.post(&url).send(body),
        other => anyhow::bail!("unsupported method {other}"),
    };
    let mut response = response.with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(BODY_BYTES_MAX)
        .read_to_vec()
        .with_context(|| format!("read the answer to {method} {path}"))?;
    Ok(Response {
        status,
        body,
        headers,
    })
}
