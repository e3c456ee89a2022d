//! CageCgroup over the fake cgroup filesystem: the files written for given limits on the CI
//! machine kind (v1) and on pure v2 hosts, usage parsing, removal and every error path.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metanode_cgroup::fake::{self, DirFs, FixtureError, TemplateFile};
use metanode_cgroup::{
    CageCgroup, CgroupFs, CgroupLayout, CgroupLimits, CgroupModeKind, CgroupUsage, CgroupVersion,
    CreateError, KillMethod, RemoveError, UsageError,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MIB: u64 = 1024 * 1024;
const CI_MEMORY: &str = "/sys/fs/cgroup/memory/process_api/18126a8bb1a3cd564a319d927452652c";

fn all_limits() -> CgroupLimits {
    CgroupLimits {
        memory_max_bytes: Some(32 * MIB),
        memory_swap_max_bytes: Some(0),
        pids_max: Some(8),
        cpu_quota_us: Some(50_000),
        cpu_period_us: None,
        cpu_weight: Some(100),
        io_weight: Some(200),
    }
}

/// Writes made through the seam after the fixture was built, under `prefix`.
fn writes_under(fs: &DirFs, skip: usize, prefix: &str) -> Vec<(String, String)> {
    fs.writes()
        .into_iter()
        .skip(skip)
        .filter(|(path, _)| path.starts_with(prefix))
        .map(|(path, value)| (path.display().to_string(), value))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn hybrid_ci_host_writes_v1_files_for_every_limit() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let before = fs.writes().len();
    let cage = CageCgroup::create(&layout, "run-1", &all_limits())?;

    let memory = format!("{CI_MEMORY}/metanode-docklock/run-1");
    assert_eq!(
        writes_under(&fs, before, "/sys/fs/cgroup"),
        pairs(&[
            (&format!("{memory}/memory.limit_in_bytes"), "33554432"),
            (&format!("{memory}/memory.memsw.limit_in_bytes"), "33554432"),
            ("/sys/fs/cgroup/pids/metanode-docklock/run-1/pids.max", "8"),
            (
                "/sys/fs/cgroup/cpu/metanode-docklock/run-1/cpu.cfs_period_us",
                "100000"
            ),
            (
                "/sys/fs/cgroup/cpu/metanode-docklock/run-1/cpu.cfs_quota_us",
                "50000"
            ),
            // weight 100 → shares 2 + 99 * 262142 / 9999
            (
                "/sys/fs/cgroup/cpu/metanode-docklock/run-1/cpu.shares",
                "2597"
            ),
            // io weight 200 → 10 + 199 * 990 / 9999 (this kernel has only the BFQ weight)
            (
                "/sys/fs/cgroup/blkio/metanode-docklock/run-1/blkio.bfq.weight",
                "29"
            ),
        ])
    );
    let dirs: Vec<String> = cage
        .dirs()
        .iter()
        .map(|d| d.path.display().to_string())
        .collect();
    assert_eq!(
        dirs,
        [
            memory.as_str(),
            "/sys/fs/cgroup/pids/metanode-docklock/run-1",
            "/sys/fs/cgroup/cpu/metanode-docklock/run-1",
            "/sys/fs/cgroup/cpuacct/metanode-docklock/run-1",
            "/sys/fs/cgroup/blkio/metanode-docklock/run-1",
            "/sys/fs/cgroup/freezer/metanode-docklock/run-1",
        ]
    );
    assert!(cage.dirs().iter().all(|d| d.version == CgroupVersion::V1));
    assert_eq!(cage.mode().code(), 0x55);
    assert_eq!(cage.mode().kind(), CgroupModeKind::V1);
    assert_eq!(cage.kill_method(), &KillMethod::V1Freezer);
    assert!(
        !fs.host(Path::new("/sys/fs/cgroup/unified/metanode-docklock"))
            .exists(),
        "v2 unused"
    );
    cage.kill_and_remove()?;
    Ok(())
}

#[test]
fn hybrid_ci_host_without_limits_still_accounts_and_skips_cpu_limits_and_io() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let before = fs.writes().len();
    let cage = CageCgroup::create(&layout, "plain", &CgroupLimits::default())?;
    assert_eq!(
        writes_under(&fs, before, "/"),
        Vec::<(String, String)>::new()
    );
    let hierarchies: Vec<String> = cage
        .dirs()
        .iter()
        .filter_map(|d| {
            d.path
                .strip_prefix("/sys/fs/cgroup")
                .ok()?
                .components()
                .next()
        })
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    assert_eq!(hierarchies, ["memory", "pids", "cpuacct", "freezer"]);
    assert_eq!(
        cage.mode().code(),
        0x15,
        "memory v1, pids v1, cpu (accounting) v1, io unused"
    );
    Ok(())
}

