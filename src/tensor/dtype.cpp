#include "tensor/dtype.h"

#include <array>

#include "base/check.h"
#include "base/checked.h"

namespace snug::tensor {
namespace {

struct Entry {
  uint32_t id;
  DTypeInfo info;
};

// Block sizes and byte counts follow ggml's type_traits table.
constexpr std::array<Entry, 34> kTable = {{
    {0, {"f32", 1, 4, true}},          {1, {"f16", 1, 2, true}},
    {2, {"q4_0", 32, 18, true}},       {3, {"q4_1", 32, 20, true}},
    {6, {"q5_0", 32, 22, true}},       {7, {"q5_1", 32, 24, true}},
    {8, {"q8_0", 32, 34, true}},       {9, {"q8_1", 32, 36, false}},
    {10, {"q2_K", 256, 84, true}},     {11, {"q3_K", 256, 110, true}},
    {12, {"q4_K", 256, 144, true}},    {13, {"q5_K", 256, 176, true}},
    {14, {"q6_K", 256, 210, true}},    {15, {"q8_K", 256, 292, false}},
    {16, {"iq2_xxs", 256, 66, false}}, {17, {"iq2_xs", 256, 74, false}},
    {18, {"iq3_xxs", 256, 98, false}}, {19, {"iq1_s", 256, 50, false}},
    {20, {"iq4_nl", 32, 18, false}},   {21, {"iq3_s", 256, 110, false}},
    {22, {"iq2_s", 256, 82, false}},   {23, {"iq4_xs", 256, 136, false}},
    {24, {"i8", 1, 1, false}},         {25, {"i16", 1, 2, false}},
    {26, {"i32", 1, 4, false}},        {27, {"i64", 1, 8, false}},
    {28, {"f64", 1, 8, false}},        {29, {"iq1_m", 256, 56, false}},
    {30, {"bf16", 1, 2, true}},        {34, {"tq1_0", 256, 54, false}},
    {35, {"tq2_0", 256, 66, false}},   {39, {"mxfp4", 32, 17, false}},
    {1002, {"q4_0_nm", 32, 14, true}}, {1008, {"q8_0_nm", 32, 22, true}},
}};

}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t type_id) {
  for (const auto& e : kTable) {
    if (e.id == type_id) return e.info;
  }
  return std::nullopt;
}

const DTypeInfo& info(DType t) {
  for (const auto& e : kTable) {
    if (e.id == static_cast<uint32_t>(t)) return e.info;
  }
  SNUG_CHECK(false && "unknown DType");
  __builtin_unreachable();
}

std::string_view dtype_name(DType t) {
  return info(t).name;
}

std::optional<DType> nm_sparse_type(DType dense) {
  if (dense == DType::kQ8_0) return DType::kQ8_0NM;
  if (dense == DType::kQ4_0) return DType::kQ4_0NM;
  return std::nullopt;
}

std::optional<DType> nm_dense_type(DType sparse) {
  if (sparse == DType::kQ8_0NM) return DType::kQ8_0;
  if (sparse == DType::kQ4_0NM) return DType::kQ4_0;
  return std::nullopt;
}

bool snug_only_type(DType t) {
  return nm_dense_type(t).has_value();
}

std::optional<uint64_t> row_bytes(DType t, int64_t n) {
  const DTypeInfo& i = info(t);
  if (n < 0 || n % i.block_size != 0) return std::nullopt;
  return checked_mul(static_cast<uint64_t>(n / i.block_size), static_cast<uint64_t>(i.block_bytes));
}

}  // namespace snug::tensor
