#include "model/model.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include <unistd.h>

namespace snug::model {

int32_t Batch::n_logits() const {
  return static_cast<int32_t>(std::count(want_logits.begin(), want_logits.end(), 1));
}

Result<std::unique_ptr<Model>> Model::load(const std::string& path, memory::Ledger* ledger) {
  SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(path));
  return from_file(std::move(file), ledger);
}

Result<std::unique_ptr<Model>> Model::from_file(gguf::File file, memory::Ledger* ledger) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(file);
  SNUG_ASSIGN_OR_RETURN(m->config_, read_config(m->file_));
  SNUG_ASSIGN_OR_RETURN(m->weights_, bind_weights(m->file_, m->config_));
  m->mapped_charge_ = memory::Charge(ledger, memory::Category::kWeightsMapped, m->weights_.bytes);
  // Every pass streams the weights: 2 MiB pages where the kernel gives them
  // (MappedFile::advise_huge_pages; SmolLM2 on Zen 4, one stream ~8% faster,
  // sixteen 2-5%, than over the 4 KiB folios a first read made without it). An
  // untied embedding table is only looked up, a row at a time: 4 KiB pages
  // there, or a lookup would map 2 MiB of it, against the plan's RSS.
  if (const MappedFile* map = m->file_.mapping()) {
    map->advise_huge_pages(m->file_.data_offset(), map->size());
    const Weights& w = m->weights_;
    if (w.token_embd.data != nullptr && w.token_embd.data != w.output.data) {
      const ByteRange embd = m->file_range(w.token_embd, w.token_embd.rows);
      map->advise_small_pages(embd.begin, embd.end - embd.begin);
    }
  }
  return m;
}

namespace {

// fn(matrix) for each matrix a packed form may serve: the layers' projections
// and the output (a tied embedding table through it).
template <class W, class Fn>
void for_each_product_matrix(W& weights, Fn&& fn) {
  for (auto& L : weights.layers) {
    for (auto* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down}) fn(*v);
  }
  fn(weights.output);
}

}  // namespace

std::vector<std::pair<tensor::MatView*, uint64_t>> Model::packable() {
  std::vector<std::pair<tensor::MatView*, uint64_t>> todo;
  for_each_product_matrix(weights_, [&](tensor::MatView& v) {
    const int64_t n = v.packed == nullptr ? tensor::matmul_packed_bytes(v) : 0;
    if (n > 0) todo.emplace_back(&v, static_cast<uint64_t>(n));
  });
  return todo;
}

uint64_t Model::unpacked_packable_bytes() const {
  uint64_t bytes = 0;
  for_each_product_matrix(weights_, [&](const tensor::MatView& v) {
    if (v.packed == nullptr) bytes += static_cast<uint64_t>(tensor::matmul_packed_bytes(v));
  });
  return bytes;
}

namespace {

// Packs v a slice of rows at a time (matmul_pack_slice_rows): emit(part, at)
// gets each slice's rows and where its packed bytes start within the packed
// matrix. Once a slice is emitted, its pages of the mapped file `map` (null:
// none) are let go, with the page it shares with the slice before, so that
// packing holds one slice twice, not one matrix (Gemma 3's output is 170 MiB).
template <class Emit>
Status pack_by_slices(const tensor::MatView& v, const MappedFile* map, Emit&& emit) {
  const int64_t rows = tensor::matmul_packed_rows(v), step = tensor::matmul_pack_slice_rows(v);
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t start =
      map != nullptr ? static_cast<uint64_t>(static_cast<const uint8_t*>(v.data) - map->data()) : 0;
  uint64_t from = start;  // the file's bytes not yet let go
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    tensor::MatView head = v, part = v;
    head.rows = r0;
    part.rows = std::min(step, rows - r0);
    part.data = static_cast<const uint8_t*>(v.data) + r0 * static_cast<int64_t>(v.row_bytes);
    SNUG_RETURN_IF_ERROR(emit(part, static_cast<uint64_t>(tensor::matmul_packed_bytes(head))));
    if (map != nullptr) {
      const uint64_t end = start + static_cast<uint64_t>(r0 + part.rows) * v.row_bytes;
      map->release(from, end - from);
      from = std::max(from, end / page * page);
    }
  }
  return ok_status();
}

}  // namespace

