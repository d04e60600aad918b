// Output memory: transparent huge pages for the large blocks a kernel is about to write in full (fresh output
// arrays and the copy pool's new blocks), and the poison that tests fill outputs with.
//
// A large fresh output's memory is often untouched (malloc hands out new anonymous pages; glibc's heap reuses
// freed blocks below its mmap threshold, which holds whatever they held: so every kernel writes each element
// of its outputs, and poison_outputs() is how the tests see one left unwritten), so the kernel's first
// write to each 4 KiB page faults: ~11 µs per page on a virtual machine measured here, 360 ms for a
// 1024 × 32000 float32 gradient whose writing alone takes ~6 ms. Where the kernel's transparent-huge-page mode
// is `madvise` (Ubuntu's default, among others), asking for huge pages over the block's 2 MiB-aligned
// interior makes that one fault per 2 MiB (13 ms for 128 MiB there). Only blocks that are then written in full
// are advised, so no memory is committed that would not be anyway. RLHF_KERNELS_HUGEPAGES=0 turns it off;
// it does nothing where the mode is `never` or off Linux.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace rk::addon {

inline constexpr size_t kHugePage = size_t(2) << 20;
// the smallest block advised: one that surely holds a whole aligned huge page
inline constexpr size_t kHugePagesFrom = 2 * kHugePage;

// RLHF_KERNELS_POISON=1: every output starts as all-ones bytes (NaN in float32, bfloat16 and float16), on the
// cpu backend as on cuda, so that a test sees any element a kernel fails to write (the parity suites set it).
// Otherwise a fresh cpu output is not zeroed first: every kernel writes each element of its outputs.
inline bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("RLHF_KERNELS_POISON");
    return v != nullptr && *v != '\0' && *v != '0';
  }();
  return on;
}

inline bool huge_pages_on() {
  static const bool on = [] {
    const char* v = std::getenv("RLHF_KERNELS_HUGEPAGES");
    return !(v != nullptr && std::strcmp(v, "0") == 0);
  }();
  return on;
}

// Advise huge pages over the aligned interior of [p, p + bytes); a no-op for small blocks.
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < kHugePagesFrom || !huge_pages_on()) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~uintptr_t(kHugePage - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace rk::addon
