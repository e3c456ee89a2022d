//! A classic-BPF interpreter for the subset seccompiler emits, with the kernel's rule for
//! combining several filters. Test-only: it lets the compiled policy be checked call by call
//! without installing anything.

use crate::compile::{
    BPF_ALU_AND_K, BPF_JMP_JA, BPF_JMP_JEQ_K, BPF_JMP_JGE_K, BPF_JMP_JGT_K, BPF_LD_W_ABS,
    BPF_RET_K, CompiledSeccomp,
};
use seccompiler::sock_filter;

/// SECCOMP_RET_ACTION_FULL: the part of a return value that decides precedence.
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;

/// The fields of `struct seccomp_data` the filters read (instruction_pointer is never read).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeccompData {
    pub(crate) nr: i32,
    pub(crate) arch: u32,
    pub(crate) args: [u64; 6],
}

impl SeccompData {
    fn load_word(&self, offset: u32) -> u32 {
        let mut bytes = [0_u8; 64];
        bytes[0..4].copy_from_slice(&self.nr.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.arch.to_le_bytes());
        for (index, arg) in self.args.iter().enumerate() {
            let start = 16 + 8 * index;
            bytes[start..start + 8].copy_from_slice(&arg.to_le_bytes());
        }
        let offset = offset as usize;
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= bytes.len(),
            "bad load offset {offset}"
        );
        u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
    }
}

/// Runs one program to its RET value.
pub(crate) fn run(program: &[sock_filter], data: &SeccompData) -> u32 {
    let mut accumulator = 0_u32;
    let mut pc = 0_usize;
    loop {
        let instruction = &program[pc];
        let k = instruction.k;
        let branch = |taken: bool| {
            usize::from(if taken {
                instruction.jt
            } else {
                instruction.jf
            })
        };
        pc += 1;
        match instruction.code {
            BPF_LD_W_ABS => accumulator = data.load_word(k),
            BPF_ALU_AND_K => accumulator &= k,
            BPF_JMP_JA => pc += k as usize,
            BPF_JMP_JEQ_K => pc += branch(accumulator == k),
            BPF_JMP_JGT_K => pc += branch(accumulator > k),
            BPF_JMP_JGE_K => pc += branch(accumulator >= k),
            BPF_RET_K => return k,
            other => panic!("opcode {other:#x} at {} not supported", pc - 1),
        }
    }
}

/// What the kernel decides with every program installed: it runs the filters from the newest
/// to the oldest and keeps a result only if its action is strictly more severe (smaller as a
/// signed 32-bit action), so on equal precedence the newest filter's data stands.
pub(crate) fn evaluate(compiled: &CompiledSeccomp, data: &SeccompData) -> u32 {
    let severity = |ret: u32| (ret & SECCOMP_RET_ACTION_FULL) as i32;
    let mut result = libc::SECCOMP_RET_ALLOW;
    for program in compiled.programs.iter().rev() {
        let ret = run(&program.instructions, data);
        if severity(ret) < severity(result) {
            result = ret;
        }
    }
    result
}
