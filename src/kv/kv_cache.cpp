#include "kv/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <tuple>

#include "base/check.h"

namespace snug::kv {

bool is_kv_type(tensor::DType t) {
  return t == tensor::DType::kF16 || t == tensor::DType::kQ8_0 || t == tensor::DType::kQ4_0;
}

namespace {

// The layer groups of a layout: layers of one window form a class; every
// class is cut, in layer order, into groups of the largest size dividing
// every class's (so one block size serves them all).
struct Groups {
  int32_t layers = 0;                // per group
  std::vector<int32_t> window;       // per group
  std::vector<int32_t> layer_group;  // per layer
  std::vector<int32_t> layer_slot;   // per layer: its index inside its group
};

Groups make_groups(const KvLayout& l) {
  std::vector<int32_t> windows;  // distinct, in order of first use
  std::vector<int32_t> sizes;
  for (int32_t i = 0; i < l.n_layers; ++i) {
    const auto it = std::find(windows.begin(), windows.end(), l.window(i));
    if (it == windows.end()) {
      windows.push_back(l.window(i));
      sizes.push_back(1);
    } else {
      ++sizes[static_cast<size_t>(it - windows.begin())];
    }
  }
  Groups g;
  for (int32_t n : sizes) g.layers = std::gcd(g.layers, n);
  g.layer_group.assign(static_cast<size_t>(l.n_layers), 0);
  g.layer_slot.assign(static_cast<size_t>(l.n_layers), 0);
  for (size_t c = 0; c < windows.size(); ++c) {
    int32_t seen = 0;
    int32_t first_group = static_cast<int32_t>(g.window.size());
    for (int32_t j = 0; j < sizes[c] / std::max(g.layers, 1); ++j) g.window.push_back(windows[c]);
    for (int32_t i = 0; i < l.n_layers; ++i) {
      if (l.window(i) != windows[c]) continue;
      g.layer_group[static_cast<size_t>(i)] = first_group + seen / g.layers;
      g.layer_slot[static_cast<size_t>(i)] = seen % g.layers;
      ++seen;
    }
  }
  return g;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Most blocks a windowed group holds while appending `chunk` positions: the
// w - 1 positions behind the first new one that its window reaches, the
// slack, and the chunk, at the worst alignment to blocks.
int64_t window_blocks(int32_t w, int32_t slack, int64_t chunk, int32_t block_tokens) {
  return ceil_div(int64_t{w} - 1 + slack + chunk + block_tokens - 1, block_tokens);
}

}  // namespace

Status KvLayout::check() const {
  for (auto [what, t, dim] : {std::tuple{"K", k_type, head_dim_k}, {"V", v_type, head_dim_v}}) {
    if (!is_kv_type(t))
      return make_error(what, " cache type ", tensor::dtype_name(t),
                        " is not stored by the KV cache (f16, q8_0 or q4_0)");
    if (dim <= 0 || !tensor::row_bytes(t, dim))
      return make_error(what, " cache type ", tensor::dtype_name(t),
                        " needs a head size that is a multiple of ", tensor::info(t).block_size,
                        ", but the model's is ", dim, " (use f16)");
  }
  if (!layer_window.empty() && layer_window.size() != static_cast<size_t>(n_layers))
    return make_error("KV layout has ", layer_window.size(), " layer windows for ", n_layers,
                      " layers");
  for (int32_t w : layer_window) {
    if (w < 0) return make_error("KV layout: a layer window of ", w, " positions");
  }
  if (window_slack < 0) return make_error("KV layout: a window slack of ", window_slack);
  return ok_status();
}

uint64_t KvLayout::k_row_bytes() const {
  return *tensor::row_bytes(k_type, head_dim_k);
}
uint64_t KvLayout::v_row_bytes() const {
  return *tensor::row_bytes(v_type, head_dim_v);
}
uint64_t KvLayout::bytes_per_token() const {
  return static_cast<uint64_t>(n_layers) * static_cast<uint64_t>(n_kv_heads) *
         (k_row_bytes() + v_row_bytes());
}

int32_t KvLayout::group_layers() const {
  return make_groups(*this).layers;
}

uint64_t KvLayout::block_bytes() const {
  return static_cast<uint64_t>(group_layers()) * static_cast<uint64_t>(n_kv_heads) *
         (k_row_bytes() + v_row_bytes()) * static_cast<uint64_t>(block_tokens);
}

int64_t KvLayout::sequence_blocks(int64_t n_tokens, int32_t chunk) const {
  const Groups g = make_groups(*this);
  const int64_t all = ceil_div(n_tokens, block_tokens);
  const int64_t c = std::clamp<int64_t>(chunk, 1, std::max<int64_t>(n_tokens, 1));
  int64_t total = 0;
  for (int32_t w : g.window) {
    total += w == 0 ? all : std::min(all, window_blocks(w, window_slack, c, block_tokens));
  }
  return total;
}

Result<KvCache> KvCache::create(const KvLayout& layout, int32_t n_blocks, memory::Ledger* ledger) {
  if (Status st = layout.check(); !st.ok()) return st.error();
  KvCache c;
  c.layout_ = layout;
  SNUG_ASSIGN_OR_RETURN(c.pool_, memory::BlockPool::create(layout.block_bytes(), n_blocks, ledger));
  Groups g = make_groups(layout);
  for (int32_t w : g.window) c.groups_.push_back(Group{w, {}});
  c.layer_group_ = std::move(g.layer_group);
  c.layer_slot_ = std::move(g.layer_slot);
  c.k_row_bytes_ = layout.k_row_bytes();
  c.v_row_bytes_ = layout.v_row_bytes();
  c.layer_bytes_ = static_cast<uint64_t>(layout.n_kv_heads) *
                   static_cast<uint64_t>(layout.block_tokens) * (c.k_row_bytes_ + c.v_row_bytes_);
  const auto n = static_cast<size_t>(n_blocks);
  c.refs_.assign(n, 0);
  c.hash_.assign(n, BlockHash{});
  c.published_.assign(n, 0);
  c.hash_group_.assign(n, -1);
  c.lru_prev_.assign(n, -1);
  c.lru_next_.assign(n, -1);
  return c;
}

SeqId KvCache::create_sequence() {
  SeqId id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = static_cast<SeqId>(seqs_.size());
    seqs_.emplace_back();
  }
  Sequence& s = seqs_[static_cast<size_t>(id)];
  s = Sequence{};
  s.tables.resize(groups_.size());
  s.live = true;
  return id;
}

void KvCache::lru_push(int32_t b) {
  const auto i = static_cast<size_t>(b);
  lru_prev_[i] = lru_tail_;
  lru_next_[i] = -1;
  if (lru_tail_ >= 0) {
    lru_next_[static_cast<size_t>(lru_tail_)] = b;
  } else {
    lru_head_ = b;
  }
  lru_tail_ = b;
  ++n_cached_;
}

void KvCache::lru_remove(int32_t b) {
  const auto i = static_cast<size_t>(b);
  const int32_t p = lru_prev_[i], n = lru_next_[i];
  if (p >= 0) {
    lru_next_[static_cast<size_t>(p)] = n;
  } else {
    lru_head_ = n;
  }
  if (n >= 0) {
    lru_prev_[static_cast<size_t>(n)] = p;
  } else {
    lru_tail_ = p;
  }
  lru_prev_[i] = lru_next_[i] = -1;
  --n_cached_;
}

void KvCache::unpublish(int32_t b) {
  const auto i = static_cast<size_t>(b);
  if (!published_[i]) return;
  groups_[static_cast<size_t>(hash_group_[i])].by_hash.erase(hash_[i]);
  published_[i] = 0;
  hash_group_[i] = -1;
}

void KvCache::ref(int32_t block) {
  // A block with no holder is either free (never referenced again) or cached.
  if (refs_[static_cast<size_t>(block)]++ == 0) {
    SNUG_CHECK(published_[static_cast<size_t>(block)]);
    lru_remove(block);
  }
}

void KvCache::unref(int32_t block) {
  if (--refs_[static_cast<size_t>(block)] > 0) return;
  if (published_[static_cast<size_t>(block)]) {
    lru_push(block);
  } else {
    pool_.release(block);
  }
}

int32_t KvCache::allocate_block() {
  if (std::optional<int32_t> b = pool_.allocate()) return *b;
  const int32_t b = lru_head_;
  SNUG_CHECK(b >= 0);
  lru_remove(b);
  unpublish(b);
  return b;
}

int32_t KvCache::window_first(int32_t window, int32_t length, int32_t slack) const {
  if (window == 0) return 0;
  return std::max(0, length - window + 1 - slack) / layout_.block_tokens;
}

void KvCache::slide(Sequence& s) {
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (groups_[g].window == 0) continue;
    Table& t = s.tables[g];
    const int32_t to = std::min(window_first(groups_[g].window, s.length, layout_.window_slack),
                                static_cast<int32_t>(t.blocks.size()));
    for (; t.first < to; ++t.first) {
      int32_t& b = t.blocks[static_cast<size_t>(t.first)];
      unref(b);
      b = -1;
    }
  }
}

