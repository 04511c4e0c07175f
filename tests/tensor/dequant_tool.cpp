// Test helper for tests/tensor/test_dequant_oracle.py.
//   dequant_tool TYPE N      < blocks > f32     (dequantize_row)
//   dequant_tool -q TYPE N   < f32    > blocks  (quantize_row)
// TYPE is the GGUF type name as ggml prints it ("q4_K", "f16"); N the element
// count, a multiple of the block size. Exit status 2 on a usage error.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/kernels.h"

namespace {

bool read_all(void* dst, size_t n) {
  return std::fread(dst, 1, n, stdin) == n;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace snug::tensor;
  const bool quant = argc == 4 && std::strcmp(argv[1], "-q") == 0;
  if (argc != 3 && !quant) {
    std::fprintf(stderr, "usage: dequant_tool [-q] TYPE N\n");
    return 2;
  }
  const std::string_view name = argv[quant ? 2 : 1];
  const long long n = std::atoll(argv[quant ? 3 : 2]);
  std::optional<DType> type;
  for (uint32_t id = 0; id < 64; ++id) {
    const auto ti = dtype_info(id);
    if (ti && ti->name == name) type = static_cast<DType>(id);
  }
  if (!type || n <= 0 || !row_bytes(*type, n)) {
    std::fprintf(stderr, "dequant_tool: bad type %s or count %lld\n", argv[quant ? 2 : 1], n);
    return 2;
  }
  const size_t nbytes = *row_bytes(*type, n);
  std::vector<float> f(static_cast<size_t>(n));
  std::vector<unsigned char> q(nbytes);
  if (quant) {
    if (!read_all(f.data(), f.size() * 4)) return 2;
    quantize_row(*type, f.data(), q.data(), n);
    std::fwrite(q.data(), 1, q.size(), stdout);
  } else {
    if (!read_all(q.data(), q.size())) return 2;
    dequantize_row(*type, q.data(), f.data(), n);
    std::fwrite(f.data(), 4, f.size(), stdout);
  }
  return 0;
}
