// The paged KV cache. Keys and values live in fixed-size blocks from a
// memory::BlockPool; each sequence owns block tables mapping its positions to
// blocks, so memory grows with the tokens really held, sequences of any length
// share one pool, and a finished sequence returns its blocks at once.
//
// Layer groups: the layers are split into groups of equal size, each group's
// layers sharing one attention span (global, or one sliding-window size), and
// a sequence has one block table per group. A block holds `block_tokens`
// consecutive positions for the layers of one group:
//   [layer in group][k|v][kv_head][token in block][one row: head_dim elements]
// so a head's keys inside a block are contiguous for the attention dot
// products. A model whose layers all attend globally has one group of every
// layer. A sliding-window group holds only the positions its window (plus
// KvLayout::window_slack) still reaches: blocks that fall behind it are
// returned to the pool as the sequence grows, so Gemma 3's five windowed
// layers in six take a few hundred tokens each, not the whole context.
// Keys and values each have their own element type (f16, q8_0 or q4_0;
// llama.cpp's --cache-type-k/-v): a quantized row is head_dim / 32 blocks of
// that GGUF format.
//
// Prefix sharing: fork() gives a new sequence the same blocks with their
// reference counts raised; a write into a block held by several sequences
// first copies it (copy-on-write).
//
// Prefix cache: a full block can be published under a BlockHash (the hash of
// its whole prefix), in each group that still holds it. A published block
// whose last holder lets go is not freed but kept, least recently released
// first, until the pool needs its memory; attach_cached() gives a new
// sequence the published blocks of a prompt's leading hashes (of a windowed
// group, those its window reaches). Cached blocks count as free for admission.
#pragma once

#include <cstdint>
#include <vector>

#include <span>
#include <unordered_map>

#include "base/result.h"
#include "kv/block_hash.h"
#include "memory/block_pool.h"
#include "tensor/dtype.h"

namespace snug::kv {

// Element types the cache stores and attend() reads: f16, q8_0, q4_0.
bool is_kv_type(tensor::DType t);

struct KvLayout {
  int32_t n_layers = 0;
  // Sliding window of each layer: a query at position p attends positions
  // (p - window, p]; 0 attends every earlier position. Empty: all global.
  std::vector<int32_t> layer_window;
  // Positions a windowed group keeps behind its window, so a sequence can be
  // truncated that far back without recomputation (a chat turn whose
  // re-rendered prompt parts from the history a little before its end).
  int32_t window_slack = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
  int32_t block_tokens = 16;
  tensor::DType k_type = tensor::DType::kF16;  // f16, q8_0 or q4_0 (is_kv_type)
  tensor::DType v_type = tensor::DType::kF16;

  // Both K and V in one type (--kv-type).
  void set_type(tensor::DType t) { k_type = v_type = t; }
  // Ok, or a one-line error: a type the cache does not store, a head size
  // that is not a whole number of the type's blocks (32 elements for q8_0 and
  // q4_0), or layer windows that are not one per layer and >= 0.
  Status check() const;

  // Row sizes need check() to have passed.
  uint64_t k_row_bytes() const;  // one head's key for one token
  uint64_t v_row_bytes() const;
  uint64_t bytes_per_token() const;  // all layers, K and V
  // Layers of one group (the layers one block holds).
  int32_t group_layers() const;
  uint64_t block_bytes() const;
  // Window of layer l (0: global).
  int32_t window(int32_t layer) const {
    return layer_window.empty() ? 0 : layer_window[static_cast<size_t>(layer)];
  }
  // Largest number of blocks one sequence holds at once while it grows from
  // empty to n_tokens positions in appends of at most `chunk` positions:
  // every position in a global group, the window (and slack) plus one chunk
  // in a windowed one.
  int64_t sequence_blocks(int64_t n_tokens, int32_t chunk) const;
};

using SeqId = int32_t;

class KvCache {
 public:
  static Result<KvCache> create(const KvLayout& layout, int32_t n_blocks, memory::Ledger* ledger);
  KvCache() = default;