void KvCache::publish_block(SeqId seq, int32_t index, const BlockHash& hash) {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live && index >= 0 && (index + 1) * layout_.block_tokens <= s.length);
  for (size_t g = 0; g < groups_.size(); ++g) {
    const Table& t = s.tables[g];
    if (index < t.first) continue;  // given back by a windowed group
    const int32_t b = t.blocks[static_cast<size_t>(index)];
    auto& by_hash = groups_[g].by_hash;
    if (published_[static_cast<size_t>(b)] || by_hash.count(hash)) continue;
    by_hash.emplace(hash, b);
    hash_[static_cast<size_t>(b)] = hash;
    hash_group_[static_cast<size_t>(b)] = static_cast<int32_t>(g);
    published_[static_cast<size_t>(b)] = 1;
  }
}

bool KvCache::group_holds(const Group& g, std::span<const BlockHash> hashes, int32_t from,
                          int32_t to) const {
  for (int32_t i = from; i < to; ++i) {
    if (!g.by_hash.count(hashes[static_cast<size_t>(i)])) return false;
  }
  return true;
}

int32_t KvCache::cached_prefix(std::span<const BlockHash> hashes) const {
  // Global groups need every block of the prefix: the shortest run of
  // leading hashes any of them has published bounds it.
  auto k = static_cast<int32_t>(hashes.size());
  for (const Group& g : groups_) {
    if (g.window != 0) continue;
    int32_t n = 0;
    while (n < k && g.by_hash.count(hashes[static_cast<size_t>(n)])) ++n;
    k = n;
  }
  // Windowed groups need the blocks the next position's window reaches.
  for (; k > 0; --k) {
    bool all = true;
    for (const Group& g : groups_) {
      if (g.window != 0 &&
          !group_holds(g, hashes, window_first(g.window, k * layout_.block_tokens, 0), k)) {
        all = false;
        break;
      }
    }
    if (all) break;
  }
  return k;
}

