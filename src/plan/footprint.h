// The footprint of a model read from its GGUF header alone: weights by tensor
// type (read in place from the mapped file, or copied into private memory),
// the tokenizer, and the hyper-parameters that size the KV cache and the
// workspace. Nothing here touches tensor data, so it works on a header-only
// file (a 70B model's tensor directory without its 40 GB of data) and takes
// milliseconds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "gguf/gguf.h"
#include "model/config.h"
#include "tensor/dtype.h"

namespace snug::plan {

struct WeightTypeBytes {
  tensor::DType type = tensor::DType::kF32;
  int32_t tensors = 0;
  uint64_t mapped_bytes = 0;    // read in place from the file's pages (shareable page cache)
  uint64_t resident_bytes = 0;  // copied, repacked or dequantized into private memory
};

struct ModelFootprint {
  std::string name;  // general.name, or the file name
  model::ModelConfig config;
  // False when the forward pass cannot run this architecture yet: the plan is
  // still computed from the header, and `runnable_note` says why.
  bool runnable = true;
  std::string runnable_note;
  bool has_data = true;       // false for a header-only file
  uint64_t file_bytes = 0;    // size of the file as the header describes it (header + tensor data)
  uint64_t header_bytes = 0;  // metadata and tensor directory: pages touched when parsing
  // The parsed header on the heap (gguf::File's key/value and tensor tables, a
  // string_view per element of string arrays such as the vocabulary).
  uint64_t header_index_bytes = 0;
  std::vector<WeightTypeBytes> weights_by_type;  // sorted by bytes, largest first
  uint64_t weights_mapped = 0;    // bytes of the tensors the model binds (ledger: weights (mapped))
  uint64_t weights_resident = 0;  // private copies: the packed matrices of --repack
  // With --repack: the largest slice of rows, whose file pages and packed
  // copy are both held while it is packed (at load, before the KV cache
  // exists); with --pack-dir, the slice buffer a process that writes the
  // pack file packs into.
  uint64_t repack_transient = 0;
  // Mapped bytes one forward pass touches, so they count in the peak RSS: all
  // bound tensors except an untied token embedding table, of which a step reads
  // only the rows of its tokens.
  uint64_t weights_touched = 0;
  // The matrices re-quantized to q4_0, for the "a smaller weight type" hint.
  uint64_t weights_as_q4_0 = 0;
  std::vector<tensor::DType>
      matrix_types;              // distinct types of the matrices the forward pass multiplies
  uint64_t tokenizer_bytes = 0;  // what the tokenizer holds (ledger: tokenizer)
  std::string tokenizer_note;    // why it is zero, when it is
};

// Plans `file` (opened with or without its tensor data). Errors name the key
// or tensor at fault: missing hyper-parameters, absurd dimensions, a sum of
// sizes that overflows 64 bits.
// How the matrices the kernels take packed are held after loading.
enum class Packing {
  kNone,     // read in place from the model file's pages
  kPrivate,  // Model::repack (--repack): a private copy, resident
  kShared,   // Model::repack_shared (--pack-dir): a pack file's pages, mapped and shared
};

// packing: as Model::repack (kPrivate) or Model::repack_shared (kShared) will
// leave it on this machine's kernels: the packed rows of each matrix resident,
// or mapped from the pack file, instead of mapped from the model file.
Result<ModelFootprint> plan_model(const gguf::File& file, Packing packing = Packing::kNone);

// The distinct types of the weight matrices of a Llama-layout file
// (token_embd or output, and the seven matrices of every block): the input of
// model::plan_workspace. The engine calls this too, so the plan and the session
// size the workspace from the same list.
std::vector<tensor::DType> matrix_types(const gguf::File& file, const model::ModelConfig& c);

}  // namespace snug::plan
