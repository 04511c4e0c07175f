// Round-to-nearest quantization of a whole GGUF file: every tensor is read
// from the mapped input, expanded to f32 when its type differs from the
// target (any type tensor::dequantize_row reads), packed with ggml's reference
// quantizers (tensor::quantize_row) and streamed to the output, so memory stays
// at one slab of rows per thread, not the model. Metadata is copied and
// general.file_type set, as llama-quantize does; the output is GGUF that
// llama.cpp loads.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "compress/imatrix.h"
#include "compress/quant_types.h"

namespace snug::compress {

struct QuantizeOptions {
  QuantKind kind;
  std::vector<KeepRule> keep;
  int threads = 1;
  // Importance matrix (load_imatrix), or nullptr. It must fit the input
  // (check_imatrix_fits, verified before anything is written); tensors with an
  // entry are packed with tensor::quantize_row_weighted, as llama-quantize
  // --imatrix does, and the output records it in quantize.imatrix.* metadata.
  const Imatrix* imatrix = nullptr;
  std::string imatrix_path;  // for quantize.imatrix.file and messages
  // Called before tensor `index` (0-based) of `count` is written, and once
  // more with index == count at the end; for a progress line.
  std::function<void(size_t index, size_t count, const std::string& name)> on_progress;
};

// A conversion of a GGUF file tensor by tensor, the machinery under
// quantize_file and prune_file: every tensor is copied or converted to the
// type its plan says, row by row, with an optional edit of each row in f32
// between reading and packing.
struct ConvertOptions {
  // The type of every tensor of `file`, in output order (plan_tensor_types).
  std::function<std::vector<TensorPlan>(const gguf::File& file)> plan;
  // general.file_type to write; nullopt keeps the input's.
  std::optional<uint32_t> file_type;
  int threads = 1;
  const Imatrix* imatrix = nullptr;  // as QuantizeOptions::imatrix
  std::string imatrix_path;
  // Called on the pool's threads with row `row` of a converted tensor, as f32,
  // before it is packed; may change it. Null: rows pass unchanged.
  std::function<void(const gguf::TensorInfo& t, int64_t row, float* x)> edit_row;
  // Where it returns bytes for a converted tensor (rows already packed in the
  // plan's type), they are written as they are instead of converting the
  // input's rows (SparseGPT's pruned tensors). Null or empty: convert.
  std::function<std::span<const uint8_t>(const gguf::TensorInfo& t)> packed;
  // Count the elements of each converted tensor that are exactly zero once
  // packed (QuantizedTensor::zeros): what a pruned tensor really holds.
  bool count_zeros = false;
  std::function<void(size_t index, size_t count, const std::string& name)> on_progress;
};

// One tensor of the output, for the report.
struct QuantizedTensor {
  std::string name;
  tensor::DType from = tensor::DType::kF32;
  tensor::DType to = tensor::DType::kF32;
  uint64_t elements = 0;
  uint64_t bytes = 0;     // in the output
  std::string note;       // why `to` is not what the mix asked for (fallback, --keep), or empty
  bool weighted = false;  // packed with the importance matrix
  uint64_t zeros = 0;     // exact zeros once packed (ConvertOptions::count_zeros)
};

struct QuantizeSummary {
  std::vector<QuantizedTensor> tensors;  // in output order
  uint64_t input_bytes = 0;              // file sizes
  uint64_t output_bytes = 0;
  uint64_t weight_elements = 0;
  uint64_t weight_bytes = 0;  // tensor data in the output
  double seconds = 0;
};

// Quantizes `in` to `out` as `options.kind`. Refuses, with a one-line Error
// and nothing written, an output that is the input, an output directory that
// does not exist, an input that is not GGUF or holds a tensor that cannot be
// converted, an importance matrix made for another model. A failed write (a full disk) removes the
// partial output.
Result<QuantizeSummary> quantize_file(const std::string& in, const std::string& out,
                                      const QuantizeOptions& options);

// Ok, or why `out` cannot be written from `in`: it is the input file, or its
// directory does not exist. Checked first by every writer of a model file, and
// by commands that run for long before they write.
Status check_output_path(const std::string& in, const std::string& out);

// Converts `in` to `out` as `options` plan. Refuses as quantize_file does.
Result<QuantizeSummary> convert_file(const std::string& in, const std::string& out,
                                     const ConvertOptions& options);

}  // namespace snug::compress
