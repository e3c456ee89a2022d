//! Measures what the bench machine can do at best, on the bench disk, so the
//! storage numbers can be read against it: BLAKE3 on one core, 4 KiB
//! write+fsync latency, and 4 KiB random read/write IOPS through io_uring at
//! queue depth 64 (O_DIRECT when the filesystem allows it). Prints one JSON
//! object on stdout; a measurement that failed is null with its error beside.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use io_uring::{IoUring, opcode, types};
use metanode_perf::blobgen::Mulberry32;
use metanode_perf::latency::Latency;
use serde_json::{Value, json};

const BLOCK_BYTES: usize = 4096;
const QUEUE_DEPTH: usize = 64;
const BLAKE3_BUFFER_BYTES: usize = 16 << 20;
const FSYNC_FILE_BLOCKS: u64 = 256;
const FSYNC_ITERATIONS_MAX: usize = 20_000;
const SECONDS_MAX: f64 = 30.0;
const FILE_BYTES_MAX: u64 = 16 << 30;

#[derive(Debug, Parser)]
#[command(about = "Measure BLAKE3 MB/s on one core, fsync latency and io_uring 4 KiB IOPS on DIR.")]
struct Args {
    /// Directory on the bench disk (scratch files are created and removed).
    #[arg(long)]
    dir: PathBuf,
    /// Duration of each measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Size of the io_uring test file; larger than any device cache is best.
    #[arg(long, default_value_t = 256 << 20)]
    file_bytes: u64,
}

/// One 4 KiB-aligned block: O_DIRECT needs aligned buffers, and a Vec of
/// these is aligned without any manual allocation.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK_BYTES]);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds <= SECONDS_MAX,
        "--seconds {} is outside (0, {SECONDS_MAX}]",
        args.seconds
    );
    anyhow::ensure!(
        (QUEUE_DEPTH * BLOCK_BYTES) as u64 <= args.file_bytes && args.file_bytes <= FILE_BYTES_MAX,
        "--file-bytes {} is outside {}..={FILE_BYTES_MAX}",
        args.file_bytes,
        QUEUE_DEPTH * BLOCK_BYTES
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("create --dir {}", args.dir.display()))?;
    let window = Duration::from_secs_f64(args.seconds);

    let mut out = serde_json::Map::new();
    out.insert("cores".into(), json!(cores()));
    out.insert("kernel".into(), json!(kernel()));
    out.insert("filesystem".into(), json!(filesystem(&args.dir)));
    out.insert(
        "blake3_one_core_MB_per_s".into(),
        json!(blake3_mb_per_s(window)),
    );

    let fsync_path = args.dir.join("machine-limits-fsync.bin");
    let fsync = fsync_latency(&fsync_path, window);
    remove_quietly(&fsync_path);
    match fsync {
        Ok(l) => {
            out.insert("fsync_4KiB_latency_us".into(), l);
        }
        Err(e) => {
            out.insert("fsync_4KiB_latency_us".into(), Value::Null);
            out.insert("fsync_error".into(), json!(format!("{e:#}")));
        }
    }

    let uring_path = args.dir.join("machine-limits-uring.bin");
    let uring = uring_iops(&uring_path, args.file_bytes, window);
    remove_quietly(&uring_path);
    match uring {
        Ok(u) => {
            out.insert("io_uring_4KiB_randread_iops".into(), json!(u.read_iops));
            out.insert("io_uring_4KiB_randwrite_iops".into(), json!(u.write_iops));
            out.insert("io_uring_mode".into(), json!(u.mode));
        }
        Err(e) => {
            out.insert("io_uring_4KiB_randread_iops".into(), Value::Null);
            out.insert("io_uring_4KiB_randwrite_iops".into(), Value::Null);
            out.insert("io_uring_error".into(), json!(format!("{e:#}")));
        }
    }
    out.insert("io_uring_queue_depth".into(), json!(QUEUE_DEPTH));
    out.insert("io_uring_file_bytes".into(), json!(args.file_bytes));
    out.insert("seconds_per_measurement".into(), json!(args.seconds));
    println!("{}", Value::Object(out));
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        eprintln!("warning: cannot remove {}: {e}", path.display());
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kernel() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The filesystem type of `dir`, from statfs's magic number.
fn filesystem(dir: &Path) -> String {
    let Ok(file) = File::open(dir) else {
        return "unknown".into();
    };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `file` is an open descriptor and `stat` is a writable statfs
    // buffer that fstatfs fills completely when it returns 0.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), stat.as_mut_ptr()) };
    if rc != 0 {
        return "unknown".into();
    }
    // SAFETY: fstatfs returned 0, so it initialised the buffer.
    let magic = unsafe { stat.assume_init() }.f_type as u64;
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        other => format!("statfs magic {other:#x}"),
    }
}

