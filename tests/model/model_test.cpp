#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "model/config.h"
#include "model/file_pages.h"
#include "model/model.h"
#include "model/pack_file.h"
#include "model/weights.h"
#include "tensor/kernels.h"
#include "tiny_model.h"

namespace snug::model {
namespace {

using testing::TinyModelSpec;

struct Rig {
  // path: the model read from that file (mapped), else parsed from memory.
  explicit Rig(const TinyModelSpec& spec = {}, int32_t blocks = 64, int32_t max_tokens = 32,
               int threads = 2, int32_t max_ctx = 256, const std::string& path = "")
      : pool(threads) {
    if (path.empty()) bytes = testing::build_tiny_model(spec).to_bytes();
    auto f = path.empty() ? gguf::File::parse(bytes, "tiny") : gguf::File::open(path);
    EXPECT_TRUE(f.ok()) << f.error().message;
    auto m = Model::from_file(std::move(f).value(), &ledger);
    EXPECT_TRUE(m.ok()) << m.error().message;
    model = std::move(m).value();
    cache =
        std::move(kv::KvCache::create(model->kv_layout(tensor::DType::kF16, 4), blocks, &ledger))
            .value();
    WorkspaceShape shape{max_tokens, max_tokens, max_ctx, threads};
    ws = std::move(Workspace::create(model->config(),
                                     plan_workspace(model->config(), model->matrix_types(), shape),
                                     &ledger))
             .value();
  }
  // Logits (copied) of every token of `tokens` fed to `seq` in one batch.
  std::vector<float> feed(kv::SeqId seq, const std::vector<int32_t>& tokens) {
    Batch b;
    for (int32_t t : tokens) b.add(t, seq, true);
    EXPECT_TRUE(model->forward(b, cache, ws, pool).ok());
    return {ws.logits, ws.logits + tokens.size() * static_cast<size_t>(model->config().n_vocab)};
  }
  std::vector<uint8_t> bytes;
  memory::Ledger ledger;
  ThreadPool pool;
  std::unique_ptr<Model> model;
  kv::KvCache cache;
  Workspace ws;
};

float max_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(Model, ReadsConfigAndChargesMappedWeights) {
  Rig r;
  const auto& c = r.model->config();
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.head_dim_k, 16);
  EXPECT_EQ(c.n_vocab, testing::kTinyVocab);
  EXPECT_TRUE(c.tied_output);
  EXPECT_GT(r.ledger.current(memory::Category::kWeightsMapped), 0u);
}

// The activation scratch is sized for the matrix types planned; a matrix
// swapped in later whose conversion needs more (an f32 refit in a q8_0
// model: 4 bytes an element against 34 per 32) stops at the check instead of
// writing past the workspace (compress's refits once did).
TEST(Model, ActivationScratchBeyondThePlanIsStopped) {
  Rig r;
  const ModelConfig& c = r.model->config();
  const int64_t cols = c.n_ff, T = r.ws.shape.max_tokens;
  const WorkspacePlan q8 = plan_workspace(c, {tensor::DType::kQ8_0}, r.ws.shape);
  auto ws = Workspace::create(c, q8, nullptr);
  ASSERT_TRUE(ws.ok());
  EXPECT_EQ(ws->quant_for(tensor::DType::kQ8_0, cols, T), ws->quant);
  EXPECT_DEATH(ws->quant_for(tensor::DType::kF32, cols, T), "need <= quant_bytes");
  const WorkspacePlan both =
      plan_workspace(c, {tensor::DType::kQ8_0, tensor::DType::kF32}, r.ws.shape);
  auto wide = Workspace::create(c, both, nullptr);
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(wide->quant_for(tensor::DType::kF32, cols, T), wide->quant);
}

TEST(Model, Gemma3LayersAlternateFiveWindowedToOneGlobal) {
  TinyModelSpec spec;
  spec.architecture = "gemma3";
  spec.n_layers = 13;
  spec.sliding_window = 8;
  spec.rope_base = 1e6f;
  Rig r(spec);
  const auto& c = r.model->config();
  EXPECT_EQ(c.arch, Arch::kGemma3);
  ASSERT_EQ(c.layers.size(), 13u);
  for (int32_t l = 0; l < 13; ++l) {
    const bool global = l == 5 || l == 11;
    EXPECT_EQ(c.layers[static_cast<size_t>(l)].window, global ? 0 : 8) << "layer " << l;
    // Global layers take the file's rope base, windowed ones Gemma's 10000.
    const RopeParams& rope =
        c.rope_sets[static_cast<size_t>(c.layers[static_cast<size_t>(l)].rope_set)];
    EXPECT_EQ(rope.freq_base, global ? 1e6f : 10000.f) << "layer " << l;
  }
  EXPECT_EQ(c.sliding_window, 8);
  EXPECT_TRUE(c.rope_neox && c.qk_norm && c.post_norms);
  EXPECT_EQ(c.ffn_activation, FfnActivation::kGeluTanh);
  EXPECT_EQ(c.embd_scale, 8.f);     // sqrt(64)
  EXPECT_EQ(c.query_scale, 0.25f);  // 1/sqrt(head size 16)
  EXPECT_NE(r.model->weights().layers[3].post_ffn_norm, nullptr);
}

// Gemma 3's windowed layers from attention.sliding_window_pattern: a period,
// or one bool per layer; a list of the wrong length is refused.
TEST(Model, Gemma3WindowPatternFromMetadata) {
  TinyModelSpec spec;
  spec.architecture = "gemma3";
  spec.n_layers = 4;
  auto windows = [&](const std::function<void(gguf::Writer&)>& edit) -> Result<std::string> {
    gguf::Writer w = testing::build_tiny_model(spec);
    edit(w);
    const std::vector<uint8_t> bytes = w.to_bytes();  // the File points into them
    auto f = gguf::File::parse(bytes, "tiny");
    if (!f.ok()) return f.take_error();
    SNUG_ASSIGN_OR_RETURN(ModelConfig c, read_config(*f));
    std::string out;
    for (const LayerConfig& l : c.layers) out += l.window > 0 ? 'w' : 'g';
    return out;
  };
  const std::string key = "gemma3.attention.sliding_window_pattern";
  EXPECT_EQ(*windows([](gguf::Writer&) {}), "wwww");  // period 6: layer 5 would be the first global
  EXPECT_EQ(*windows([&](gguf::Writer& w) { w.set_u32(key, 2); }), "wgwg");
  auto bools = [&](const std::vector<uint8_t>& v) {
    return [&key, v](gguf::Writer& w) {
      std::vector<uint8_t> payload = {7, 0, 0, 0};  // element type bool
      for (int i = 0; i < 8; ++i) payload.push_back(static_cast<uint8_t>(v.size() >> (8 * i)));
      payload.insert(payload.end(), v.begin(), v.end());
      w.set_raw(key, 9, payload);  // array
    };
  };
  EXPECT_EQ(*windows(bools({1, 0, 0, 1})), "wggw");
  auto short_list = windows(bools({1, 0}));
  ASSERT_FALSE(short_list.ok());
  EXPECT_NE(short_list.error().message.find("must be 4 bools (one per layer), not 2"),
            std::string::npos)
      << short_list.error().message;
}

TEST(Model, RopeScalingIsReadAsLlamaCppReadsIt) {
  TinyModelSpec spec;  // head size 16, rope base 10000
  spec.rope_scaling_type = "yarn";
  spec.rope_scaling_factor = 4.f;
  spec.rope_orig_ctx = 64;
  const RopeParams yarn = Rig(spec).model->config().rope_sets[0];
  EXPECT_EQ(yarn.freq_scale, 0.25f);
  EXPECT_EQ(yarn.ext_factor, 1.f);
  // Pairs whose wavelength spans 32 to 1 turns of 64 tokens: 16 ln(64 / (32 * 2 pi)) /
  // (2 ln 10000) = -0.99 -> 0, and 16 ln(64 / (2 pi)) / (2 ln 10000) = 2.02 -> 3.
  EXPECT_EQ(yarn.corr_dims[0], 0.f);
  EXPECT_EQ(yarn.corr_dims[1], 3.f);
  EXPECT_NEAR(yarn.attn_factor, 1.f, 1e-6f);  // llama.cpp cancels YaRN's magnitude
  spec.rope_scaling_type = "none";  // a factor without scaling: ignored, as llama.cpp does
  EXPECT_EQ(Rig(spec).model->config().rope_sets[0].freq_scale, 1.f);
  spec.rope_scaling_type = "linear";
  const RopeParams linear = Rig(spec).model->config().rope_sets[0];
  EXPECT_EQ(linear.freq_scale, 0.25f);
  EXPECT_EQ(linear.ext_factor, 0.f);
}

TEST(Model, BatchedPrefillEqualsOneTokenAtATime) {
  Rig a, b;
  const std::vector<int32_t> toks = {10, 200, 33, 256, 5, 99, 100, 7, 8, 9, 11};
  auto all = a.feed(a.cache.create_sequence(), toks);
  kv::SeqId s = b.cache.create_sequence();
  const size_t V = static_cast<size_t>(a.model->config().n_vocab);
  for (size_t i = 0; i < toks.size(); ++i) {
    auto one = b.feed(s, {toks[i]});
    EXPECT_LT(max_diff(one.data(), all.data() + i * V, V), 1e-4f) << "position " << i;
  }
  EXPECT_EQ(a.cache.length(0), static_cast<int32_t>(toks.size()));
}

// The seven formats with packed forms, in a tiny model whose rows suit each.
std::vector<TinyModelSpec> packable_specs() {
  std::vector<TinyModelSpec> specs;
  for (tensor::DType t :
       {tensor::DType::kQ4_0, tensor::DType::kQ4_1, tensor::DType::kQ5_0, tensor::DType::kQ5_1,
        tensor::DType::kQ8_0, tensor::DType::kQ4_K, tensor::DType::kQ6_K}) {
    TinyModelSpec spec;
    spec.matrix_type = t;
    if (tensor::info(t).block_size == 256) {  // rows of whole super-blocks
      spec.n_embd = 256;
      spec.n_ff = 512;
    }
    specs.push_back(spec);
  }
  return specs;
}

// What the dispatched kernels pack of a model: the packed bytes, and the
// file bytes of the rows they cover.
struct PackedCounts {
  uint64_t bytes = 0, rows_bytes = 0;
};
PackedCounts packed_counts(const Weights& w) {
  PackedCounts c;
  auto add = [&](const tensor::MatView& v) {
    const int64_t n = tensor::matmul_packed_bytes(v);
    if (n <= 0) return;
    c.bytes += static_cast<uint64_t>(n);
    c.rows_bytes += static_cast<uint64_t>(tensor::matmul_packed_rows(v)) * v.row_bytes;
  };
  for (const auto& L : w.layers) {
    for (const auto* v : {&L.wq, &L.wk, &L.wv, &L.wo, &L.gate, &L.up, &L.down}) add(*v);
  }
  add(w.output);
  return c;
}

// Model::repack: the same logits bit for bit, for a prompt and one token at a
// time, and the ledger moves the packed rows' bytes from mapped to resident.
// (On a CPU whose kernels take no packed form it packs nothing and changes
// nothing.)
TEST(Model, RepackedWeightsGiveTheSameLogits) {
  for (const TinyModelSpec& spec : packable_specs()) {
    const tensor::DType t = spec.matrix_type;
    Rig a(spec), b(spec);
    const uint64_t mapped = b.ledger.current(memory::Category::kWeightsMapped);
    auto packed = b.model->repack(&b.ledger);
    ASSERT_TRUE(packed.ok()) << packed.error().message;
    const PackedCounts counts = packed_counts(a.model->weights());
    const uint64_t want_packed = counts.bytes, packed_rows = counts.rows_bytes;
    EXPECT_EQ(*packed, want_packed) << tensor::dtype_name(t);
    if (std::string(tensor::matmul_kernel(t)).find("avx512vnni") != std::string::npos) {
      EXPECT_GT(want_packed, 0u) << tensor::dtype_name(t) << " packs on " << tensor::simd_target();
    }
    EXPECT_EQ(b.model->packed_bytes(), want_packed);
    EXPECT_EQ(b.ledger.current(memory::Category::kWeightsResident), want_packed);
    EXPECT_EQ(b.ledger.current(memory::Category::kWeightsMapped), mapped - packed_rows);
    EXPECT_EQ(*b.model->repack(&b.ledger), want_packed) << "a second repack packs nothing more";
    EXPECT_EQ(b.ledger.current(memory::Category::kWeightsResident), want_packed);

    const std::vector<int32_t> toks = {10, 200, 33, 256, 5, 99, 100, 7, 8, 9, 11};
    const kv::SeqId sa = a.cache.create_sequence(), sb = b.cache.create_sequence();
    EXPECT_EQ(a.feed(sa, toks), b.feed(sb, toks)) << tensor::dtype_name(t) << " prompt";
    for (int32_t tok : {3, 77, 150}) {
      EXPECT_EQ(a.feed(sa, {tok}), b.feed(sb, {tok})) << tensor::dtype_name(t) << " token " << tok;
    }
  }
}

// A fresh directory for one test's files, removed at the end.
struct TempDir {
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("snug_pack_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::filesystem::path path;
};

// Which of a model file's pages packing lets go (file_pages.h), on a file laid
// out by hand at 64-byte pages: two packed neighbours share a page, a norm
// shares one with a packed matrix, a matrix's unpacked tail rows stay read,
// padding belongs to nothing, and so does a tensor the model does not bind.
TEST(FilePages, PagesHoldingOnlyPackedRowsAreLetGo) {
  constexpr uint64_t kPage = 64;
  std::vector<uint8_t> bytes;
  for (int pad = 0;; ++pad) {  // a header that ends on a page boundary
    gguf::Writer w;
    w.set_alignment(32);
    w.set_string("pad", std::string(static_cast<size_t>(pad), 'x'));
    auto add = [&](const char* name, int64_t floats) {
      w.add_tensor(name, tensor::DType::kF32, {floats},
                   std::vector<uint8_t>(static_cast<size_t>(floats) * 4, 1));
    };
    add("a", 24);  // [0, 96): packed
    add("b", 8);   // [96, 128): packed, shares page 1 with a
    add("n", 4);   // [128, 144): read, shares page 2 with c
    add("c", 40);  // [160, 320): rows [160, 256) packed, the tail read
    add("u", 16);  // [320, 384): not bound
    add("e", 24);  // [384, 480): packed, shares page 7 with f only
    add("f", 8);   // [480, 512): not bound
    bytes = w.to_bytes();
    auto f = gguf::File::parse(bytes, "pages");
    ASSERT_TRUE(f.ok()) << f.error().message;
    if (f->data_offset() % kPage == 0) break;
  }
  auto f = gguf::File::parse(bytes, "pages");
  ASSERT_TRUE(f.ok());
  const uint64_t d = f->data_offset();
  ASSERT_EQ(f->find_tensor("c")->offset, d + 160);
  std::vector<const gguf::TensorInfo*> bound;
  for (const char* name : {"a", "b", "n", "c", "e"}) bound.push_back(f->find_tensor(name));
  const PackedPages p = packed_pages(
      *f, bound, {{d + 160, d + 256}, {d, d + 96}, {d + 96, d + 128}, {d + 384, d + 480}}, kPage);
  auto ranges = [](const std::vector<ByteRange>& rs) {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    out.reserve(rs.size());
    for (const ByteRange& r : rs) out.emplace_back(r.begin, r.end);
    return out;
  };
  using R = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(ranges(p.read), (R{{0, d}, {d + 128, d + 144}, {d + 256, d + 320}}));
  // Pages 0 and 1 hold only a's and b's rows, page 3 only c's, pages 5-7
  // only u's, e's and f's (u and f are read by nothing); page 2 holds the
  // norm and c's first rows, and stays.
  EXPECT_EQ(ranges(p.released), (R{{d, d + 128}, {d + 192, d + 256}, {d + 320, d + 512}}));
  EXPECT_EQ(p.kept_pages, 1u);
  // f bound, e alone packed: e's page 7 stays, u's page 5 and e's page 6 go.
  bound.push_back(f->find_tensor("f"));
  const PackedPages with_f = packed_pages(*f, bound, {{d + 384, d + 480}}, kPage);
  EXPECT_EQ(ranges(with_f.released), (R{{d + 320, d + 448}}));
  EXPECT_EQ(with_f.kept_pages, 1u);
  // Nothing packed: only the unbound u's page goes, and every bound tensor
  // is read.
  const PackedPages none = packed_pages(*f, bound, {}, kPage);
  EXPECT_EQ(ranges(none.released), (R{{d + 320, d + 384}}));
  EXPECT_EQ(none.kept_pages, 0u);
  EXPECT_EQ(ranges(none.read), (R{{0, d},
                                  {d, d + 96},
                                  {d + 96, d + 128},
                                  {d + 128, d + 144},
                                  {d + 160, d + 320},
                                  {d + 384, d + 480},
                                  {d + 480, d + 512}}));
}

// weight_tensor_names, which the plan counts, names exactly what
// bind_weights binds, for every family and option, and a tensor no family
// reads is in neither.
TEST(Weights, TheNamedTensorsAreTheBoundOnes) {
  std::vector<TinyModelSpec> specs(6);
  specs[1].output_biases = true;
  specs[1].rope_freqs = true;
  specs[1].tied_output = false;
  specs[2].architecture = "gemma3";
  specs[3].architecture = "qwen2";
  specs[4].architecture = "qwen3";
  specs[5].architecture = "qwen2";
  specs[5].output_biases = true;  // written, but llama.cpp's qwen2 graph adds none
  for (const TinyModelSpec& spec : specs) {
    gguf::Writer w = testing::build_tiny_model(spec);
    w.add_tensor("mm.vision.weight", tensor::DType::kF32, {64}, std::vector<uint8_t>(64 * 4, 0));
    const std::vector<uint8_t> bytes = w.to_bytes();
    auto f = gguf::File::parse(bytes, spec.architecture);
    ASSERT_TRUE(f.ok()) << f.error().message;
    auto c = read_config(*f);
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto bound = bind_weights(*f, *c);
    ASSERT_TRUE(bound.ok()) << bound.error().message;
    std::vector<std::string> got, want;
    uint64_t bytes_bound = 0;
    for (const gguf::TensorInfo* t : bound->tensors) {
      got.push_back(t->name);
      bytes_bound += t->bytes;
    }
    const WeightNames names = weight_tensor_names(*c);
    want = names.required;
    for (const std::string& n : names.optional)
      if (f->find_tensor(n) != nullptr) want.push_back(n);
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want) << spec.architecture;
    EXPECT_EQ(bytes_bound, bound->bytes) << spec.architecture;
    EXPECT_EQ(std::count(got.begin(), got.end(), "mm.vision.weight"), 0);
  }
}

// The VmFlags of this process's mapping holding `at` in /proc/self/smaps
// ("" when none does).
std::string vm_flags_at(const void* at) {
  std::ifstream in("/proc/self/smaps");
  const auto a = reinterpret_cast<uintptr_t>(at);
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find('-') < 17) {
      inside = lo <= a && a < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

// A mapped model asks for huge pages over the weights the passes stream, and
// for small ones over an untied embedding table, which is only looked up (a
// 2 MiB mapping per lookup would outgrow the plan's RSS). Repacking asks for
// small pages everywhere (its released ranges). On a kernel without
// transparent huge pages neither advice takes.
TEST(Model, MappedWeightsAskForHugePagesAndAnUntiedTableForSmallOnes) {
  TempDir tmp;
  const bool thp = std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled");
  for (const bool tied : {true, false}) {
    TinyModelSpec spec;
    spec.tied_output = tied;
    spec.matrix_type = tensor::DType::kQ8_0;
    const std::string file = (tmp.path / (tied ? "tied.gguf" : "untied.gguf")).string();
    ASSERT_TRUE(testing::build_tiny_model(spec).write(file).ok());
    Rig r(spec, 64, 32, 2, 256, file);
    const Weights& w = r.model->weights();
    const std::string down = vm_flags_at(w.layers.back().down.data);
    const std::string embd = vm_flags_at(w.token_embd.data);
    ASSERT_FALSE(down.empty());
    ASSERT_FALSE(embd.empty());
    EXPECT_EQ(down.find(" hg") != std::string::npos, thp) << down;
    EXPECT_EQ(embd.find(" hg") != std::string::npos, thp && tied) << embd;
    EXPECT_EQ(embd.find(" nh") != std::string::npos, thp && !tied) << embd;
    auto bytes = r.model->repack(&r.ledger);
    ASSERT_TRUE(bytes.ok()) << bytes.error().message;
    if (r.model->packed_bytes() == 0) continue;  // no packed form on this CPU: nothing advised
    EXPECT_EQ(vm_flags_at(w.layers.back().down.data).find(" hg"), std::string::npos);
  }
}

// Model::repack_shared: the first model packs into a file under the
// directory, a second one on the same model file maps that file instead;
// both give the mapped weights' logits bit for bit, and the ledger counts
// the pack file as mapped, nothing resident.
TEST(Model, SharedPackFileGivesTheSameLogitsAndIsReused) {
  TempDir tmp;
  for (const TinyModelSpec& spec : packable_specs()) {
    const std::string name(tensor::dtype_name(spec.matrix_type));
    const std::string file = (tmp.path / (name + ".gguf")).string();
    ASSERT_TRUE(testing::build_tiny_model(spec).write(file).ok());
    const std::string dir = (tmp.path / "packs").string();
    Rig a(spec), b(spec, 64, 32, 2, 256, file), c(spec, 64, 32, 2, 256, file);
    const uint64_t mapped = b.ledger.current(memory::Category::kWeightsMapped);
    auto first = b.model->repack_shared(&b.ledger, dir);
    ASSERT_TRUE(first.ok()) << first.error().message;
    auto second = c.model->repack_shared(&c.ledger, dir);
    ASSERT_TRUE(second.ok()) << second.error().message;
    const PackedCounts counts = packed_counts(a.model->weights());
    const uint64_t want = counts.bytes, packed_rows = counts.rows_bytes;
    EXPECT_EQ(first->bytes, want) << name;
    EXPECT_EQ(second->bytes, want) << name;
    if (want == 0) {  // a CPU whose kernels take no packed form: nothing written
      EXPECT_FALSE(std::filesystem::exists(dir)) << name;
      continue;
    }
    EXPECT_TRUE(first->built) << name;
    EXPECT_FALSE(second->built) << name << ": the second model maps the first's file";
    EXPECT_EQ(second->path, first->path);
    EXPECT_TRUE(first->stale_reason.empty()) << first->stale_reason;
    const uint64_t file_bytes = std::filesystem::file_size(first->path);
    EXPECT_GE(file_bytes, want);
    EXPECT_EQ(b.model->packed_bytes(), want);
    ASSERT_NE(c.model->pack_mapping(), nullptr);
    EXPECT_EQ(c.model->pack_mapping()->size(), file_bytes);
    EXPECT_EQ(c.ledger.current(memory::Category::kWeightsResident), 0u);
    EXPECT_EQ(c.ledger.current(memory::Category::kWeightsMapped),
              mapped - packed_rows + file_bytes);
    EXPECT_FALSE(c.model->repack_shared(&c.ledger, dir).ok()) << "packed once only";
    // The pack file on 2 MiB pages (read whole by every pass), the model file
    // on 4 KiB ones (its packed rows' pages were let go).
    const bool thp = std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled");
    EXPECT_EQ(vm_flags_at(c.model->pack_mapping()->data()).find(" hg") != std::string::npos, thp);
    EXPECT_EQ(vm_flags_at(c.model->weights().layers[0].wq.data).find(" hg"), std::string::npos);

    const std::vector<int32_t> toks = {10, 200, 33, 256, 5, 99, 100, 7, 8, 9, 11};
    const kv::SeqId sa = a.cache.create_sequence(), sb = b.cache.create_sequence(),
                    sc = c.cache.create_sequence();
    const auto want_logits = a.feed(sa, toks);
    EXPECT_EQ(b.feed(sb, toks), want_logits) << name << " prompt, the builder";
    EXPECT_EQ(c.feed(sc, toks), want_logits) << name << " prompt, the reader";
    for (int32_t tok : {3, 77}) {
      const auto one = a.feed(sa, {tok});
      EXPECT_EQ(b.feed(sb, {tok}), one) << name << " token " << tok;
      EXPECT_EQ(c.feed(sc, {tok}), one) << name << " token " << tok;
    }
  }
}

// Pack files that must not be read: a truncated one, one whose header is
// not snug's, one whose key names another model (the same size, its key
// bytes changed), and one made before the model file changed. Each is
// rebuilt (the model's logits stay right); a directory where the file should
// be, or a pack directory that is a file, is a one-line error.
TEST(Model, StaleOrHostilePackFilesAreRebuiltOrRefused) {
  TempDir tmp;
  TinyModelSpec spec;
  spec.matrix_type = tensor::DType::kQ4_1;
  const std::string file = (tmp.path / "m.gguf").string();
  ASSERT_TRUE(testing::build_tiny_model(spec).write(file).ok());
  const std::string dir = (tmp.path / "packs").string();
  Rig ref(spec);
  const kv::SeqId sr = ref.cache.create_sequence();
  const std::vector<int32_t> toks = {10, 200, 33, 256, 5};
  const auto want = ref.feed(sr, toks);
  std::string path;
  {
    Rig r(spec, 64, 32, 2, 256, file);
    auto p = r.model->repack_shared(&r.ledger, dir);
    ASSERT_TRUE(p.ok()) << p.error().message;
    if (p->bytes == 0) {  // no packed form on this CPU: nothing is written
      EXPECT_FALSE(std::filesystem::exists(dir));
      return;
    }
    path = p->path;
  }
  const uint64_t size = std::filesystem::file_size(path);
  auto damage_and_reload = [&](const std::function<void()>& damage, const std::string& reason) {
    damage();
    Rig r(spec, 64, 32, 2, 256, file);
    auto p = r.model->repack_shared(&r.ledger, dir);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_TRUE(p->built) << reason;
    EXPECT_NE(p->stale_reason.find(reason), std::string::npos) << p->stale_reason;
    EXPECT_EQ(std::filesystem::file_size(path), size);
    EXPECT_EQ(r.feed(r.cache.create_sequence(), toks), want) << reason;
  };
  auto patch = [&](uint64_t offset, const std::string& bytes) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  damage_and_reload([&] { std::filesystem::resize_file(path, size / 2); }, "size");
  damage_and_reload([&] { patch(0, "GGUFGGUF"); }, "not a snug pack file");
  damage_and_reload([&] { patch(40, std::string(8, '\x5a')); }, "another model file");
  // The model file rewritten (a new modification time): a new key, a new file.
  std::filesystem::last_write_time(
      file, std::filesystem::last_write_time(file) + std::chrono::seconds(5));
  {
    Rig r(spec, 64, 32, 2, 256, file);
    auto p = r.model->repack_shared(&r.ledger, dir);
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_TRUE(p->built);
    EXPECT_NE(p->path, path);
    EXPECT_EQ(r.feed(r.cache.create_sequence(), toks), want);
    std::filesystem::remove(p->path);
    std::filesystem::create_directory(p->path);  // a directory where the file goes
    Rig d(spec, 64, 32, 2, 256, file);
    auto refused = d.model->repack_shared(&d.ledger, dir);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("not a regular file"), std::string::npos)
        << refused.error().message;
    EXPECT_EQ(refused.error().message.find('\n'), std::string::npos);
  }
  Rig f(spec, 64, 32, 2, 256, file);
  auto not_dir = f.model->repack_shared(&f.ledger, file + "/packs");  // under a regular file
  ASSERT_FALSE(not_dir.ok());
  EXPECT_NE(not_dir.error().message.find("cannot create the pack directory"), std::string::npos)
      << not_dir.error().message;
  Rig m(spec);  // parsed from memory: nothing to key a file to
  EXPECT_FALSE(m.model->repack_shared(&m.ledger, dir).ok());
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
  }
}

