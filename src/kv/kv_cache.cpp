#include "kv/kv_cache.h"

#include <cstring>
#include <optional>
#include <tuple>

#include "base/check.h"

namespace snug::kv {

bool is_kv_type(tensor::DType t) {
  return t == tensor::DType::kF16 || t == tensor::DType::kQ8_0 || t == tensor::DType::kQ4_0;
}

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

Result<KvCache> KvCache::create(const KvLayout& layout, int32_t n_blocks, memory::Ledger* ledger) {
  if (Status st = layout.check(); !st.ok()) return st.error();
  KvCache c;
  c.layout_ = layout;
  SNUG_ASSIGN_OR_RETURN(c.pool_, memory::BlockPool::create(layout.block_bytes(), n_blocks, ledger));
  const auto n = static_cast<size_t>(n_blocks);
  c.refs_.assign(n, 0);
  c.hash_.assign(n, BlockHash{});
  c.published_.assign(n, 0);
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
  seqs_[static_cast<size_t>(id)] = Sequence{};
  seqs_[static_cast<size_t>(id)].live = true;
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
  by_hash_.erase(hash_[i]);
  published_[i] = 0;
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

void KvCache::publish_block(SeqId seq, int32_t index, const BlockHash& hash) {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live && index >= 0 && (index + 1) * layout_.block_tokens <= s.length);
  const int32_t b = s.blocks[static_cast<size_t>(index)];
  if (published_[static_cast<size_t>(b)] || by_hash_.count(hash)) return;
  by_hash_.emplace(hash, b);
  hash_[static_cast<size_t>(b)] = hash;
  published_[static_cast<size_t>(b)] = 1;
}

int32_t KvCache::cached_prefix(std::span<const BlockHash> hashes) const {
  int32_t n = 0;
  for (const BlockHash& h : hashes) {
    if (!by_hash_.count(h)) break;
    ++n;
  }
  return n;
}

int32_t KvCache::attach_cached(SeqId seq, std::span<const BlockHash> hashes) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live && s.length == 0 && s.blocks.empty() && s.pending_from < 0);
  for (const BlockHash& h : hashes) {
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    ref(it->second);
    s.blocks.push_back(it->second);
  }
  s.length = static_cast<int32_t>(s.blocks.size()) * layout_.block_tokens;
  return static_cast<int32_t>(s.blocks.size());
}

void KvCache::clear_prefix_cache() {
  while (lru_head_ >= 0) {
    const int32_t b = lru_head_;
    lru_remove(b);
    unpublish(b);
    pool_.release(b);
  }
  for (auto& [hash, b] : by_hash_) published_[static_cast<size_t>(b)] = 0;
  by_hash_.clear();
}

void KvCache::free_sequence(SeqId seq) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live);
  for (int32_t b : s.blocks) unref(b);
  s = Sequence{};
  free_ids_.push_back(seq);
}

SeqId KvCache::fork(SeqId seq) {
  SeqId id = create_sequence();
  const Sequence& src = seqs_[static_cast<size_t>(seq)];
  Sequence& dst = seqs_[static_cast<size_t>(id)];
  dst.blocks = src.blocks;
  dst.length = src.length;
  for (int32_t b : dst.blocks) ref(b);
  return id;
}

int32_t KvCache::blocks_needed(SeqId seq, int32_t n) const {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  const int32_t bt = layout_.block_tokens;
  int32_t have = static_cast<int32_t>(s.blocks.size());
  int32_t need = (s.length + n + bt - 1) / bt;
  int32_t fresh = need > have ? need - have : 0;
  // A partly filled shared last block must be copied before it is written.
  if (n > 0 && s.length % bt != 0 && refs_[static_cast<size_t>(s.blocks.back())] > 1) ++fresh;
  return fresh;
}

