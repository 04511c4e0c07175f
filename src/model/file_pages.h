// Which pages of a model file stay mapped once its matrices are packed.
//
// Packing (Model::repack, Model::repack_shared) takes some matrices' rows out
// of the file. A page that holds only packed rows, of one matrix or of two
// neighbours, or bytes of no tensor the model binds, is never read again and
// is let go; a page the packed rows share with bytes still read from the file
// (a norm, a matrix's unpacked tail rows, the header) stays mapped. The plan
// counts the second kind, the runtime releases the first, and both take the
// pages from here.
#pragma once

#include <cstdint>
#include <vector>

#include "gguf/gguf.h"

namespace snug::model {

struct ByteRange {
  uint64_t begin = 0;  // offsets from the start of the file
  uint64_t end = 0;
};

struct PackedPages {
  // What a forward pass still reads from the file: the header and the bound
  // tensors' bytes outside the packed rows, sorted.
  std::vector<ByteRange> read;
  // Pages (page-aligned byte ranges, sorted, disjoint) that hold no byte
  // still read: packed rows, padding, tensors the model does not bind. Let go.
  std::vector<ByteRange> released;
  // How many pages hold packed rows and bytes still read: kept.
  uint64_t kept_pages = 0;
};

// `bound`: the tensors of `file` the model reads (Weights::tensors; the
// plan, those of weight_tensor_names the file has); `packed`: the packed rows
// of some of them, each starting where its tensor's data starts. Padding
// between tensors, and a tensor the model does not bind, belong to nothing.
PackedPages packed_pages(const gguf::File& file, const std::vector<const gguf::TensorInfo*>& bound,
                         std::vector<ByteRange> packed, uint64_t page);

}  // namespace snug::model
