//! Table-driven tests of the strict OCI loader: every supported field is read into the right
//! value, and every refused field is refused with an error naming its JSON path.

use std::path::Path;

use serde_json::{Value, json};

use crate::spec::{CagePath, CageSpec, MountKind, Namespaces};

/// A runc-style config (runc's `runc spec` output with terminal off and the cgroup mount
/// removed, which are the two edits DockLock needs).
fn base() -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/sys"]
        }
    })
}

/// Sets `pointer` (a JSON pointer; missing parents are created as objects) to `value`, or
/// removes it when `value` is None.
fn patch(mut doc: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent_ptr, key) = pointer.rsplit_once('/').expect("pointer has a slash");
    let mut parent = &mut doc;
    for part in parent_ptr.split('/').filter(|p| !p.is_empty()) {
        parent = match parent {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("array index")],
            Value::Object(map) => map.entry(part.to_owned()).or_insert_with(|| json!({})),
            other => panic!("cannot descend into {other}"),
        };
    }
    match (parent, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(key.to_owned(), v);
        }
        (Value::Object(map), None) => {
            map.remove(key);
        }
        (Value::Array(items), Some(v)) => {
            let index: usize = key.parse().expect("array index");
            if index == items.len() {
                items.push(v);
            } else {
                items[index] = v;
            }
        }
        (Value::Array(items), None) => {
            items.remove(key.parse::<usize>().expect("array index"));
        }
        (other, _) => panic!("cannot patch {other}"),
    }
    doc
}

fn parse(doc: &Value) -> Result<CageSpec, crate::spec::SpecError> {
    CageSpec::parse_config(doc.to_string().as_bytes(), Path::new("/bundles/b"))
}

