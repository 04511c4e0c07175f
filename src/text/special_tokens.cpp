#include "text/special_tokens.h"

#include <algorithm>
#include <map>

namespace snug::text {

SpecialTokenMatcher::SpecialTokenMatcher(const Vocab& vocab) : vocab_(&vocab) {
  priority_.assign(vocab.size(), -1);
  // Build with maps, then flatten into sorted edge arrays for compact, fast lookup.
  struct BuildNode {
    std::map<uint8_t, uint32_t> children;
    int32_t token = -1;
  };
  std::vector<BuildNode> build(1);
  for (size_t rank = 0; rank < vocab.special_tokens.size(); ++rank) {
    const int32_t id = vocab.special_tokens[rank];
    priority_[id] = static_cast<int32_t>(rank);
    uint32_t node = 0;
    for (unsigned char c : vocab.text(id)) {
      auto it = build[node].children.find(c);
      if (it == build[node].children.end()) {
        build.push_back({});
        it = build[node].children.emplace(c, static_cast<uint32_t>(build.size() - 1)).first;
      }
      node = it->second;
    }
    build[node].token = id;
  }
  nodes_.resize(build.size());
  for (size_t i = 0; i < build.size(); ++i) {
    nodes_[i].first_edge = static_cast<uint32_t>(edges_.size());
    nodes_[i].n_edges = static_cast<uint16_t>(build[i].children.size());
    nodes_[i].token = build[i].token;
    for (auto [byte, child] : build[i].children) edges_.push_back({byte, child});
  }
}

uint64_t SpecialTokenMatcher::memory_bytes() const {
  return nodes_.capacity() * sizeof(Node) + edges_.capacity() * sizeof(Edge) +
         priority_.capacity() * sizeof(int32_t);
}

std::vector<Fragment> SpecialTokenMatcher::partition(std::string_view text, bool parse_special,
                                                     std::span<const TextSpan> plain) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, 0, text.size()});
  if (vocab_->special_tokens.empty()) return frags;

  const auto eligible = [&](int32_t id) {
    return parse_special || !(vocab_->attrs[id] & (kAttrControl | kAttrUnknown));
  };
  // May token `id` claim bytes [b, e)? Control and unknown tokens may not inside `plain`.
  const auto allowed = [&](int32_t id, size_t b, size_t e) {
    if (plain.empty() || !(vocab_->attrs[id] & (kAttrControl | kAttrUnknown))) return true;
    auto it = std::upper_bound(plain.begin(), plain.end(), b,
                               [](size_t x, const TextSpan& s) { return x < s.end; });
    return it == plain.end() || it->begin >= e;
  };
  // Which special tokens occur anywhere in the text.
  std::vector<int32_t> present;
  std::vector<uint8_t> seen(vocab_->special_tokens.size(), 0);
  for (size_t i = 0; i < text.size(); ++i) {
    uint32_t node = 0;
    for (size_t j = i; j < text.size(); ++j) {
      const Node& n = nodes_[node];
      const Edge* first = edges_.data() + n.first_edge;
      const Edge* last = first + n.n_edges;
      const uint8_t c = static_cast<uint8_t>(text[j]);
      const Edge* e =
          std::lower_bound(first, last, c, [](const Edge& a, uint8_t b) { return a.byte < b; });
      if (e == last || e->byte != c) break;
      node = e->child;
      const int32_t tok = nodes_[node].token;
      if (tok >= 0 && eligible(tok) && !seen[priority_[tok]]) {
        seen[priority_[tok]] = 1;
        present.push_back(tok);
      }
    }
  }
  std::sort(present.begin(), present.end(),
            [&](int32_t a, int32_t b) { return priority_[a] < priority_[b]; });

  std::vector<Fragment> next;
  for (int32_t tok : present) {
    const std::string_view needle = vocab_->text(tok);
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t pos = f.offset;  // start of the text not yet emitted
      size_t from = f.offset;
      const size_t end = f.offset + f.length;
      const std::string_view window = text.substr(0, end);
      while (true) {
        const size_t match = window.find(needle, from);
        if (match == std::string_view::npos) break;
        if (!allowed(tok, match, match + needle.size())) {
          from = match + 1;
          continue;
        }
        if (match > pos) next.push_back({-1, pos, match - pos});
        next.push_back({tok, 0, 0});
        pos = from = match + needle.size();
      }
      if (pos < end) next.push_back({-1, pos, end - pos});
    }
    frags.swap(next);
  }
  return frags;
}

}  // namespace snug::text
