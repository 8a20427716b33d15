// The extension's Python module: the functions every source file exported with JVLM_EXPORT.
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  for (const auto& add : jvlm::exporters()) add(m);
}