ByteRange Model::file_range(const tensor::MatView& v, int64_t rows) const {
  const auto begin =
      static_cast<uint64_t>(static_cast<const uint8_t*>(v.data) - file_.mapping()->data());
  return {begin, begin + static_cast<uint64_t>(rows) * v.row_bytes};
}

PackedPages Model::packed_pages_of(
    const std::vector<std::pair<tensor::MatView*, uint64_t>>& todo) const {
  std::vector<ByteRange> packed;
  packed.reserve(todo.size());
  for (const auto& entry : todo) {
    packed.push_back(file_range(*entry.first, tensor::matmul_packed_rows(*entry.first)));
  }
  return packed_pages(file_, weights_.tensors, std::move(packed),
                      static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));
}

Result<uint64_t> Model::repack(memory::Ledger* ledger) {
  // The matrices still to pack with their sizes, and one buffer for all of
  // them (each at a 64-byte offset), on huge pages where the kernel has
  // them: the products stream it, and 4 KiB pages cost a TLB miss each.
  const std::vector<std::pair<tensor::MatView*, uint64_t>> todo = packable();
  if (todo.empty()) return resident_charge_.bytes();
  uint64_t total = 0;
  for (const auto& entry : todo) total += (entry.second + 63) / 64 * 64;
  SNUG_ASSIGN_OR_RETURN(
      memory::Buffer buf,
      memory::Buffer::allocate(total, nullptr, memory::Category::kWeightsResident));
  buf.advise_huge_pages();
  const MappedFile* map = file_.mapping();
  if (map != nullptr) map->advise_small_pages();
  uint64_t packed = resident_charge_.bytes(), released = 0, at = 0;
  for (auto [v, bytes] : todo) {
    SNUG_RETURN_IF_ERROR(pack_by_slices(*v, map, [&](const tensor::MatView& part, uint64_t off) {
      tensor::matmul_pack(part, buf.data() + at + off);
      return ok_status();
    }));
    v->packed = buf.data() + at;
    at += (bytes + 63) / 64 * 64;
    packed += bytes;
    released += static_cast<uint64_t>(tensor::matmul_packed_rows(*v)) * v->row_bytes;
  }
  // Pages two packed neighbours share were each kept by one matrix's slices.
  if (map != nullptr) {
    for (const ByteRange& r : packed_pages_of(todo).released)
      map->release(r.begin, r.end - r.begin);
  }
  packed_.push_back(std::move(buf));
  const uint64_t mapped = mapped_charge_.bytes() - std::min(released, mapped_charge_.bytes());
  mapped_charge_.reset();
  mapped_charge_ = memory::Charge(ledger, memory::Category::kWeightsMapped, mapped);
  resident_charge_.reset();
  resident_charge_ = memory::Charge(ledger, memory::Category::kWeightsResident, packed);
  return packed;
}

