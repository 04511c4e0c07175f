#include "model/file_pages.h"

#include <algorithm>

namespace snug::model {
namespace {

// Whether [begin, end) meets any of the sorted, disjoint ranges.
bool meets(const std::vector<ByteRange>& sorted, uint64_t begin, uint64_t end) {
  auto it = std::lower_bound(sorted.begin(), sorted.end(), begin,
                             [](const ByteRange& r, uint64_t at) { return r.end <= at; });
  return it != sorted.end() && it->begin < end;
}

}  // namespace

PackedPages packed_pages(const gguf::File& file, const std::vector<const gguf::TensorInfo*>& bound,
                         std::vector<ByteRange> packed, uint64_t page) {
  PackedPages out;
  std::sort(packed.begin(), packed.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  out.read.push_back({0, file.data_offset()});
  for (const gguf::TensorInfo* t : bound) {
    ByteRange r{t->offset, t->offset + t->bytes};  // absolute offsets
    auto p = std::lower_bound(packed.begin(), packed.end(), r.begin,
                              [](const ByteRange& a, uint64_t at) { return a.begin < at; });
    if (p != packed.end() && p->begin == r.begin) r.begin = std::min(p->end, r.end);
    if (r.begin < r.end) out.read.push_back(r);
  }
  std::sort(out.read.begin(), out.read.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  size_t n = 0;  // overlapping ranges merged, so a search by end finds the first that meets
  for (const ByteRange& r : out.read) {
    if (n > 0 && r.begin < out.read[n - 1].end) {
      out.read[n - 1].end = std::max(out.read[n - 1].end, r.end);
    } else {
      out.read[n++] = r;
    }
  }
  out.read.resize(n);
  // Pages that meet no range read: packed rows only, padding, tensors the
  // model does not bind. A fault near one (fault-around, a large folio) may
  // have mapped it; none is read again.
  uint64_t from = 0;
  const uint64_t file_pages = file.file_size() / page;
  for (size_t k = 0; k <= out.read.size(); ++k) {
    const uint64_t to = k < out.read.size() ? out.read[k].begin / page : file_pages;
    if (from < to) out.released.push_back({from * page, to * page});
    if (k < out.read.size()) from = std::max(from, (out.read[k].end + page - 1) / page);
  }
  // Pages packed rows share with bytes still read stay, each counted once.
  uint64_t last_kept = UINT64_MAX;
  for (const ByteRange& p : packed) {
    if (p.begin >= p.end) continue;
    for (const uint64_t pg : {p.begin / page, (p.end - 1) / page}) {
      if (pg != last_kept && meets(out.read, pg * page, (pg + 1) * page)) {
        ++out.kept_pages;
        last_kept = pg;
      }
    }
  }
  return out;
}

}  // namespace snug::model
