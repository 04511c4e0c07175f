#include "plan/footprint.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include "base/checked.h"
#include "base/mapped_file.h"
#include "model/file_pages.h"
#include "model/pack_file.h"
#include "model/weights.h"
#include "tensor/kernels.h"
#include "text/tokenizer.h"

namespace snug::plan {
namespace {

// The seven matrices of a block, as every Llama-layout GGUF names them.
constexpr const char* kBlockMatrices[] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                          "ffn_gate", "ffn_up", "ffn_down"};

// Hyper-parameters of an architecture the forward pass does not run yet, read
// with the same keys and bounds as model::read_config, so that such a file can
// still be planned (its KV cache and workspace as a Llama-layout model).
Result<model::ModelConfig> read_generic_config(const gguf::File& f, const std::string& arch) {
  model::ModelConfig c;
  c.arch_name = arch;
  c.name = f.get_string("general.name").ok() ? *f.get_string("general.name") : arch;
  const std::string a = arch + ".";
  auto get = [&](const std::string& key, uint64_t max, std::optional<uint64_t> fallback,
                 int32_t* out) -> Status {
    Result<uint64_t> v = fallback ? f.get_uint_or(key, *fallback) : f.get_uint(key);
    if (!v.ok()) return v.take_error();
    if (*v == 0 || *v > max)
      return make_error("'", f.name(), "': ", key, " = ", *v, " is out of range (1 to ", max, ")");
    *out = static_cast<int32_t>(*v);
    return ok_status();
  };
  SNUG_RETURN_IF_ERROR(get(a + "block_count", 4096, {}, &c.n_layers));
  SNUG_RETURN_IF_ERROR(get(a + "embedding_length", 1u << 20, {}, &c.n_embd));
  SNUG_RETURN_IF_ERROR(get(a + "feed_forward_length", 1u << 20, {}, &c.n_ff));
  SNUG_RETURN_IF_ERROR(get(a + "attention.head_count", 4096, {}, &c.n_heads));
  SNUG_RETURN_IF_ERROR(get(a + "attention.head_count_kv", 4096, c.n_heads, &c.n_kv_heads));
  SNUG_RETURN_IF_ERROR(get(a + "context_length", 1u << 24, 2048, &c.n_ctx_train));
  const uint64_t hd = static_cast<uint64_t>(std::max(1, c.n_embd / c.n_heads));
  SNUG_RETURN_IF_ERROR(get(a + "attention.key_length", 512, hd, &c.head_dim_k));
  SNUG_RETURN_IF_ERROR(get(a + "attention.value_length", 512, hd, &c.head_dim_v));
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) return make_error("'", f.name(), "': missing tensor 'token_embd.weight'");
  if (emb->rows() > (int64_t{1} << 24))
    return make_error("'", f.name(), "': vocabulary of ", emb->rows(),
                      " tokens is implausibly large");
  c.n_vocab = static_cast<int32_t>(emb->rows());
  c.tied_output = f.find_tensor("output.weight") == nullptr;
  c.rope_sets = {model::RopeParams{}};
  c.layers.assign(static_cast<size_t>(c.n_layers), model::LayerConfig{});
  return c;
}

}  // namespace

std::vector<tensor::DType> matrix_types(const gguf::File& file, const model::ModelConfig& c) {
  std::vector<tensor::DType> types;
  // A type without kernels has no activation format to size scratch for; such a
  // file is refused when its weights are bound (model/weights.cpp), not here.
  auto add = [&types](const gguf::TensorInfo* t) {
    if (t && tensor::info(t->type).has_kernels &&
        std::find(types.begin(), types.end(), t->type) == types.end())
      types.push_back(t->type);
  };
  add(file.find_tensor(c.tied_output ? "token_embd.weight" : "output.weight"));
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* m : kBlockMatrices) add(file.find_tensor(p + m + ".weight"));
  }
  return types;
}

