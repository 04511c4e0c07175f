// `snug perplexity` end to end on tiny models: the table and JSON it prints,
// KL divergence against a base, and bad input. Classes tried: missing text
// file, text too short for the window, window beyond the trained context,
// unknown KV type, base model with another vocabulary, missing base model,
// unwritable JSON path. Each ends with one line on stderr and a non-zero exit.
#include <gtest/gtest.h>

#include "required_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "run_binary.h"
#include "tiny_model.h"

namespace snug {
namespace {

namespace fs = std::filesystem;
using testing::RunResult;

RunResult run(const std::string& args) {
  return testing::run_binary(SNUG_BIN, args, "perplexity_cli_test");
}

std::string model_path() {
  static const std::string p = testing::write_tiny_model("ppl_tiny.gguf");
  return p;
}

std::string other_seed_path() {
  testing::TinyModelSpec spec;
  spec.seed = 99;
  static const std::string p = testing::write_tiny_model("ppl_tiny_other.gguf", spec);
  return p;
}

std::string text_path(const std::string& name, size_t repeats) {
  std::string text;
  for (size_t i = 0; i < repeats; ++i)
    text += "The quick brown fox jumps over the lazy dog " + std::to_string(i) + ". ";
  const auto dir = testing::scratch_dir("perplexity_cli_test");
  const std::string path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

void expect_one_line_error(const RunResult& r, const std::string& needle) {
  EXPECT_NE(r.code, 0);
  EXPECT_LT(r.code, 128) << "killed by a signal";
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(PerplexityCli, PrintsTheTableAndJson) {
  const auto json = testing::scratch_dir("perplexity_cli_test") / "r.json";
  RunResult r = run("perplexity " + model_path() + " -f " + text_path("t.txt", 60) +
                    " -c 64 -b 16 --chunks 5 --json " + json.string());
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("PPL"), std::string::npos);
  EXPECT_NE(r.err.find("[5]"), std::string::npos) << "progress per window: " << r.err;
  std::ifstream in(json);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["n_chunks"], 5);
  EXPECT_EQ(j["n_scored"], 5 * (64 - 1 - 32));
  EXPECT_EQ(j["chunk_ppl"].size(), 5u);
  const double ppl = j["ppl"]["value"];
  // Random weights predict badly, but the figure is a real, finite perplexity.
  EXPECT_GT(ppl, 1.0);
  EXPECT_TRUE(std::isfinite(ppl));
  EXPECT_EQ(j["chunk_ppl"].back().get<double>(), ppl);
  EXPECT_FALSE(j.contains("kld"));
}

TEST(PerplexityCli, BatchSizeDoesNotChangeTheResult) {
  const std::string text = text_path("t.txt", 60);
  RunResult a = run("perplexity " + model_path() + " -f " + text + " -c 64 -b 64 --json -");
  RunResult b = run("perplexity " + model_path() + " -f " + text + " -c 64 -b 7 --json -");
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  const auto ja = nlohmann::json::parse(a.out.substr(a.out.find('{')));
  const auto jb = nlohmann::json::parse(b.out.substr(b.out.find('{')));
  EXPECT_NEAR(ja["ppl"]["value"].get<double>(), jb["ppl"]["value"].get<double>(),
              1e-4 * ja["ppl"]["value"].get<double>());
}

TEST(PerplexityCli, KlDivergenceAgainstABase) {
  const std::string text = text_path("t.txt", 60);
  RunResult self = run("perplexity " + model_path() + " -f " + text + " -c 64 --kl-base " +
                       model_path() + " --json -");
  ASSERT_EQ(self.code, 0) << self.err;
  const auto js = nlohmann::json::parse(self.out.substr(self.out.find('{')));
  EXPECT_NEAR(js["kld"]["value"].get<double>(), 0.0, 1e-6);
  EXPECT_EQ(js["same_top"]["value"].get<double>(), 1.0);

  RunResult other = run("perplexity " + model_path() + " -f " + text + " -c 64 --kl-base " +
                        other_seed_path() + " --json -");
  ASSERT_EQ(other.code, 0) << other.err;
  EXPECT_NE(other.out.find("KL divergence, mean"), std::string::npos);
  const auto jo = nlohmann::json::parse(other.out.substr(other.out.find('{')));
  const double kld = jo["kld"]["value"];
  EXPECT_GT(kld, 0.0);
  EXPECT_LE(jo["kld_median"].get<double>(), jo["kld_p99"].get<double>());
  EXPECT_LE(jo["kld_p99"].get<double>(), jo["kld_max"].get<double>());
  EXPECT_LE(jo["same_top"]["value"].get<double>(), 1.0);
}

TEST(PerplexityCli, MissingTextFile) {
  expect_one_line_error(run("perplexity " + model_path() + " -f /nonexistent/text.txt"),
                        "cannot open the text file");
}

TEST(PerplexityCli, TextTooShortForTheWindow) {
  expect_one_line_error(
      run("perplexity " + model_path() + " -f " + text_path("s.txt", 2) + " -c 128"),
      "needs at least 256");
}

TEST(PerplexityCli, WindowBeyondTheTrainedContext) {
  expect_one_line_error(
      run("perplexity " + model_path() + " -f " + text_path("t.txt", 60) + " -c 4096"),
      "trained context");
}

TEST(PerplexityCli, UnknownKvType) {
  expect_one_line_error(
      run("perplexity " + model_path() + " -f " + text_path("t.txt", 60) + " --kv-type q7_0"),
      "unknown --kv-type");
}

TEST(PerplexityCli, MissingBaseModel) {
  expect_one_line_error(run("perplexity " + model_path() + " -f " + text_path("t.txt", 60) +
                            " -c 64 --kl-base /nonexistent/base.gguf"),
                        "base.gguf");
}

TEST(PerplexityCli, UnwritableJsonPath) {
  expect_one_line_error(run("perplexity " + model_path() + " -f " + text_path("t.txt", 60) +
                            " -c 64 --chunks 1 --json /nonexistent/dir/r.json"),
                        "cannot write");
}

TEST(PerplexityCli, BaseWithAnotherVocabulary) {
  const std::string gemma = std::string(SNUG_SOURCE_DIR) + "/models/gemma-3-270m-q4_k_m.gguf";
  if (!snug::testing::have_file(gemma, "scripts/fetch-models")) return;
  expect_one_line_error(run("perplexity " + model_path() + " -f " + text_path("t.txt", 60) +
                            " -c 64 --kl-base " + gemma),
                        "base model");
}

}  // namespace
}  // namespace snug
