// The malformed-GGUF catalogue (malformed_cases.h) loaded through the path the
// CLI uses (gguf::File::open, Model::from_file, Tokenizer::from_gguf): every case
// must fail with a one-line error naming its defect, and the heap it takes while
// failing must stay under the file's size plus a small constant. Also: the valid
// file cut short at every byte of its header, and the fuzzers' regression files
// under tests/gguf/regressions/.
#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <set>

#include "gguf/gguf.h"
#include "load_replay.h"
#include "malformed_cases.h"
#include "memory/ledger.h"
#include "model/model.h"
#include "run_binary.h"
#include "text/tokenizer.h"

#ifndef SNUG_SANITIZE
// Heap accounting for the memory bound: operator new is replaced in this binary
// only (the sanitizers keep their own allocator, so the bound is checked in the
// plain build). Large allocations in snug all go through new (vectors, strings).
namespace {
std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

void* counted_alloc(size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (!p) throw std::bad_alloc();
  const int64_t live = g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) +
                       static_cast<int64_t>(malloc_usable_size(p));
  int64_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  return p;
}
void counted_free(void* p) {
  if (!p) return;
  g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
  std::free(p);
}
}  // namespace

void* operator new(size_t n) {
  return counted_alloc(n);
}
void* operator new[](size_t n) {
  return counted_alloc(n);
}
void operator delete(void* p) noexcept {
  counted_free(p);
}
void operator delete[](void* p) noexcept {
  counted_free(p);
}
void operator delete(void* p, size_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, size_t) noexcept {
  counted_free(p);
}
#endif

namespace snug {
namespace {

namespace fs = std::filesystem;
using testing::malformed_catalogue;
using testing::valid_tiny_bytes;

// Slack above the file size: the tokenizer's tables, regex matchers, messages.
constexpr int64_t kHeapSlack = 1 << 20;
// What the planner lists before it looks tensors up: the names a header of the
// most layers model::read_config accepts (4096) binds, 9 a layer.
constexpr int64_t kPlannerNames = 5 << 20;
// Files committed under tests/gguf/regressions/ (raise it when adding some).
constexpr size_t kRegressionFiles = 91;

fs::path temp_dir() {
  return testing::scratch_dir("malformed");
}

std::string write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
  const fs::path p = temp_dir() / name;
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  return p.string();
}

// What cli::load_model does, minus the model-name lookup.
Status load(gguf::File file) {
  memory::Ledger ledger;
  SNUG_ASSIGN_OR_RETURN(auto model, model::Model::from_file(std::move(file), &ledger));
  SNUG_ASSIGN_OR_RETURN(text::Tokenizer tok, text::Tokenizer::from_gguf(model->file()));
  // A loaded tokenizer must survive any text.
  const std::string probe = "hello \xff\xfe <|im_start|> \xF0\x9F\x98\x80 \x00 end";
  auto ids = tok.encode(probe, true, true);
  (void)tok.decode(ids);
  return ok_status();
}

Status load_path(const std::string& path) {
  SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::open(path));
  return load(std::move(file));
}

std::vector<uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

Status load_bytes(std::span<const uint8_t> bytes) {
  SNUG_ASSIGN_OR_RETURN(gguf::File file, gguf::File::parse(bytes, "mem"));
  return load(std::move(file));
}

TEST(Malformed, TheValidFileLoads) {
  const std::string p = write_file("valid.gguf", valid_tiny_bytes());
  Status st = load_path(p);
  EXPECT_TRUE(st.ok()) << st.error().message;
}

TEST(Malformed, CatalogueCoversThirtyClasses) {
  std::set<std::string> classes, names;
  for (const auto& c : malformed_catalogue()) {
    classes.insert(c.cls);
    EXPECT_TRUE(names.insert(c.name).second) << "duplicate case name " << c.name;
  }
  EXPECT_GE(classes.size(), 30u);
  EXPECT_GE(malformed_catalogue().size(), 60u);
}