int32_t KvCache::attach_cached(SeqId seq, std::span<const BlockHash> hashes) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live && s.length == 0 && !s.pending);
  const int32_t k = cached_prefix(hashes);
  for (size_t g = 0; g < groups_.size(); ++g) {
    Table& t = s.tables[g];
    SNUG_CHECK(t.blocks.empty());
    t.first = window_first(groups_[g].window, k * layout_.block_tokens, 0);
    t.blocks.assign(static_cast<size_t>(t.first), -1);
    for (int32_t i = t.first; i < k; ++i) {
      const int32_t b = groups_[g].by_hash.at(hashes[static_cast<size_t>(i)]);
      ref(b);
      t.blocks.push_back(b);
    }
  }
  s.length = k * layout_.block_tokens;
  return k;
}

void KvCache::clear_prefix_cache() {
  while (lru_head_ >= 0) {
    const int32_t b = lru_head_;
    lru_remove(b);
    unpublish(b);
    pool_.release(b);
  }
  for (Group& g : groups_) {
    for (auto& [hash, b] : g.by_hash) {
      published_[static_cast<size_t>(b)] = 0;
      hash_group_[static_cast<size_t>(b)] = -1;
    }
    g.by_hash.clear();
  }
}

void KvCache::free_sequence(SeqId seq) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live);
  for (Table& t : s.tables) {
    for (size_t i = static_cast<size_t>(t.first); i < t.blocks.size(); ++i) unref(t.blocks[i]);
  }
  s = Sequence{};
  free_ids_.push_back(seq);
}