#[test]
fn base_config_is_read_field_by_field() {
    let spec = parse(&base()).expect("runc-style config loads");
    assert_eq!(spec.oci_version, "1.2.0");
    assert_eq!(spec.rootfs, Path::new("/bundles/b/rootfs"));
    assert!(spec.rootfs_readonly);
    assert_eq!(spec.process.args, ["sh"]);
    assert_eq!(spec.process.env.len(), 2);
    assert_eq!(spec.process.cwd.as_str(), "/");
    assert_eq!((spec.process.uid, spec.process.gid), (0, 0));
    assert_eq!(spec.process.umask, None);
    assert_eq!(
        spec.process.capabilities.union(),
        ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(spec.process.rlimits.len(), 1);
    assert_eq!(spec.process.rlimits[0].resource, libc::RLIMIT_NOFILE);
    assert_eq!(
        (spec.process.rlimits[0].soft, spec.process.rlimits[0].hard),
        (1024, 1024)
    );
    assert_eq!(spec.hostname.as_deref(), Some("runc"));
    assert_eq!(spec.mounts.len(), 6);
    assert_eq!(spec.mounts[0].kind, MountKind::Proc);
    assert_eq!(spec.mounts[1].kind, MountKind::Tmpfs);
    assert_eq!(spec.mounts[1].data, "mode=755,size=65536k");
    assert_eq!(
        spec.mounts[1].set_flags,
        libc::MS_NOSUID | libc::MS_STRICTATIME
    );
    assert_eq!(spec.mounts[2].kind, MountKind::Devpts);
    assert_eq!(
        spec.mounts[2].data,
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    );
    assert_eq!(spec.mounts[4].kind, MountKind::Mqueue);
    assert_eq!(spec.mounts[5].kind, MountKind::Sysfs);
    assert!(spec.mounts[5].readonly());
    let expected_ns = Namespaces::PID
        .with(Namespaces::NET)
        .with(Namespaces::IPC)
        .with(Namespaces::UTS)
        .with(Namespaces::MOUNT)
        .with(Namespaces::CGROUP)
        .with(Namespaces::TIME);
    assert_eq!(spec.namespaces, expected_ns);
    assert_eq!(spec.masked_paths.len(), 3);
    assert_eq!(spec.readonly_paths[1].as_str(), "/proc/sys");
    assert_eq!(spec.resources, Default::default());
    assert_eq!(
        spec.config_digest,
        *blake3::hash(base().to_string().as_bytes()).as_bytes()
    );
}

/// (JSON pointer, value) → check on the resulting spec.
type Accept = (&'static str, Value, fn(&CageSpec) -> bool);

#[test]
fn supported_fields_are_read() {
    let cases: Vec<Accept> = vec![
        ("/ociVersion", json!("1.0.0"), |s| s.oci_version == "1.0.0"),
        ("/ociVersion", json!("1.0.2-dev"), |s| {
            s.oci_version == "1.0.2-dev"
        }),
        ("/ociVersion", json!("1.1.0"), |s| s.oci_version == "1.1.0"),
        ("/root/readonly", json!(false), |s| !s.rootfs_readonly),
        ("/root/path", json!("/srv/root"), |s| {
            s.rootfs == Path::new("/srv/root")
        }),
        ("/process/args", json!(["/bin/echo", "a b", ""]), |s| {
            s.process.args == ["/bin/echo", "a b", ""]
        }),
        ("/process/env", json!(["A=1", "B="]), |s| {
            s.process.env == ["A=1", "B="]
        }),
        ("/process/cwd", json!("/work//dir/"), |s| {
            s.process.cwd.as_str() == "/work/dir"
        }),
        (
            "/process/user",
            json!({"uid": 1000, "gid": 100, "umask": 0o077, "additionalGids": [5, 6]}),
            |s| {
                s.process.uid == 1000
                    && s.process.gid == 100
                    && s.process.umask == Some(0o077)
                    && s.process.additional_gids == [5, 6]
            },
        ),
        (
            "/process/capabilities",
            json!({"ambient": ["CAP_CHOWN"], "inheritable": ["CAP_KILL"]}),
            |s| {
                s.process.capabilities.union() == ["CAP_CHOWN", "CAP_KILL"]
                    && s.process.capabilities.ambient == ["CAP_CHOWN"]
            },
        ),
        ("/process/capabilities", json!({}), |s| {
            s.process.capabilities.union().is_empty()
        }),
        ("/process/noNewPrivileges", json!(true), |s| {
            s.process.args == ["sh"]
        }),
        ("/process/terminal", json!(false), |s| {
            s.process.args == ["sh"]
        }),
        (
            "/process/rlimits",
            json!([{"type": "RLIMIT_NPROC", "soft": 10, "hard": 20},
                                    {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]),
            |s| {
                s.process.rlimits.len() == 2
                    && s.process.rlimits[0].resource == libc::RLIMIT_NPROC
                    && s.process.rlimits[0].soft == 10
                    && s.process.rlimits[0].hard == 20
            },
        ),
        ("/hostname", json!("cage-1.example"), |s| {
            s.hostname.as_deref() == Some("cage-1.example")
        }),
        ("/hostname", json!(""), |s| s.hostname.is_none()),
        (
            "/mounts/6",
            json!({"destination": "/data", "source": "/srv/data", "options": ["rbind", "ro", "nosuid"]}),
            |s| {
                s.mounts[6].kind
                    == MountKind::Bind {
                        source: "/srv/data".into(),
                        recursive: true,
                    }
                    && s.mounts[6].readonly()
                    && s.mounts[6].set_flags & libc::MS_NOSUID != 0
            },
        ),
        (
            "/mounts/6",
            json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rw"]}),
            |s| {
                s.mounts[6].kind
                    == MountKind::Bind {
                        source: "/bundles/b/data".into(),
                        recursive: false,
                    }
                    && !s.mounts[6].readonly()
                    && s.mounts[6].clear_flags & libc::MS_RDONLY != 0
            },
        ),
        (
            "/mounts/6",
            json!({"destination": "/tmp", "type": "tmpfs", "options": ["size=1m", "mode=1777", "noexec", "uid=0", "gid=0", "nr_inodes=1k"]}),
            |s| {
                s.mounts[6].data == "size=1m,mode=1777,uid=0,gid=0,nr_inodes=1k"
                    && s.mounts[6].set_flags == libc::MS_NOEXEC
            },
        ),
        (
            "/mounts/0/options",
            json!(["hidepid=2", "subset=pid", "nosuid", "nodev", "noexec"]),
            |s| s.mounts[0].data == "hidepid=2,subset=pid",
        ),
        ("/mounts/1/options", json!(["noatime", "relatime"]), |s| {
            s.mounts[1].set_flags == libc::MS_RELATIME
        }),
        (
            "/linux/namespaces",
            json!([{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]),
            |s| {
                s.namespaces
                    == Namespaces::PID
                        .with(Namespaces::MOUNT)
                        .with(Namespaces::UTS)
                        .with(Namespaces::TIME)
                        .with(Namespaces::IPC)
                        .with(Namespaces::NET)
            },
        ),
        ("/linux/namespaces/6", json!({"type": "time"}), |s| {
            s.namespaces.contains(Namespaces::TIME)
        }),
        ("/linux/namespaces/6", json!({"type": "user"}), |s| {
            s.namespaces.contains(Namespaces::USER)
        }),
        (
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
            |s| s.uid_mappings.len() == 1 && s.uid_mappings[0].host_id == 100000,
        ),
        (
            "/linux/resources/memory",
            json!({"limit": 268435456, "swap": 536870912}),
            |s| {
                s.resources.memory_limit_bytes == Some(268_435_456)
                    && s.resources.memory_swap_limit_bytes == Some(536_870_912)
            },
        ),
        ("/linux/resources/memory", json!({"limit": -1}), |s| {
            s.resources.memory_limit_bytes.is_none()
        }),
        ("/linux/resources/pids", json!({"limit": 64}), |s| {
            s.resources.pids_max == Some(64)
        }),
        ("/linux/resources/pids", json!({"limit": -1}), |s| {
            s.resources.pids_max.is_none()
        }),
        (
            "/linux/resources/cpu",
            json!({"quota": 50000, "period": 100000, "shares": 512}),
            |s| {
                s.resources.cpu_quota_us == Some(50_000)
                    && s.resources.cpu_period_us == Some(100_000)
                    && s.resources.cpu_shares == Some(512)
            },
        ),
        ("/linux/resources/blockIO", json!({"weight": 500}), |s| {
            s.resources.blkio_weight == Some(500)
        }),
        (
            "/linux/resources/devices",
            json!([{"allow": false, "type": "a", "major": -1, "minor": -1, "access": "rwm"}]),
            |s| s.resources == Default::default(),
        ),
        (
            "/linux/maskedPaths",
            json!(["/proc/kcore", "/secret/"]),
            |s| {
                s.masked_paths
                    == [
                        CagePath::parse("/proc/kcore").unwrap(),
                        CagePath::parse("/secret").unwrap(),
                    ]
            },
        ),
        ("/linux/readonlyPaths", json!([]), |s| {
            s.readonly_paths.is_empty()
        }),
        (
            "/annotations",
            json!({"org.opencontainers.image.ref.name": "x"}),
            |s| {
                s.annotations
                    .get("org.opencontainers.image.ref.name")
                    .map(String::as_str)
                    == Some("x")
            },
        ),
    ];
    for (pointer, value, check) in cases {
        let doc = patch(base(), pointer, Some(value.clone()));
        let doc = if pointer == "/linux/uidMappings" {
            let doc = patch(
                doc,
                "/linux/gidMappings",
                Some(json!([{"containerID": 0, "hostID": 100000, "size": 65536}])),
            );
            patch(doc, "/linux/namespaces/6", Some(json!({"type": "user"})))
        } else {
            doc
        };
        match parse(&doc) {
            Ok(spec) => assert!(
                check(&spec),
                "{pointer} = {value}: unexpected value in {spec:#?}"
            ),
            Err(error) => panic!("{pointer} = {value} was refused: {error}"),
        }
    }
}

/// (JSON pointer, value or None to delete, the exact error message).
type Refuse = (&'static str, Option<Value>, &'static str);

#[test]
fn refused_fields_name_their_path() {
    let cases: Vec<Refuse> = vec![
        (
            "/linux/seccomp",
            Some(json!({"defaultAction": "SCMP_ACT_ALLOW"})),
            "unsupported OCI field `linux.seccomp`: DockLock applies its own reviewed seccomp policy",
        ),
        (
            "/process/terminal",
            Some(json!(true)),
            "`process.terminal: true` is not supported: the cage has no terminal; stdout and stderr are inherited or captured to files",
        ),
        (
            "/linux/namespaces/3/path",
            Some(json!("/proc/1/ns/uts")),
            "`linux.namespaces[3].path`: joining an existing namespace is not supported",
        ),
        (
            "/hooks",
            Some(json!({"prestart": []})),
            "unsupported OCI field `hooks`: hooks run host programs outside the cage, which a determinism cage cannot account for",
        ),
        (
            "/linux/sysctl",
            Some(json!({"net.ipv4.ip_forward": "1"})),
            "unsupported OCI field `linux.sysctl`: the cage cannot change kernel parameters",
        ),
        (
            "/linux/devices",
            Some(json!([])),
            "unsupported OCI field `linux.devices`: the cage gets only DockLock's minimal /dev (null, zero, full, seeded random)",
        ),
        (
            "/linux/cgroupsPath",
            Some(json!("/x")),
            "unsupported OCI field `linux.cgroupsPath`: DockLock creates, names and removes the cage cgroup itself",
        ),
        (
            "/linux/timeOffsets",
            Some(json!({})),
            "unsupported OCI field `linux.timeOffsets`: the cage clock starts at the run's logical time, which DockLock sets",
        ),
        (
            "/linux/rootfsPropagation",
            Some(json!("shared")),
            "unsupported OCI field `linux.rootfsPropagation`: the cage's mounts are always private",
        ),
        (
            "/process/apparmorProfile",
            Some(json!("x")),
            "unsupported OCI field `process.apparmorProfile`: DockLock confines with landlock and seccomp, not AppArmor",
        ),
        (
            "/process/oomScoreAdj",
            Some(json!(100)),
            "unsupported OCI field `process.oomScoreAdj`: the cage's memory cgroup decides what is killed",
        ),
        (
            "/process/consoleSize",
            Some(json!({"height": 1, "width": 1})),
            "unsupported OCI field `process.consoleSize`: the cage has no terminal",
        ),
        (
            "/process/user/username",
            Some(json!("bob")),
            "unsupported OCI field `process.user.username`: it is a Windows field; use uid and gid",
        ),
        (
            "/process/noNewPrivileges",
            Some(json!(false)),
            "`process.noNewPrivileges: false` is not supported: DockLock always sets no_new_privs (seccomp and landlock depend on it)",
        ),
        (
            "/process/capabilities/bounding/1",
            Some(json!("CAP_SYS_ADMIN")),
            "`process.capabilities.bounding[1]`: CAP_SYS_ADMIN is not a capability DockLock lets a workload keep",
        ),
        (
            "/process/capabilities/ambient",
            Some(json!(["CAP_NET_RAW"])),
            "`process.capabilities.ambient[0]`: CAP_NET_RAW is not a capability DockLock lets a workload keep",
        ),
        (
            "/process/capabilities/effective/0",
            Some(json!("CAP_FLY")),
            "`process.capabilities.effective[0]`: `CAP_FLY` is not a known capability name",
        ),
        (
            "/process/rlimits/0/type",
            Some(json!("RLIMIT_BOGUS")),
            "`process.rlimits[0].type`: `RLIMIT_BOGUS` is not a known resource limit",
        ),
        (
            "/process/rlimits/1",
            Some(json!({"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1})),
            "`process.rlimits[1].type`: RLIMIT_NOFILE is set twice",
        ),
        (
            "/process/rlimits/0/soft",
            Some(json!(2048)),
            "`process.rlimits[0]`: soft limit 2048 is above hard limit 1024",
        ),
        (
            "/process/args",
            Some(json!([])),
            "`process.args`: at least the program to run is required",
        ),
        (
            "/process/env/1",
            Some(json!("NOVALUE")),
            "`process.env[1]`: `NOVALUE` is not KEY=value",
        ),
        (
            "/process/cwd",
            Some(json!("relative")),
            "`process.cwd`: `relative` is not an absolute path",
        ),
        (
            "/process/cwd",
            Some(json!("/a/../b")),
            "`process.cwd`: `/a/../b` contains a `..` component",
        ),
        (
            "/process/cwd",
            None,
            "`process.cwd`: the working directory is required",
        ),
        (
            "/process/user/umask",
            Some(json!(4096)),
            "`process.user.umask`: 0o10000 is not a umask (at most 0o777)",
        ),
        (
            "/process/selfDestruct",
            Some(json!(true)),
            "unsupported OCI field `process.selfDestruct`: DockLock does not implement this field",
        ),
        (
            "/linux/resources/memory/wat",
            Some(json!(1)),
            "unsupported OCI field `linux.resources.memory.wat`: DockLock does not implement this field",
        ),
        (
            "/mounts/0/what",
            Some(json!(1)),
            "unsupported OCI field `mounts[0].what`: DockLock does not implement this field",
        ),
        (
            "/extra",
            Some(json!(1)),
            "unsupported OCI field `extra`: DockLock does not implement this field",
        ),
        (
            "/ociVersion",
            Some(json!("2.0.0")),
            "`ociVersion`: version `2.0.0` is not supported (DockLock reads runtime-spec 1.0 to 1.2)",
        ),
        (
            "/ociVersion",
            Some(json!("1.3.0")),
            "`ociVersion`: version `1.3.0` is not supported (DockLock reads runtime-spec 1.0 to 1.2)",
        ),
        (
            "/root",
            None,
            "`root`: a bundle must name its root filesystem",
        ),
        (
            "/linux",
            None,
            "`linux`: the `linux` section is required (DockLock runs Linux containers only)",
        ),
        (
            "/hostname",
            Some(json!("bad_host!")),
            "`hostname`: `bad_host!` is not a hostname (letters, digits, `-` and `.`, at most 64 bytes)",
        ),
        (
            "/linux/namespaces/3",
            Some(json!({"type": "pid"})),
            "`linux.namespaces[3].type`: `pid` is listed twice",
        ),
        (
            "/linux/namespaces/3",
            Some(json!({"type": "wat"})),
            "`linux.namespaces[3].type`: `wat` is not a namespace type",
        ),
        (
            "/linux/namespaces",
            Some(json!([{"type": "mount"}])),
            "`linux.namespaces`: a `pid` namespace is required (the cage pivots into its rootfs as PID 1)",
        ),
        (
            "/linux/uidMappings",
            Some(json!([{"containerID": 0, "hostID": 1000, "size": 1}])),
            "`linux.uidMappings`: id mappings need a `user` entry in linux.namespaces",
        ),
        (
            "/linux/uidMappings",
            Some(json!([
                {"containerID": 0, "hostID": 100000, "size": 1},
                {"containerID": 1, "hostID": 0, "size": 1}
            ])),
            "`linux.uidMappings[1]`: maps onto host id 0 (root); map the cage into an unprivileged host range",
        ),
        (
            "/linux/gidMappings",
            Some(json!([{"containerID": 0, "hostID": 0, "size": 65536}])),
            "`linux.gidMappings[0]`: maps onto host id 0 (root); map the cage into an unprivileged host range",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "/x", "type": "cgroup", "source": "cgroup"})),
            "`mounts[6].type type `cgroup`` is not supported: DockLock mounts bind, tmpfs, proc, sysfs (read-only), mqueue and devpts",
        ),
        (
            "/mounts/5/options",
            Some(json!(["nosuid"])),
            "`mounts[5] sysfs mounted read-write` is not supported: sysfs is only mounted read-only; add the `ro` option",
        ),
        (
            "/mounts/1/options/2",
            Some(json!("huge=always")),
            "`mounts[1].options[2]`: unknown mount option `huge=always` for a tmpfs mount",
        ),
        (
            "/mounts/1/options/2",
            Some(json!("mode=999")),
            "`mounts[1].options[2]`: bad value in mount option `mode=999`",
        ),
        (
            "/mounts/0/options",
            Some(json!(["size=1m"])),
            "`mounts[0].options[0]`: unknown mount option `size=1m` for a proc mount",
        ),
        (
            "/mounts/1/options/0",
            Some(json!("rshared")),
            "`mounts[1].options[0] `rshared`` is not supported: cage mounts never propagate to or from the host",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "data", "source": "/srv", "options": ["bind"]})),
            "`mounts[6].destination`: `data` is not an absolute path",
        ),
        (
            "/mounts/6",
            Some(
                json!({"destination": "/dev/urandom", "source": "/dev/urandom", "options": ["bind"]}),
            ),
            "`mounts[6].destination`: /dev/urandom is provided by DockLock (null devices and seeded randomness)",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "/data", "source": "/srv", "options": ["bind", "dev"]})),
            "`mounts[6].options `dev` on a bind mount` is not supported: bind mounts are always nodev: the cage has no device access",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "/data", "source": "/srv", "options": ["rbind", "sync"]})),
            "`mounts[6].options `sync`/`dirsync` on a bind mount` is not supported: they are filesystem-wide flags a bind mount cannot change",
        ),
        (
            "/mounts/1",
            Some(json!({"destination": "/dev", "source": "/dev", "options": ["rbind"]})),
            "`mounts[1].type`: only a tmpfs may be mounted at /dev (DockLock fills it with its own nodes)",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "/data", "options": ["bind"]})),
            "`mounts[6].source`: a bind mount needs a source",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "/proc2", "type": "proc", "source": "proc"})),
            "`mounts[6].destination`: proc may only be mounted at /proc",
        ),
        (
            "/mounts/6",
            Some(json!({"destination": "/d", "type": "tmpfs", "uidMappings": []})),
            "unsupported OCI field `mounts[6].uidMappings`: id-mapped mounts are not supported",
        ),
        (
            "/linux/resources/devices/1",
            Some(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})),
            "`linux.resources.devices[1]` is not supported: only the deny-all rule is accepted: the cage has no device access",
        ),
        (
            "/linux/resources/memory",
            Some(json!({"limit": 1024})),
            "`linux.resources.memory.limit`: 1024 is outside 1048576..=1099511627776",
        ),
        (
            "/linux/resources/memory",
            Some(json!({"limit": 268435456, "swap": 2097152})),
            "`linux.resources.memory.swap`: memory+swap limit 2097152 is below the memory limit 268435456",
        ),
        (
            "/linux/resources/memory/kernel",
            Some(json!(1)),
            "unsupported OCI field `linux.resources.memory.kernel`: kernel memory limits are deprecated and not supported",
        ),
        (
            "/linux/resources/cpu",
            Some(json!({"cpus": "0-1"})),
            "unsupported OCI field `linux.resources.cpu.cpus`: CPU placement is chosen by DockLock (replay rotates it on purpose)",
        ),
        (
            "/linux/resources/cpu",
            Some(json!({"period": 10})),
            "`linux.resources.cpu.period`: 10 is outside 1000..=1000000 microseconds",
        ),
        (
            "/linux/resources/blockIO",
            Some(json!({"weight": 5})),
            "`linux.resources.blockIO.weight`: 5 is outside 10..=1000",
        ),
        (
            "/linux/resources/blockIO",
            Some(json!({"throttleReadIOPSDevice": []})),
            "unsupported OCI field `linux.resources.blockIO.throttleReadIOPSDevice`: per-device settings are not part of the cage",
        ),
        (
            "/linux/resources/unified",
            Some(json!({})),
            "unsupported OCI field `linux.resources.unified`: raw cgroup v2 files are not accepted; use the typed limits",
        ),
        (
            "/linux/maskedPaths/1",
            Some(json!("/")),
            "`linux.maskedPaths[1]`: cannot apply to /",
        ),
        (
            "/linux/readonlyPaths/0",
            Some(json!("proc/sys")),
            "`linux.readonlyPaths[0]`: `proc/sys` is not an absolute path",
        ),
        (
            "/annotations",
            Some(json!({"org.metanode.docklock.magic": "1"})),
            "unsupported OCI field `annotations.org.metanode.docklock.magic`: the org.metanode.docklock. prefix is reserved and this key is not defined",
        ),
        (
            "/linux/namespaces",
            Some(json!([{"type": "pid"}, {"type": "mount"}])),
            "`hostname`: setting a hostname needs a `uts` entry in linux.namespaces",
        ),
    ];
    for (pointer, value, expected) in cases {
        let doc = patch(base(), pointer, value.clone());
        match parse(&doc) {
            Ok(_) => panic!("{pointer} = {value:?} was accepted; expected: {expected}"),
            Err(error) => assert_eq!(error.to_string(), expected, "{pointer} = {value:?}"),
        }
    }
}