Status KvCache::prepare_append(SeqId seq, int32_t n) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live && n >= 0 && s.pending_from < 0);
  int32_t need = blocks_needed(seq, n);
  if (need > free_blocks())
    return make_error("KV cache is full: ", need, " more blocks needed, ", free_blocks(),
                      " free of ", pool_.n_blocks());
  s.pending_from = static_cast<int32_t>(s.blocks.size());
  const int32_t bt = layout_.block_tokens;
  if (n > 0 && s.length % bt != 0) {
    int32_t& last = s.blocks.back();
    // This sequence alone holds a published block it is about to change
    // (after a truncate): the hash no longer names its contents.
    if (refs_[static_cast<size_t>(last)] == 1) unpublish(last);
    if (refs_[static_cast<size_t>(last)] > 1) {
      int32_t copy = allocate_block();
      std::memcpy(pool_.block(copy), pool_.block(last), pool_.block_bytes());
      unref(last);  // another holder keeps it alive: its count was above 1
      s.pending_replaced = last;
      last = copy;
      refs_[static_cast<size_t>(copy)] = 1;
    }
  }
  int32_t want = (s.length + n + bt - 1) / bt;
  while (static_cast<int32_t>(s.blocks.size()) < want) {
    int32_t b = allocate_block();
    refs_[static_cast<size_t>(b)] = 1;
    s.blocks.push_back(b);
  }
  return ok_status();
}

void KvCache::commit_append(SeqId seq, int32_t n) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.length + n <= static_cast<int32_t>(s.blocks.size()) * layout_.block_tokens);
  s.length += n;
  s.pending_from = s.pending_replaced = -1;
}

void KvCache::cancel_append(SeqId seq) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(s.live);
  if (s.pending_from < 0) return;
  while (static_cast<int32_t>(s.blocks.size()) > s.pending_from) {
    unref(s.blocks.back());
    s.blocks.pop_back();
  }
  if (s.pending_replaced >= 0) {
    // The original's other holders kept it alive, and nothing was written
    // since prepare (the contract), so it still holds this sequence's rows.
    unref(s.blocks.back());
    s.blocks.back() = s.pending_replaced;
    ref(s.pending_replaced);
  }
  s.pending_from = s.pending_replaced = -1;
}

void KvCache::truncate(SeqId seq, int32_t new_length) {
  Sequence& s = seqs_[static_cast<size_t>(seq)];
  SNUG_CHECK(new_length >= 0 && new_length <= s.length);
  s.length = new_length;
  s.pending_from = s.pending_replaced = -1;
  const int32_t bt = layout_.block_tokens;
  size_t keep = static_cast<size_t>((new_length + bt - 1) / bt);
  while (s.blocks.size() > keep) {
    unref(s.blocks.back());
    s.blocks.pop_back();
  }
}

uint64_t KvCache::k_offset(int32_t layer, int32_t kv_head) const {
  const uint64_t bt = static_cast<uint64_t>(layout_.block_tokens);
  const uint64_t kr = layout_.k_row_bytes(), vr = layout_.v_row_bytes();
  const uint64_t heads = static_cast<uint64_t>(layout_.n_kv_heads);
  uint64_t layer_bytes = heads * bt * (kr + vr);
  return static_cast<uint64_t>(layer) * layer_bytes + static_cast<uint64_t>(kv_head) * bt * kr;
}

uint64_t KvCache::v_offset(int32_t layer, int32_t kv_head) const {
  const uint64_t bt = static_cast<uint64_t>(layout_.block_tokens);
  const uint64_t kr = layout_.k_row_bytes(), vr = layout_.v_row_bytes();
  const uint64_t heads = static_cast<uint64_t>(layout_.n_kv_heads);
  uint64_t layer_bytes = heads * bt * (kr + vr);
  return static_cast<uint64_t>(layer) * layer_bytes + heads * bt * kr +
         static_cast<uint64_t>(kv_head) * bt * vr;
}

uint8_t* KvCache::k_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  const int32_t bt = layout_.block_tokens;
  int32_t block = s.blocks[static_cast<size_t>(pos / bt)];
  return pool_.block(block) + k_offset(layer, kv_head) +
         static_cast<uint64_t>(pos % bt) * layout_.k_row_bytes();
}

uint8_t* KvCache::v_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const {
  const Sequence& s = seqs_[static_cast<size_t>(seq)];
  const int32_t bt = layout_.block_tokens;
  int32_t block = s.blocks[static_cast<size_t>(pos / bt)];
  return pool_.block(block) + v_offset(layer, kv_head) +
         static_cast<uint64_t>(pos % bt) * layout_.v_row_bytes();
}

}  // namespace snug::kv