SeqId KvCache::fork(SeqId seq) {
  SeqId id = create_sequence();
  const Sequence& src = seqs_[static_cast<size_t>(seq)];
  Sequence& dst = seqs_[static_cast<size_t>(id)];
  dst.length = src.length;
  for (size_t g = 0; g < groups_.size(); ++g) {
    Table& t = dst.tables[g];
    t.blocks = src.tables[g].blocks;
    t.first = src.tables[g].first;
    for (size_t i = static_cast<size_t>(t.first); i < t.blocks.size(); ++i) ref(t.blocks[i]);
  }
  return id;
}

int32_t KvCache::held_blocks(SeqId seq) const {
  int32_t n = 0;
  for (const Table& t : seqs_[static_cast<size_t>(seq)].tables)
    n += static_cast<int32_t>(t.blocks.size()) - t.first;
  return n;
}

bool KvCache::needs_copy(const Table& t, int32_t length, int32_t n) const {
  // A partly filled shared last block must be copied before it is written.
  return n > 0 && length % layout_.block_tokens != 0 &&
         refs_[static_cast<size_t>(t.blocks.back())] > 1;
}

int32_t KvCache::append_blocks(const Table& t, int32_t length, int32_t n) const {
  const int32_t bt = layout_.block_tokens;
  const int32_t want = (length + n + bt - 1) / bt;
  const auto have = static_cast<int32_t>(t.blocks.size());
  return (want > have ? want - have : 0) + (needs_copy(t, length, n) ? 1 : 0);
}

int32_t KvCache::blocks_needed(SeqId seq, int32_t n) const {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  int32_t need = 0;
  for (const Table& t : s.tables) need += append_blocks(t, s.length, n);
  return need;
}

int32_t KvCache::blocks_to_grow(SeqId seq, int32_t n, int32_t chunk) const {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  const int32_t bt = layout_.block_tokens;
  const int64_t c = std::clamp(chunk, 1, std::max(n, 1));
  int64_t need = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const Table& t = s.tables[g];
    const int32_t w = groups_[g].window;
    if (w == 0) {
      need += append_blocks(t, s.length, n);
      continue;
    }
    // Held now: entries [first, size). At its peak the group holds the
    // window, the slack and one chunk, or everything up to the end if less.
    const int64_t held = static_cast<int64_t>(t.blocks.size()) - t.first;
    const int64_t span = ceil_div(int64_t{s.length} + n, bt) - t.first;
    const int64_t peak = std::min(span, window_blocks(w, layout_.window_slack, c, bt));
    need += std::max<int64_t>(0, peak - held) + (needs_copy(t, s.length, n) ? 1 : 0);
  }
  return static_cast<int32_t>(std::min<int64_t>(need, INT32_MAX));
}

Status KvCache::prepare_append(SeqId seq, int32_t n) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live && n >= 0 && !s.pending);
  int32_t need = blocks_needed(seq, n);
  if (need > free_blocks())
    return make_error("KV cache is full: ", need, " more blocks needed, ", free_blocks(),
                      " free of ", pool_.n_blocks());
  s.pending = true;
  const int32_t bt = layout_.block_tokens;
  const int32_t want = (s.length + n + bt - 1) / bt;
  for (Table& t : s.tables) {
    t.pending_from = static_cast<int32_t>(t.blocks.size());
    if (n > 0 && s.length % bt != 0) {
      int32_t& last = t.blocks.back();
      // This sequence alone holds a published block it is about to change
      // (after a truncate): the hash no longer names its contents.
      if (refs_[static_cast<size_t>(last)] == 1) unpublish(last);
      if (refs_[static_cast<size_t>(last)] > 1) {
        int32_t copy = allocate_block();
        std::memcpy(pool_.block(copy), pool_.block(last), pool_.block_bytes());
        unref(last);  // another holder keeps it alive: its count was above 1
        t.pending_replaced = last;
        last = copy;
        refs_[static_cast<size_t>(copy)] = 1;
      }
    }
    while (static_cast<int32_t>(t.blocks.size()) < want) {
      int32_t b = allocate_block();
      refs_[static_cast<size_t>(b)] = 1;
      t.blocks.push_back(b);
    }
  }
  return ok_status();
}

