//! The appliance routes against a recording fake `SystemControl`: status
//! codes, query validation, body limits, and 409 on a node that is not the
//! appliance.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use metanode_api::{AppState, SystemControl, SystemError, router, wire};
use metanode_store::{Store, StoreOptions};
use tower::ServiceExt as _;

#[derive(Debug, Default)]
struct Fake {
    calls: Mutex<Vec<String>>,
    dir: PathBuf,
}

impl SystemControl for Fake {
    fn info(&self) -> Result<wire::SystemInfo, SystemError> {
        self.calls.lock().unwrap().push("info".into());
        Ok(wire::SystemInfo {
            version: "t".into(),
            hostname: "h".into(),
            slot: "a".into(),
            boot_entry: Some("metanode-1-a.efi".into()),
            slots: Vec::new(),
            update_note: None,
            kernel_release: "6.1".into(),
            kernel_cmdline: "console=ttyS0".into(),
            sysctl: [("kernel.kptr_restrict".to_owned(), "2".to_owned())].into(),
            addresses: vec!["10.0.2.15/24".into()],
            uptime_s: 3,
        })
    }
    fn apply_update(&self, image: &Path) -> Result<wire::UpdateReport, SystemError> {
        let bytes = std::fs::read(image).unwrap();
        self.calls
            .lock()
            .unwrap()
            .push(format!("update {}", bytes.len()));
        if bytes.starts_with(b"MZ") {
            Ok(wire::UpdateReport {
                slot: "b".into(),
                file: "metanode-2-b+3.efi".into(),
                tries: 3,
                signer: "CN=test".into(),
                size: bytes.len() as u64,
                next: "reboot".into(),
            })
        } else {
            Err(SystemError::Invalid("not a PE file".into()))
        }
    }
    fn upload_dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn power(&self, action: wire::PowerAction) -> Result<(), SystemError> {
        self.calls.lock().unwrap().push(format!("power {action:?}"));
        Ok(())
    }
    fn config_try(
        &self,
        yaml: &[u8],
        timeout_s: u64,
    ) -> Result<wire::ConfigTryReport, SystemError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("try {} {timeout_s}", yaml.len()));
        Ok(wire::ConfigTryReport {
            state: "pending".into(),
            deadline_unix_s: Some(100 + timeout_s),
            message: String::new(),
        })
    }
    fn config_commit(&self) -> Result<wire::ConfigTryReport, SystemError> {
        Err(SystemError::Conflict("no config trial is pending".into()))
    }
    fn config_status(&self) -> Result<wire::ConfigTryReport, SystemError> {
        Ok(wire::ConfigTryReport {
            state: "none".into(),
            deadline_unix_s: None,
            message: String::new(),
        })
    }
}

fn app(dir: &Path, fake: Option<Arc<Fake>>) -> Router {
    let store = Store::open(StoreOptions::new(dir.join("store"))).expect("store");
    let opts = common::api_options();
    let mut state = AppState::new(store, opts);
    if let Some(f) = fake {
        state = state.with_system(f);
    }
    router(state)
}

async fn call(app: &Router, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn not_the_appliance_answers_409_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    for (m, uri) in [
        (Method::GET, "/api/v1/system"),
        (Method::POST, "/api/v1/system/update"),
        (Method::POST, "/api/v1/system/reboot"),
        (Method::POST, "/api/v1/config?mode=try"),
        (Method::POST, "/api/v1/config/commit"),
    ] {
        let (status, body) = call(&app, m, uri, Vec::new()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{uri}: {body}");
        assert!(body.contains("not running as the appliance"), "{body}");
    }
}

#[tokio::test]
async fn routes_reach_the_control_with_validated_input() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake {
        dir: dir.path().to_path_buf(),
        ..Fake::default()
    });
    let app = app(dir.path(), Some(fake.clone()));

    let (status, body) = call(&app, Method::GET, "/api/v1/system", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let info: wire::SystemInfo = serde_json::from_str(&body).unwrap();
    assert_eq!(info.sysctl["kernel.kptr_restrict"], "2");

    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/system/update",
        b"MZ123".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("metanode-2-b+3.efi"));
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/system/update",
        b"junk".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not a PE file"), "{body}");
    let (status, _) = call(&app, Method::POST, "/api/v1/system/update", Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The uploaded file is removed after the attempt.
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "efi"))
            .count(),
        0
    );

    let (status, _) = call(&app, Method::POST, "/api/v1/system/poweroff", Vec::new()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = call(&app, Method::POST, "/api/v1/system/explode", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("explode"), "{body}");

    let (status, body) = call(&app, Method::POST, "/api/v1/config", b"x: 1".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("mode=try"), "{body}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/config?mode=try&timeout_s=5",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("timeout_s"), "{body}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/config?mode=try&timeout_s=30",
        b"node: {}".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body.contains("\"deadline_unix_s\":130"), "{body}");
    let (status, body) = call(&app, Method::POST, "/api/v1/config/commit", Vec::new()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("no config trial"), "{body}");

    assert_eq!(
        *fake.calls.lock().unwrap(),
        vec!["info", "update 5", "update 4", "power Poweroff", "try 8 30"]
    );
}
