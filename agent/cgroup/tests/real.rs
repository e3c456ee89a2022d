//! The real kernel (root only; skipped with a printed reason otherwise): cages on this host's
//! cgroups with forked children that hit the memory and pids limits, burn CPU, and get killed.
//!
//! The tests share one process-wide lock: this binary becomes a child subreaper so that the
//! grandchildren of a killed child are reaped here, and reaping "any child" is only safe while
//! no other test of this binary has children.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use metanode_cgroup::{CageCgroup, CgroupFs, CgroupLayout, CgroupLimits, CgroupVersion, HostFs};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const MIB: u64 = 1024 * 1024;
static SERIAL: Mutex<()> = Mutex::new(());

/// Some(lock) when the test can run; None (after printing why) when not root.
fn real_kernel(test: &str) -> Option<MutexGuard<'static, ()>> {
    if !is_root() {
        println!("skipping {test}: needs root to create cgroups (CI runs it as root)");
        return None;
    }
    let guard = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes plain integers and only sets a flag on
    // this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "PR_SET_CHILD_SUBREAPER: {}",
        std::io::Error::last_os_error()
    );
    Some(guard)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn unique(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// A pipe whose ends are closed on drop.
struct Pipe {
    read: i32,
    write: i32,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid 2-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Pipe {
            read: fds[0],
            write: fds[1],
        })
    }

    fn close_write(&mut self) {
        if self.write >= 0 {
            // SAFETY: closing an fd this struct owns, once.
            unsafe { libc::close(self.write) };
            self.write = -1;
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.close_write();
        // SAFETY: closing an fd this struct owns, once.
        unsafe { libc::close(self.read) };
    }
}

/// A forked child: killed and reaped on drop unless already reaped.
struct Child {
    pid: i32,
    status: Option<i32>,
    go: Pipe,
    results: Pipe,
}

impl Child {
    /// Forks; the child waits for `start()` and then runs `body(results_write_fd)` and exits.
    /// The body must only make raw syscalls (this test process has other threads).
    fn fork(body: fn(i32)) -> std::io::Result<Child> {
        let go = Pipe::new()?;
        let results = Pipe::new()?;
        // SAFETY: the child only calls async-signal-safe functions (read, write, mmap, fork,
        // pause, clock_gettime, _exit) before it exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a local; the fds are valid in the child.
            unsafe {
                libc::close(go.write);
                libc::close(results.read);
                if libc::read(go.read, (&raw mut byte).cast(), 1) != 1 {
                    libc::_exit(100);
                }
            }
            body(results.write);
            // SAFETY: _exit never returns and skips the parent's atexit handlers.
            unsafe { libc::_exit(0) }
        }
        let mut child = Child {
            pid,
            status: None,
            go,
            results,
        };
        child.results.close_write();
        Ok(child)
    }

    /// Forks; the child runs `body` at once, reports its i32 result, then holds (alive, in
    /// whatever cgroups `body` left it) until the parent closes `go`, and exits 0. The body may
    /// use the crate's API (glibc keeps malloc usable after fork); it never returns into the
    /// test harness.
    fn fork_then_hold(body: impl FnOnce() -> i32) -> std::io::Result<Child> {
        let go = Pipe::new()?;
        let results = Pipe::new()?;
        // SAFETY: see the doc comment: the child ends in _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            write_i32s(results.write, &[body()]);
            let mut byte = 0u8;
            // SAFETY: closing the child's copy of the write end (so the parent's close is the
            // last), then a blocking read of one byte into a local, which ends when the parent
            // closes `go`; _exit never returns.
            unsafe {
                libc::close(go.write);
                libc::read(go.read, (&raw mut byte).cast(), 1);
                libc::_exit(0)
            }
        }
        let mut child = Child {
            pid,
            status: None,
            go,
            results,
        };
        child.results.close_write();
        Ok(child)
    }

    fn start(&mut self) -> std::io::Result<()> {
        let byte = 1u8;
        // SAFETY: writing one byte from a local to a pipe fd we own.
        if unsafe { libc::write(self.go.write, (&raw const byte).cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
        self.go.close_write();
        Ok(())
    }

    /// Reads `N` i32 the child reported; None if it died first.
    fn read_results<const N: usize>(&self) -> Option<[i32; N]> {
        let mut values = [0i32; N];
        let len = std::mem::size_of_val(&values);
        let mut got = 0;
        while got < len {
            // SAFETY: reading into the remaining part of a local buffer of `len` bytes.
            let n = unsafe {
                libc::read(
                    self.results.read,
                    values.as_mut_ptr().cast::<u8>().add(got).cast(),
                    len - got,
                )
            };
            if n <= 0 {
                return None;
            }
            got += n as usize;
        }
        Some(values)
    }

    /// Waits for the child to end and returns its wait status.
    fn wait(&mut self) -> std::io::Result<i32> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child; status is a valid out pointer.
        if unsafe { libc::waitpid(self.pid, &mut status, 0) } != self.pid {
            return Err(std::io::Error::last_os_error());
        }
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SAFETY: signalling our own unreaped child (its pid cannot have been reused).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.wait();
        }
        reap_orphans();
    }
}