// A pack file of a model file that has changed since is removed when the
// new one is built; pack files of another model of the same name, of this
// model for another layout (another snug build), and files that are not
// pack files stay.
TEST(Model, AnUpdatedModelLeavesNoStalePackFile) {
  TempDir tmp;
  TinyModelSpec spec;
  spec.matrix_type = tensor::DType::kQ8_0;
  std::filesystem::create_directories(tmp.path / "a");
  std::filesystem::create_directories(tmp.path / "b");
  const std::string file = (tmp.path / "a" / "m.gguf").string();
  const std::string other = (tmp.path / "b" / "m.gguf").string();  // same name, another model
  ASSERT_TRUE(testing::build_tiny_model(spec).write(file).ok());
  ASSERT_TRUE(testing::build_tiny_model(spec).write(other).ok());
  const std::string dir = (tmp.path / "packs").string();
  auto pack = [&](const std::string& model) {
    Rig r(spec, 64, 32, 2, 256, model);
    auto p = r.model->repack_shared(&r.ledger, dir);
    EXPECT_TRUE(p.ok()) << p.error().message;
    return p.ok() ? *p : Model::SharedPack{};
  };
  const Model::SharedPack first = pack(file);
  if (first.bytes == 0) return;  // no packed form on this CPU
  const Model::SharedPack of_other = pack(other);
  EXPECT_EQ(of_other.removed_stale, 0);
  const std::string garbage = dir + "/m.gguf.fedcba9876543210.snugpack";
  std::ofstream(garbage) << "not a pack file";
  // The model updated in place: a new identity, a new pack file, the old one gone.
  std::filesystem::last_write_time(
      file, std::filesystem::last_write_time(file) + std::chrono::seconds(5));
  const Model::SharedPack second = pack(file);
  EXPECT_TRUE(second.built);
  EXPECT_EQ(second.removed_stale, 1);
  EXPECT_FALSE(std::filesystem::exists(first.path));
  EXPECT_FALSE(std::filesystem::exists(first.path + ".lock"));
  for (const std::string& kept : {second.path, of_other.path, garbage}) {
    EXPECT_TRUE(std::filesystem::exists(kept)) << kept;
  }
  // The current model packed by "another build": its file with the first
  // layout fingerprint changed, under another hash. Building this build's
  // file again keeps it.
  const std::string layout = dir + "/m.gguf.0123456789abcdef.snugpack";
  std::filesystem::copy_file(second.path, layout);
  {
    std::fstream f(layout, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40 + 32 + 8);  // past the fixed header and the identity: the fingerprint
    f.write("\x01\x02\x03\x04", 4);
  }
  std::filesystem::remove(second.path);
  const Model::SharedPack third = pack(file);
  EXPECT_TRUE(third.built);
  EXPECT_EQ(third.removed_stale, 0);
  EXPECT_TRUE(std::filesystem::exists(layout));
  // Mapping the current file removes nothing.
  const Model::SharedPack again = pack(file);
  EXPECT_FALSE(again.built);
  EXPECT_EQ(again.removed_stale, 0);
}