namespace {

// What this build's kernels pack a fixed 32-row matrix of `type` to (its
// bytes a fixed pseudo-random sequence), for a pack file's key: a change of
// packed layout changes the key, so no file of the old layout is read.
void add_layout_probe(PackKeyBuilder& kb, tensor::DType type) {
  constexpr int64_t kRows = 32, kCols = 256;
  const uint64_t row = tensor::row_bytes(type, kCols).value_or(0);
  std::vector<uint8_t> data(static_cast<size_t>(row * kRows));
  uint32_t x = 2463534242u;
  for (uint8_t& b : data) {  // xorshift32
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  const tensor::MatView v{type, data.data(), kRows, kCols, static_cast<size_t>(row)};
  const int64_t n = std::max<int64_t>(tensor::matmul_packed_bytes(v), 0);
  struct alignas(64) Line {
    uint8_t b[64];
  };
  std::vector<Line> out(static_cast<size_t>(n + 63) / 64);  // 64-byte aligned, as packing needs
  if (n > 0) tensor::matmul_pack(v, out.data());
  kb.add_layout(static_cast<uint32_t>(type), reinterpret_cast<const uint8_t*>(out.data()),
                static_cast<size_t>(n));
}

}  // namespace

Status Model::write_pack_file(const std::string& path, const PackKey& key,
                              const std::vector<std::pair<tensor::MatView*, uint64_t>>& todo,
                              memory::Ledger* ledger) {
  const MappedFile* map = file_.mapping();
  // One slice of rows is packed at a time into a private buffer, then written.
  uint64_t slice_bytes = 0;
  for (const auto& [v, bytes] : todo) {
    tensor::MatView slice = *v;
    slice.rows = tensor::matmul_pack_slice_rows(*v);
    slice_bytes = std::max(slice_bytes, static_cast<uint64_t>(tensor::matmul_packed_bytes(slice)));
  }
  SNUG_ASSIGN_OR_RETURN(
      memory::Buffer buf,
      memory::Buffer::allocate(slice_bytes, ledger, memory::Category::kWeightsResident));
  SNUG_ASSIGN_OR_RETURN(PackFileWriter out, PackFileWriter::create(path, key));
  for (size_t i = 0; i < todo.size(); ++i) {
    const uint64_t at = key.offset(i);
    SNUG_RETURN_IF_ERROR(
        pack_by_slices(*todo[i].first, map, [&](const tensor::MatView& part, uint64_t off) {
          tensor::matmul_pack(part, buf.data());
          return out.write(at + off, buf.data(),
                           static_cast<uint64_t>(tensor::matmul_packed_bytes(part)));
        }));
  }
  return out.commit();
}

Result<Model::SharedPack> Model::repack_shared(memory::Ledger* ledger, const std::string& dir) {
  SharedPack info;
  if (pack_map_ || !packed_.empty()) return make_error("the model's matrices are already packed");
  const std::vector<std::pair<tensor::MatView*, uint64_t>> todo = packable();
  if (todo.empty()) return info;
  const MappedFile* map = file_.mapping();
  if (map == nullptr) return make_error("a shared pack file needs a model read from a file");

  map->advise_small_pages();  // as repack: a read maps 4 KiB, not a large folio around it
  PackKeyBuilder kb(map->identity(), pack_model_path(map->path()));
  std::vector<tensor::DType> types;
  for (const auto& [v, bytes] : todo) {
    if (std::find(types.begin(), types.end(), v->type) == types.end()) types.push_back(v->type);
  }
  for (tensor::DType t : types) add_layout_probe(kb, t);
  for (const auto& [v, bytes] : todo) {
    kb.add_matrix(static_cast<uint32_t>(v->type), v->rows, v->cols, v->row_bytes,
                  static_cast<uint64_t>(static_cast<const uint8_t*>(v->data) - map->data()), bytes);
  }
  const PackKey key = kb.finish();

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return make_error("cannot create the pack directory '", dir, "': ", ec.message());
  info.path = pack_file_path(dir, map->path(), key);
  std::string stale;
  SNUG_ASSIGN_OR_RETURN(std::optional<MappedFile> pack, open_pack_file(info.path, key, &stale));
  if (!pack) {
    // Another process may be writing it: wait for it, then look again.
    SNUG_ASSIGN_OR_RETURN(PackFileLock lock, PackFileLock::acquire(info.path));
    SNUG_ASSIGN_OR_RETURN(pack, open_pack_file(info.path, key, &stale));
    if (!pack) {
      SNUG_RETURN_IF_ERROR(write_pack_file(info.path, key, todo, ledger));
      info.built = true;
      info.stale_reason = stale;
      info.removed_stale = remove_stale_packs(info.path, key);
      SNUG_ASSIGN_OR_RETURN(pack, open_pack_file(info.path, key, &stale));
      if (!pack) return make_error("pack file '", info.path, "' changed while it was written");
    }
  }
  pack_map_ = std::move(pack);
  // Every byte of it is read by every pass and none is let go: 2 MiB pages,
  // as the mapped weights take (Model::from_file).
  pack_map_->advise_huge_pages(0, pack_map_->size());
  // The model file's pages the forward pass still reads (all but an untied
  // embedding table's, which is only looked up) are mapped now, so that a
  // fault on a norm later does not map the packed rows around it
  // (fault-around: 64 KiB of cached pages per fault); then the pages that
  // hold only packed rows go (file_pages.h), as repack leaves them.
  const PackedPages pages = packed_pages_of(todo);
  std::vector<ByteRange> read;
  const ByteRange embd = file_range(weights_.token_embd, weights_.token_embd.rows);
  for (const ByteRange& r : pages.read) {
    if (weights_.token_embd.data == weights_.output.data || r.end <= embd.begin ||
        r.begin >= embd.end) {
      read.push_back(r);
    }
  }
  for (const ByteRange& r : read) {
    if (r.begin < map->size())
      populate_read(map->data() + r.begin, std::min(r.end, map->size()) - r.begin);
  }
  for (const ByteRange& r : pages.released) map->release(r.begin, r.end - r.begin);
  uint64_t released = 0;
  for (const auto& entry : todo) {
    released +=
        static_cast<uint64_t>(tensor::matmul_packed_rows(*entry.first)) * entry.first->row_bytes;
  }
  for (size_t i = 0; i < todo.size(); ++i) {
    todo[i].first->packed = pack_map_->data() + key.offset(i);
    info.bytes += todo[i].second;
  }
  shared_pack_bytes_ = info.bytes;
  const uint64_t mapped = mapped_charge_.bytes() - std::min(released, mapped_charge_.bytes());
  mapped_charge_.reset();
  mapped_charge_ =
      memory::Charge(ledger, memory::Category::kWeightsMapped, mapped + pack_map_->size());
  return info;
}

std::vector<tensor::DType> Model::matrix_types() const {
  std::vector<tensor::DType> types;
  auto add = [&types](const tensor::MatView& v) {
    if (std::find(types.begin(), types.end(), v.type) == types.end()) types.push_back(v.type);
  };
  add(weights_.output);
  for (const auto& L : weights_.layers) {
    for (const auto* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down}) add(*v);
  }
  return types;
}

