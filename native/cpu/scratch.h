// A kernel's per-call array (block sums, sequence weights): held inline up to N elements, so a tiny call
// (a few sequences, a few token blocks) allocates nothing; on the heap beyond. Elements are
// value-initialised, as std::vector's are.
#pragma once
#include <cstddef>
#include <memory>
#include <utility>

namespace rk {

template <typename T, size_t N = 16>
class SmallArray {
 public:
  explicit SmallArray(size_t n) : n_(n), heap_(n > N ? std::make_unique<T[]>(n) : nullptr) {}
  SmallArray(SmallArray&& o) noexcept : n_(o.n_), heap_(std::move(o.heap_)) {
    if (!heap_) for (size_t i = 0; i < n_; i++) inline_[i] = std::move(o.inline_[i]);
  }
  SmallArray(const SmallArray&) = delete;
  SmallArray& operator=(const SmallArray&) = delete;
  SmallArray& operator=(SmallArray&&) = delete;

  T* data() { return heap_ ? heap_.get() : inline_; }
  const T* data() const { return heap_ ? heap_.get() : inline_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  T* begin() { return data(); }
  T* end() { return data() + n_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + n_; }

 private:
  size_t n_;
  std::unique_ptr<T[]> heap_;
  T inline_[N] = {};
};

}  // namespace rk