// remove_stale_packs on pack files written directly, so that it runs on a
// CPU without a packed form too: a file of an earlier identity of the same
// model path goes with its lock; another path's file of the same name, this
// identity under another layout, and a file that is not a pack file stay.
TEST(PackFile, RemoveStalePacksTakesOnlyEarlierVersionsOfTheModel) {
  TempDir tmp;
  const std::string dir = (tmp.path / "packs").string();
  std::filesystem::create_directories(dir);
  auto key = [](const FileIdentity& id, const std::string& model, uint8_t layout) {
    PackKeyBuilder kb(id, model);
    const uint8_t probe[4] = {layout, 1, 2, 3};
    kb.add_layout(2, probe, sizeof probe);
    kb.add_matrix(2, 16, 32, 20, 4096, 320);
    return kb.finish();
  };
  auto write = [&](const PackKey& k, const std::string& model) {
    std::string path = pack_file_path(dir, model, k);
    auto w = PackFileWriter::create(path, k);
    EXPECT_TRUE(w.ok()) << w.error().message;
    if (w.ok()) {
      EXPECT_TRUE(w->commit().ok());
    }
    std::ofstream lock(path + ".lock");  // a lock file left beside it
    return path;
  };
  const FileIdentity old_id{1, 10, 1000, 5}, new_id{1, 10, 1000, 6}, elsewhere{1, 11, 1000, 5};
  const std::string model = "/models/m.gguf";
  const std::string stale = write(key(old_id, model, 0), model);
  const std::string other = write(key(elsewhere, "/elsewhere/m.gguf", 0), "/elsewhere/m.gguf");
  const std::string layout = write(key(new_id, model, 1), model);
  const std::string garbage = dir + "/m.gguf.fedcba9876543210.snugpack";
  std::ofstream(garbage) << "not a pack file";
  const PackKey current = key(new_id, model, 0);
  const std::string path = write(current, model);
  EXPECT_EQ(remove_stale_packs(path, current), 1);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_FALSE(std::filesystem::exists(stale + ".lock"));
  for (const std::string& kept : {path, other, layout, garbage}) {
    EXPECT_TRUE(std::filesystem::exists(kept)) << kept;
  }
  EXPECT_EQ(remove_stale_packs(path, current), 0);
}