namespace {

// The transparent huge page size where madvise(MADV_HUGEPAGE) gets them
// (enabled "always" or "madvise"), else 0.
uint64_t transparent_huge_page_bytes() {
  std::ifstream enabled("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode((std::istreambuf_iterator<char>(enabled)), std::istreambuf_iterator<char>());
  if (mode.find("[always]") == std::string::npos && mode.find("[madvise]") == std::string::npos)
    return 0;
  std::ifstream size("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
  uint64_t bytes = 0;
  size >> bytes;
  return bytes;
}

}  // namespace

Result<ModelFootprint> plan_model(const gguf::File& file, Packing packing) {
  const bool repack = packing != Packing::kNone, shared = packing == Packing::kShared;
  ModelFootprint fp;
  SNUG_ASSIGN_OR_RETURN(std::string arch, file.get_string("general.architecture"));
  if (model::arch_supported(arch)) {
    SNUG_ASSIGN_OR_RETURN(fp.config, model::read_config(file));
  } else {
    SNUG_ASSIGN_OR_RETURN(fp.config, read_generic_config(file, arch));
    fp.runnable = false;
    fp.runnable_note = "architecture '" + printable(arch) +
                       "' is not supported (supported: " + model::supported_archs() +
                       "); planned from its header only";
  }
  fp.name = fp.config.name;
  fp.has_data = file.has_data();
  fp.header_bytes = file.data_offset();
  fp.file_bytes = file.data_offset();
  fp.header_index_bytes = file.metadata().capacity() * sizeof(gguf::KeyValue) +
                          file.tensors().capacity() * sizeof(gguf::TensorInfo);
  for (const auto& kv : file.metadata()) {
    fp.header_index_bytes += kv.value.strings.capacity() * sizeof(std::string_view);
    if (kv.key.size() >= sizeof(std::string)) fp.header_index_bytes += kv.key.capacity() + 1;
  }
  for (const auto& t : file.tensors()) {
    if (t.name.size() >= sizeof(std::string)) fp.header_index_bytes += t.name.capacity() + 1;
  }
  for (const auto& t : file.tensors()) {
    auto end = checked_add(t.offset, t.bytes);
    if (!end) return make_error("'", file.name(), "': tensor '", t.name, "' size overflows");
    fp.file_bytes = std::max(fp.file_bytes, *end);
  }

  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  // Model::repack asks for transparent huge pages: where the kernel grants
  // them, the page being filled can run one huge page ahead of the packing.
  const uint64_t huge_page = packing == Packing::kPrivate ? transparent_huge_page_bytes() : 0;
  std::vector<model::ByteRange> packed_rows;  // file offsets
  size_t n_packed = 0;                        // matrices packed, and their distinct types
  std::vector<tensor::DType> packed_types;
  model::WeightNames wn = model::weight_tensor_names(fp.config);
  std::vector<std::string> names = std::move(wn.required);
  const size_t n_required = names.size();
  for (std::string& name : wn.optional) names.push_back(std::move(name));
  std::vector<const gguf::TensorInfo*> bound;  // what Weights::tensors will hold
  for (size_t k = 0; k < names.size(); ++k) {
    const std::string& name = names[k];
    const gguf::TensorInfo* t = file.find_tensor(name);
    if (!t) {
      if (!fp.runnable || k >= n_required) continue;
      return make_error("'", file.name(), "': missing tensor '", name, "'");
    }
    bound.push_back(t);
    auto it = std::find_if(fp.weights_by_type.begin(), fp.weights_by_type.end(),
                           [&](const WeightTypeBytes& w) { return w.type == t->type; });
    if (it == fp.weights_by_type.end()) {
      fp.weights_by_type.push_back({t->type, 0, 0, 0});
      it = fp.weights_by_type.end() - 1;
    }
    ++it->tensors;
    auto sum = checked_add(it->mapped_bytes, t->bytes);
    auto total = checked_add(fp.weights_mapped, t->bytes);
    if (!sum || !total)
      return make_error("'", file.name(), "': tensor sizes overflow a 64-bit byte count");
    it->mapped_bytes = *sum;
    fp.weights_mapped = *total;
    const bool untied_embd = name == "token_embd.weight" && !fp.config.tied_output;
    if (!untied_embd) fp.weights_touched += t->bytes;
    // Model::repack: the matrices the products take packed (an untied
    // embedding table is only looked up).
    if (repack && !untied_embd && t->n_dims == 2) {
      const tensor::MatView v{
          t->type, nullptr, t->rows(), t->ne[0],
          static_cast<size_t>(t->bytes / std::max<uint64_t>(static_cast<uint64_t>(t->rows()), 1))};
      if (const int64_t packed = tensor::matmul_packed_bytes(v); packed > 0) {
        const uint64_t rows_bytes =
            static_cast<uint64_t>(tensor::matmul_packed_rows(v)) * v.row_bytes;
        // The pages holding only packed rows are let go; a page they share
        // with bytes still read stays mapped (counted after the loop).
        const uint64_t start = t->offset;  // absolute
        packed_rows.push_back({start, start + rows_bytes});
        const auto bytes = static_cast<uint64_t>(packed);
        ++n_packed;
        if (std::find(packed_types.begin(), packed_types.end(), t->type) == packed_types.end())
          packed_types.push_back(t->type);
        it->mapped_bytes -= rows_bytes;
        fp.weights_mapped -= rows_bytes;
        fp.weights_touched -= rows_bytes;
        if (shared) {  // the pack file's pages, each matrix at a 64-byte offset
          it->mapped_bytes += bytes;
          fp.weights_mapped += (bytes + 63) / 64 * 64;
          fp.weights_touched += (bytes + 63) / 64 * 64;
        } else {
          it->resident_bytes += bytes;
          fp.weights_resident += bytes;
        }
        // Packing holds one slice of rows twice (and a huge page being
        // filled); a pack file's writer, a slice's packed bytes in a buffer.
        tensor::MatView slice_view = v;
        slice_view.rows = tensor::matmul_pack_slice_rows(v);
        const uint64_t slice = shared
                                   ? static_cast<uint64_t>(tensor::matmul_packed_bytes(slice_view))
                                   : static_cast<uint64_t>(slice_view.rows) * v.row_bytes;
        fp.repack_transient = std::max(fp.repack_transient, std::min(slice, t->bytes) + huge_page);
      }
    }
    // A matrix re-quantized to q4_0 (norms and odd widths stay as they are).
    auto q4 = t->n_dims == 2 ? tensor::row_bytes(tensor::DType::kQ4_0, t->ne[0]) : std::nullopt;
    auto q4_total = q4 ? checked_mul(*q4, static_cast<uint64_t>(t->rows())) : std::nullopt;
    fp.weights_as_q4_0 += q4_total && *q4_total < t->bytes ? *q4_total : t->bytes;
  }
  fp.weights_touched +=
      page * model::packed_pages(file, bound, std::move(packed_rows), page).kept_pages;
  std::sort(fp.weights_by_type.begin(), fp.weights_by_type.end(),
            [](const WeightTypeBytes& a, const WeightTypeBytes& b) {
              return a.mapped_bytes + a.resident_bytes > b.mapped_bytes + b.resident_bytes;
            });
  if (shared && n_packed > 0) {  // the pack file's header, read to check its key
    const uint64_t header = model::pack_header_bytes(packed_types.size(), n_packed,
                                                     model::pack_model_path(file.name()).size());
    fp.weights_mapped += header;
    fp.weights_touched += header;
  }
  fp.matrix_types = matrix_types(file, fp.config);

  if (!file.find("tokenizer.ggml.tokens")) {
    fp.tokenizer_note = "no tokenizer in the file";
  } else {
    // Built for real from the metadata: its size is exactly what the ledger will be charged.
    auto tok = text::Tokenizer::from_gguf(file);
    if (tok.ok()) {
      fp.tokenizer_bytes = tok->memory_bytes();
    } else {
      fp.tokenizer_note = tok.error().message;
    }
  }
  return fp;
}

}  // namespace snug::plan
