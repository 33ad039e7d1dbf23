// Just enough x86 decoding to finish an instruction the emulator stopped on: the legacy
// prefixes, REX, and a ModRM memory operand, in 64-bit mode only (the mode a kernel runs in).
// The caller has matched the opcode; everything here comes from the guest, so every index is
// checked against the number of bytes fetched.
#pragma once
#include <linux/kvm.h>

#include <cstdint>

namespace hvemu {

enum class SegOverride : uint8_t { kNone, kEs, kCs, kSs, kDs, kFs, kGs };

struct Prefixes {
  uint32_t length = 0;  // bytes of legacy prefixes and REX
  uint8_t rex = 0;      // 0 when absent
  bool addr32 = false;  // 0x67: 32-bit effective address
  bool opsize = false;  // 0x66
  bool rep = false;     // 0xf3
  bool repne = false;   // 0xf2
  bool lock = false;    // 0xf0
  SegOverride seg = SegOverride::kNone;
};

// Parses prefixes at the start of `insn` (at most 14 of them, as the CPU allows 15 bytes in all).
// False when the bytes end before the opcode.
bool ParsePrefixes(const uint8_t* insn, uint32_t n, Prefixes* out);

struct MemOperand {
  uint64_t offset;     // the effective address (truncated as the address size says)
  uint64_t linear;     // segment base + offset
  uint32_t length;     // the whole instruction's length in bytes
  uint8_t reg;         // ModRM.reg (the /digit of x87 and group opcodes), without REX.R
};

// Decodes the ModRM memory operand at insn[modrm_at] of an instruction with `imm_bytes` of
// immediate after it. False for a register operand (mod == 3) or when the bytes run out.
bool DecodeMemOperand(const uint8_t* insn, uint32_t n, uint32_t modrm_at, uint32_t imm_bytes, const Prefixes& p,
                      const kvm_regs& regs, const kvm_sregs& sregs, MemOperand* out);

}  // namespace hvemu
