#include "kv/attention.h"

#include <algorithm>

#include "base/check.h"
#include "tensor/kernels.h"

namespace snug::kv {
namespace {

// Pointer arrays for one head's K and V rows, one entry per block, live at the
// front of the scratch (as many as positions at most).
int64_t pointer_floats(int32_t max_ctx) {
  return 2 * static_cast<int64_t>(max_ctx) * static_cast<int64_t>(sizeof(void*) / sizeof(float));
}

// Fills kptr/vptr with the start of KV head kvh's rows in each of the
// n_blocks blocks from the sequence's block b0 on.
template <class P>
void head_rows(const KvCache& cache, SeqId seq, int32_t layer, int32_t kvh, int32_t b0,
               int32_t n_blocks, const P** kptr, const P** vptr) {
  const auto& table = cache.block_table(seq, cache.group_of(layer));
  const uint64_t koff = cache.k_offset(layer, kvh), voff = cache.v_offset(layer, kvh);
  for (int32_t b = 0; b < n_blocks; ++b) {
    const int32_t block = table[static_cast<size_t>(b0) + static_cast<size_t>(b)];
    SNUG_DCHECK(block >= 0);  // a windowed group gave back only blocks its window passed
    const uint8_t* blk = cache.block_data(block);
    kptr[b] = reinterpret_cast<const P*>(blk + koff);
    vptr[b] = reinterpret_cast<const P*>(blk + voff);
  }
}

}  // namespace

int64_t attention_scratch_floats(int32_t max_ctx, int32_t group, int32_t head_dim_k,
                                 int32_t head_dim_v) {
  return pointer_floats(max_ctx) +
         std::max(
             tensor::attention_heads_scratch_floats(max_ctx, group, head_dim_k, head_dim_v),
             tensor::attention_kv_heads_scratch_floats(max_ctx, group, head_dim_k, head_dim_v));
}

void attend(const KvCache& cache, SeqId seq, int32_t layer, const AttentionShape& shape,
            const float* q, int32_t end, int32_t h0, int32_t h1, float* out, float* scratch,
            int32_t begin) {
  const KvLayout& lay = cache.layout();
  SNUG_CHECK(shape.head_dim_k <= kMaxHeadDim && shape.head_dim_v <= kMaxHeadDim);
  SNUG_CHECK(begin >= 0 && begin < end);
  const int32_t bt = lay.block_tokens;
  const int32_t group = shape.n_heads / shape.n_kv_heads;
  const int32_t b0 = begin / bt, first = begin - b0 * bt;  // the window's first block and row
  const int32_t n_blocks = (end + bt - 1) / bt - b0;
  const int32_t n = end - begin;
  float* work = scratch + pointer_floats(end);
  const bool f16 = lay.k_type == tensor::DType::kF16 && lay.v_type == tensor::DType::kF16;
  const tensor::SumOrder order =
      shape.batched ? tensor::SumOrder::kGemm : tensor::SumOrder::kVecDot;
  for (int32_t h = h0; h < h1;) {
    const int32_t kvh = h / group;
    const int32_t he = std::min(h1, (kvh + 1) * group);  // the heads of [h0, h1) on kvh
    const float* qh = q + static_cast<int64_t>(h) * shape.head_dim_k;
    float* oh = out + static_cast<int64_t>(h) * shape.head_dim_v;
    if (f16) {
      auto** kptr = reinterpret_cast<const uint16_t**>(scratch);
      auto** vptr = kptr + n_blocks;
      head_rows(cache, seq, layer, kvh, b0, n_blocks, kptr, vptr);
      const tensor::PagedRows k{kptr, bt, shape.head_dim_k, first};
      const tensor::PagedRows v{vptr, bt, shape.head_dim_v, first};
      tensor::attention_f16_heads(qh, he - h, k, v, n, shape.head_dim_k, shape.head_dim_v,
                                  shape.scale, order, oh, work);
    } else {
      auto** kptr = reinterpret_cast<const uint8_t**>(scratch);
      auto** vptr = kptr + n_blocks;
      head_rows(cache, seq, layer, kvh, b0, n_blocks, kptr, vptr);
      const tensor::PagedKvRows k{kptr, bt, cache.k_row_bytes(), lay.k_type, first};
      const tensor::PagedKvRows v{vptr, bt, cache.v_row_bytes(), lay.v_type, first};
      tensor::attention_kv_heads(qh, he - h, k, v, n, shape.head_dim_k, shape.head_dim_v,
                                 shape.scale, oh, work);
    }
    h = he;
  }
}

}  // namespace snug::kv