// Two models packing one model file into one directory at once: the lock
// makes one write the file and the other wait and map it.
TEST(Model, ConcurrentPackersWriteOneFile) {
  TempDir tmp;
  TinyModelSpec spec;
  spec.matrix_type = tensor::DType::kQ8_0;
  const std::string file = (tmp.path / "m.gguf").string();
  ASSERT_TRUE(testing::build_tiny_model(spec).write(file).ok());
  const std::string dir = (tmp.path / "packs").string();
  Rig a(spec, 64, 32, 1, 256, file), b(spec, 64, 32, 1, 256, file);
  Result<Model::SharedPack> ra = make_error("not run"), rb = make_error("not run");
  std::thread ta([&] { ra = a.model->repack_shared(&a.ledger, dir); });
  std::thread tb([&] { rb = b.model->repack_shared(&b.ledger, dir); });
  ta.join();
  tb.join();
  ASSERT_TRUE(ra.ok()) << ra.error().message;
  ASSERT_TRUE(rb.ok()) << rb.error().message;
  if (ra->bytes == 0) {  // no packed form on this CPU: nothing is written
    EXPECT_FALSE(std::filesystem::exists(dir));
    return;
  }
  EXPECT_NE(ra->built, rb->built) << "exactly one of them writes the file";
  EXPECT_EQ(ra->path, rb->path);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    files += e.path().extension() == ".snugpack" ? 1 : 0;
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << "left behind: " << e.path();
  }
  EXPECT_EQ(files, 1);
  EXPECT_EQ(a.feed(a.cache.create_sequence(), {1, 2, 3}),
            b.feed(b.cache.create_sequence(), {1, 2, 3}));
}

