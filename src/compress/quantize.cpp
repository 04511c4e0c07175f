#include "compress/quantize.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include "base/thread_pool.h"
#include "tensor/kernels.h"

namespace snug::compress {
namespace {

namespace fs = std::filesystem;
using tensor::DType;

// Output bytes converted per slab: bounds the buffer whatever the tensor size.
constexpr uint64_t kSlabBytes = 16ull << 20;

}  // namespace

Status check_output_path(const std::string& in, const std::string& out) {
  std::error_code ec;
  if (fs::equivalent(in, out, ec) || fs::weakly_canonical(in, ec) == fs::weakly_canonical(out, ec))
    return make_error("output '", out, "' is the input file; choose another name");
  fs::path dir = fs::path(out).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    return make_error("output directory '", dir.string(), "' does not exist");
  return ok_status();
}

namespace {

bool convertible(DType t) {
  return t == DType::kF32 || tensor::info(t).has_kernels;
}

// Metadata of `in`, with general.file_type and general.quantization_version set
// (in place when present, appended otherwise) and split keys dropped; with
// drop_imatrix, an earlier quantization's quantize.imatrix.* keys too (the new
// ones replace them).
void copy_metadata(const gguf::File& in, uint32_t file_type, bool drop_imatrix, gguf::Writer& w) {
  bool have_ftype = false, have_qver = false;
  for (const auto& kv : in.metadata()) {
    if (kv.key == "general.alignment" || kv.key.rfind("split.", 0) == 0) continue;
    if (drop_imatrix && kv.key.rfind("quantize.imatrix.", 0) == 0) continue;
    if (kv.key == "general.file_type") {
      w.set_u32(kv.key, file_type);
      have_ftype = true;
    } else if (kv.key == "general.quantization_version") {
      w.set_u32(kv.key, 2);  // GGML_QNT_VERSION
      have_qver = true;
    } else {
      w.set_value(kv.key, kv.value);
    }
  }
  if (!have_qver) w.set_u32("general.quantization_version", 2);
  if (!have_ftype) w.set_u32("general.file_type", file_type);
  w.set_alignment(static_cast<uint32_t>(in.alignment()));
}

// llama-quantize's record of the importance matrix (its kv overrides: strings,
// and integers written as u32).
void add_imatrix_metadata(const Imatrix& m, const std::string& path, gguf::Writer& w) {
  w.set_string("quantize.imatrix.file", path);
  if (!m.datasets.empty()) w.set_string("quantize.imatrix.dataset", m.datasets[0]);
  w.set_u32("quantize.imatrix.entries_count", static_cast<uint32_t>(m.entries.size()));
  if (m.chunk_count > 0) w.set_u32("quantize.imatrix.chunks_count", m.chunk_count);
}

// Converts rows [r0, r1) of `t` to `to`, into `dst`, on the pool's threads.
// `weights`, when given, holds the importance of each column for each of the
// tensor's matrices ([ne[2] * ne[3]][cols]); row r belongs to matrix r / ne[1].
// `edit` changes each row in f32 first; with `zeros`, the packed rows' exact
// zeros are added to it.
void convert_rows(const gguf::TensorInfo& t, DType to, int64_t r0, int64_t r1, uint8_t* dst,
                  const float* weights, const ConvertOptions& o,
                  std::vector<std::vector<float>>& scratch, std::atomic<uint64_t>* zeros,
                  ThreadPool& pool) {
  const int64_t cols = t.ne[0];
  const uint64_t src_row = *tensor::row_bytes(t.type, cols);
  const uint64_t dst_row = *tensor::row_bytes(to, cols);
  pool.run([&](int tid, int nth) {
    std::vector<float>& buf = scratch[static_cast<size_t>(tid)];
    uint64_t found = 0;
    for_each_chunk(r1 - r0, 1, tid, nth, [&](int64_t b, int64_t e) {
      for (int64_t r = r0 + b; r < r0 + e; ++r) {
        const uint8_t* src = t.data + static_cast<uint64_t>(r) * src_row;
        const float* x = reinterpret_cast<const float*>(src);
        if (t.type != DType::kF32 || o.edit_row) {
          if (t.type == DType::kF32) {
            std::memcpy(buf.data(), src, static_cast<size_t>(cols) * sizeof(float));
          } else {
            tensor::dequantize_row(t.type, src, buf.data(), cols);
          }
          if (o.edit_row) o.edit_row(t, r, buf.data());
          x = buf.data();
        }
        uint8_t* out = dst + static_cast<uint64_t>(r - r0) * dst_row;
        if (weights != nullptr) {
          tensor::quantize_row_weighted(to, x, out, cols, weights + (r / t.ne[1]) * cols);
        } else {
          tensor::quantize_row(to, x, out, cols);
        }
        if (zeros != nullptr) {
          float* back = buf.data() + cols;
          tensor::dequantize_row(to, out, back, cols);
          for (int64_t i = 0; i < cols; ++i) found += back[i] == 0.f ? 1 : 0;
        }
      }
    });
    if (zeros != nullptr) zeros->fetch_add(found, std::memory_order_relaxed);
  });
}

}  // namespace

Result<QuantizeSummary> quantize_file(const std::string& in, const std::string& out,
                                      const QuantizeOptions& options) {
  ConvertOptions c;
  c.plan = [&options](const gguf::File& file) -> std::vector<TensorPlan> {
    auto model = read_mix_model(file);
    if (!model.ok()) return {};
    return plan_tensor_types(file, *model, options.kind, options.keep, options.imatrix != nullptr);
  };
  c.file_type = options.kind.file_type;
  c.threads = options.threads;
  c.imatrix = options.imatrix;
  c.imatrix_path = options.imatrix_path;
  c.on_progress = options.on_progress;
  return convert_file(in, out, c);
}

Result<QuantizeSummary> convert_file(const std::string& in, const std::string& out,
                                     const ConvertOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (Status s = check_output_path(in, out); !s.ok()) return s.error();
  auto file = gguf::File::open(in);
  if (!file.ok()) return file.error();
  auto model = read_mix_model(*file);
  if (!model.ok()) return model.error();
  const Imatrix* imatrix = options.imatrix;
  if (imatrix != nullptr) {
    if (Status s = check_imatrix_fits(*imatrix, *file, options.imatrix_path); !s.ok())
      return s.error();
  }
  const std::vector<TensorPlan> plans = options.plan(*file);
  uint32_t file_type = 0;  // llama.cpp's ALL_F32 when the input has none
  if (options.file_type) {
    file_type = *options.file_type;
  } else {
    auto ft = file->get_uint_or("general.file_type", 0);
    if (!ft.ok()) return ft.error();
    file_type = static_cast<uint32_t>(*ft);
  }

  QuantizeSummary summary;
  gguf::Writer w;
  copy_metadata(*file, file_type, imatrix != nullptr, w);
  if (imatrix != nullptr) add_imatrix_metadata(*imatrix, options.imatrix_path, w);
  int64_t max_cols = 0;
  for (const auto& p : plans) {
    const gguf::TensorInfo& t = *p.src;
    if (p.quantize && !convertible(t.type))
      return make_error("tensor '", t.name, "' has type ", tensor::dtype_name(t.type),
                        ", which snug cannot convert");
    std::vector<int64_t> dims(t.ne.begin(), t.ne.begin() + std::max(1, t.n_dims));
    w.add_tensor_info(t.name, p.type, dims);
    const uint64_t bytes =
        p.quantize ? *tensor::row_bytes(p.type, t.ne[0]) * static_cast<uint64_t>(t.rows())
                   : t.bytes;
    const bool weighted = p.quantize && imatrix != nullptr &&
                          tensor::has_weighted_quantizer(p.type) &&
                          imatrix->entries.count(t.name) > 0;
    summary.tensors.push_back(
        {t.name, t.type, p.type, static_cast<uint64_t>(t.n_elements()), bytes, p.note, weighted});
    summary.weight_elements += static_cast<uint64_t>(t.n_elements());
    summary.weight_bytes += bytes;
    if (p.quantize) max_cols = std::max(max_cols, t.ne[0]);
  }

  const int threads = std::max(1, options.threads);
  ThreadPool pool(threads);
  // Per thread: one row in f32, and one more to read a packed row back.
  std::vector<std::vector<float>> scratch(static_cast<size_t>(threads),
                                          std::vector<float>(2 * static_cast<size_t>(max_cols)));
  std::vector<uint8_t> slab;
  auto produce = [&](size_t k, const gguf::Writer::Emit& emit) -> Status {
    const TensorPlan& p = plans[k];
    const gguf::TensorInfo& t = *p.src;
    if (options.on_progress) options.on_progress(k, plans.size(), t.name);
    if (!p.quantize) return emit({t.data, t.bytes});
    if (options.packed) {
      const std::span<const uint8_t> bytes = options.packed(t);
      if (!bytes.empty()) {
        if (bytes.size() != summary.tensors[k].bytes)
          return make_error("tensor '", t.name, "': ", bytes.size(), " packed bytes for ",
                            summary.tensors[k].bytes);
        if (options.count_zeros) {
          const uint64_t rb = *tensor::row_bytes(p.type, t.ne[0]);
          std::vector<float>& row = scratch[0];
          uint64_t zeros = 0;
          for (int64_t r = 0; r < t.rows(); ++r) {
            tensor::dequantize_row(p.type, bytes.data() + static_cast<uint64_t>(r) * rb, row.data(),
                                   t.ne[0]);
            zeros += static_cast<uint64_t>(std::count(row.begin(), row.begin() + t.ne[0], 0.f));
          }
          summary.tensors[k].zeros = zeros;
        }
        return emit(bytes);
      }
    }
    std::vector<float> weights;
    if (summary.tensors[k].weighted) weights = importance(imatrix->entries.at(t.name));
    const uint64_t dst_row = *tensor::row_bytes(p.type, t.ne[0]);
    const int64_t rows_per_slab =
        std::max<int64_t>(1, static_cast<int64_t>(kSlabBytes / std::max<uint64_t>(dst_row, 1)));
    std::atomic<uint64_t> zeros{0};
    for (int64_t r0 = 0; r0 < t.rows(); r0 += rows_per_slab) {
      const int64_t r1 = std::min(t.rows(), r0 + rows_per_slab);
      slab.resize(static_cast<size_t>(r1 - r0) * dst_row);
      convert_rows(t, p.type, r0, r1, slab.data(), weights.empty() ? nullptr : weights.data(),
                   options, scratch, options.count_zeros ? &zeros : nullptr, pool);
      if (Status s = emit(slab); !s.ok()) return s;
    }
    summary.tensors[k].zeros = zeros.load();
    return ok_status();
  };
  if (Status s = w.write_streaming(out, produce); !s.ok()) return s.error();
  if (options.on_progress) options.on_progress(plans.size(), plans.size(), "");

  summary.input_bytes = file->file_size();
  struct stat st {};
  summary.output_bytes = ::stat(out.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace snug::compress
