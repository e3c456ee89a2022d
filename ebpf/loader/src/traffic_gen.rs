//! The drop-rate bench's packet generator: ebpf/xdp/gen.c run by
//! BPF_PROG_TEST_RUN in live-frames mode, so frames leave through a veth as
//! xdp_frames (see gen.c for why).

use std::{net::Ipv4Addr, os::fd::AsFd as _};

use aya::{Ebpf, EbpfLoader, programs::Xdp};

use crate::{
    limits::{TEST_RUN_PACKET_BYTES_MAX, TEST_RUN_PACKET_BYTES_MIN},
    sys,
};

static GEN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gen.o"));

const PROGRAM: &str = "gen_redirect";
/// Frames per batch: the kernel's NAPI weight, its default for live mode.
const BATCH_FRAMES: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("frame of {len} bytes; live frames take {min} to {max}")]
    FrameLength { len: usize, min: usize, max: usize },
    #[error("the frame is not Ethernet + a 20-byte IPv4 header")]
    NotIpv4,
    #[error("the generator's sources: {count} /24s from {base} (1 to 65,536, from an x.y.z.0)")]
    Sources { base: Ipv4Addr, count: u32 },
    #[error("loading the generator object")]
    Object {
        #[source]
        source: aya::EbpfError,
    },
    #[error("program {PROGRAM} missing from the generator object")]
    MissingProgram,
    #[error("loading program {PROGRAM} into the kernel (verifier)")]
    Program {
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("BPF_PROG_TEST_RUN (live frames, {repeat} frames out of interface {ifindex})")]
    Syscall {
        ifindex: u32,
        repeat: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Sends `repeat` copies of `frame` (Ethernet + IPv4, 20-byte header) out of
/// interface `ifindex` of the calling thread's network namespace, the IPv4
/// source cycling over host .9 of `sources_count` consecutive /24s from
/// `source_base`. Returns once every frame was handed to the device; frames
/// a veth refuses (its peer's ring full) are lost and not reported here, so
/// count what the receiver saw. Runs on the calling CPU. Needs root.
pub fn generate_live(
    ifindex: u32,
    frame: &[u8],
    source_base: Ipv4Addr,
    sources_count: u32,
    repeat: u32,
) -> Result<(), GenerateError> {
    if !(TEST_RUN_PACKET_BYTES_MIN..=TEST_RUN_PACKET_BYTES_MAX).contains(&frame.len()) {
        return Err(GenerateError::FrameLength {
            len: frame.len(),
            min: TEST_RUN_PACKET_BYTES_MIN,
            max: TEST_RUN_PACKET_BYTES_MAX,
        });
    }
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 {
        return Err(GenerateError::NotIpv4);
    }
    let base = u32::from(source_base);
    if sources_count == 0 || sources_count > 65_536 || base & 0xff != 0 {
        return Err(GenerateError::Sources {
            base: source_base,
            count: sources_count,
        });
    }
    let mut ebpf: Ebpf = EbpfLoader::new()
        .override_global("gen_ifindex", &ifindex, true)
        .override_global("gen_source_base", &base, true)
        .override_global("gen_sources_count", &sources_count, true)
        .load(GEN_OBJECT)
        .map_err(|source| GenerateError::Object { source })?;
    let xdp: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or(GenerateError::MissingProgram)?
        .try_into()
        .map_err(|source| GenerateError::Program { source })?;
    xdp.load()
        .map_err(|source| GenerateError::Program { source })?;
    let fd = xdp
        .fd()
        .map_err(|source| GenerateError::Program { source })?;
    sys::prog_test_run_live(fd.as_fd(), frame, repeat, BATCH_FRAMES).map_err(|source| {
        GenerateError::Syscall {
            ifindex,
            repeat,
            source,
        }
    })
}