TEST(Model, RaggedBatchOfTwoSequencesEqualsSeparateRuns) {
  Rig r, ref;
  kv::SeqId s1 = r.cache.create_sequence(), s2 = r.cache.create_sequence();
  r.feed(s1, {1, 2, 3});  // s1 has history, s2 starts empty
  Batch b;
  for (int32_t t : {4, 5}) b.add(t, s1, true);
  for (int32_t t : {7, 8, 9}) b.add(t, s2, true);
  ASSERT_TRUE(r.model->forward(b, r.cache, r.ws, r.pool).ok());
  const size_t V = static_cast<size_t>(r.model->config().n_vocab);
  std::vector<float> got(r.ws.logits, r.ws.logits + 5 * V);

  kv::SeqId t1 = ref.cache.create_sequence(), t2 = ref.cache.create_sequence();
  auto want1 = ref.feed(t1, {1, 2, 3, 4, 5});
  auto want2 = ref.feed(t2, {7, 8, 9});
  EXPECT_LT(max_diff(got.data(), want1.data() + 3 * V, 2 * V), 1e-4f);
  EXPECT_LT(max_diff(got.data() + 2 * V, want2.data(), 3 * V), 1e-4f);
}

TEST(Model, ForkedSequenceContinuesLikeTheOriginal) {
  Rig r;
  kv::SeqId a = r.cache.create_sequence();
  r.feed(a, {3, 1, 4, 1, 5});
  kv::SeqId b = r.cache.fork(a);
  auto la = r.feed(a, {9});
  auto lb = r.feed(b, {9});
  EXPECT_EQ(max_diff(la.data(), lb.data(), la.size()), 0.f);
}

