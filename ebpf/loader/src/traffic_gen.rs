//! The drop-rate bench's packet generator: ebpf/xdp/gen.c run by
//! BPF_PROG_TEST_RUN in live-frames mode, so frames leave through a veth as
//! xdp_frames (see gen.c for why).

use std::{net::Ipv4Addr, os::fd::AsFd as _};

use aya::{Ebpf, EbpfLoader, programs::Xdp};

use crate::{limits::TEST_RUN_PACKET_BYTES_MIN, sys};

static GEN_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gen.o"));

const PROGRAM: &str = "gen_redirect";
/// Frames per batch: the kernel's NAPI weight, its default for live mode.
const BATCH_FRAMES: u32 = 64;
/// An Ethernet frame a veth of MTU 1,500 delivers (larger ones it drops),
/// well inside what live mode fits in a page beside its own headroom.
const FRAME_BYTES_MAX: usize = 1_514;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("frame of {len} bytes; live frames take {min} to {max}")]
    FrameLength { len: usize, min: usize, max: usize },
    #[error("the frame is not Ethernet + a 20-byte IPv4 header")]
    NotIpv4,
    #[error(
        "the generator's sources: {count} /24s from {base} (1 to 65,536, from an x.y.z.0, not past 255.255.255.0)"
    )]
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
    #[error(
        "BPF_PROG_TEST_RUN (live frames, {repeat} frames out of interface {ifindex}; at least 1)"
    )]
    Syscall {
        ifindex: u32,
        repeat: u32,
        #[source]
        source: std::io::Error,
    },
}

/// The generator loaded for one target: `run` sends frames. Load it before
/// timing, since loading verifies and JITs the program.
pub struct LiveGenerator {
    ebpf: Ebpf,
    ifindex: u32,
    frame: Vec<u8>,
}

impl std::fmt::Debug for LiveGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveGenerator")
            .field("ifindex", &self.ifindex)
            .field("frame_bytes", &self.frame.len())
            .finish_non_exhaustive()
    }
}

impl LiveGenerator {
    /// Loads the generator for frames like `frame` (Ethernet + IPv4 with a
    /// 20-byte header, at most 1,514 bytes: what a veth of MTU 1,500 takes)
    /// out of interface `ifindex` of the network namespace `run` is called
    /// in, the IPv4 source cycling over host .9 of `sources_count`
    /// consecutive /24s from `source_base`. Needs root.
    pub fn load(
        ifindex: u32,
        frame: &[u8],
        source_base: Ipv4Addr,
        sources_count: u32,
    ) -> Result<Self, GenerateError> {
        if !(TEST_RUN_PACKET_BYTES_MIN..=FRAME_BYTES_MAX).contains(&frame.len()) {
            return Err(GenerateError::FrameLength {
                len: frame.len(),
                min: TEST_RUN_PACKET_BYTES_MIN,
                max: FRAME_BYTES_MAX,
            });
        }
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 {
            return Err(GenerateError::NotIpv4);
        }
        let base = u32::from(source_base);
        let last = (sources_count.checked_sub(1))
            .and_then(|n| n.checked_mul(256))
            .and_then(|span| base.checked_add(span));
        if sources_count > 65_536 || base & 0xff != 0 || last.is_none() {
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
        Ok(LiveGenerator {
            ebpf,
            ifindex,
            frame: frame.to_vec(),
        })
    }

    /// Sends `repeat` frames (at least 1) in batches of 64 on the calling
    /// CPU, from the calling thread's network namespace. Returns once every
    /// frame was handed to the device; frames a veth refuses (its peer's
    /// ring full, or a peer without NAPI) are lost without an error here, so
    /// count what the receiver saw.
    pub fn run(&self, repeat: u32) -> Result<(), GenerateError> {
        let syscall = |source| GenerateError::Syscall {
            ifindex: self.ifindex,
            repeat,
            source,
        };
        if repeat == 0 {
            return Err(syscall(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )));
        }
        let xdp: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or(GenerateError::MissingProgram)?
            .try_into()
            .map_err(|source| GenerateError::Program { source })?;
        let fd = xdp
            .fd()
            .map_err(|source| GenerateError::Program { source })?;
        sys::prog_test_run_live(fd.as_fd(), &self.frame, repeat, BATCH_FRAMES).map_err(syscall)
    }
}
