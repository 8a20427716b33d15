// Torch-side plumbing shared by the sources of one extension: how a source file exports its
// functions (so a new kernel is one more .cpp file in the build list and nothing else in C++),
// and how output rows are split over threads.
#pragma once

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

namespace jvlm {

using Exporter = std::function<void(pybind11::module&)>;

// Every source's exporters, run by module.cpp when Python imports the extension.
inline std::vector<Exporter>& exporters() {
  static std::vector<Exporter> all;
  return all;
}

struct Export {
  explicit Export(Exporter f) { exporters().push_back(std::move(f)); }
};

// A tensor's data as T* (bf16 tensors as jvlm::bf16, which torch's data_ptr<T> does not know).
template <typename T>
T* raw(const torch::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// Output rows are handed to threads in whole blocks of this many (at least 8 blocks a task).
constexpr int64_t ROW_BLOCK = 16;

// f(n0, n1) over the N output rows in blocks of ROW_BLOCK (weight rows are independent), in
// parallel; each call gets a run of whole blocks.
template <typename F>
void parallel_rows(int64_t N, F&& f) {
  at::parallel_for(0, (N + ROW_BLOCK - 1) / ROW_BLOCK, 8, [&](int64_t b0, int64_t b1) {
    f(b0 * ROW_BLOCK, std::min(N, b1 * ROW_BLOCK));
  });
}

}  // namespace jvlm

// Exports the C++ function `fn` to Python under its own name (use once per function, at file scope).
#define JVLM_EXPORT(fn, doc) \
  static ::jvlm::Export jvlm_export_##fn([](pybind11::module& m) { m.def(#fn, &fn, doc); })