TEST(Model, FullCacheFailsAndLeavesSequencesUntouched) {
  Rig r({}, /*blocks=*/2);
  kv::SeqId s = r.cache.create_sequence();
  r.feed(s, {1, 2, 3});
  Batch b;
  for (int i = 0; i < 8; ++i) b.add(1, s, i == 7);
  Status st = r.model->forward(b, r.cache, r.ws, r.pool);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("KV cache is full"), std::string::npos);
  EXPECT_EQ(r.cache.length(s), 3);
  EXPECT_EQ(r.cache.free_blocks(), 1);
}

// A failed forward must leave every sequence's length, block table and the
// pool's free blocks as they were, whichever run of the batch failed.
struct CacheState {
  std::vector<int32_t> lengths;
  std::vector<std::vector<int32_t>> tables;
  int32_t free_blocks;
  bool operator==(const CacheState&) const = default;
  friend void PrintTo(const CacheState& s, std::ostream* os) {
    *os << "free blocks " << s.free_blocks;
    for (size_t i = 0; i < s.lengths.size(); ++i) {
      *os << "; length " << s.lengths[i] << " blocks";
      for (int32_t b : s.tables[i]) *os << ' ' << b;
    }
  }
};

CacheState cache_state(const kv::KvCache& c, std::initializer_list<kv::SeqId> seqs) {
  CacheState s{{}, {}, c.free_blocks()};
  for (kv::SeqId q : seqs) {
    s.lengths.push_back(c.length(q));
    s.tables.push_back(c.block_table(q));
  }
  return s;
}

