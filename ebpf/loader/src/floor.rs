//! The BPF_PROG_TEST_RUN floor: what the test-run loop costs per packet
//! with (almost) no program, so `TrafficLights::test_run` numbers can be read
//! against it. Runs the tiny programs of ebpf/xdp/floor.c.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, Xdp},
};

use crate::{
    lights::{TestRun, XdpAction, test_packet_len_ok},
    limits::{TEST_RUN_PACKET_BYTES_MAX, TEST_RUN_PACKET_BYTES_MIN},
    sys,
};

static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.o"));

/// Which floor program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorProgram {
    /// Returns XDP_PASS without reading the packet: the harness alone.
    Pass,
    /// The Ethernet + IPv4 header checks of biso_xdp's fast path, no maps:
    /// drops what biso_xdp counts as malformed IPv4, passes the rest.
    ParseIpv4,
}

impl FloorProgram {
    pub const ALL: [FloorProgram; 2] = [FloorProgram::Pass, FloorProgram::ParseIpv4];

    /// The program's name in floor.c (and in bench output).
    pub fn name(self) -> &'static str {
        match self {
            FloorProgram::Pass => "floor_pass",
            FloorProgram::ParseIpv4 => "floor_parse_ipv4",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FloorRunError {
    #[error("test packet of {len} bytes outside [{min}, {max}] bytes")]
    PacketLength { len: usize, min: usize, max: usize },
    #[error("loading the floor object")]
    Object {
        #[source]
        source: aya::EbpfError,
    },
    #[error("program {name} missing from the floor object")]
    MissingProgram { name: &'static str },
    #[error("loading program {name} into the kernel (verifier)")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("BPF_PROG_TEST_RUN of program {name} on a {len}-byte packet x{repeat}")]
    Syscall {
        name: &'static str,
        len: usize,
        repeat: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Loads `program` from ebpf/xdp/floor.c (a fresh copy, unloaded again on
/// return) and runs it on `packet` `repeat` times via BPF_PROG_TEST_RUN, the
/// path `TrafficLights::test_run` takes. Needs root (CAP_BPF).
pub fn test_run_floor(
    program: FloorProgram,
    packet: &[u8],
    repeat: u32,
) -> Result<TestRun, FloorRunError> {
    if !test_packet_len_ok(packet.len()) {
        return Err(FloorRunError::PacketLength {
            len: packet.len(),
            min: TEST_RUN_PACKET_BYTES_MIN,
            max: TEST_RUN_PACKET_BYTES_MAX,
        });
    }
    let name = program.name();
    let mut ebpf: Ebpf = EbpfLoader::new()
        .load(FLOOR_OBJECT)
        .map_err(|source| FloorRunError::Object { source })?;
    let xdp: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(FloorRunError::MissingProgram { name })?
        .try_into()
        .map_err(|source| FloorRunError::Program { name, source })?;
    xdp.load()
        .map_err(|source| FloorRunError::Program { name, source })?;
    let fd = xdp
        .fd()
        .map_err(|source| FloorRunError::Program { name, source })?;
    let raw = sys::prog_test_run(fd.as_fd(), packet, repeat).map_err(|source| {
        FloorRunError::Syscall {
            name,
            len: packet.len(),
            repeat,
            source,
        }
    })?;
    Ok(TestRun {
        action: XdpAction::from_retval(raw.retval),
        ns_per_packet: raw.duration_ns,
        repeat,
    })
}
