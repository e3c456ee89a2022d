//! The probe registry: name, flags, help and the function that makes the attempt.

mod determinism;
mod fs;
mod kernel;
mod net;
mod ns;
mod process;

use std::fmt;

use crate::args::{ArgError, FlagSpec, Positional, ProbeArgs, repeated, switch, value};
use crate::errno::Errno;
use crate::report::Report;

/// Why a probe could not run (exit 2): it never got to make its attempt, so it says nothing about the cage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    Args(ArgError),
    /// A preparation step (not the attempt itself) failed, e.g. creating a scratch directory in /tmp.
    Setup {
        step: String,
        errno: Errno,
    },
    /// The probe does not exist on this architecture.
    #[cfg(not(target_arch = "x86_64"))]
    Unsupported {
        what: &'static str,
    },
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Args(error) => write!(f, "bad arguments: {error}"),
            ProbeError::Setup { step, errno } => write!(f, "setup failed: {step}: {errno}"),
            #[cfg(not(target_arch = "x86_64"))]
            ProbeError::Unsupported { what } => write!(f, "unsupported here: {what}"),
        }
    }
}

impl From<ArgError> for ProbeError {
    fn from(error: ArgError) -> ProbeError {
        ProbeError::Args(error)
    }
}

pub fn setup_error(step: impl Into<String>) -> impl FnOnce(Errno) -> ProbeError {
    let step = step.into();
    move |errno| ProbeError::Setup { step, errno }
}

pub type RunFn = fn(&ProbeArgs) -> Result<Report, ProbeError>;

#[derive(Debug)]
pub enum Run {
    /// Prints a report line.
    Report(RunFn),
    /// noop: exits 0 and prints nothing (the spawn bench measures the cage, not the probe's output).
    Silent,
}

#[derive(Debug)]
pub struct Probe {
    pub name: &'static str,
    pub synopsis: &'static str,
    pub help: &'static str,
    pub flags: &'static [FlagSpec],
    pub positional: Positional,
    pub run: Run,
}

pub fn find(name: &str) -> Option<&'static Probe> {
    PROBES.iter().find(|probe| probe.name == name)
}

