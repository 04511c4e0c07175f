#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>

#include "gguf/gguf.h"
#include "required_file.h"
#include "run_binary.h"
#include "temp_files.h"

namespace snug::gguf {
namespace {

using tensor::DType;

std::vector<uint8_t> f32_bytes(std::initializer_list<float> v) {
  std::vector<uint8_t> out(v.size() * 4);
  std::memcpy(out.data(), std::data(v), out.size());
  return out;
}

TEST(Gguf, WriterRoundTripsMetadataAndTensors) {
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_strings("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  w.set_f32s("tokenizer.ggml.scores", {0.f, -1.f, -2.f});
  auto t0 = f32_bytes({1, 2, 3, 4, 5, 6});
  w.add_tensor("x", DType::kF32, {3, 2}, t0);
  auto t1 = f32_bytes({7});
  w.add_tensor("y", DType::kF32, {1}, t1);
  auto bytes = w.to_bytes();
  auto f = File::parse(bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_EQ(*f->get_uint("llama.block_count"), 2u);
  EXPECT_FLOAT_EQ(*f->get_float("llama.rope.freq_base"), 10000.f);
  EXPECT_TRUE(*f->get_bool("tokenizer.ggml.add_bos_token"));
  const Value* toks = f->find("tokenizer.ggml.tokens");
  ASSERT_NE(toks, nullptr);
  ASSERT_EQ(toks->strings.size(), 3u);
  EXPECT_EQ(toks->strings[2], "<s>");
  EXPECT_DOUBLE_EQ(f->find("tokenizer.ggml.scores")->array_f64(1), -1.0);
  EXPECT_EQ(f->find("tokenizer.ggml.scores")->array_i64(1), -1);
  const TensorInfo* x = f->find_tensor("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->ne[0], 3);
  EXPECT_EQ(x->ne[1], 2);
  EXPECT_EQ(x->bytes, 24u);
  EXPECT_EQ(x->offset % 32, 0u);
  float v;
  std::memcpy(&v, x->data + 20, 4);
  EXPECT_EQ(v, 6.f);
  EXPECT_TRUE(f->has_data());
}

TEST(Gguf, TypedGettersNameTheKey) {
  Writer w;
  w.set_string("a", "s");
  auto bytes = w.to_bytes();
  auto f = File::parse(bytes, "mem");
  ASSERT_TRUE(f.ok());
  auto r = f->get_uint("a");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("'a' must be an integer"), std::string::npos);
  auto m = f->get_uint("missing");
  EXPECT_NE(m.error().message.find("missing metadata 'missing'"), std::string::npos);
  EXPECT_EQ(*f->get_uint_or("missing", 7), 7u);
}

TEST(Gguf, HeaderOnlyFileAllowedWhenAsked) {
  Writer w;
  auto t = f32_bytes({1, 2, 3, 4});
  w.add_tensor("x", DType::kF32, {4}, t);
  auto bytes = w.to_bytes();
  bytes.resize(bytes.size() - 16);
  EXPECT_FALSE(File::parse(bytes, "mem").ok());
  auto f = File::parse(bytes, "mem", {.allow_missing_data = true});
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_FALSE(f->has_data());
  EXPECT_EQ(f->tensors()[0].data, nullptr);
  EXPECT_EQ(f->tensors()[0].bytes, 16u);
}

TEST(Gguf, EveryTruncationIsAnErrorNotACrash) {
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_strings("tokenizer.ggml.tokens", {"a", "bb", "ccc"});
  auto t = f32_bytes({1, 2, 3, 4});
  w.add_tensor("x", DType::kF32, {4}, t);
  auto bytes = w.to_bytes();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
    auto f = File::parse(cut, "cut");
    EXPECT_FALSE(f.ok()) << "accepted a file cut to " << n << " bytes";
    if (!f.ok()) {
      EXPECT_EQ(f.error().message.find('\n'), std::string::npos);
    }
  }
}

// Two writers of one path (parallel tests writing a shared fixture, two runs
// quantizing to the same output) once shared PATH.tmp: one write failed. Each
// write now has its own temporary file, and the last rename wins whole.
TEST(Gguf, ConcurrentWritersOfOnePathAllSucceed) {
  // A directory of its own: ctest runs the other writer tests in parallel, and
  // WriteIsAtomic removes its directory when done.
  const auto dir = testing::scratch_dir("gguf_concurrent");
  const std::string path = (dir / "shared.gguf").string();
  Writer w;
  w.set_u32("k", 7);
  std::vector<uint8_t> blob(1 << 16, 3);
  w.add_tensor("t", DType::kF32, {static_cast<int64_t>(blob.size() / 4)}, blob);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 20; ++k) failures += w.write(path).ok() ? 0 : 1;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto f = File::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_FALSE(snug::testing::temp_file_left(path));
  std::filesystem::remove_all(dir);
}

TEST(Gguf, WriteIsAtomic) {
  auto dir = std::filesystem::temp_directory_path() / "snug_gguf_test";
  std::filesystem::create_directories(dir);
  Writer w;
  w.set_u32("k", 1);
  auto path = (dir / "out.gguf").string();
  ASSERT_TRUE(w.write(path).ok());
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(snug::testing::temp_file_left(path));
  auto bad = w.write((dir / "no_such_dir" / "x.gguf").string());
  EXPECT_FALSE(bad.ok());
  std::filesystem::remove_all(dir);
}

TEST(Gguf, RealModelParses) {
  std::string path = std::string(SNUG_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!snug::testing::have_file(path, "scripts/fetch-models")) return;
  auto f = File::open(path);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->tensors().size(), 272u);
  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_EQ(f->find("tokenizer.ggml.tokens")->strings.size(), 49152u);
}

}  // namespace
// Float array elements read as integers (a token type written as a float) are
// truncated and saturated: a value beyond int64's range or NaN must not be a
// conversion with undefined behaviour (fuzz_gguf found one, -2.5e36).
TEST(Gguf, FloatArrayElementsAsIntegersSaturate) {
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_f32s("x.values", {3.7f, -2.54312e36f, 1e30f, std::nanf(""), -0.5f});
  auto bytes = w.to_bytes();
  auto f = File::parse(bytes, "mem");
  ASSERT_TRUE(f.ok()) << f.error().message;
  const Value* v = f->find("x.values");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->array_i64(0), 3);
  EXPECT_EQ(v->array_i64(1), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(v->array_i64(2), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(v->array_i64(3), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(v->array_i64(4), 0);
}

}  // namespace snug::gguf