TEST(Malformed, EveryCaseFailsWithOneLineNamingTheDefect) {
  for (const auto& c : malformed_catalogue()) {
    SCOPED_TRACE(c.name);
    const std::string path = write_file(c.name + ".gguf", c.bytes);
#ifndef SNUG_SANITIZE
    const int64_t before = g_live.load();
    g_peak.store(before);
#endif
    Status st = load_path(path);
    ASSERT_FALSE(st.ok()) << "loaded without an error";
    const std::string& msg = st.error().message;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "error: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_LT(msg.size(), 400u) << msg;
#ifndef SNUG_SANITIZE
    const int64_t heap = g_peak.load() - before;
    EXPECT_LE(heap, static_cast<int64_t>(c.bytes.size()) + kHeapSlack)
        << "peak heap " << heap << " bytes for a file of " << c.bytes.size();
#endif
    fs::remove(path);
  }
}

// Every cut inside the header, and a spread of cuts inside the tensor data.
TEST(Malformed, CutShortAnywhere) {
  const auto& full = valid_tiny_bytes();
  auto f = gguf::File::parse(full, "tiny");
  ASSERT_TRUE(f.ok());
  const size_t header = f->data_offset();
  std::vector<size_t> cuts;
  for (size_t n = 0; n < header + 64; ++n) cuts.push_back(n);
  for (size_t n = header + 64; n < full.size(); n += 997) cuts.push_back(n);
  cuts.push_back(full.size() - 1);
  for (size_t n : cuts) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    Status st = load_bytes(cut);
    ASSERT_FALSE(st.ok()) << "cut at " << n << " loaded";
    EXPECT_EQ(st.error().message.find('\n'), std::string::npos);
  }
}

// The committed corpus (regressions/README.md) through replay_load, the path
// fuzz_gguf drives: every step's refusal is one line, valid-*.gguf files load,
// and the heap taken stays under twice the file's size (the header-only and
// the strict reader each index the file once) plus the slack and the planner's
// list of tensor names.
TEST(Malformed, FuzzerRegressionsStayFixed) {
  const fs::path dir = fs::path(SNUG_SOURCE_DIR) / "tests/gguf/regressions";
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".gguf") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  // Fewer files than committed means the corpus was lost, not fixed.
  ASSERT_GE(files.size(), kRegressionFiles) << "in " << dir;
  int loaded = 0, valid = 0;
  for (const fs::path& path : files) {
    const std::string name = path.filename().string();
    SCOPED_TRACE(name);
    const std::vector<uint8_t> bytes = read_file(path);
#ifndef SNUG_SANITIZE
    const int64_t before = g_live.load();
    g_peak.store(before);
#endif
    const testing::LoadOutcome o = testing::replay_load(bytes);
    for (const Error* e : o.errors()) {
      EXPECT_FALSE(e->message.empty());
      EXPECT_EQ(e->message.find('\n'), std::string::npos) << e->message;
      EXPECT_LT(e->message.size(), 400u) << e->message;
    }
#ifndef SNUG_SANITIZE
    const int64_t heap = g_peak.load() - before;
    EXPECT_LE(heap, 2 * static_cast<int64_t>(bytes.size()) + kHeapSlack + kPlannerNames)
        << "peak heap " << heap << " bytes for a file of " << bytes.size();
#endif
    if (name.starts_with("valid-")) {
      ++valid;
      EXPECT_TRUE(o.loaded()) << o.errors().front()->message;
    }
    loaded += o.loaded();
  }
  std::printf("%zu regression files: %d load (%d named valid-), %zu refused\n", files.size(),
              loaded, valid, files.size() - static_cast<size_t>(loaded));
  EXPECT_GT(valid, 0) << "no valid-*.gguf: the replay's weight binding goes unexercised";
}

}  // namespace
}  // namespace snug
