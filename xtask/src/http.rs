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
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response is not JSON: {}", self.text()))
    }
}

pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Response> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(TIMEOUT))
            .timeout_global(Some(TIMEOUT))
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
    let body = response
        .body_mut()
        .with_config()
        .limit(BODY_BYTES_MAX)
        .read_to_vec()
        .with_context(|| format!("read the answer to {method} {path}"))?;
    Ok(Response { status, body })
}