#[test]
fn hybrid_ci_host_usage_add_and_freezer_removal() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let cage = CageCgroup::create(&layout, "job", &all_limits())?;
    cage.add_process(4321)?;
    for dir in cage.dirs() {
        assert_eq!(
            fs.read(&dir.path.join("cgroup.procs"))?,
            "4321\n",
            "{}",
            dir.path.display()
        );
    }
    let memory = PathBuf::from(format!("{CI_MEMORY}/metanode-docklock/job"));
    fs.set_file(&memory.join("memory.max_usage_in_bytes"), "33550336\n")?;
    fs.set_file(
        &memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )?;
    let pids = Path::new("/sys/fs/cgroup/pids/metanode-docklock/job");
    fs.set_file(&pids.join("pids.peak"), "8\n")?;
    fs.set_file(&pids.join("pids.events"), "max 5\n")?;
    fs.set_file(
        Path::new("/sys/fs/cgroup/cpuacct/metanode-docklock/job/cpuacct.usage"),
        "1234567890\n",
    )?;
    assert_eq!(
        cage.usage()?,
        CgroupUsage {
            memory_peak_bytes: 33_550_336,
            cpu_usage_us: 1_234_567,
            pids_peak: 8,
            oom_kills: 2,
            pids_max_hits: 5,
        }
    );

    let before = fs.writes().len();
    let dirs: Vec<PathBuf> = cage.dirs().iter().map(|d| d.path.clone()).collect();
    cage.kill_and_remove()?;
    let freezer = "/sys/fs/cgroup/freezer/metanode-docklock/job/freezer.state";
    assert_eq!(
        writes_under(&fs, before, "/"),
        pairs(&[(freezer, "FROZEN"), (freezer, "THAWED")])
    );
    assert_eq!(fs.killed(), [4321]);
    for dir in dirs {
        assert!(!fs.host(&dir).exists(), "{} left behind", dir.display());
        assert!(
            fs.host(dir.parent().ok_or("no parent")?).is_dir(),
            "shared parent stays"
        );
    }
    Ok(())
}

#[test]
fn appliance_enables_controllers_then_writes_v2_files() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::v2_appliance_host(temp.path(), &[])?;
    let before = fs.writes().len();
    let cage = CageCgroup::create(&layout, "svc", &all_limits())?;
    let cage_dir = "/sys/fs/cgroup/metanode-docklock/svc";
    assert_eq!(
        writes_under(&fs, before, "/"),
        pairs(&[
            (
                "/sys/fs/cgroup/cgroup.subtree_control",
                "+memory +pids +cpu +io"
            ),
            (
                "/sys/fs/cgroup/metanode-docklock/cgroup.subtree_control",
                "+memory +pids +cpu +io"
            ),
            (&format!("{cage_dir}/memory.max"), "33554432"),
            (&format!("{cage_dir}/memory.swap.max"), "0"),
            (&format!("{cage_dir}/pids.max"), "8"),
            (&format!("{cage_dir}/cpu.max"), "50000 100000"),
            (&format!("{cage_dir}/cpu.weight"), "100"),
            (&format!("{cage_dir}/io.weight"), "default 200"),
        ])
    );
    assert_eq!(cage.dirs().len(), 1);
    assert_eq!(cage.mode().code(), 0xAA);
    assert_eq!(cage.mode().kind(), CgroupModeKind::V2);
    assert_eq!(cage.kill_method(), &KillMethod::V2Kill);

    cage.add_process(77)?;
    cage.add_process(78)?;
    let dir = Path::new(cage_dir);
    fs.set_file(&dir.join("memory.peak"), "1048576\n")?;
    fs.set_file(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n",
    )?;
    fs.set_file(&dir.join("pids.peak"), "3\n")?;
    fs.set_file(&dir.join("pids.events"), "max 0\n")?;
    fs.set_file(
        &dir.join("cpu.stat"),
        "usage_usec 4500\nuser_usec 4000\nsystem_usec 500\n",
    )?;
    assert_eq!(
        cage.usage()?,
        CgroupUsage {
            memory_peak_bytes: 1_048_576,
            cpu_usage_us: 4500,
            pids_peak: 3,
            oom_kills: 1,
            pids_max_hits: 0
        }
    );
    let before = fs.writes().len();
    cage.kill_and_remove()?;
    assert_eq!(
        writes_under(&fs, before, "/"),
        pairs(&[(&format!("{cage_dir}/cgroup.kill"), "1")])
    );
    assert_eq!(fs.killed(), [77, 78]);
    assert!(!fs.host(dir).exists());
    Ok(())
}