/// Reaps grandchildren re-parented to this subreaper (all dead once their cage is killed).
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: WNOHANG wait for any child; status is a valid out pointer.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            break;
        }
    }
}

fn killed_by(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

fn write_i32s(fd: i32, values: &[i32]) {
    // SAFETY: writing a slice's bytes to a pipe fd; a failure only loses the report.
    unsafe { libc::write(fd, values.as_ptr().cast(), std::mem::size_of_val(values)) };
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// Touches 128 MiB of fresh anonymous memory, page by page.
fn allocate_beyond_limit(_results: i32) {
    let len = 128 * 1024 * 1024;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(101) };
    }
    for offset in (0..len).step_by(4096) {
        // SAFETY: offset < len, inside the mapping just created.
        unsafe { ptr.cast::<u8>().add(offset).write_volatile(1) };
    }
}

/// Forks until refused; reports (successful forks, errno of the refusal); children pause.
fn fork_until_refused(results: i32) {
    let mut forked = 0;
    let mut errno = 0;
    for _ in 0..64 {
        // SAFETY: the grandchild only pauses until it is killed.
        match unsafe { libc::fork() } {
            0 => pause_forever(),
            -1 => {
                errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
                break;
            }
            _ => forked += 1,
        }
    }
    write_i32s(results, &[forked, errno]);
    pause_forever();
}