pub const PROBES: &[Probe] = &[
    Probe {
        name: "read-host-file",
        synopsis: "read-host-file [PATH...] [--marker TEXT]",
        help: "open+read each PATH (default /etc/shadow and /proc/1/root/etc/hostname). With --marker, escaped only \
               if a read returns the marker the test wrote on the host; without it any successful read counts as \
               escaped (use a rootfs without those files). Contents are never printed.",
        flags: &[value("--marker")],
        positional: Positional::Allowed,
        run: Run::Report(fs::read_host_file),
    },
    Probe {
        name: "write-outside-rootfs",
        synopsis: "write-outside-rootfs",
        help: "create files in /, /etc, /usr, /bin, via /tmp/.. paths, openat(/tmp, \"../usr/..\"), a symlink \
               from /tmp to /etc, and mkdir in /. Escaped if any creation succeeds (the file is removed again).",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(fs::write_outside_rootfs),
    },
    Probe {
        name: "write-proc-sys",
        synopsis: "write-proc-sys [PATH...]",
        help: "open for writing and write /proc/sys/kernel/hostname, /proc/sys/kernel/core_pattern, \
               /sys/kernel/uevent_helper, /sys/kernel/mm/ksm/run (each gets back the value it held) and \
               /proc/sysrq-trigger (gets 'h', the help key, which only logs). PATHs replace the list and get \
               their own value back. Escaped if any write succeeds.",
        flags: &[],
        positional: Positional::Allowed,
        run: Run::Report(fs::write_proc_sys),
    },
    Probe {
        name: "mount",
        synopsis: "mount",
        help: "mount tmpfs and proc under /tmp, bind-mount /, fsopen(\"tmpfs\"), remount / read-write, \
               umount2(/proc, MNT_DETACH) and pivot_root onto the tmpfs. The last three run in a forked child that \
               first takes a private mount namespace; when it cannot, they run in the probe's own namespace only if \
               that is the cage's (PID 1, or a mount namespace other than its parent's), so a run on the host never \
               unmounts the host's /proc. Escaped if any succeeds.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(ns::mount),
    },
    Probe {
        name: "unshare-setns",
        synopsis: "unshare-setns",
        help: "unshare(2) each namespace type (user, mount, net, pid, uts, ipc, cgroup, time), clone(2) with \
               CLONE_NEWUSER, and setns(2) on every openable /proc/self/ns/* fd, each in a forked child. Escaped \
               if any succeeds.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(ns::unshare_setns),
    },
    Probe {
        name: "ptrace-host",
        synopsis: "ptrace-host [--host-pid N] [--sweep-visible]",
        help: "PTRACE_ATTACH to pid 1, every other pid in /proc and --host-pid; a successful attach is detached \
               at once. pid 1 and the sweep run only when the probe is PID 1 of its pid namespace (or with \
               --sweep-visible), so a run on the host touches only --host-pid. Escaped if any attach succeeds.",
        flags: &[value("--host-pid"), switch("--sweep-visible")],
        positional: Positional::Refused,
        run: Run::Report(process::ptrace_host),
    },
    Probe {
        name: "signal-host",
        synopsis: "signal-host --host-pid N",
        help: "kill(-1, 0) and count the pids /proc shows (both reported), then kill(--host-pid, SIGKILL). \
               Escaped if the signal is delivered; the test checks that the host process is still alive.",
        flags: &[value("--host-pid")],
        positional: Positional::Refused,
        run: Run::Report(process::signal_host),
    },
    Probe {
        name: "raw-socket",
        synopsis: "raw-socket",
        help: "socket(AF_PACKET, SOCK_RAW), socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) and \
               socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6). Escaped if any socket is created.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(net::raw_socket),
    },
    Probe {
        name: "egress",
        synopsis: "egress --addr IP:PORT",
        help: "TCP connect to --addr (a listener the test runs on the host), 3 s timeout. Escaped if connected.",
        flags: &[value("--addr")],
        positional: Positional::Refused,
        run: Run::Report(net::egress),
    },
    Probe {
        name: "io-uring",
        synopsis: "io-uring",
        help: "io_uring_setup(8 entries). Escaped if a ring fd is returned.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::io_uring),
    },
    Probe {
        name: "bpf",
        synopsis: "bpf",
        help: "bpf(BPF_MAP_CREATE, array map) and bpf(BPF_PROG_LOAD, a two-instruction socket filter). Escaped if \
               either returns an fd.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::bpf),
    },
    Probe {
        name: "perf-event-open",
        synopsis: "perf-event-open",
        help: "perf_event_open(PERF_TYPE_SOFTWARE, CPU clock, this process). Escaped if an fd is returned.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::perf_event_open),
    },
    Probe {
        name: "keyctl",
        synopsis: "keyctl",
        help: "add_key(\"user\") to the process keyring and keyctl(KEYCTL_GET_KEYRING_ID, session keyring). \
               Escaped if either succeeds (the kernel keyring is not namespaced).",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::keyctl),
    },
    Probe {
        name: "tiocsti",
        synopsis: "tiocsti",
        help: "ioctl(TIOCSTI) pushing a NUL byte, plain and as a raw syscall with cmd | 1<<32 (the kernel \
               truncates cmd to 32 bits, a filter comparing 64 bits would not), on fd 0 and on a pty the probe \
               opens itself (if /dev/ptmx is there). Escaped if any push succeeds.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::tiocsti),
    },
    Probe {
        name: "open-by-handle-at",
        synopsis: "open-by-handle-at",
        help: "open_by_handle_at with the handle name_to_handle_at gives for /, and with the 'shocker' handle \
               (FILEID_INO32_GEN, inode 2, generation 0). Escaped if either opens.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::open_by_handle_at),
    },
    Probe {
        name: "x32",
        synopsis: "x32",
        help: "raw syscall 0x40000000 | SYS_getpid (the x32 ABI). Escaped if it returns a pid; ENOSYS also means \
               the kernel lacks CONFIG_X86_X32_ABI.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(kernel::x32),
    },
    Probe {
        name: "fork-bomb",
        synopsis: "fork-bomb [--max N]",
        help: "fork children that sleep until fork fails or --max (default 10000) succeed; then kill and reap \
               them all. Blocked when fork fails first (EAGAIN is the pids limit); detail = count and errno.",
        flags: &[value("--max")],
        positional: Positional::Refused,
        run: Run::Report(process::fork_bomb),
    },
    Probe {
        name: "memory-bomb",
        synopsis: "memory-bomb [--max-mib N]",
        help: "map and touch memory in 16 MiB steps up to --max-mib (default 4096), progress on stderr. Escaped if \
               it reaches the max; blocked if mmap fails. Normally the cgroup OOM killer SIGKILLs it and NO line is \
               printed: the test checks the exit signal and the cgroup's oom count instead.",
        flags: &[value("--max-mib")],
        positional: Positional::Refused,
        run: Run::Report(process::memory_bomb),
    },
    Probe {
        name: "disk-fill",
        synopsis: "disk-fill [--max-mib N] [--path P]",
        help: "write 1 MiB blocks to --path (default /tmp/fill) until ENOSPC, EDQUOT or EFBIG; blocked when that \
               happens before --max-mib (default 2048), escaped otherwise. The file is removed afterwards.",
        flags: &[value("--max-mib"), value("--path")],
        positional: Positional::Refused,
        run: Run::Report(fs::disk_fill),
    },
    Probe {
        name: "leaked-fd",
        synopsis: "leaked-fd [--allow N]...",
        help: "list /proc/self/fd and sweep fds 3..=64 with fcntl(F_GETFD). Escaped if an fd other than 0, 1, 2 \
               and the --allow ones is open; the detail names where it points.",
        flags: &[repeated("--allow")],
        positional: Positional::Refused,
        run: Run::Report(fs::leaked_fd),
    },
    Probe {
        name: "overwrite-self-exe",
        synopsis: "overwrite-self-exe",
        help: "open /proc/self/exe, the path it links to, argv[0] and an O_PATH fd of /proc/self/exe reopened \
               through /proc/self/fd, all O_WRONLY (never written). Escaped if any open succeeds.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(fs::overwrite_self_exe),
    },
    Probe {
        name: "chroot-escape",
        synopsis: "chroot-escape --host-path P",
        help: "in a child: mkdir in /tmp, chroot into it, chdir(\"..\") 256 times, chroot(\".\"), then stat --host-path \
               (a path only the host has). Escaped if the stat succeeds.",
        flags: &[value("--host-path")],
        positional: Positional::Refused,
        run: Run::Report(fs::chroot_escape),
    },
    Probe {
        name: "random",
        synopsis: "random",
        help: "32 bytes from getrandom(2) and 32 from /dev/urandom, printed as hex (or the errno). Outcome ok.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(determinism::random),
    },
    Probe {
        name: "clock",
        synopsis: "clock",
        help: "CLOCK_REALTIME, MONOTONIC and BOOTTIME through the vDSO (libc, in a forked child: with the TSC \
               clocksource it runs rdtscp, so PR_SET_TSC makes it SIGSEGV) and the raw syscall, and rdtsc in a \
               forked child. Outcome ok; the detail carries each value or how the child died.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(determinism::clock),
    },
    Probe {
        name: "env",
        synopsis: "env",
        help: "the environment in environ order, as a JSON array of \"K=V\" strings in the detail. Outcome ok.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Report(determinism::env),
    },
    Probe {
        name: "args",
        synopsis: "args [ARG...]",
        help: "the whole argv (argv[0] included) as a JSON array in the detail. Outcome ok.",
        flags: &[],
        positional: Positional::Everything,
        run: Run::Report(determinism::args),
    },
    Probe {
        name: "write-output",
        synopsis: "write-output [--count N] [--dir D]",
        help: "write --count (default 1) files out-00000.txt... with deterministic content to --dir (default /out). \
               Outcome ok; a failed write is exit 2.",
        flags: &[value("--count"), value("--dir")],
        positional: Positional::Refused,
        run: Run::Report(determinism::write_output),
    },
    Probe {
        name: "noop",
        synopsis: "noop",
        help: "exit 0 at once and print NOTHING (the one exception to the JSON line): the spawn bench times the \
               cage. Arguments are ignored.",
        flags: &[],
        positional: Positional::Refused,
        run: Run::Silent,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_synopses_start_with_them() {
        for (index, probe) in PROBES.iter().enumerate() {
            assert!(probe.synopsis.starts_with(probe.name), "{}", probe.name);
            assert!(
                PROBES
                    .iter()
                    .skip(index + 1)
                    .all(|other| other.name != probe.name),
                "{}",
                probe.name
            );
            assert_eq!(find(probe.name).map(|found| found.name), Some(probe.name));
            for flag in probe.flags {
                assert!(
                    probe.synopsis.contains(flag.name),
                    "{} synopsis lacks {}",
                    probe.name,
                    flag.name
                );
            }
        }
        assert!(find("no-such-probe").is_none());
    }
}