#[test]
fn appliance_with_controllers_already_enabled_writes_only_what_is_missing() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) =
        fake::v2_appliance_host(temp.path(), &["cpu", "memory", "pids", "io", "cpuset"])?;
    let before = fs.writes().len();
    let first = CageCgroup::create(
        &layout,
        "a",
        &CgroupLimits {
            pids_max: Some(4),
            ..CgroupLimits::default()
        },
    )?;
    let second = CageCgroup::create(&layout, "b", &CgroupLimits::default())?;
    assert_eq!(
        writes_under(&fs, before, "/"),
        pairs(&[
            // Only the shared parent, once: the second cage finds it enabled.
            (
                "/sys/fs/cgroup/metanode-docklock/cgroup.subtree_control",
                "+memory +pids"
            ),
            ("/sys/fs/cgroup/metanode-docklock/a/pids.max", "4"),
        ])
    );
    assert_eq!(
        second.mode().cpu,
        Some(CgroupVersion::V2),
        "cpu.stat accounting without the cpu controller"
    );
    assert_eq!(second.mode().io, None);
    drop(first);
    drop(second);
    assert!(
        !fs.host(Path::new("/sys/fs/cgroup/metanode-docklock/a"))
            .exists(),
        "Drop removes"
    );
    assert!(
        !fs.host(Path::new("/sys/fs/cgroup/metanode-docklock/b"))
            .exists(),
        "Drop removes"
    );
    Ok(())
}

#[test]
fn systemd_service_hits_the_no_internal_processes_rule_with_an_explanation() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::v2_debian12_service_host(temp.path())?;
    let error = CageCgroup::create(&layout, "x", &all_limits()).expect_err("busy");
    let message = error.to_string();
    assert!(
        matches!(error, CreateError::NoInternalProcesses { .. }),
        "{message}"
    );
    assert!(
        message.contains("\"no internal processes\" rule"),
        "{message}"
    );
    assert!(
        message.contains("/sys/fs/cgroup/system.slice/metanode.service"),
        "{message}"
    );
    assert!(message.contains("(pids 4242)"), "{message}");
    assert!(
        !fs.host(Path::new(
            "/sys/fs/cgroup/system.slice/metanode.service/metanode-docklock"
        ))
        .exists()
    );
    Ok(())
}

/// A pure v2 host whose root offers only `offered`, with io files per `io_files`.
fn v2_host(
    root: &Path,
    offered: &[&str],
    io_files: &[&str],
) -> Result<(Arc<DirFs>, CgroupLayout), FixtureError> {
    let fs = Arc::new(DirFs::new(root));
    let mut template: Vec<TemplateFile> = fake::v2_template()
        .into_iter()
        .filter(|f| !f.name.starts_with("io."))
        .collect();
    template.extend(
        io_files
            .iter()
            .map(|name| TemplateFile::new(name, "default 100\n", Some("io"))),
    );
    fs.add_hierarchy(
        Path::new("/sys/fs/cgroup"),
        CgroupVersion::V2,
        offered,
        template,
    )?;
    let layout = CgroupLayout::from_texts(
        fs.clone(),
        fake::V2_APPLIANCE_MOUNTINFO,
        fake::V2_APPLIANCE_PROC_SELF_CGROUP,
    )?;
    Ok((fs, layout))
}