  const KvLayout& layout() const { return layout_; }

  // A new empty sequence (ids of freed sequences are reused).
  SeqId create_sequence();
  // Releases the sequence's blocks (shared ones when their last holder lets go).
  void free_sequence(SeqId seq);
  // A new sequence sharing all of `seq`'s positions (copy-on-write).
  SeqId fork(SeqId seq);

  // Makes positions [length, length + n) writable: allocates blocks and breaks
  // sharing where needed. Fails, allocating nothing, when the pool lacks blocks.
  // Ends with commit_append (the rows were written) or cancel_append; a second
  // prepare_append of the same sequence before either is a programmer error.
  Status prepare_append(SeqId seq, int32_t n);
  // After writing K/V for n new positions.
  void commit_append(SeqId seq, int32_t n);
  // Undoes the pending prepare_append of `seq` exactly: returns the blocks it
  // took and gives back the shared block it copied, reference counted again,
  // so a batch that fails after preparing leaves the cache as it was. Only
  // before any prepared row is written; cancel several sequences' appends
  // latest first. No-op when nothing is pending.
  void cancel_append(SeqId seq);
  // Whether truncate(seq, new_length) keeps what attention needs: every
  // windowed group still holds the positions new_length's window reaches.
  bool can_truncate(SeqId seq, int32_t new_length) const;
  // Drops positions >= new_length (e.g. to roll back a rejected draft); ends a
  // pending prepare_append, keeping whatever blocks it copied. Needs
  // can_truncate (0 always can).
  void truncate(SeqId seq, int32_t new_length);

  // Whether `seq` is a sequence in use: created, not freed (any id, checked).
  bool is_live(SeqId seq) const {
    return seq >= 0 && static_cast<size_t>(seq) < seqs_.size() &&
           seqs_[static_cast<size_t>(seq)].live;
  }

  int32_t length(SeqId seq) const { return seqs_[static_cast<size_t>(seq)].length; }
  // Blocks one prepare_append(seq, n) takes.
  int32_t blocks_needed(SeqId seq, int32_t n) const;
  // Blocks `seq` needs beyond those it holds, at its peak, to grow by n
  // positions in appends of at most `chunk` (for admission decisions; a
  // windowed group gives blocks back as it grows).
  int32_t blocks_to_grow(SeqId seq, int32_t n, int32_t chunk) const;
  // Blocks an append may take: unused ones plus cached ones no sequence holds.
  int32_t free_blocks() const { return pool_.n_free() + n_cached_; }
  int32_t total_blocks() const { return pool_.n_blocks(); }
  // Published blocks no sequence holds, kept for prefix hits (part of free_blocks()).
  int32_t cached_blocks() const { return n_cached_; }

  // Publishes the sequence's block `index`, which must be full and committed,
  // under `hash`, in every group that still holds it. No-op in a group where
  // the block already has a hash or another block is published under this
  // one (the same contents computed twice).
  void publish_block(SeqId seq, int32_t index, const BlockHash& hash);
  // Gives the empty sequence `seq` the published blocks of its longest
  // usable prefix of hashes: k such that every global group has the blocks of
  // hashes[0..k) and every windowed group those its window reaches from
  // position k * block_tokens. Returns k; the sequence's length becomes k
  // full blocks.
  int32_t attach_cached(SeqId seq, std::span<const BlockHash> hashes);
  // The k attach_cached would take.
  int32_t cached_prefix(std::span<const BlockHash> hashes) const;
  // Drops every published block no sequence holds (they become free) and
  // forgets all hashes.
  void clear_prefix_cache();