kv::KvLayout Model::kv_layout(tensor::DType kv_type, int32_t block_tokens) const {
  kv::KvLayout l;
  l.n_layers = config_.n_layers;
  l.n_kv_heads = config_.n_kv_heads;
  l.head_dim_k = config_.head_dim_k;
  l.head_dim_v = config_.head_dim_v;
  l.block_tokens = block_tokens;
  l.layer_window = layer_windows(config_);
  l.set_type(kv_type);
  return l;
}

namespace {

// One sequence's tokens in a batch: they are contiguous and continue it.
struct Run {
  kv::SeqId seq;
  int32_t count;
  int32_t length;  // the sequence's KV length before the batch
};

// The batch's runs, or an error for a batch the forward pass cannot take:
// fields of different lengths, a sequence that is not live, or a sequence
// whose tokens are split over several runs.
Result<std::vector<Run>> batch_runs(const Batch& batch, const kv::KvCache& cache) {
  const int32_t n = batch.size();
  if (batch.seqs.size() != batch.tokens.size() || batch.want_logits.size() != batch.tokens.size() ||
      batch.decode.size() != batch.tokens.size())
    return make_error("batch has ", n, " tokens, ", batch.seqs.size(), " sequence ids, ",
                      batch.want_logits.size(), " logit flags and ", batch.decode.size(),
                      " decode flags");
  std::vector<Run> runs;
  for (int32_t t = 0; t < n;) {
    const kv::SeqId seq = batch.seqs[t];
    if (!cache.is_live(seq)) return make_error("batch: sequence ", seq, " is not live");
    for (const Run& r : runs) {
      if (r.seq == seq)
        return make_error("batch: sequence ", seq,
                          " appears in two separate runs (a sequence's tokens must be contiguous)");
    }
    int32_t e = t;
    while (e < n && batch.seqs[e] == seq) ++e;
    runs.push_back({seq, e - t, cache.length(seq)});
    t = e;
  }
  return runs;
}

}  // namespace

