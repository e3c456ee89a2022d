//! The IPFS routes of the real agent with hand-made bad input: UnixFS add
//! parameters (and `store add --cid-version 0`, locally and through the
//! agent), CAR import of bad or incomplete CARs, gateway CAR and file
//! requests (ranges, ETags, negotiation, errors).

mod common;

use common::{Agent, cli, cli_json, get, pattern, request};
use metanode_core::cid::{BlockKey, CODEC_DAG_PB, CODEC_RAW, ContentId, HashKind};
use metanode_unixfs::{CarWriter, ImportOptions, import_bytes};

fn sha2_raw(data: &[u8]) -> ContentId {
    ContentId::from_key(
        CODEC_RAW,
        BlockKey {
            kind: HashKind::Sha2_256,
            digest: HashKind::Sha2_256.digest(data),
        },
    )
}

/// A CAR of a 3-leaf file (1 KiB chunks), with `mangle` applied to the
/// block list first.
fn car_of(
    data: &[u8],
    mangle: impl FnOnce(&mut Vec<(ContentId, Vec<u8>)>),
) -> (ContentId, Vec<u8>) {
    let opts = ImportOptions::new(1024, 174, HashKind::Sha2_256).unwrap();
    let (blocks, summary) = import_bytes(data, opts);
    let mut list: Vec<(ContentId, Vec<u8>)> = blocks
        .into_iter()
        .map(|b| (b.cid, b.data.to_vec()))
        .collect();
    mangle(&mut list);
    let mut car = CarWriter::new(Vec::new(), &[summary.root]).unwrap();
    for (cid, data) in &list {
        car.write_block(cid, data).unwrap();
    }
    (summary.root, car.finish().unwrap())
}

#[test]
fn unixfs_add_parameters_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(&tmp.path().join("store"));
    for (query, needle) in [
        ("?chunker=size-0", "chunk"),
        ("?chunker=size-2000000", "2000000"),
        ("?chunker=rabin", "rabin"),
        ("?hash=md5", "md5"),
        ("?wrap=true", "wrap"),
    ] {
        let r = request(
            agent.addr,
            "POST",
            &format!("/api/v1/unixfs{query}"),
            &[],
            Some(b"x"),
        );
        assert_eq!(
            r.status,
            400,
            "{query}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.error().contains(needle), "{query}: {}", r.error());
    }
    // BLAKE3 leaves, CIDv1 raw: a one-chunk file is its raw leaf.
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/unixfs?hash=blake3",
        &[],
        Some(b"hello"),
    );
    assert_eq!(r.status, 201);
    let cid = r.json()["cid"].as_str().unwrap().to_string();
    assert_eq!(
        cid,
        ContentId::raw_blake3_of(b"hello").to_string(),
        "a one-chunk BLAKE3 file is the raw block"
    );
    assert!(agent.stop().success());
}

/// (size_bytes, seed, root_cid) of the unixfs crate's golden vector `name`
/// in `file` (made by npm `ipfs-unixfs-importer`).
fn golden_vector(file: &str, name: &str) -> (usize, u32, String) {
    let path = format!(
        "{}/../unixfs/tests/vectors/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors file"))
            .expect("vectors json");
    let v = json
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("vector {name}"));
    (
        v["size_bytes"].as_u64().unwrap() as usize,
        v["seed"].as_u64().unwrap() as u32,
        v["root_cid"].as_str().unwrap().to_string(),
    )
}