void KvCache::commit_append(SeqId seq, int32_t n) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  for (Table& t : s.tables) {
    SNUG_CHECK(s.length + n <= static_cast<int32_t>(t.blocks.size()) * layout_.block_tokens);
    t.pending_from = t.pending_replaced = -1;
  }
  s.length += n;
  s.pending = false;
  slide(s);
}

void KvCache::cancel_append(SeqId seq) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live);
  if (!s.pending) return;
  for (auto t = s.tables.rbegin(); t != s.tables.rend(); ++t) {
    while (static_cast<int32_t>(t->blocks.size()) > t->pending_from) {
      unref(t->blocks.back());
      t->blocks.pop_back();
    }
    if (t->pending_replaced >= 0) {
      // The original's other holders kept it alive, and nothing was written
      // since prepare (the contract), so it still holds this sequence's rows.
      unref(t->blocks.back());
      t->blocks.back() = t->pending_replaced;
      ref(t->pending_replaced);
    }
    t->pending_from = t->pending_replaced = -1;
  }
  s.pending = false;
}

bool KvCache::can_truncate(SeqId seq, int32_t new_length) const {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  if (new_length < 0 || new_length > s.length) return false;
  if (new_length == 0) return true;
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (s.tables[g].first > window_first(groups_[g].window, new_length, 0)) return false;
  }
  return true;
}

void KvCache::truncate(SeqId seq, int32_t new_length) {
  SNUG_CHECK(can_truncate(seq, new_length));
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  s.length = new_length;
  s.pending = false;
  const int32_t bt = layout_.block_tokens;
  const auto keep = static_cast<size_t>((new_length + bt - 1) / bt);
  for (Table& t : s.tables) {
    t.pending_from = t.pending_replaced = -1;
    while (t.blocks.size() > keep) {
      if (static_cast<int32_t>(t.blocks.size()) > t.first) unref(t.blocks.back());
      t.blocks.pop_back();
    }
    t.first = std::min(t.first, static_cast<int32_t>(t.blocks.size()));
  }
}

uint64_t KvCache::k_offset(int32_t layer, int32_t kv_head) const {
  const uint64_t bt = static_cast<uint64_t>(layout_.block_tokens);
  return static_cast<uint64_t>(layer_slot_[static_cast<size_t>(layer)]) * layer_bytes_ +
         static_cast<uint64_t>(kv_head) * bt * k_row_bytes_;
}

uint64_t KvCache::v_offset(int32_t layer, int32_t kv_head) const {
  const uint64_t bt = static_cast<uint64_t>(layout_.block_tokens);
  const uint64_t heads = static_cast<uint64_t>(layout_.n_kv_heads);
  return static_cast<uint64_t>(layer_slot_[static_cast<size_t>(layer)]) * layer_bytes_ +
         heads * bt * k_row_bytes_ + static_cast<uint64_t>(kv_head) * bt * v_row_bytes_;
}

uint8_t* KvCache::k_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const {
  const Table& t = seqs_[static_cast<size_t>(seq)].tables[static_cast<size_t>(group_of(layer))];
  const int32_t bt = layout_.block_tokens;
  const int32_t block = t.blocks[static_cast<size_t>(pos / bt)];
  SNUG_DCHECK(block >= 0);
  return pool_.block(block) + k_offset(layer, kv_head) +
         static_cast<uint64_t>(pos % bt) * k_row_bytes_;
}

uint8_t* KvCache::v_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const {
  const Table& t = seqs_[static_cast<size_t>(seq)].tables[static_cast<size_t>(group_of(layer))];
  const int32_t bt = layout_.block_tokens;
  const int32_t block = t.blocks[static_cast<size_t>(pos / bt)];
  SNUG_DCHECK(block >= 0);
  return pool_.block(block) + v_offset(layer, kv_head) +
         static_cast<uint64_t>(pos % bt) * v_row_bytes_;
}

}  // namespace snug::kv