#[test]
fn a_limit_without_its_controller_is_an_error_naming_it() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = v2_host(temp.path(), &["memory", "pids"], &[])?;
    let io = CgroupLimits {
        io_weight: Some(100),
        ..CgroupLimits::default()
    };
    let error = CageCgroup::create(&layout, "x", &io).expect_err("no io");
    assert!(
        matches!(
            &error,
            CreateError::ControllerUnavailable {
                field: "io_weight",
                controller: "io",
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("/sys/fs/cgroup/cgroup.controllers lists: memory pids"),
        "{message}"
    );
    assert!(
        message.contains("no cgroup v1 hierarchy with `blkio`"),
        "{message}"
    );
    let cpu = CgroupLimits {
        cpu_weight: Some(50),
        ..CgroupLimits::default()
    };
    let error = CageCgroup::create(&layout, "x", &cpu).expect_err("no cpu");
    assert!(matches!(
        error,
        CreateError::ControllerUnavailable {
            field: "cpu_weight",
            controller: "cpu",
            ..
        }
    ));
    // Checked before anything is created.
    assert!(
        !fs.host(Path::new("/sys/fs/cgroup/metanode-docklock"))
            .exists()
    );
    Ok(())
}

#[test]
fn io_weight_uses_bfq_when_iocost_is_absent_and_fails_without_either() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = v2_host(temp.path(), fake::V2_ROOT_CONTROLLERS, &["io.bfq.weight"])?;
    let limits = CgroupLimits {
        io_weight: Some(10_000),
        ..CgroupLimits::default()
    };
    let cage = CageCgroup::create(&layout, "bfq", &limits)?;
    let weight = Path::new("/sys/fs/cgroup/metanode-docklock/bfq/io.bfq.weight");
    assert_eq!(fs.read(weight)?, "1000");
    cage.kill_and_remove()?;

    let temp = tempfile::tempdir()?;
    let (fs, layout) = v2_host(temp.path(), fake::V2_ROOT_CONTROLLERS, &[])?;
    let error = CageCgroup::create(&layout, "none", &limits).expect_err("no weight file");
    assert!(
        matches!(
            &error,
            CreateError::MissingFile {
                field: "io_weight",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("/sys/fs/cgroup/metanode-docklock/none/io.weight does not exist"),
        "{error}"
    );
    // The half-made cage was rolled back.
    assert!(
        !fs.host(Path::new("/sys/fs/cgroup/metanode-docklock/none"))
            .exists()
    );
    Ok(())
}

#[test]
fn bad_limits_and_names_are_refused_before_any_change() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let before = fs.writes().len();
    let cases: [(CgroupLimits, &str); 6] = [
        (
            CgroupLimits {
                memory_max_bytes: Some(4096),
                ..Default::default()
            },
            "memory_max_bytes",
        ),
        (
            CgroupLimits {
                pids_max: Some(0),
                ..Default::default()
            },
            "pids_max",
        ),
        (
            CgroupLimits {
                cpu_quota_us: Some(999),
                ..Default::default()
            },
            "cpu_quota_us",
        ),
        (
            CgroupLimits {
                cpu_period_us: Some(2_000_000),
                ..Default::default()
            },
            "cpu_period_us",
        ),
        (
            CgroupLimits {
                cpu_weight: Some(10_001),
                ..Default::default()
            },
            "cpu_weight",
        ),
        (
            CgroupLimits {
                io_weight: Some(0),
                ..Default::default()
            },
            "io_weight",
        ),
    ];
    for (limits, expected_field) in cases {
        match CageCgroup::create(&layout, "x", &limits) {
            Err(CreateError::InvalidLimit { field, .. }) => assert_eq!(field, expected_field),
            other => panic!("{expected_field}: expected InvalidLimit, got {other:?}"),
        }
    }
    let swap_only = CgroupLimits {
        memory_swap_max_bytes: Some(MIB),
        ..Default::default()
    };
    assert!(matches!(
        CageCgroup::create(&layout, "x", &swap_only),
        Err(CreateError::SwapNeedsMemoryOnV1)
    ));
    let overflow = CgroupLimits {
        memory_max_bytes: Some(u64::MAX),
        memory_swap_max_bytes: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        CageCgroup::create(&layout, "x", &overflow),
        Err(CreateError::SwapOverflow)
    ));
    for name in ["", "../etc", "a/b", "x.y", &"n".repeat(65)] {
        assert!(
            matches!(
                CageCgroup::create(&layout, name, &CgroupLimits::default()),
                Err(CreateError::Name(_))
            ),
            "{name}"
        );
    }
    assert_eq!(
        writes_under(&fs, before, "/"),
        Vec::<(String, String)>::new()
    );
    let parent = fs.host(Path::new("/sys/fs/cgroup/pids/metanode-docklock"));
    assert!(
        !parent.exists()
            || std::fs::read_dir(parent)?
                .filter_map(Result::ok)
                .all(|e| !e.path().is_dir())
    );
    Ok(())
}

