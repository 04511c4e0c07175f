// The paged KV cache. Keys and values live in fixed-size blocks from a
// memory::BlockPool; each sequence owns a block table mapping its positions to
// blocks, so memory grows with the tokens really held, sequences of any length
// share one pool, and a finished sequence returns its blocks at once.
//
// A block holds `block_tokens` consecutive positions for every layer:
//   [layer][k|v][kv_head][token in block][one row: head_dim elements of k_type or v_type]
// so one block table serves all layers, and a head's keys inside a block are
// contiguous for the attention dot products. Keys and values each have their
// own element type (f16, q8_0 or q4_0; llama.cpp's --cache-type-k/-v): a
// quantized row is head_dim / 32 blocks of that GGUF format.
//
// Prefix sharing: fork() gives a new sequence the same blocks with their
// reference counts raised; a write into a block held by several sequences
// first copies it (copy-on-write).
//
// Prefix cache: a full block can be published under a BlockHash (the hash of
// its whole prefix). A published block whose last holder lets go is not
// freed but kept, least recently released first, until the pool needs its
// memory; attach_cached() gives a new sequence the published blocks of a
// prompt's leading hashes. Cached blocks count as free for admission.
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
  int32_t n_kv_heads = 0;
  int32_t head_dim_k = 0;
  int32_t head_dim_v = 0;
  int32_t block_tokens = 16;
  tensor::DType k_type = tensor::DType::kF16;  // f16, q8_0 or q4_0 (is_kv_type)
  tensor::DType v_type = tensor::DType::kF16;

  // Both K and V in one type (--kv-type).
  void set_type(tensor::DType t) { k_type = v_type = t; }
  // Ok, or a one-line error: a type the cache does not store, or a head size
  // that is not a whole number of the type's blocks (32 elements for q8_0 and q4_0).
  Status check() const;

  // Row sizes need check() to have passed.
  uint64_t k_row_bytes() const;  // one head's key for one token
  uint64_t v_row_bytes() const;
  uint64_t bytes_per_token() const;  // all layers, K and V
  uint64_t block_bytes() const { return bytes_per_token() * static_cast<uint64_t>(block_tokens); }
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
  // Drops positions >= new_length (e.g. to roll back a rejected draft); ends a
  // pending prepare_append, keeping whatever blocks it copied.
  void truncate(SeqId seq, int32_t new_length);

  // Whether `seq` is a sequence in use: created, not freed (any id, checked).
  bool is_live(SeqId seq) const {
    return seq >= 0 && static_cast<size_t>(seq) < seqs_.size() &&
           seqs_[static_cast<size_t>(seq)].live;
  }

  int32_t length(SeqId seq) const { return seqs_[static_cast<size_t>(seq)].length; }
  // Blocks needed to hold n more tokens of `seq` (for admission decisions).
  int32_t blocks_needed(SeqId seq, int32_t n) const;
  // Blocks an append may take: unused ones plus cached ones no sequence holds.
  int32_t free_blocks() const { return pool_.n_free() + n_cached_; }
  int32_t total_blocks() const { return pool_.n_blocks(); }
  // Published blocks no sequence holds, kept for prefix hits (part of free_blocks()).
  int32_t cached_blocks() const { return n_cached_; }

  // Publishes the sequence's block `index`, which must be full and committed,
  // under `hash`. No-op when the block already has a hash or another block is
  // published under this one (the same contents computed twice).
  void publish_block(SeqId seq, int32_t index, const BlockHash& hash);
  // Gives the empty sequence `seq` the published blocks of hashes[0], [1], ...
  // up to the first that is not published; returns how many. The sequence's
  // length becomes that many full blocks.
  int32_t attach_cached(SeqId seq, std::span<const BlockHash> hashes);
  // How many leading hashes are published (what attach_cached would take).
  int32_t cached_prefix(std::span<const BlockHash> hashes) const;
  // Drops every published block no sequence holds (they become free) and
  // forgets all hashes.
  void clear_prefix_cache();

  // Pointers for one head's row at a position (which must be < length, or
  // prepared). Rows of one head inside a block are contiguous.
  uint8_t* k_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const;
  uint8_t* v_row(SeqId seq, int32_t layer, int32_t kv_head, int32_t pos) const;
  // Block `b` of the sequence's table, and the block-relative offsets of a head's rows.
  const std::vector<int32_t>& block_table(SeqId seq) const {
    return seqs_[static_cast<size_t>(seq)].blocks;
  }
  uint8_t* block_data(int32_t block) const { return pool_.block(block); }
  uint64_t k_offset(int32_t layer,
                    int32_t kv_head) const;  // start of this head's key rows in a block
  uint64_t v_offset(int32_t layer, int32_t kv_head) const;

  uint64_t bytes() const { return pool_.bytes(); }
  // Makes the block pool resident now instead of block by block (memory::Buffer::commit).
  Status commit() { return pool_.commit(); }

 private:
  struct Sequence {
    std::vector<int32_t> blocks;
    int32_t length = 0;
    bool live = false;
    // A prepare_append not yet committed or cancelled: the table's size before
    // it (-1: none pending), and the shared block it replaced by a copy (-1: none).
    int32_t pending_from = -1;
    int32_t pending_replaced = -1;
  };
  void ref(int32_t block);
  void unref(int32_t block);
  int32_t allocate_block();  // a free block, else the least recently cached one
  void unpublish(int32_t block);
  void lru_push(int32_t block);
  void lru_remove(int32_t block);

  KvLayout layout_;
  memory::BlockPool pool_;
  std::vector<int32_t> refs_;  // per block
  // Prefix cache: hash of each published block, and the published blocks by hash.
  std::vector<BlockHash> hash_;
  std::vector<uint8_t> published_;  // per block
  std::unordered_map<BlockHash, int32_t, BlockHashKey> by_hash_;
  // Published blocks with no holder, least recently released at the head:
  // an intrusive list over block ids (-1 ends it).
  std::vector<int32_t> lru_prev_, lru_next_;
  int32_t lru_head_ = -1, lru_tail_ = -1;
  int32_t n_cached_ = 0;
  std::vector<Sequence> seqs_;
  std::vector<SeqId> free_ids_;
};

}  // namespace snug::kv
