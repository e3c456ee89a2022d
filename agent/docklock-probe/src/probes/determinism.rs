//! Determinism probes: they report what the workload sees (randomness, clocks, env, args) and write
//! outputs, so replay tests can compare runs. Outcome is always "ok"; the value is the detail.

use std::io::Read as _;

use super::{ProbeError, setup_error};
use crate::args::ProbeArgs;
use crate::errno::{Errno, check_int};
use crate::limits::{OUTPUT_FILES_COUNT_DEFAULT, OUTPUT_FILES_COUNT_MAX, RANDOM_BYTES};
use crate::report::{Report, json_string_array};
use crate::sys::{self, ChildEnd};

fn getrandom_bytes() -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; RANDOM_BYTES];
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        // SAFETY: rest is a writable buffer of rest.len() bytes; flags 0 = the urandom pool, blocking.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        filled += got as usize;
    }
    Ok(buf)
}

fn urandom_bytes() -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; RANDOM_BYTES];
    let mut file = std::fs::File::open("/dev/urandom").map_err(|error| io_text("open", &error))?;
    // The cage may serve /dev/urandom from a FIFO fed with the seed, so short reads are expected.
    file.read_exact(&mut buf)
        .map_err(|error| io_text("read", &error))?;
    Ok(buf)
}

fn io_text(step: &str, error: &std::io::Error) -> String {
    match Errno::from_io(error) {
        Some(errno) => format!("{step} {errno}"),
        None => format!("{step} {error}"),
    }
}

pub fn random(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let getrandom = match getrandom_bytes() {
        Ok(bytes) => sys::hex(&bytes),
        Err(errno) => errno.to_string(),
    };
    let urandom = match urandom_bytes() {
        Ok(bytes) => sys::hex(&bytes),
        Err(why) => why,
    };
    Ok(Report::ok(format!(
        "getrandom={getrandom}; /dev/urandom={urandom}"
    )))
}

const CLOCKS: [(&str, libc::clockid_t); 3] = [
    ("realtime", libc::CLOCK_REALTIME),
    ("monotonic", libc::CLOCK_MONOTONIC),
    ("boottime", libc::CLOCK_BOOTTIME),
];

fn timespec_text(result: Result<libc::timespec, Errno>) -> String {
    match result {
        Ok(ts) => format!("{}.{:09}", ts.tv_sec, ts.tv_nsec),
        Err(errno) => errno.to_string(),
    }
}

/// The vDSO read runs in a child: with the TSC clocksource it executes rdtscp, which PR_SET_TSC turns into a
/// SIGSEGV that would otherwise end the probe before it prints anything.
fn vdso_text(id: libc::clockid_t) -> String {
    let end = sys::in_child(move || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid out-pointer; glibc answers from the vDSO without entering the kernel.
        let result = check_int(unsafe { libc::clock_gettime(id, &mut ts) }).map(drop);
        [sys::result_word(result), ts.tv_sec, ts.tv_nsec, 0]
    });
    match end {
        Ok(ChildEnd::Reported([0, sec, nsec, _])) => format!("{sec}.{nsec:09}"),
        Ok(ChildEnd::Reported([word, ..])) => Errno(word as i32).to_string(),
        Ok(ChildEnd::Died(status)) => format!("child {status}"),
        Err(errno) => format!("not tried: fork failed: {errno}"),
    }
}

pub fn clock(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut parts = Vec::new();
    for (name, id) in CLOCKS {
        let mut raw = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: raw is a valid out-pointer; the raw syscall is what seccomp and the time namespace see.
        let raw =
            crate::errno::check(unsafe { libc::syscall(libc::SYS_clock_gettime, id, &mut raw) })
                .map(|_| raw);
        parts.push(format!(
            "{name} vdso={} syscall={}",
            vdso_text(id),
            timespec_text(raw)
        ));
    }
    parts.push(format!("rdtsc={}", rdtsc_text()));
    Ok(Report::ok(parts.join("; ")))
}

/// rdtsc in a child, because PR_SET_TSC(PR_TSC_SIGSEGV) turns it into a SIGSEGV that would end the probe.
#[cfg(target_arch = "x86_64")]
fn rdtsc_text() -> String {
    let end = sys::in_child(|| {
        // SAFETY: rdtsc has no memory effects; when the cage denies it the kernel delivers SIGSEGV.
        let tsc = unsafe { core::arch::x86_64::_rdtsc() };
        [tsc as i64, 0, 0, 0]
    });
    match end {
        Ok(ChildEnd::Reported(words)) => format!("allowed ({})", words[0] as u64),
        Ok(ChildEnd::Died(status)) if status == "killed by SIGSEGV" => {
            "SIGSEGV (denied by PR_SET_TSC)".to_string()
        }
        Ok(ChildEnd::Died(status)) => format!("child {status}"),
        Err(errno) => format!("not tried: fork failed: {errno}"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn rdtsc_text() -> String {
    "not x86_64".to_string()
}

pub fn env(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let vars: Vec<String> = std::env::vars_os()
        .map(|(key, value)| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
        .collect();
    Ok(Report::ok(json_string_array(
        vars.iter().map(String::as_str),
    )))
}

pub fn args(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let argv: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    Ok(Report::ok(json_string_array(
        argv.iter().map(String::as_str),
    )))
}

/// File `index` of `count`: a few lines whose number grows with the index, so files differ in size too.
pub fn output_content(index: u64, count: u64) -> String {
    let line = format!("docklock-probe write-output file {index} of {count}\n");
    line.repeat(index as usize % 7 + 1)
}

pub fn write_output(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let count = args.u64_in(
        "--count",
        OUTPUT_FILES_COUNT_DEFAULT,
        1,
        OUTPUT_FILES_COUNT_MAX,
    )?;
    let dir = args.value("--dir").unwrap_or("/out");
    let mut total_bytes = 0usize;
    for index in 0..count {
        let path = format!("{dir}/out-{index:05}.txt");
        let content = output_content(index, count);
        let fd = sys::open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)
            .map_err(setup_error(format!("create {path}")))?;
        sys::write_all(&fd, content.as_bytes()).map_err(setup_error(format!("write {path}")))?;
        total_bytes += content.len();
    }
    Ok(Report::ok(format!(
        "wrote {count} files ({total_bytes} bytes) to {dir}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_content_is_fixed_per_index() {
        assert_eq!(
            output_content(0, 3),
            "docklock-probe write-output file 0 of 3\n"
        );
        assert_eq!(
            output_content(2, 3),
            "docklock-probe write-output file 2 of 3\n".repeat(3)
        );
    }
}