#[test]
fn type_errors_name_the_json_path() {
    let doc = patch(base(), "/process/user/uid", Some(json!("root")));
    let error = parse(&doc)
        .expect_err("a string uid is refused")
        .to_string();
    assert!(
        error.starts_with("config.json is not a valid OCI runtime spec at `process.user.uid`: invalid type: string \"root\""),
        "{error}"
    );
    let error = parse(&json!([1]))
        .expect_err("an array is not a spec")
        .to_string();
    assert!(
        error.starts_with("config.json is not a valid OCI runtime spec at `"),
        "{error}"
    );
}

#[test]
fn cage_paths_normalize_and_compare() {
    let p = CagePath::parse("//a///b/").unwrap();
    assert_eq!(p.as_str(), "/a/b");
    assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(p.relative(), "a/b");
    assert!(p.starts_with(&CagePath::parse("/a").unwrap()));
    assert!(!p.starts_with(&CagePath::parse("/a/bc").unwrap()));
    assert!(
        !CagePath::parse("/ab")
            .unwrap()
            .starts_with(&CagePath::parse("/a").unwrap())
    );
    assert!(p.starts_with(&CagePath::parse("/").unwrap()));
    assert!(CagePath::parse("/").unwrap().is_root());
    assert_eq!(
        CagePath::parse("/a/./b").unwrap_err(),
        "`/a/./b` contains a `.` component"
    );
    assert_eq!(
        CagePath::parse("/a\0").unwrap_err(),
        "path contains a NUL byte"
    );
    assert!(CagePath::parse(&format!("/{}", "a".repeat(5000))).is_err());
}