TEST(Model, ContextOverflowInALaterRunLeavesEarlierRunsUntouched) {
  Rig r({}, /*blocks=*/64, /*max_tokens=*/32, /*threads=*/2, /*max_ctx=*/16);
  kv::SeqId s1 = r.cache.create_sequence(), s2 = r.cache.create_sequence();
  r.feed(s2, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14});
  const CacheState before = cache_state(r.cache, {s1, s2});
  Batch b;
  for (int32_t t : {4, 5, 6, 7, 8}) b.add(t, s1, false);  // fits, and needs 2 new blocks
  for (int32_t t : {4, 5, 6}) b.add(t, s2, true);         // 14 + 3 > 16
  Status st = r.model->forward(b, r.cache, r.ws, r.pool);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("beyond the context of 16"), std::string::npos)
      << st.error().message;
  EXPECT_EQ(cache_state(r.cache, {s1, s2}), before);
}

TEST(Model, FullCacheAfterACopyOnWriteGivesTheCopyBack) {
  // 4 tokens a block. s1 holds 6 (one full block, one half-full), b is its fork:
  // appending to b copies the shared half-full block, then s2's run cannot get
  // its blocks. The copy must go back to the pool and b must share s1's block again.
  Rig r({}, /*blocks=*/4);
  kv::SeqId s1 = r.cache.create_sequence(), s2 = r.cache.create_sequence();
  r.feed(s1, {1, 2, 3, 4, 5, 6});
  kv::SeqId b = r.cache.fork(s1);
  const CacheState before = cache_state(r.cache, {s1, s2, b});
  ASSERT_EQ(before.free_blocks, 2);
  Batch batch;
  batch.add(7, b, true);
  for (int32_t t : {1, 2, 3, 4, 5}) batch.add(t, s2, true);  // 2 blocks, only 1 left
  Status st = r.model->forward(batch, r.cache, r.ws, r.pool);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("KV cache is full"), std::string::npos) << st.error().message;
  EXPECT_EQ(cache_state(r.cache, {s1, s2, b}), before);
  // And the rolled-back fork still continues like the original.
  auto la = r.feed(s1, {9});
  auto lb = r.feed(b, {9});
  EXPECT_EQ(max_diff(la.data(), lb.data(), la.size()), 0.f);
}