  // Pointers for one head's row at a position (which must be < length, or
  // prepared, and held by the layer's group). Rows of one head inside a
  // block are contiguous.
  uint8_t* k_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const;
  uint8_t* v_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const;
  int32_t n_groups() const { return static_cast<int32_t>(groups_.size()); }
  int32_t group_of(int32_t layer) const { return layer_group_[static_cast<size_t>(layer)]; }
  // The sequence's block table of one layer group: entry b holds positions
  // [b * block_tokens, (b + 1) * block_tokens); -1 where a windowed group gave
  // the block back.
  const std::vector<int32_t>& block_table(SeqId seq, int32_t group = 0) const {
    return seqs_[static_cast<size_t>(seq)].tables[static_cast<size_t>(group)].blocks;
  }
  // Blocks the sequence holds in all groups.
  int32_t held_blocks(SeqId seq) const;
  uint8_t* block_data(int32_t block) const { return pool_.block(block); }
  uint64_t k_row_bytes() const { return k_row_bytes_; }  // layout().k_row_bytes(), kept
  uint64_t v_row_bytes() const { return v_row_bytes_; }
  // Start of a head's key (value) rows inside a block of the layer's group.
  uint64_t k_offset(int32_t layer, int32_t kv_head) const;
  uint64_t v_offset(int32_t layer, int32_t kv_head) const;

  uint64_t bytes() const { return pool_.bytes(); }
  // Makes the block pool resident now instead of block by block (memory::Buffer::commit).
  Status commit() { return pool_.commit(); }

 private:
  struct Group {
    int32_t window = 0;                                            // 0: global
    std::unordered_map<BlockHash, int32_t, BlockHashKey> by_hash;  // published blocks
  };
  struct Table {
    std::vector<int32_t> blocks;
    int32_t first = 0;  // entries before it were given back (windowed groups)
    // A prepare_append not yet committed or cancelled: the table's size before
    // it (-1: none pending), and the shared block it replaced by a copy (-1: none).
    int32_t pending_from = -1;
    int32_t pending_replaced = -1;
  };
  struct Sequence {
    std::vector<Table> tables;  // one per group
    int32_t length = 0;
    bool live = false;
    bool pending = false;
  };
  bool needs_copy(const Table& t, int32_t length, int32_t n) const;
  // Blocks of table `t` one append of n positions to a sequence of `length` takes.
  int32_t append_blocks(const Table& t, int32_t length, int32_t n) const;
  // First table entry a windowed group still needs at a length (its window's start).
  int32_t window_first(int32_t window, int32_t length, int32_t slack) const;
  // Gives back the blocks of windowed groups that the sequence's window passed.
  void slide(Sequence& s);
  // Leading blocks of hashes a group has published from entry `from` on, all of them.
  bool group_holds(const Group& g, std::span<const BlockHash> hashes, int32_t from,
                   int32_t to) const;
  void ref(int32_t block);
  void unref(int32_t block);
  int32_t allocate_block();  // a free block, else the least recently cached one
  void unpublish(int32_t block);
  void lru_push(int32_t block);
  void lru_remove(int32_t block);

  KvLayout layout_;
  memory::BlockPool pool_;
  std::vector<Group> groups_;
  std::vector<int32_t> layer_group_, layer_slot_;  // per layer: its group, its index there
  uint64_t layer_bytes_ = 0;                       // one layer's rows in a block
  // One head's row of K and of V (layout_.k_row_bytes(), v_row_bytes(), which
  // divide): every row address and every attention call's offsets take them.
  uint64_t k_row_bytes_ = 0, v_row_bytes_ = 0;
  std::vector<int32_t> refs_;  // per block
  // Prefix cache: the hash and group of each published block.
  std::vector<BlockHash> hash_;
  std::vector<uint8_t> published_;   // per block
  std::vector<int32_t> hash_group_;  // per published block
  // Published blocks with no holder, least recently released at the head:
  // an intrusive list over block ids (-1 ends it).
  std::vector<int32_t> lru_prev_, lru_next_;
  int32_t lru_head_ = -1, lru_tail_ = -1;
  int32_t n_cached_ = 0;
  std::vector<Sequence> seqs_;
  std::vector<SeqId> free_ids_;
};

}  // namespace snug::kv
