//! `POST /api/v1/docklock/runs` against a recording fake `DocklockControl`: 409 without a
//! `docklock:` section, 400 naming the field for every malformed request, 404 naming an input
//! or executable CID the store does not hold, 403 for a program by CID on a node that does not
//! allow it, 503 + Retry-After while a run is in progress, and the checked request handed to
//! the control.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use metanode_api::{
    AppState, CageCgroupReport, CageExitStatus, CageInput, CageRunError, CageRunRequest,
    CageRunResponse, CageWorkload, DocklockControl, router,
};
use metanode_core::limits::API_DOCKLOCK_BUSY_RETRY_AFTER_S;
use metanode_store::{Store, StoreOptions};
use tower::ServiceExt as _;

/// What the fake does when asked to run.
#[derive(Debug)]
enum Behaviour {
    Answer,
    /// Say it entered, then wait to be released.
    Block {
        entered: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
    },
    Refuse,
}

#[derive(Debug)]
struct Fake {
    requests: Mutex<Vec<CageRunRequest>>,
    behaviour: Behaviour,
    executables_by_cid: bool,
}

impl Fake {
    fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            requests: Mutex::new(Vec::new()),
            behaviour,
            executables_by_cid: false,
        })
    }

    /// A node whose config has `executables_by_cid: true`.
    fn running_programs_by_cid() -> Arc<Self> {
        Arc::new(Self {
            requests: Mutex::new(Vec::new()),
            behaviour: Behaviour::Answer,
            executables_by_cid: true,
        })
    }
}

fn answer() -> CageRunResponse {
    CageRunResponse {
        exit: CageExitStatus::Code(3),
        verdict: "completed".into(),
        violations: Vec::new(),
        violations_dropped_count: 0,
        receipt_cid: "bafkreceipt".into(),
        outputs: Vec::new(),
        outputs_refused: None,
        inputs: Vec::new(),
        input_root: "00".repeat(32),
        outputs_root: "11".repeat(32),
        executable_cid: None,
        cgroup: CageCgroupReport {
            mode: "v2".into(),
            memory_peak_bytes: 1 << 20,
            cpu_usage_us: 1500,
            oom_kills: 0,
            pids_max_hits: 0,
        },
        tsc_reads_virtualized: 8,
    }
}

impl DocklockControl for Fake {
    fn run_timeout_s_max(&self) -> u64 {
        30
    }
    fn executables_by_cid(&self) -> bool {
        self.executables_by_cid
    }
    fn run(&self, request: CageRunRequest) -> Result<CageRunResponse, CageRunError> {
        self.requests.lock().unwrap().push(request);
        match &self.behaviour {
            Behaviour::Answer => Ok(answer()),
            Behaviour::Block { entered, release } => {
                entered.lock().unwrap().send(()).unwrap();
                release.lock().unwrap().recv().unwrap();
                Ok(answer())
            }
            Behaviour::Refuse => Err(CageRunError::BadRequest {
                field: "executable".into(),
                reason: "/srv/x is not beneath this node's docklock.workloads_dir /w".into(),
            }),
        }
    }
}

struct App {
    router: Router,
    store: Store,
    _dir: tempfile::TempDir,
}

fn app(fake: Option<Arc<Fake>>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path().join("store"))).expect("store");
    let opts = common::api_options();
    let mut state = AppState::new(store.clone(), opts);
    if let Some(f) = fake {
        state = state.with_docklock(f);
    }
    App {
        router: router(state),
        store,
        _dir: dir,
    }
}

async fn post(app: &Router, body: &str) -> (StatusCode, HeaderMap, String) {
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/api/v1/docklock/runs")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn error_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect(body);
    value["error"].as_str().expect(body).to_string()
}