#[test]
fn a_name_in_use_is_refused_and_the_first_cage_is_untouched() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let first = CageCgroup::create(&layout, "same", &CgroupLimits::default())?;
    let error = CageCgroup::create(&layout, "same", &CgroupLimits::default()).expect_err("in use");
    assert!(
        matches!(&error, CreateError::AlreadyExists { path } if path.ends_with("metanode-docklock/same")),
        "{error}"
    );
    for dir in first.dirs() {
        assert!(
            fs.host(&dir.path).is_dir(),
            "{} was removed by the failed create",
            dir.path.display()
        );
    }
    first.kill_and_remove()?;
    Ok(())
}

#[test]
fn without_a_freezer_removal_signals_every_task() -> TestResult {
    let temp = tempfile::tempdir()?;
    let fs = Arc::new(DirFs::new(temp.path()));
    fs.add_hierarchy(
        Path::new("/sys/fs/cgroup/pids"),
        CgroupVersion::V1,
        &[],
        fake::v1_template("pids"),
    )?;
    let mountinfo = "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";
    let layout = CgroupLayout::from_texts(fs.clone(), mountinfo, "8:pids:/\n")?;
    let cage = CageCgroup::create(
        &layout,
        "sig",
        &CgroupLimits {
            pids_max: Some(2),
            ..Default::default()
        },
    )?;
    assert_eq!(cage.kill_method(), &KillMethod::Signals);
    assert_eq!(cage.mode().code(), 0b0000_0100, "pids v1 only");
    cage.add_process(10)?;
    cage.add_process(11)?;
    let usage = cage.usage()?;
    assert_eq!(
        (usage.memory_peak_bytes, usage.cpu_usage_us),
        (0, 0),
        "unused controllers read 0"
    );
    cage.kill_and_remove()?;
    assert_eq!(fs.killed(), [10, 11]);
    assert!(
        !fs.host(Path::new("/sys/fs/cgroup/pids/metanode-docklock/sig"))
            .exists()
    );
    Ok(())
}

/// Delegates to DirFs but never lets a task die: a task stuck in uninterruptible sleep.
#[derive(Debug)]
struct StuckTasks(DirFs);

impl CgroupFs for StuckTasks {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.0.mkdir(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.0.rmdir(path)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        self.0.read(path)
    }
    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        if path.ends_with("cgroup.kill") {
            Ok(())
        } else {
            self.0.write(path, contents)
        }
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }
    fn kill(&self, _pid: i32) -> io::Result<()> {
        Ok(())
    }
    fn sleep(&self, _duration: Duration) {}
}

#[test]
fn tasks_that_do_not_die_are_reported_not_waited_for_forever() -> TestResult {
    let temp = tempfile::tempdir()?;
    let inner = DirFs::new(temp.path());
    inner.add_hierarchy(
        Path::new("/sys/fs/cgroup"),
        CgroupVersion::V2,
        fake::V2_ROOT_CONTROLLERS,
        fake::v2_template(),
    )?;
    let fs = Arc::new(StuckTasks(inner));
    let layout = CgroupLayout::from_texts(
        fs.clone(),
        fake::V2_APPLIANCE_MOUNTINFO,
        fake::V2_APPLIANCE_PROC_SELF_CGROUP,
    )?;
    let cage = CageCgroup::create(&layout, "stuck", &CgroupLimits::default())?;
    cage.add_process(99)?;
    let error = cage.kill_and_remove().expect_err("stuck");
    assert!(
        matches!(&error, RemoveError::StillPopulated { pids, .. } if pids == "99"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("/sys/fs/cgroup/metanode-docklock/stuck still has tasks (pids 99)"),
        "{error}"
    );
    Ok(())
}

#[test]
fn unreadable_counters_name_the_file() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::v2_appliance_host(temp.path(), &[])?;
    let cage = CageCgroup::create(&layout, "u", &CgroupLimits::default())?;
    let peak = Path::new("/sys/fs/cgroup/metanode-docklock/u/memory.peak");
    fs.set_file(peak, "lots\n")?;
    let error = cage.usage().expect_err("garbage");
    assert!(
        matches!(&error, UsageError::Parse { path, .. } if path == peak),
        "{error}"
    );
    fs.set_file(peak, "0\n")?;
    fs.set_file(
        Path::new("/sys/fs/cgroup/metanode-docklock/u/pids.events"),
        "max.imposed 1\n",
    )?;
    let error = cage.usage().expect_err("no max key");
    assert_eq!(
        error.to_string(),
        "cannot parse /sys/fs/cgroup/metanode-docklock/u/pids.events: key \"max\" is missing"
    );
    Ok(())
}