TEST(Model, BatchNamingASequenceThatIsNotLiveIsAnError) {
  Rig r;
  kv::SeqId s = r.cache.create_sequence(), gone = r.cache.create_sequence();
  r.cache.free_sequence(gone);
  for (kv::SeqId bad : {gone, kv::SeqId{-1}, kv::SeqId{7}}) {
    Batch b;
    b.add(1, s, true);
    b.add(2, bad, true);
    Status st = r.model->forward(b, r.cache, r.ws, r.pool);
    ASSERT_FALSE(st.ok()) << "sequence " << bad;
    EXPECT_NE(st.error().message.find("sequence " + std::to_string(bad) + " is not live"),
              std::string::npos)
        << st.error().message;
    EXPECT_EQ(r.cache.length(s), 0);
  }
}

TEST(Model, BatchWithASequenceInTwoRunsIsAnError) {
  Rig r;
  kv::SeqId s1 = r.cache.create_sequence(), s2 = r.cache.create_sequence();
  Batch b;
  b.add(1, s1, false);
  b.add(2, s2, false);
  b.add(3, s1, true);  // s1's tokens are not contiguous
  const CacheState before = cache_state(r.cache, {s1, s2});
  Status st = r.model->forward(b, r.cache, r.ws, r.pool);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("sequence 0 appears in two separate runs"), std::string::npos)
      << st.error().message;
  EXPECT_EQ(cache_state(r.cache, {s1, s2}), before);
}

TEST(Model, BatchWithMismatchedFieldsIsAnError) {
  Rig r;
  Batch b;
  b.add(1, r.cache.create_sequence(), true);
  b.want_logits.clear();
  Status st = r.model->forward(b, r.cache, r.ws, r.pool);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("1 tokens, 1 sequence ids, 0 logit flags and 1 decode flags"),
            std::string::npos)
      << st.error().message;
  b.want_logits.push_back(1);
  b.decode.clear();
  st = r.model->forward(b, r.cache, r.ws, r.pool);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("0 decode flags"), std::string::npos) << st.error().message;
}

TEST(Model, TokenOutsideVocabularyIsAnError) {
  Rig r;
  Batch b;
  b.add(testing::kTinyVocab, r.cache.create_sequence(), true);
  EXPECT_FALSE(r.model->forward(b, r.cache, r.ws, r.pool).ok());
}

TEST(Model, QuantizedWeightsStayCloseToF32) {
  TinyModelSpec q;
  q.matrix_type = tensor::DType::kQ8_0;
  Rig a, b(q);
  const std::vector<int32_t> toks = {72, 101, 108, 108, 111};
  auto fa = a.feed(a.cache.create_sequence(), toks);
  auto fb = b.feed(b.cache.create_sequence(), toks);
  float scale = 0;
  for (float x : fa) scale = std::max(scale, std::fabs(x));
  // q8_0 weights and activations: a few per cent of the logit range at most.
  EXPECT_LT(max_diff(fa.data(), fb.data(), fa.size()), 0.03f * scale) << "logit range " << scale;
}

Result<std::unique_ptr<Model>> load_modified(const std::function<void(TinyModelSpec&)>& change,
                                             std::vector<uint8_t>& storage,
                                             memory::Ledger* ledger) {
  TinyModelSpec s;
  change(s);
  storage = testing::build_tiny_model(s).to_bytes();
  SNUG_ASSIGN_OR_RETURN(gguf::File f, gguf::File::parse(storage, "tiny"));
  return Model::from_file(std::move(f), ledger);
}

TEST(Model, BadHyperParametersAreRefused) {
  memory::Ledger l;
  std::vector<uint8_t> buf;
  auto arch = load_modified([](TinyModelSpec& s) { s.architecture = "mamba"; }, buf, &l);
  ASSERT_FALSE(arch.ok());
  EXPECT_NE(arch.error().message.find("architecture 'mamba' is not supported"), std::string::npos);
  auto heads = load_modified([](TinyModelSpec& s) { s.n_kv_heads = 3; }, buf, &l);
  ASSERT_FALSE(heads.ok());
  EXPECT_NE(heads.error().message.find("not a multiple"), std::string::npos);
}

TEST(Model, MissingOrMisshapenTensorsAreRefused) {
  memory::Ledger l;
  gguf::Writer w = testing::build_tiny_model();
  auto bytes = w.to_bytes();
  // Rename blk.1.ffn_up.weight so it is missing.
  std::string needle = "blk.1.ffn_up.weight";
  auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
  ASSERT_NE(it, bytes.end());
  *(it + 6) = 'X';
  auto f = gguf::File::parse(bytes, "tiny");
  ASSERT_TRUE(f.ok());
  auto m = Model::from_file(std::move(f).value(), &l);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("missing tensor 'blk.1.ffn_up.weight'"), std::string::npos);
}

}  // namespace
}  // namespace snug::model