/// Burns at least 50 ms of this thread's CPU time (measured by the thread itself, so the
/// amount does not depend on how busy the machine is).
fn burn_cpu(_results: i32) {
    let now_ns = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    let start = now_ns();
    let mut x = 1u64;
    while now_ns() - start < 50_000_000 {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Forks three grandchildren, reports their pids, pauses.
fn spawn_sleepers(results: i32) {
    let mut pids = [0i32; 3];
    for pid in &mut pids {
        // SAFETY: the grandchild only pauses until it is killed.
        *pid = match unsafe { libc::fork() } {
            0 => pause_forever(),
            p => p,
        };
    }
    write_i32s(results, &pids);
    pause_forever();
}

#[test]
fn memory_limit_oom_kills_the_child_inside_the_cage() -> TestResult {
    let Some(_serial) = real_kernel("memory_limit_oom_kills_the_child_inside_the_cage") else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let limits = CgroupLimits {
        memory_max_bytes: Some(32 * MIB),
        memory_swap_max_bytes: Some(0),
        ..Default::default()
    };
    let cage = CageCgroup::create(&layout, &unique("oom"), &limits)?;
    let mut child = Child::fork(allocate_beyond_limit)?;
    cage.add_process(child.pid)?;
    child.start()?;
    let status = child.wait()?;
    assert_eq!(
        killed_by(status),
        Some(libc::SIGKILL),
        "wait status {status:#x}"
    );
    let usage = cage.usage()?;
    assert!(usage.oom_kills >= 1, "{usage:?}");
    assert!(
        usage.memory_peak_bytes <= 32 * MIB,
        "peak above the limit: {usage:?}"
    );
    assert!(
        usage.memory_peak_bytes >= 16 * MIB,
        "the child got near the limit: {usage:?}"
    );
    // We are still here: the OOM stayed inside the cage.
    cage.kill_and_remove()?;
    Ok(())
}

#[test]
fn pids_limit_refuses_the_ninth_task() -> TestResult {
    let Some(_serial) = real_kernel("pids_limit_refuses_the_ninth_task") else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let cage = CageCgroup::create(
        &layout,
        &unique("pids"),
        &CgroupLimits {
            pids_max: Some(8),
            ..Default::default()
        },
    )?;
    let mut child = Child::fork(fork_until_refused)?;
    cage.add_process(child.pid)?;
    child.start()?;
    let [forked, errno] = child
        .read_results::<2>()
        .ok_or("child died before reporting")?;
    assert_eq!(
        (forked, errno),
        (7, libc::EAGAIN),
        "the child is task 1 of 8"
    );
    let usage = cage.usage()?;
    assert_eq!(usage.pids_peak, 8, "{usage:?}");
    assert!(usage.pids_max_hits >= 1, "{usage:?}");
    cage.kill_and_remove()?;
    assert_eq!(killed_by(child.wait()?), Some(libc::SIGKILL));
    Ok(())
}

#[test]
fn cpu_usage_grows_with_a_busy_loop() -> TestResult {
    let Some(_serial) = real_kernel("cpu_usage_grows_with_a_busy_loop") else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let limits = CgroupLimits {
        cpu_weight: Some(100),
        ..Default::default()
    };
    let cage = CageCgroup::create(&layout, &unique("cpu"), &limits)?;
    let mut child = Child::fork(burn_cpu)?;
    cage.add_process(child.pid)?;
    let before = cage.usage()?.cpu_usage_us;
    child.start()?;
    assert_eq!(child.wait()?, 0, "the child exits normally");
    let after = cage.usage()?.cpu_usage_us;
    // The child spent >= 50 ms of its own CPU time inside the cage, all of it charged there.
    assert!(
        after >= before + 50_000,
        "before {before} us, after {after} us"
    );
    cage.kill_and_remove()?;
    Ok(())
}

#[test]
fn kill_and_remove_kills_the_tree_and_leaves_no_directory() -> TestResult {
    let Some(_serial) = real_kernel("kill_and_remove_kills_the_tree_and_leaves_no_directory")
    else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let cage = CageCgroup::create(
        &layout,
        &unique("kill"),
        &CgroupLimits {
            pids_max: Some(16),
            ..Default::default()
        },
    )?;
    let dirs: Vec<PathBuf> = cage.dirs().iter().map(|d| d.path.clone()).collect();
    let mut child = Child::fork(spawn_sleepers)?;
    cage.add_process(child.pid)?;
    child.start()?;
    let grandchildren = child
        .read_results::<3>()
        .ok_or("child died before reporting")?;
    let procs = HostFs.read(&dirs.first().ok_or("no dir")?.join("cgroup.procs"))?;
    assert_eq!(
        procs.lines().count(),
        4,
        "child + 3 grandchildren in the cage: {procs:?}"
    );
    cage.kill_and_remove()?;
    assert_eq!(killed_by(child.wait()?), Some(libc::SIGKILL));
    for dir in &dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    reap_orphans();
    for pid in grandchildren {
        // SAFETY: signal 0 sends nothing; it only asks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "grandchild {pid} survived");
    }
    Ok(())
}

#[test]
fn limits_land_in_the_kernel_files() -> TestResult {
    let Some(_serial) = real_kernel("limits_land_in_the_kernel_files") else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let limits = CgroupLimits {
        memory_max_bytes: Some(64 * MIB),
        memory_swap_max_bytes: Some(0),
        pids_max: Some(100),
        cpu_quota_us: Some(20_000),
        cpu_period_us: Some(50_000),
        cpu_weight: Some(100),
        io_weight: Some(200),
    };
    let cage = CageCgroup::create(&layout, &unique("files"), &limits)?;
    let read = |file: &str| -> Option<String> {
        cage.dirs()
            .iter()
            .map(|d| d.path.join(file))
            .find(|p| p.exists())
            .and_then(|p| HostFs.read(&p).ok())
    };
    match cage.mode().memory {
        Some(CgroupVersion::V1) => {
            assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864\n"));
            assert_eq!(
                read("memory.memsw.limit_in_bytes").as_deref(),
                Some("67108864\n"),
                "memory + 0 swap"
            );
        }
        Some(CgroupVersion::V2) => {
            assert_eq!(read("memory.max").as_deref(), Some("67108864\n"));
            assert_eq!(read("memory.swap.max").as_deref(), Some("0\n"));
        }
        None => return Err("memory controller unused on a host that has it".into()),
    }
    assert_eq!(read("pids.max").as_deref(), Some("100\n"));
    match cage.mode().cpu {
        Some(CgroupVersion::V1) => {
            assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("20000\n"));
            assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("50000\n"));
            assert_eq!(read("cpu.shares").as_deref(), Some("2597\n"));
        }
        Some(CgroupVersion::V2) => {
            assert_eq!(read("cpu.max").as_deref(), Some("20000 50000\n"));
            assert_eq!(read("cpu.weight").as_deref(), Some("100\n"));
        }
        None => return Err("cpu controller unused".into()),
    }
    // io weight 200 → runc's v1 mapping 29, or v2 "default 200" (iocost) / 29 (BFQ).
    let io = [
        "blkio.weight",
        "blkio.bfq.weight",
        "io.weight",
        "io.bfq.weight",
    ]
    .iter()
    .find_map(|file| read(file).map(|text| (*file, text)))
    .ok_or("no io weight file")?;
    assert!(
        matches!(
            (io.0, io.1.as_str()),
            ("io.weight", "default 200\n") | (_, "29\n") | (_, "default 29\n")
        ),
        "{io:?}"
    );
    cage.kill_and_remove()?;
    Ok(())
}