Status Model::forward(const Batch& batch, kv::KvCache& cache, Workspace& ws,
                      ThreadPool& pool) const {
  return forward_layers(batch, cache, ws, pool, 0, config_.n_layers);
}

tensor::MatView* layer_matrix(LayerWeights& L, MatRole role) {
  switch (role) {
    case MatRole::kQ:
      return &L.wq;
    case MatRole::kK:
      return &L.wk;
    case MatRole::kV:
      return &L.wv;
    case MatRole::kO:
      return &L.wo;
    case MatRole::kGate:
      return &L.gate;
    case MatRole::kUp:
      return &L.up;
    case MatRole::kDown:
      return &L.down;
    case MatRole::kOutput:
      break;
  }
  return nullptr;
}

Status Model::replace_matrix(int32_t layer, MatRole role, const tensor::MatView& view) {
  if (layer < 0 || layer >= config_.n_layers)
    return make_error("layer ", layer, " of ", config_.n_layers);
  LayerWeights& L = weights_.layers[static_cast<size_t>(layer)];
  tensor::MatView* m = layer_matrix(L, role);
  if (m == nullptr) return make_error("the output head is not a layer's matrix");
  if (view.rows != m->rows || view.cols != m->cols || view.data == nullptr)
    return make_error("replacing ", mat_role_stem(role), " of layer ", layer, " (", m->rows, "x",
                      m->cols, ") with a ", view.rows, "x", view.cols, " matrix");
  *m = view;
  return ok_status();
}

Status Model::replace_bias(int32_t layer, MatRole role, const float* bias) {
  if (layer < 0 || layer >= config_.n_layers)
    return make_error("layer ", layer, " of ", config_.n_layers);
  LayerWeights& L = weights_.layers[static_cast<size_t>(layer)];
  if (role == MatRole::kO) {
    L.bo = bias;
  } else if (role == MatRole::kDown) {
    L.b_down = bias;
  } else {
    return make_error("only the attention output and the down projection take an output bias");
  }
  return ok_status();
}

Status Model::forward_layers(const Batch& batch, kv::KvCache& cache, Workspace& ws,
                             ThreadPool& pool, int32_t first, int32_t last) const {
  if (first < 0 || last > config_.n_layers || first > last)
    return make_error("layers [", first, ", ", last, ") of ", config_.n_layers);
  SNUG_ASSIGN_OR_RETURN(std::vector<Run> runs, batch_runs(batch, cache));
  const int32_t n = batch.size();
  if (n == 0) return ok_status();
  if (n > ws.shape.max_tokens)
    return make_error("batch of ", n, " tokens exceeds the planned ", ws.shape.max_tokens);
  if (batch.n_logits() > ws.shape.max_logits)
    return make_error("batch asks for ", batch.n_logits(), " logit rows, planned ",
                      ws.shape.max_logits);
  for (int32_t t = 0; t < n; ++t) {
    if (batch.tokens[t] < 0 || batch.tokens[t] >= config_.n_vocab)
      return make_error("token id ", batch.tokens[t], " is outside the vocabulary of ",
                        config_.n_vocab);
  }
  for (const Run& r : runs) {
    if (r.length + r.count > ws.shape.max_ctx)
      return make_error("sequence would reach ", r.length + r.count,
                        " tokens, beyond the context of ", ws.shape.max_ctx);
  }
  // Reserve KV blocks for every sequence first, so a full cache changes nothing.
  const auto n_runs = static_cast<int32_t>(runs.size());
  for (int32_t r = 0; r < n_runs; ++r) {
    Status st = cache.prepare_append(runs[r].seq, runs[r].count);
    if (!st.ok()) {
      for (int32_t u = r - 1; u >= 0; --u) cache.cancel_append(runs[u].seq);
      return st;
    }
  }
  for (int32_t r = 0, t = 0; r < n_runs; ++r) {
    for (int32_t i = 0; i < runs[r].count; ++i) ws.pos[t++] = runs[r].length + i;
  }
  forward_decoder(config_, weights_, batch, cache, ws, pool, first, last);
  for (const Run& r : runs) cache.commit_append(r.seq, r.count);
  return ok_status();
}

}  // namespace snug::model
