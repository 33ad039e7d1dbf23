#include "x86_decode.h"

namespace hvemu {
namespace {

constexpr uint32_t kMaxInsnLength = 15;

// kvm_regs in x86 register-number order (0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8-15 r8-r15).
uint64_t Gpr(const kvm_regs& r, unsigned n) {
  const __u64 table[16] = {r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi,
                           r.r8,  r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15};
  return table[n & 15];
}

// Only FS and GS have a base in 64-bit mode; the others are flat (SDM Vol. 1, 3.4.2.1).
uint64_t SegmentBase(SegOverride seg, const kvm_sregs& s) {
  if (seg == SegOverride::kFs) return s.fs.base;
  if (seg == SegOverride::kGs) return s.gs.base;
  return 0;
}

int64_t ReadDisp(const uint8_t* p, uint32_t bytes) {
  if (bytes == 1) return static_cast<int8_t>(p[0]);
  uint32_t v = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
               static_cast<uint32_t>(p[3]) << 24;
  return static_cast<int32_t>(v);
}

}  // namespace

bool ParsePrefixes(const uint8_t* insn, uint32_t n, Prefixes* out) {
  Prefixes p;
  uint32_t at = 0;
  for (; at < n && at < kMaxInsnLength - 1; at++) {
    uint8_t b = insn[at];
    if (b == 0x66) p.opsize = true;
    else if (b == 0x67) p.addr32 = true;
    else if (b == 0xf0) p.lock = true;
    else if (b == 0xf2) p.repne = true;
    else if (b == 0xf3) p.rep = true;
    else if (b == 0x26) p.seg = SegOverride::kEs;
    else if (b == 0x2e) p.seg = SegOverride::kCs;
    else if (b == 0x36) p.seg = SegOverride::kSs;
    else if (b == 0x3e) p.seg = SegOverride::kDs;
    else if (b == 0x64) p.seg = SegOverride::kFs;
    else if (b == 0x65) p.seg = SegOverride::kGs;
    else break;
    p.rex = 0;  // a REX before a legacy prefix is ignored by the CPU
  }
  // REX counts only directly before the opcode.
  if (at < n && (insn[at] & 0xf0) == 0x40) p.rex = insn[at++];
  if (at >= n) return false;
  p.length = at;
  *out = p;
  return true;
}

bool DecodeMemOperand(const uint8_t* insn, uint32_t n, uint32_t modrm_at, uint32_t imm_bytes, const Prefixes& p,
                      const kvm_regs& regs, const kvm_sregs& sregs, MemOperand* out) {
  if (modrm_at >= n) return false;
  uint8_t modrm = insn[modrm_at];
  unsigned mod = modrm >> 6, reg = (modrm >> 3) & 7, rm = modrm & 7;
  if (mod == 3) return false;
  uint32_t at = modrm_at + 1;
  bool rex_b = (p.rex & 1) != 0, rex_x = (p.rex & 2) != 0;
  uint64_t ea = 0;
  bool rip_relative = false;
  uint32_t disp_bytes = mod == 1 ? 1 : mod == 2 ? 4 : 0;
  if (rm == 4) {  // SIB follows
    if (at >= n) return false;
    uint8_t sib = insn[at++];
    unsigned scale = sib >> 6, index = ((sib >> 3) & 7) | (rex_x ? 8 : 0), base = (sib & 7) | (rex_b ? 8 : 0);
    if (index != 4) ea += Gpr(regs, index) << scale;  // index 4 (rsp) means "no index"; r12 is an index
    if ((base & 7) == 5 && mod == 0) {
      disp_bytes = 4;  // no base, disp32
    } else {
      ea += Gpr(regs, base);
    }
  } else if (rm == 5 && mod == 0) {
    rip_relative = true;  // 64-bit mode: disp32 relative to the next instruction
    disp_bytes = 4;
  } else {
    ea += Gpr(regs, rm | (rex_b ? 8 : 0));
  }
  if (at + disp_bytes > n) return false;
  int64_t disp = disp_bytes ? ReadDisp(insn + at, disp_bytes) : 0;
  at += disp_bytes;
  uint32_t length = at + imm_bytes;
  if (length > kMaxInsnLength) return false;
  if (rip_relative) ea = regs.rip + length;
  ea += static_cast<uint64_t>(disp);
  if (p.addr32) ea &= 0xffffffffull;
  out->offset = ea;
  out->linear = SegmentBase(p.seg, sregs) + ea;
  out->length = length;
  out->reg = static_cast<uint8_t>(reg);
  return true;
}

}  // namespace hvemu