#[tokio::test]
async fn a_node_without_a_docklock_section_answers_409() {
    let app = app(None);
    let (status, _, body) = post(&app.router, r#"{"executable":"/w/tool"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error_of(&body).contains("no `docklock:` section"), "{body}");
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_field() {
    let fake = Fake::new(Behaviour::Answer);
    let app = app(Some(fake.clone()));
    let cases: &[(&str, &str)] = &[
        ("{", "the run request is not valid JSON"),
        (
            r#"{"executable":"/w/t","colour":1}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"executable":"/w/t","bundle":"/w/b"}"#,
            "executable: give only one of `executable`, `executable_cid` and `bundle`",
        ),
        (r#"{}"#, "executable: missing"),
        (
            r#"{"executable":"tool"}"#,
            "executable: \"tool\" is not an absolute path",
        ),
        (r#"{"bundle":"/w/b","env":["A=1"]}"#, "env: "),
        (
            r#"{"executable":"/w/t","inputs":[{"name":"x","cid":"bafknope"}]}"#,
            "inputs.0.cid: \"bafknope\" is not a CID",
        ),
        (
            r#"{"executable":"/w/t","inputs":[{"name":"..","cid":"bafknope"}]}"#,
            "inputs.0.name: \"..\" may not be",
        ),
        (
            r#"{"executable":"/w/t","inputs":[{"name":"x"}]}"#,
            "inputs[0]: missing field `cid`",
        ),
        (
            r#"{"executable":"/w/t","rng_seed":"abc"}"#,
            "rng_seed: \"abc\" is not 64 hex digits",
        ),
        (
            r#"{"executable":"/w/t","timeout_s":"5"}"#,
            "timeout_s: invalid type",
        ),
        (
            r#"{"executable":"/w/t","timeout_s":31}"#,
            "timeout_s: 31 exceeds this node's docklock.run_timeout_s_max (30)",
        ),
        (
            r#"{"executable":"/w/t","args":[1]}"#,
            "args[0]: invalid type",
        ),
        (r#"{"executable":"/w/t"} x"#, "trailing"),
    ];
    for (request, expected) in cases {
        let (status, _, body) = post(&app.router, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let error = error_of(&body);
        assert!(
            error.contains(expected),
            "{request}: {error:?} lacks {expected:?}"
        );
    }
    assert!(fake.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_input_cid_the_store_lacks_gets_404_naming_it() {
    let fake = Fake::new(Behaviour::Answer);
    let app = app(Some(fake.clone()));
    let stored = app.store.put(b"present", true).unwrap().cid;
    let absent = {
        let dir = tempfile::tempdir().unwrap();
        let other = Store::open(StoreOptions::new(dir.path())).unwrap();
        let cid = other.put(b"absent", true).unwrap().cid;
        other.close().unwrap();
        cid
    };
    let request = format!(
        r#"{{"executable":"/w/t","inputs":[{{"name":"a","cid":"{stored}"}},{{"name":"b","cid":"{absent}"}}]}}"#
    );
    let (status, _, body) = post(&app.router, &request).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        error_of(&body),
        format!("input b: {absent} is not in the store")
    );
    assert!(fake.requests.lock().unwrap().is_empty());

    // Both stored: the control gets the checked request, and its answer is the response.
    let request = format!(
        r#"{{"executable":"/w/t","args":["-v"],"env":["A=1"],"inputs":[{{"name":"a","cid":"{stored}"}}],"rng_seed":"{}","service":"svc"}}"#,
        "0a".repeat(32)
    );
    let (status, _, body) = post(&app.router, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response: CageRunResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(response, answer());
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["exit"], serde_json::json!({"code": 3}));
    assert_eq!(
        value["cgroup"],
        serde_json::json!({"mode": "v2", "memory_peak_bytes": 1048576, "cpu_usage_us": 1500,
                           "oom_kills": 0, "pids_max_hits": 0})
    );
    assert_eq!(value["tsc_reads_virtualized"], 8);
    assert!(value.get("executable_cid").is_none(), "{body}");
    assert_eq!(
        *fake.requests.lock().unwrap(),
        vec![CageRunRequest {
            workload: CageWorkload::Executable {
                path: "/w/t".into(),
                args: vec!["-v".into()],
                env: vec!["A=1".into()],
            },
            inputs: vec![CageInput {
                name: "a".into(),
                cid: stored,
            }],
            rng_seed: [0x0a; 32],
            timeout_s: 30,
            service: "svc".into(),
        }]
    );
}

#[tokio::test]
async fn refusals_of_the_control_keep_their_status() {
    let app = app(Some(Fake::new(Behaviour::Refuse)));
    let (status, _, body) = post(&app.router, r#"{"bundle":"/srv/x"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        error_of(&body),
        "executable: /srv/x is not beneath this node's docklock.workloads_dir /w"
    );
}

#[tokio::test]
async fn a_second_run_while_one_is_in_progress_gets_503_with_retry_after() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let fake = Fake::new(Behaviour::Block {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let app = app(Some(fake.clone()));
    let router = app.router.clone();
    let first = tokio::spawn(async move { post(&router, r#"{"executable":"/w/first"}"#).await });
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();

    let (status, headers, body) = post(&app.router, r#"{"executable":"/w/second"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        headers[header::RETRY_AFTER].to_str().unwrap(),
        API_DOCKLOCK_BUSY_RETRY_AFTER_S.to_string()
    );
    assert!(error_of(&body).contains("another cage run is in progress"));

    release_tx.send(()).unwrap();
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // The slot is free again once the first run is over.
    let (entered_again, _) = (fake.requests.lock().unwrap().len(), ());
    assert_eq!(
        entered_again, 1,
        "the second request never reached the control"
    );
}

/// A CID of bytes the store in `app` does not hold.
fn absent_cid() -> metanode_core::cid::ContentId {
    let dir = tempfile::tempdir().unwrap();
    let other = Store::open(StoreOptions::new(dir.path())).unwrap();
    let cid = other.put(b"absent program", true).unwrap().cid;
    other.close().unwrap();
    cid
}

#[tokio::test]
async fn a_program_by_cid_runs_only_where_the_node_allows_it() {
    // Not allowed: 403 naming the field and the config key, whatever the CID.
    let fake = Fake::new(Behaviour::Answer);
    let refusing = app(Some(fake.clone()));
    let program = refusing.store.put(b"#!program", true).unwrap().cid;
    for cid in [program.to_string(), "bafknope".to_string()] {
        let (status, _, body) = post(
            &refusing.router,
            &format!(r#"{{"executable_cid":"{cid}"}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            error_of(&body),
            "executable_cid: this node does not run executables by CID \
             (docklock.executables_by_cid is false)"
        );
    }
    assert!(fake.requests.lock().unwrap().is_empty());

    // Allowed: the checked request reaches the control.
    let fake = Fake::running_programs_by_cid();
    let app = app(Some(fake.clone()));
    let program = app.store.put(b"#!program", true).unwrap().cid;
    let input = app.store.put(b"data", true).unwrap().cid;
    let request = format!(
        r#"{{"executable_cid":"{program}","args":["-v"],"env":["A=1"],"inputs":[{{"name":"a","cid":"{input}"}}]}}"#
    );
    let (status, _, body) = post(&app.router, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        *fake.requests.lock().unwrap(),
        vec![CageRunRequest {
            workload: CageWorkload::ExecutableCid {
                cid: program,
                args: vec!["-v".into()],
                env: vec!["A=1".into()],
            },
            inputs: vec![CageInput {
                name: "a".into(),
                cid: input,
            }],
            rng_seed: [0; 32],
            timeout_s: 30,
            service: "docklock".into(),
        }]
    );

    // Refusals, none of which reach the control.
    let absent = absent_cid();
    let (status, _, body) = post(&app.router, &format!(r#"{{"executable_cid":"{absent}"}}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        error_of(&body),
        format!("executable_cid: {absent} is not in the store")
    );
    let cases = [
        (
            r#"{"executable_cid":"bafknope"}"#.to_string(),
            "executable_cid: \"bafknope\" is not a CID",
        ),
        (
            r#"{"executable_cid":7}"#.to_string(),
            "executable_cid: invalid type",
        ),
        (
            format!(r#"{{"executable":"/w/t","executable_cid":"{program}"}}"#),
            "executable: give only one of `executable`, `executable_cid` and `bundle`",
        ),
        (
            format!(r#"{{"bundle":"/w/b","executable_cid":"{program}"}}"#),
            "executable: give only one of `executable`, `executable_cid` and `bundle`",
        ),
    ];
    for (request, expected) in &cases {
        let (status, _, body) = post(&app.router, request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{request}: {body}");
        let error = error_of(&body);
        assert!(
            error.starts_with(expected),
            "{request}: {error:?} lacks {expected:?}"
        );
    }
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}