#[test]
fn add_process_refuses_non_pids() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (_, layout) = fake::v2_appliance_host(temp.path(), &[])?;
    let cage = CageCgroup::create(&layout, "p", &CgroupLimits::default())?;
    assert_eq!(
        cage.add_process(0).expect_err("zero").to_string(),
        "pid 0 is not a process id"
    );
    assert!(cage.add_process(-5).is_err());
    Ok(())
}

/// `add_self` writes "0" (the caller) to every v1 `tasks` file — never a pid, never v1
/// cgroup.procs — and the caller shows up in each hierarchy.
#[test]
fn add_self_on_the_hybrid_host_writes_zero_to_every_v1_tasks_file() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let cage = CageCgroup::create(&layout, "job", &all_limits())?;
    assert_eq!(cage.v2_dir(), None, "every controller is v1 here");
    let before = fs.writes().len();
    cage.add_self(false)?;
    let expected: Vec<(String, String)> = cage
        .dirs()
        .iter()
        .map(|d| (d.path.join("tasks").display().to_string(), "0".to_string()))
        .collect();
    assert_eq!(
        expected.len(),
        6,
        "memory, pids, cpu, cpuacct, blkio, freezer"
    );
    assert_eq!(writes_under(&fs, before, "/"), expected);
    let me = std::process::id().to_string();
    for dir in cage.dirs() {
        assert_eq!(fs.read(&dir.path.join("cgroup.procs"))?.trim(), me);
    }
    Ok(())
}

/// On pure v2 the cage's one directory is offered for clone3(CLONE_INTO_CGROUP); when the
/// process was created there, `add_self(true)` writes nothing, and without it "0" goes to
/// cgroup.procs (v2 has no per-thread `tasks`).
#[test]
fn add_self_on_v2_skips_the_directory_joined_at_creation() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::v2_appliance_host(temp.path(), &[])?;
    let cage = CageCgroup::create(&layout, "svc", &all_limits())?;
    let cage_dir = Path::new("/sys/fs/cgroup/metanode-docklock/svc");
    assert_eq!(cage.v2_dir(), Some(cage_dir));
    let before = fs.writes().len();
    cage.add_self(true)?;
    assert_eq!(writes_under(&fs, before, "/"), []);
    cage.add_self(false)?;
    assert_eq!(
        writes_under(&fs, before, "/"),
        pairs(&[("/sys/fs/cgroup/metanode-docklock/svc/cgroup.procs", "0")])
    );
    assert_eq!(
        fs.read(&cage_dir.join("cgroup.procs"))?.trim(),
        std::process::id().to_string()
    );
    Ok(())
}

/// `leave_self` moves the caller to the parent directory (`metanode-docklock`) in every v1
/// hierarchy with "0" to its `tasks`, emptying the cage; on v2 it refuses (returns false) and
/// writes nothing, since the parent may hold no processes there.
#[test]
fn leave_self_empties_the_cage_on_v1_and_declines_on_v2() -> TestResult {
    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::hybrid_ci_host(temp.path())?;
    let cage = CageCgroup::create(&layout, "job", &CgroupLimits::default())?;
    cage.add_self(false)?;
    let before = fs.writes().len();
    assert!(cage.leave_self()?);
    let expected: Vec<(String, String)> = cage
        .dirs()
        .iter()
        .map(|d| {
            let parent = d.path.parent().expect("parent");
            (parent.join("tasks").display().to_string(), "0".to_string())
        })
        .collect();
    assert_eq!(writes_under(&fs, before, "/"), expected);
    let me = std::process::id().to_string();
    for dir in cage.dirs() {
        assert_eq!(fs.read(&dir.path.join("cgroup.procs"))?, "");
        let parent = dir.path.parent().ok_or("no parent")?;
        assert_eq!(fs.read(&parent.join("cgroup.procs"))?.trim(), me);
    }
    cage.kill_and_remove()?;
    assert_eq!(fs.killed(), Vec::<i32>::new(), "nothing left to kill");

    let temp = tempfile::tempdir()?;
    let (fs, layout) = fake::v2_appliance_host(temp.path(), &[])?;
    let cage = CageCgroup::create(&layout, "svc", &CgroupLimits::default())?;
    let before = fs.writes().len();
    assert!(!cage.leave_self()?);
    assert_eq!(writes_under(&fs, before, "/"), []);
    Ok(())
}
