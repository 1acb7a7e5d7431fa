//! The cgroup v2 device filter: a BPF_PROG_TYPE_CGROUP_DEVICE program generated from the
//! reduced device rules and attached to the container's cgroup.
//!
//! Assembled by hand: the program is a fixed, short shape (compare type, access, major,
//! minor; return a verdict), and pulling a BPF toolchain or loader crate into the runtime
//! for it would cost more than these few encodings.

use std::os::fd::AsFd;
use std::path::Path;

use crate::devices::DeviceRules;
use crate::error::{Context, Result};
use crate::sys::bpf;

// Instruction encodings (linux/bpf.h): class | op | source.
const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn insn(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(op)
        | (u64::from(dst) << 8)
        | (u64::from(src) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// Builds the program: "last matching exception decides, else the default".
pub fn program(rules: &DeviceRules) -> Vec<u64> {
    let (default_allow, exceptions) = rules.effective();
    let mut p = vec![
        // r2 = device type, r3 = requested access, r4 = major, r5 = minor.
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU64_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU64_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    // Later rules win, so test them first.
    for e in exceptions.iter().rev() {
        let mut block: Vec<(u64, bool)> = Vec::new(); // (insn, jumps to block end)
        let dev = if e.kind == 'b' { DEV_BLOCK } else { DEV_CHAR };
        block.push((insn(JMP_JNE_K, R2, 0, 0, dev), true));
        let mask = i32::from(e.access);
        block.push((insn(ALU64_MOV_X, R1, R3, 0, 0), false));
        if default_allow {
            // A deny exception matches if any requested bit is denied.
            block.push((insn(ALU64_AND_K, R1, 0, 0, mask), false));
            block.push((insn(JMP_JEQ_K, R1, 0, 0, 0), true));
        } else {
            // An allow exception matches if every requested bit is allowed.
            block.push((insn(ALU64_AND_K, R1, 0, 0, !mask & 0x7), false));
            block.push((insn(JMP_JNE_K, R1, 0, 0, 0), true));
        }
        if let Some(major) = e.major {
            block.push((insn(JMP_JNE_K, R4, 0, 0, major as i32), true));
        }
        if let Some(minor) = e.minor {
            block.push((insn(JMP_JNE_K, R5, 0, 0, minor as i32), true));
        }
        block.push((
            insn(ALU64_MOV_K, R0, 0, 0, i32::from(!default_allow)),
            false,
        ));
        block.push((insn(JMP_EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        for (i, (ins, jumps)) in block.into_iter().enumerate() {
            if jumps {
                let off = (len - i - 1) as u16;
                p.push((ins & !0xffff_0000u64) | (u64::from(off) << 16));
            } else {
                p.push(ins);
            }
        }
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(default_allow)));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// Loads the filter for `rules` and attaches it to the cgroup directory, replacing the
/// filters attached there before (so `update` does not stack programs).
pub fn install(dir: &Path, rules: &DeviceRules) -> Result<()> {
    let prog = bpf::load_device_program(&program(rules))
        .ctx(|| "linux.resources.devices: load the cgroup v2 device filter (BPF)")?;
    let cg = std::fs::File::open(dir).ctx(|| format!("open cgroup {}", dir.display()))?;
    let old = bpf::query(cg.as_fd()).unwrap_or_default();
    bpf::attach(cg.as_fd(), prog.as_fd())
        .ctx(|| format!("attach the device filter to {}", dir.display()))?;
    for id in old {
        if let Ok(fd) = bpf::prog_fd_by_id(id) {
            let _ = bpf::detach(cg.as_fd(), fd.as_fd());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::DeviceRule;

    #[test]
    fn encodes_like_the_kernel_abi() {
        // r0 = 1; exit
        assert_eq!(insn(ALU64_MOV_K, R0, 0, 0, 1), 0x0000_0001_0000_00b7);
        assert_eq!(insn(JMP_EXIT, 0, 0, 0, 0), 0x95);
        // r2 = *(u32 *)(r1 + 4)
        assert_eq!(insn(LDX_MEM_W, R2, R1, 4, 0), 0x0000_0000_0004_1261);
    }

    #[test]
    fn jumps_land_at_block_end() {
        let rules = DeviceRules {
            rules: vec![
                DeviceRule {
                    allow: false,
                    kind: 'a',
                    major: None,
                    minor: None,
                    access: 7,
                },
                DeviceRule {
                    allow: true,
                    kind: 'c',
                    major: Some(1),
                    minor: Some(3),
                    access: 7,
                },
            ],
        };
        let p = program(&rules);
        // 6 loads + block (jne type, mov, and, jne access, jne major, jne minor, mov, exit)
        // + default (mov, exit).
        assert_eq!(p.len(), 6 + 8 + 2);
        let first_jump = p[6];
        assert_eq!(
            (first_jump >> 16) & 0xffff,
            7,
            "type mismatch skips the whole block"
        );
        assert_eq!(p[p.len() - 2] >> 32, 0, "default deny");
    }
}
