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

// f(n0, n1) over the N output rows in blocks of 16 (weight rows are independent), in parallel.
template <typename F>
void parallel_rows(int64_t N, F&& f) {
  constexpr int64_t unit = 16;
  at::parallel_for(0, (N + unit - 1) / unit, 8, [&](int64_t b0, int64_t b1) {
    f(b0 * unit, std::min(N, b1 * unit));
  });
}

}  // namespace jvlm

// Exports the C++ function `fn` to Python under its own name (use once per function, at file scope).
#define JVLM_EXPORT(fn, doc) \
  static ::jvlm::Export jvlm_export_##fn([](pybind11::module& m) { m.def(#fn, &fn, doc); })
