#include "text/bpe.h"

#include <algorithm>
#include <string>

#include "text/unicode.h"

namespace snug::text {

namespace {

struct Symbol {
  int32_t id;    // token of the symbol's text, -1 when it is not a token
  int32_t prev;  // neighbours in the word, -1 at the ends
  int32_t next;
  uint32_t begin;  // bytes [begin, end) of the word
  uint32_t end;
  bool alive;
};

struct Bigram {
  int32_t rank;
  int32_t left;  // symbol indices
  int32_t right;
  int32_t left_id;  // ids when queued; a mismatch later means the pair is stale
  int32_t right_id;
  int32_t result;
};

// Min-heap order: lower rank first, then the leftmost pair (llama.cpp's comparator).
struct Later {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

class WordEncoder {
 public:
  explicit WordEncoder(const Vocab& v) : v_(v) {}

  void encode(std::string_view word, std::vector<int32_t>* out) {
    if (v_.ignore_merges) {
      std::string mapped = map_bytes(word);
      const int32_t id = v_.find(mapped);
      if (id >= 0) {
        out->push_back(id);
        return;
      }
    }
    syms_.clear();
    heap_.clear();
    for (uint32_t i = 0; i < word.size(); ++i) {
      const int32_t n = static_cast<int32_t>(word.size());
      const int32_t k = static_cast<int32_t>(i);
      syms_.push_back({v_.bpe_byte_token[static_cast<uint8_t>(word[i])], k - 1,
                       k + 1 < n ? k + 1 : -1, i, i + 1, true});
    }
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms_.size()); ++i) push(i, i + 1);
    while (!heap_.empty()) {
      std::pop_heap(heap_.begin(), heap_.end(), Later());
      const Bigram b = heap_.back();
      heap_.pop_back();
      Symbol& l = syms_[b.left];
      Symbol& r = syms_[b.right];
      if (!l.alive || !r.alive || l.id != b.left_id || r.id != b.right_id || l.next != b.right)
        continue;
      l.id = b.result;
      l.end = r.end;
      l.next = r.next;
      r.alive = false;
      if (r.next >= 0) syms_[r.next].prev = b.left;
      push(l.prev, b.left);
      push(b.left, l.next);
    }
    for (int32_t i = 0; i >= 0 && i < static_cast<int32_t>(syms_.size()); i = syms_[i].next) {
      const Symbol& s = syms_[i];
      if (s.id >= 0) {
        out->push_back(s.id);
        continue;
      }
      // Not a token: llama.cpp looks up each byte of the mapped text as a token.
      const std::string mapped = map_bytes(word.substr(s.begin, s.end - s.begin));
      for (char c : mapped) {
        const int32_t id = v_.find(std::string_view(&c, 1));
        if (id >= 0) out->push_back(id);
      }
    }
  }

 private:
  static std::string map_bytes(std::string_view bytes) {
    std::string mapped;
    for (char c : bytes)
      unicode::append_utf8(mapped, unicode::byte_to_cpt(static_cast<uint8_t>(c)));
    return mapped;
  }

  void push(int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t lid = syms_[left].id, rid = syms_[right].id;
    if (lid < 0 || rid < 0) return;
    const Vocab::Merge* m = v_.find_merge(lid, rid);
    if (!m) return;
    heap_.push_back({m->rank, left, right, lid, rid, m->result});
    std::push_heap(heap_.begin(), heap_.end(), Later());
  }

  const Vocab& v_;
  std::vector<Symbol> syms_;
  std::vector<Bigram> heap_;
};

}  // namespace

void bpe_encode(const Vocab& vocab, const PreTokenizer& pre, std::string_view text,
                std::vector<int32_t>* out) {
  Words words;
  pre.split(text, &words);
  WordEncoder enc(vocab);
  uint32_t begin = 0;
  for (uint32_t end : words.ends) {
    enc.encode(std::string_view(words.bytes).substr(begin, end - begin), out);
    begin = end;
  }
}

}  // namespace snug::text