#[test]
fn namespace_flags_match_unshare() {
    let ns = Namespaces::DEFAULT;
    assert!(!ns.contains(Namespaces::USER));
    let flags = ns.unshare_flags();
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWTIME,
    ] {
        assert_ne!(flags & flag, 0, "flag {flag:#x}");
    }
    assert_eq!(flags & libc::CLONE_NEWUSER, 0);
    assert_eq!(
        ns.names(),
        ["pid", "network", "mount", "ipc", "uts", "cgroup", "time"]
    );
}

#[test]
fn load_checks_rootfs_and_bind_sources_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let doc = base();
    std::fs::write(dir.path().join("config.json"), doc.to_string()).unwrap();
    let error = CageSpec::load(dir.path())
        .expect_err("no rootfs yet")
        .to_string();
    assert!(
        error.starts_with(&format!("cannot read {}/rootfs", dir.path().display())),
        "{error}"
    );
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let spec = CageSpec::load(dir.path()).expect("loads once rootfs exists");
    assert_eq!(spec.rootfs, dir.path().join("rootfs"));

    let doc = patch(
        doc,
        "/mounts/6",
        Some(json!({"destination": "/d", "source": "missing", "options": ["bind"]})),
    );
    std::fs::write(dir.path().join("config.json"), doc.to_string()).unwrap();
    let error = CageSpec::load(dir.path())
        .expect_err("missing bind source")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "`mounts[6].source`: bind source {}/missing:",
            dir.path().display()
        )),
        "{error}"
    );
}