/// A forked child moves itself into the cage (`add_self`) and the kernel lists it in every
/// hierarchy's cgroup.procs; the cage's limits then apply to it (its /proc/self/cgroup names
/// the cage).
#[test]
fn add_self_moves_the_calling_process_into_every_hierarchy() -> TestResult {
    let Some(_serial) = real_kernel("add_self_moves_the_calling_process_into_every_hierarchy")
    else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let name = unique("self");
    let cage = CageCgroup::create(
        &layout,
        &name,
        &CgroupLimits {
            pids_max: Some(4),
            ..Default::default()
        },
    )?;
    let mut child = Child::fork_then_hold(|| match cage.add_self(false) {
        Ok(()) => 0,
        Err(_) => 1,
    })?;
    let pid = child.pid;
    let [code] = child.read_results::<1>().ok_or("child died")?;
    assert_eq!(code, 0, "add_self failed in the child");
    for dir in cage.dirs() {
        let procs = HostFs.read(&dir.path.join("cgroup.procs"))?;
        assert_eq!(procs.trim(), pid.to_string(), "{}", dir.path.display());
    }
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    assert!(
        own.lines()
            .filter(|l| !l.starts_with("0::"))
            .any(|l| l.ends_with(&format!("/metanode-docklock/{name}"))),
        "{own}"
    );
    // Removal needs an empty cage: a live process that left it does not hold it.
    child.go.close_write();
    assert_eq!(child.wait()?, 0);
    cage.kill_and_remove()?;
    Ok(())
}

/// The DockLock launcher's case: a child joins, opens the way out (`prepare_leave`), then becomes
/// an unprivileged uid (as cage root does, mapped to an unprivileged host uid). A plain
/// `leave_self` is now refused (the root-owned `tasks` files are not writable for it); the files
/// opened before the change still move it out, since v1 checks the opener's credentials.
#[test]
fn prepared_leave_works_after_the_caller_drops_root() -> TestResult {
    let Some(_serial) = real_kernel("prepared_leave_works_after_the_caller_drops_root") else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let cage = CageCgroup::create(&layout, &unique("leave-prep"), &CgroupLimits::default())?;
    if cage.dirs().iter().any(|d| d.version != CgroupVersion::V1) {
        cage.kill_and_remove()?;
        eprintln!("prepared_leave_works_after_the_caller_drops_root: skipped (a v2 hierarchy)");
        return Ok(());
    }
    let mut child = Child::fork_then_hold(|| {
        let Ok(Some(prepared)) = cage.add_self(false).and_then(|()| cage.prepare_leave()) else {
            return 1;
        };
        // SAFETY: setresgid/setresuid with plain ids affect only this forked child.
        if unsafe {
            libc::setresgid(65534, 65534, 65534) != 0 || libc::setresuid(65534, 65534, 65534) != 0
        } {
            return 2;
        }
        if cage.leave_self().is_ok() {
            return 3;
        }
        match cage.leave_prepared(prepared) {
            Ok(()) => 0,
            Err(_) => 4,
        }
    })?;
    let [code] = child.read_results::<1>().ok_or("child died")?;
    assert_eq!(
        code, 0,
        "1 join/open, 2 setresuid, 3 unprepared leave allowed, 4 prepared refused"
    );
    for dir in cage.dirs() {
        assert_eq!(HostFs.read(&dir.path.join("cgroup.procs"))?.trim(), "");
    }
    cage.kill_and_remove()?;
    child.go.close_write();
    child.wait()?;
    Ok(())
}

/// A forked child joins and then leaves the cage (`leave_self`): the cage is empty and removable
/// while the child is still alive, and the child is in the parent directory.
#[test]
fn leave_self_empties_the_cage_while_the_caller_lives() -> TestResult {
    let Some(_serial) = real_kernel("leave_self_empties_the_cage_while_the_caller_lives") else {
        return Ok(());
    };
    let layout = CgroupLayout::discover()?;
    let cage = CageCgroup::create(&layout, &unique("leave"), &CgroupLimits::default())?;
    let v1 = cage.dirs().iter().all(|d| d.version == CgroupVersion::V1);
    let mut child =
        Child::fork_then_hold(
            || match cage.add_self(false).and_then(|()| cage.leave_self()) {
                Ok(true) => 0,
                Ok(false) => 2,
                Err(_) => 1,
            },
        )?;
    let pid = child.pid;
    let [code] = child.read_results::<1>().ok_or("child died")?;
    assert_eq!(code, if v1 { 0 } else { 2 });
    if v1 {
        let dirs: Vec<PathBuf> = cage.dirs().iter().map(|d| d.path.clone()).collect();
        for dir in &dirs {
            assert_eq!(HostFs.read(&dir.join("cgroup.procs"))?.trim(), "");
            let parent = dir.parent().ok_or("no parent")?;
            let procs = HostFs.read(&parent.join("cgroup.procs"))?;
            assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
        }
        cage.kill_and_remove()?;
        for dir in &dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        // SAFETY: signal 0 only checks the pid exists.
        assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the child was killed");
    }
    child.go.close_write();
    assert_eq!(child.wait()?, 0);
    Ok(())
}
