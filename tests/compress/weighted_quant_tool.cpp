// Test helper for tests/compress/test_imatrix_reference.py:
//   weighted_quant_tool TYPE COLS ROWS < weights rows > blocks
// stdin: COLS f32 column importances, then ROWS rows of COLS f32 values;
// stdout: each row packed by tensor::quantize_row_weighted. TYPE as ggml
// prints it ("q4_K"). Exit status 2 on a usage error.
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/kernels.h"

int main(int argc, char** argv) {
  using namespace snug::tensor;
  if (argc != 4) {
    std::fprintf(stderr, "usage: weighted_quant_tool TYPE COLS ROWS\n");
    return 2;
  }
  const std::string_view name = argv[1];
  const long long cols = std::atoll(argv[2]), rows = std::atoll(argv[3]);
  std::optional<DType> type;
  for (uint32_t id = 0; id < 64; ++id) {
    const auto ti = dtype_info(id);
    if (ti && ti->name == name) type = static_cast<DType>(id);
  }
  if (!type || cols <= 0 || rows <= 0 || !row_bytes(*type, cols)) {
    std::fprintf(stderr, "weighted_quant_tool: bad type %s or shape %lld x %lld\n", argv[1], cols,
                 rows);
    return 2;
  }
  std::vector<float> w(static_cast<size_t>(cols)), x(static_cast<size_t>(cols));
  std::vector<unsigned char> q(*row_bytes(*type, cols));
  if (std::fread(w.data(), 4, w.size(), stdin) != w.size()) return 2;
  for (long long r = 0; r < rows; ++r) {
    if (std::fread(x.data(), 4, x.size(), stdin) != x.size()) return 2;
    quantize_row_weighted(*type, x.data(), q.data(), cols, w.data());
    std::fwrite(q.data(), 1, q.size(), stdout);
  }
  return 0;
}