// `store add --cid-version 0` prints what plain `ipfs add` prints (the
// reference importer's CIDv0 root), on a data dir and through the agent,
// whose gateway then serves the Qm… root; refused combinations name the flag.
#[test]
fn store_add_cid_version_0_gives_the_plain_ipfs_add_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (size, seed, v0_root) = golden_vector("unixfs_kubo_v0.json", "one_chunk_plus_one");
    let (_, _, v1_root) = golden_vector("unixfs_kubo.json", "one_chunk_plus_one");
    let data = metanode_unixfs::testdata::xorshift32_bytes(seed, size);
    let input = tmp.path().join("input.bin");
    std::fs::write(&input, &data).unwrap();
    let input = input.to_str().unwrap();
    let local = tmp.path().join("local");
    let local = local.to_str().unwrap();

    let added = cli_json(&[
        "store",
        "add",
        "--data-dir",
        local,
        "--cid-version",
        "0",
        input,
    ]);
    assert_eq!(added["cid"], v0_root.as_str());
    assert_eq!(
        (added["size"].as_u64(), added["blocks"].as_u64()),
        (Some(size as u64), Some(3))
    );
    let added = cli_json(&["store", "add", "--data-dir", local, input]);
    assert_eq!(added["cid"], v1_root.as_str(), "the default stays CIDv1");
    let got = tmp.path().join("got.bin");
    let got_path = got.to_str().unwrap();
    cli_json(&[
        "store",
        "get",
        "--data-dir",
        local,
        &v0_root,
        "-o",
        got_path,
    ]);
    assert!(
        std::fs::read(&got).unwrap() == data,
        "store get of the v0 root"
    );

    for (args, needle) in [
        (
            &["--cid-version", "0", "--hash", "blake3"][..],
            "--cid-version",
        ),
        (&["--cid-version", "0", "--raw-leaves"][..], "--raw-leaves"),
        (&["--raw-leaves=false"][..], "--raw-leaves"),
    ] {
        let mut all = vec!["store", "add", "--data-dir", local];
        all.extend_from_slice(args);
        all.push(input);
        let out = cli(&all, None);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = cli(
        &[
            "store",
            "add",
            "--data-dir",
            local,
            "--cid-version",
            "2",
            input,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cid-version"));

    let agent = Agent::start(&tmp.path().join("store"));
    let added = cli_json(&[
        "store",
        "add",
        "--api",
        &agent.url,
        "--cid-version",
        "0",
        input,
    ]);
    assert_eq!(added["cid"], v0_root.as_str(), "through the agent");
    let r = get(agent.addr, &format!("/ipfs/{v0_root}"));
    assert_eq!(r.status, 200);
    assert!(r.body == data, "gateway body of the v0 root");
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/unixfs?cid-version=3",
        &[],
        Some(b"x"),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("cid-version"), "{}", r.error());
    assert!(agent.stop().success());
}

#[test]
fn car_import_refuses_bad_and_incomplete_cars_naming_the_block() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(&tmp.path().join("store"));
    let data = pattern(3000, 1);

    // A block whose bytes do not match its CID.
    let mut bad_cid = None;
    let (root, car) = car_of(&data, |list| {
        list[1].1[0] ^= 1;
        bad_cid = Some(list[1].0);
    });
    let r = request(agent.addr, "POST", "/api/v1/car", &[], Some(&car));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.error().contains(&bad_cid.unwrap().to_string()),
        "{}",
        r.error()
    );
    let stat = get(agent.addr, &format!("/api/v1/blobs/{root}/stat"));
    assert!(
        stat.status == 404 || stat.json()["pinned"] == false,
        "root must not be pinned after a refused import"
    );

    // A leaf left out: the DAG is incomplete.
    let mut missing = None;
    let (_, car) = car_of(&pattern(3000, 2), |list| {
        missing = Some(list.remove(0).0);
    });
    let r = request(agent.addr, "POST", "/api/v1/car", &[], Some(&car));
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains(&missing.unwrap().to_string()),
        "{}",
        r.error()
    );
    assert!(r.error().contains("incomplete"), "{}", r.error());
    // ... which --allow-partial accepts, without pinning.
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/car?allow-partial=true",
        &[],
        Some(&car),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["pinned"], false);

    // Not a CAR at all; and a truncated one.
    let r = request(agent.addr, "POST", "/api/v1/car", &[], Some(b"hello world"));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let (_, car) = car_of(&data, |_| {});
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/car",
        &[],
        Some(&car[..car.len() - 7]),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("offset"), "{}", r.error());

    // The good CAR imports, pinned, and gc keeps the whole DAG.
    let r = request(agent.addr, "POST", "/api/v1/car", &[], Some(&car));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["pinned"], true);
    let r = request(agent.addr, "POST", "/api/v1/gc", &[], None);
    assert_eq!(r.status, 200);
    let r = get(agent.addr, &format!("/ipfs/{root}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert!(agent.stop().success());
}

#[test]
fn gateway_serves_unixfs_files_with_ranges_and_cars_with_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = Agent::start(&tmp.path().join("store"));
    let data = pattern(5000, 3);
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/unixfs?chunker=size-1024",
        &[],
        Some(&data),
    );
    assert_eq!(r.status, 201);
    let root = r.json()["cid"].as_str().unwrap().to_string();
    assert_eq!(r.json()["blocks"], 6);

    // Path gateway: the file, a range across two leaves, ETag/304.
    let r = get(agent.addr, &format!("/ipfs/{root}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("etag"), Some(format!("\"{root}\"").as_str()));
    let r = request(
        agent.addr,
        "GET",
        &format!("/ipfs/{root}"),
        &[("Range", "bytes=1000-2100")],
        None,
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[1000..=2100]);
    assert_eq!(r.header("content-range"), Some("bytes 1000-2100/5000"));
    let r = request(
        agent.addr,
        "GET",
        &format!("/ipfs/{root}"),
        &[("If-None-Match", &format!("\"{root}\""))],
        None,
    );
    assert_eq!(r.status, 304);
    // The root block itself, raw.
    let r = get(agent.addr, &format!("/ipfs/{root}?format=raw"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
    assert!(r.body.len() < 1024, "the root block, not the file");

    // CAR: headers and ETags per scope and range.
    let car = get(agent.addr, &format!("/ipfs/{root}?format=car"));
    assert_eq!(car.status, 200);
    assert_eq!(
        car.header("content-type"),
        Some("application/vnd.ipld.car; version=1; order=dfs; dups=n")
    );
    assert_eq!(
        car.header("etag"),
        Some(format!("\"{root}.car.all\"").as_str())
    );
    assert_eq!(
        car.header("content-disposition"),
        Some(format!("attachment; filename=\"{root}.car\"").as_str())
    );
    let blocks: Vec<_> = metanode_unixfs::CarReader::new(&car.body[..])
        .unwrap()
        .map(|b| b.unwrap().0)
        .collect();
    assert_eq!(blocks.len(), 6);
    assert_eq!(
        blocks[0].to_string(),
        root,
        "the root comes first (DFS pre-order)"
    );
    let r = request(
        agent.addr,
        "GET",
        &format!("/ipfs/{root}?entity-bytes=0:99"),
        &[("Accept", "application/vnd.ipld.car")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{root}.car.entity.0:99\"").as_str())
    );
    assert_eq!(
        metanode_unixfs::CarReader::new(&r.body[..])
            .unwrap()
            .count(),
        2,
        "root + first leaf"
    );
    let r = request(
        agent.addr,
        "HEAD",
        &format!("/ipfs/{root}?format=car"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    // Bad CAR requests.
    for (path, headers, status, needle) in [
        (
            format!("/ipfs/{root}?format=car&dag-scope=most"),
            vec![],
            400,
            "most",
        ),
        (
            format!("/ipfs/{root}?format=car&entity-bytes=9:1"),
            vec![],
            400,
            "after",
        ),
        (
            format!("/ipfs/{root}?format=car&car-version=2"),
            vec![],
            400,
            "car-version",
        ),
        (
            format!("/ipfs/{root}"),
            vec![("Accept", "application/vnd.ipld.car; version=2")],
            406,
            "vnd.ipld.car",
        ),
        (format!("/ipfs/{root}?format=tar"), vec![], 400, "tar"),
    ] {
        let r = request(agent.addr, "GET", &path, &headers, None);
        assert_eq!(
            r.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.error().contains(needle), "{path}: {}", r.error());
    }
    // A dag-pb CID we do not have.
    let absent = ContentId::from_key(CODEC_DAG_PB, sha2_raw(b"absent").key());
    assert_eq!(
        get(agent.addr, &format!("/ipfs/{absent}?format=car")).status,
        404
    );
    assert_eq!(get(agent.addr, &format!("/ipfs/{absent}")).status, 404);
    assert!(agent.stop().success());
}