fn blake3_mb_per_s(window: Duration) -> f64 {
    let mut data = vec![0u8; BLAKE3_BUFFER_BYTES];
    Mulberry32::new(1).fill(&mut data);
    let started = Instant::now();
    let mut hashed: u64 = 0;
    let mut sink = [0u8; 32];
    while started.elapsed() < window {
        let hash = blake3::hash(&data);
        // Fold the result in so the hashing cannot be optimised away.
        sink[0] ^= hash.as_bytes()[0];
        hashed += data.len() as u64;
    }
    std::hint::black_box(sink);
    hashed as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// pwrite of 4 KiB into an allocated file followed by fsync, repeated.
fn fsync_latency(path: &Path, window: Duration) -> anyhow::Result<Value> {
    let mut file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut block = vec![0u8; BLOCK_BYTES];
    Mulberry32::new(2).fill(&mut block);
    for _ in 0..FSYNC_FILE_BLOCKS {
        file.write_all(&block)?;
    }
    file.sync_all()?;
    let mut latency = Latency::new();
    let started = Instant::now();
    let mut rng = Mulberry32::new(3);
    let mut count = 0;
    while started.elapsed() < window && count < FSYNC_ITERATIONS_MAX {
        let offset = rng.below(FSYNC_FILE_BLOCKS as usize) as u64 * BLOCK_BYTES as u64;
        block[0] = block[0].wrapping_add(1);
        let t = Instant::now();
        file.write_all_at(&block, offset)?;
        file.sync_all()?;
        latency.record(t.elapsed());
        count += 1;
    }
    let summary = latency
        .summary()
        .context("no fsync completed within the window")?;
    Ok(json!({
        "p50": summary.p50,
        "p99": summary.p99,
        "max": summary.max,
        "count": count,
        "method": "pwrite 4 KiB in place + fsync, one at a time",
    }))
}

struct UringIops {
    read_iops: f64,
    write_iops: f64,
    mode: String,
}

fn uring_iops(path: &Path, file_bytes: u64, window: Duration) -> anyhow::Result<UringIops> {
    // Real data, so O_DIRECT reads hit the device rather than unwritten
    // extents that the filesystem answers with zeros.
    {
        let mut file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut rng = Mulberry32::new(4);
        let mut written = 0;
        while written < file_bytes {
            let len = (file_bytes - written).min(chunk.len() as u64) as usize;
            rng.fill(&mut chunk[..len]);
            file.write_all(&chunk[..len])?;
            written += len as u64;
        }
        file.sync_all()?;
    }
    let blocks = file_bytes / BLOCK_BYTES as u64;
    let (file, mode) = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => (file, "O_DIRECT".to_string()),
        Err(e) => (
            OpenOptions::new().read(true).write(true).open(path)?,
            format!("buffered (O_DIRECT refused: {e})"),
        ),
    };
    let direct = mode == "O_DIRECT";
    let measure = |file: &File| -> anyhow::Result<(f64, f64)> {
        let read = uring_run(file, blocks, window, false).context("io_uring random reads")?;
        let write = uring_run(file, blocks, window, true).context("io_uring random writes")?;
        Ok((read, write))
    };
    let ((read_iops, write_iops), mode) = match measure(&file) {
        Ok(iops) => (iops, mode),
        // Some filesystems accept O_DIRECT at open and refuse the I/O.
        Err(e) if direct => {
            let buffered = OpenOptions::new().read(true).write(true).open(path)?;
            (
                measure(&buffered)?,
                format!("buffered (O_DIRECT I/O failed: {e:#})"),
            )
        }
        Err(e) => return Err(e),
    };
    Ok(UringIops {
        read_iops,
        write_iops,
        mode,
    })
}

