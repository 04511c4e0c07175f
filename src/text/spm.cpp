#include "text/spm.h"

#include <algorithm>

#include "text/unicode.h"

namespace snug::text {

namespace {

struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t begin;  // bytes of the text
  uint32_t n;      // 0 once merged into its left neighbour
};

struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  uint32_t size;  // bytes when queued; a mismatch later means the pair is stale
};

// Max-heap order: higher score first, then the leftmost pair (llama.cpp's comparator).
struct Worse {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

void spm_encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>* out) {
  if (text.empty()) return;
  std::vector<Symbol> syms;
  syms.reserve(text.size());
  for (size_t off = 0; off < text.size();) {
    const size_t n =
        std::min(unicode::sequence_length(static_cast<uint8_t>(text[off])), text.size() - off);
    const int32_t k = static_cast<int32_t>(syms.size());
    syms.push_back({k - 1, off + n == text.size() ? -1 : k + 1, static_cast<uint32_t>(off),
                    static_cast<uint32_t>(n)});
    off += n;
  }
  std::vector<Bigram> heap;
  const auto push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const uint32_t size = syms[left].n + syms[right].n;
    const int32_t id = vocab.find(text.substr(syms[left].begin, size));
    if (id < 0) return;
    heap.push_back({vocab.scores[id], left, right, size});
    std::push_heap(heap.begin(), heap.end(), Worse());
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) push(i - 1, i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), Worse());
    const Bigram b = heap.back();
    heap.pop_back();
    Symbol& l = syms[b.left];
    Symbol& r = syms[b.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    push(l.prev, b.left);
    push(b.left, l.next);
  }
  for (int32_t i = 0; i != -1; i = syms[i].next) {
    const std::string_view piece = text.substr(syms[i].begin, syms[i].n);
    const int32_t id = vocab.find(piece);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    for (char c : piece) {
      const int32_t byte_id = vocab.spm_byte_token[static_cast<uint8_t>(c)];
      if (byte_id >= 0) out->push_back(byte_id);
    }
  }
}

}  // namespace snug::text
