// Which build of the row kernels this CPU runs (rowmath.h's RK_ISA_KERNEL), decided once per process.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "rowmath.h"

namespace rk {

Isa host_isa() {
  static const Isa isa = [] {
    Isa best = Isa::baseline;
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) best = Isa::v4;
    else if (__builtin_cpu_supports("x86-64-v3")) best = Isa::v3;
#endif
    // RLHF_KERNELS_ISA caps the choice: a build the CPU cannot run is never picked
    if (const char* cap = std::getenv("RLHF_KERNELS_ISA")) {
      for (Isa i : {Isa::baseline, Isa::v3}) {
        if (std::strcmp(cap, isa_name(i)) == 0 && i < best) best = i;
      }
    }
    return best;
  }();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::v4: return "x86-64-v4";
    case Isa::v3: return "x86-64-v3";
    default: return "baseline";
  }
}

}  // namespace rk