/// Keeps QUEUE_DEPTH random 4 KiB reads (or writes) in flight for `window`
/// and returns completions per second. Buffers outlive every submitted
/// operation: the loop drains all in-flight operations before returning.
fn uring_run(file: &File, blocks: u64, window: Duration, write: bool) -> anyhow::Result<f64> {
    let mut ring = IoUring::new(QUEUE_DEPTH as u32 * 2).context("io_uring_setup")?;
    let mut buffers = vec![Block([0u8; BLOCK_BYTES]); QUEUE_DEPTH];
    for (i, buffer) in buffers.iter_mut().enumerate() {
        Mulberry32::new(10 + i as u32).fill(&mut buffer.0);
    }
    let fd = types::Fd(file.as_raw_fd());
    let mut rng = Mulberry32::new(if write { 6 } else { 5 });
    let mut submit =
        |ring: &mut IoUring, slot: usize, buffers: &mut [Block]| -> anyhow::Result<()> {
            let offset = rng.below(blocks as usize) as u64 * BLOCK_BYTES as u64;
            let ptr = buffers[slot].0.as_mut_ptr();
            let entry = if write {
                opcode::Write::new(fd, ptr, BLOCK_BYTES as u32)
                    .offset(offset)
                    .build()
            } else {
                opcode::Read::new(fd, ptr, BLOCK_BYTES as u32)
                    .offset(offset)
                    .build()
            }
            .user_data(slot as u64);
            // SAFETY: the buffer at `ptr` belongs to `buffers`, which outlives
            // the ring's use of it: uring_run waits for every submitted entry to
            // complete before it returns, and a slot is reused only after its
            // completion has been reaped.
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| anyhow::anyhow!("submission queue full"))?;
            Ok(())
        };
    for slot in 0..QUEUE_DEPTH {
        submit(&mut ring, slot, &mut buffers)?;
    }
    let started = Instant::now();
    let mut in_flight = QUEUE_DEPTH;
    let mut completed: u64 = 0;
    let mut measured = None;
    let mut failure = None;
    while in_flight > 0 {
        ring.submit_and_wait(1).context("io_uring_enter")?;
        let done: Vec<(usize, i32)> = ring
            .completion()
            .map(|cqe| (cqe.user_data() as usize, cqe.result()))
            .collect();
        for (slot, result) in done {
            in_flight -= 1;
            if result != BLOCK_BYTES as i32 {
                failure.get_or_insert_with(|| {
                    if result < 0 {
                        io::Error::from_raw_os_error(-result).to_string()
                    } else {
                        format!("short transfer of {result} bytes")
                    }
                });
                continue;
            }
            completed += 1;
            if measured.is_none() && failure.is_none() {
                if started.elapsed() < window {
                    submit(&mut ring, slot, &mut buffers)?;
                    in_flight += 1;
                } else {
                    measured = Some((completed, started.elapsed()));
                }
            }
        }
    }
    if let Some(failure) = failure {
        anyhow::bail!("4 KiB {}: {failure}", if write { "write" } else { "read" });
    }
    let (count, elapsed) = measured.context("no operation completed")?;
    Ok(count as f64 / elapsed.as_secs_f64())
}
