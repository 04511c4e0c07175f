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

PackedPages packed_pages(const gguf::File& file, std::vector<ByteRange> packed, uint64_t page) {
  PackedPages out;
  std::sort(packed.begin(), packed.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  out.read.push_back({0, file.data_offset()});
  for (const auto& t : file.tensors()) {
    ByteRange r{t.offset, t.offset + t.bytes};  // absolute offsets
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
  uint64_t last_kept = UINT64_MAX;  // neighbours share an edge page: count it once
  for (const ByteRange& p : packed) {
    if (p.begin >= p.end) continue;
    const uint64_t first = p.begin / page, last = (p.end - 1) / page;  // pages it touches
    auto keep = [&](uint64_t pg) {
      if (!meets(out.read, pg * page, (pg + 1) * page)) return false;
      if (pg != last_kept) ++out.kept_pages;
      last_kept = pg;
      return true;
    };
    const bool keep_first = keep(first);
    const bool keep_last = last != first ? keep(last) : keep_first;
    const uint64_t from = keep_first ? first + 1 : first, to = keep_last ? last : last + 1;
    if (from < to) out.released.push_back({from * page, to * page});
  }
  return out;
}

}  // namespace snug::model
