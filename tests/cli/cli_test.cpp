// The snug binary against bad input: every case must end with exactly one line
// on stderr naming the problem, exit code 1 (a failure) or 2 (bad usage), and
// no signal. Classes tried: missing file, directory, empty file, not GGUF,
// truncated GGUF, unknown tensor type, unsupported architecture, missing
// tensor, prompt longer than the context, non-numeric and negative flags,
// unknown subcommand, unknown --admission policy, bad token-id file, bad
// SNUG_GGML_ORDER and SNUG_SIMD_TARGET values.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../plan/llama_header.h"
#include "run_binary.h"
#include "tiny_model.h"

namespace snug {
namespace {

namespace fs = std::filesystem;

using testing::RunResult;

fs::path temp_dir() {
  return testing::scratch_dir("cli_test");
}

RunResult run(const std::string& args, const std::string& input = "") {
  return testing::run_binary(SNUG_BIN, args, "cli_test", input);
}

// One line on stderr containing `needle`, the expected exit code, nothing on stdout.
void expect_one_line_error(const RunResult& r, int code, const std::string& needle) {
  EXPECT_EQ(r.code, code) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(r.err.rfind("snug: error: ", 0), 0u) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

std::string write_bytes(const std::string& name, const std::vector<uint8_t>& bytes) {
  return testing::write_scratch_file("cli_test", name, bytes);
}

std::string tiny_path() {
  static const std::string p = testing::write_tiny_model("cli_tiny.gguf");
  return p;
}

TEST(Cli, RunsTheTinyModel) {
  RunResult r = run("run " + tiny_path() + " --no-chat --temp 0 -n 4 -p hello");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  RunResult j = run("run " + tiny_path() + " --temp 0 -n 4 -p hello --json");
  EXPECT_EQ(j.code, 0) << j.err;
  EXPECT_NE(j.out.find("\"token_ids\""), std::string::npos);
  EXPECT_NE(j.out.find("\"peak_rss_bytes\""), std::string::npos);
}

TEST(Cli, ChatAnswersEachLineAndReusesTheConversation) {
  RunResult r = run("chat " + tiny_path() + " --temp 0 -n 3 -v", "hello\nthe end\n");
  EXPECT_EQ(r.code, 0) << r.err;
  // The second turn evaluates only what follows the cached first turn.
  const size_t second = r.err.find("turn:", r.err.find("turn:") + 1);
  ASSERT_NE(second, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(" 0 reused", second), std::string::npos) << r.err;
}

TEST(Cli, MemoryReportGoesToStderr) {
  RunResult r = run("run " + tiny_path() + " --no-chat --temp 0 -n 2 -p hi --memory-report");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.err.find("kv cache"), std::string::npos);
  EXPECT_NE(r.err.find("peak RSS"), std::string::npos);
  EXPECT_EQ(r.out.find("memory report"), std::string::npos);
}

// A one-shot run with -n holds prompt + n tokens of cache, in whole blocks of
// 16; the tiny model's trained context is 256 and fits any budget here.
nlohmann::json run_json(const std::string& args) {
  RunResult r = run("run " + tiny_path() + " --no-chat --temp 0 --json " + args);
  EXPECT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

TEST(Cli, OneShotRunSizesItsContextToPromptPlusN) {
  for (int n : {4, 40}) {
    nlohmann::json j = run_json("-p hello -n " + std::to_string(n));
    const auto prompt = static_cast<int>(j["prompt_token_ids"].size());
    EXPECT_EQ(j["context"].get<int>(), (prompt + n + 15) / 16 * 16) << j.dump();
    EXPECT_EQ(j["context_reason"].get<std::string>(), "prompt " + std::to_string(prompt) +
                                                          " + -n " + std::to_string(n) +
                                                          ", rounded to blocks of 16");
  }
}

TEST(Cli, OneShotContextBeyondTheTrainedOneStopsThere) {
  nlohmann::json j = run_json("-p hello -n 1000 --ignore-eos");
  EXPECT_EQ(j["context"].get<int>(), 256) << j.dump();
  EXPECT_NE(j["context_reason"].get<std::string>().find("capped at the model's trained context"),
            std::string::npos)
      << j.dump();
  EXPECT_EQ(j["stop_reason"].get<std::string>(), "context full");
  // The last token sampled never needs a cache row.
  EXPECT_EQ(j["prompt_token_ids"].size() + j["token_ids"].size(), 257u);
}

TEST(Cli, ExplicitContextAndOpenEndedRunsKeepTheirContext) {
  nlohmann::json given = run_json("-p hello -n 4 --ctx 96");
  EXPECT_EQ(given["context"].get<int>(), 96);
  EXPECT_EQ(given["context_reason"].get<std::string>(), "--ctx");
  nlohmann::json open = run_json("-p hello -n -1");
  EXPECT_EQ(open["context"].get<int>(), 256);
  EXPECT_EQ(open["context_reason"].get<std::string>(),
            "largest that fits the budget: the model's trained context");
}

TEST(Cli, MemoryReportAndVerboseSayWhyTheContextIsWhatItIs) {
  RunResult r = run("run " + tiny_path() + " --no-chat --temp 0 -n 4 -p hello --memory-report -v");
  EXPECT_EQ(r.code, 0) << r.err;
  const std::string why = "prompt 2 + -n 4, rounded to blocks of 16";  // "he" "llo"
  EXPECT_NE(r.err.find("  context 16 tokens: " + why), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("context 16 (" + why + ")"), std::string::npos) << r.err;
}

TEST(Cli, ChatStillFitsTheLargestContext) {
  RunResult r = run("chat " + tiny_path() + " --temp 0 -n 3 --memory-report", "hello\n");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("context 256 tokens: largest that fits the budget"), std::string::npos)
      << r.err;
}

TEST(Cli, InspectPrintsTensorsAndTotals) {
  RunResult r = run("inspect " + tiny_path());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("blk.1.ffn_down.weight"), std::string::npos);
  EXPECT_NE(r.out.find("totals by type"), std::string::npos);
}

TEST(Cli, MissingFile) {
  expect_one_line_error(run("run /nonexistent/model.gguf -p hi"), 1,
                        "cannot open '/nonexistent/model.gguf'");
}

TEST(Cli, Directory) {
  expect_one_line_error(run("run " + temp_dir().string() + " -p hi"), 1, "is a directory");
}

TEST(Cli, EmptyFile) {
  expect_one_line_error(run("run " + write_bytes("empty.gguf", {}) + " -p hi"), 1, "is empty");
}

TEST(Cli, NotGguf) {
  const std::string s = "this is plain text, not a model\n";
  expect_one_line_error(run("run " + write_bytes("text.gguf", {s.begin(), s.end()}) + " -p hi"), 1,
                        "not a GGUF file");
}

TEST(Cli, TruncatedFile) {
  auto bytes = testing::build_tiny_model().to_bytes();
  bytes.resize(bytes.size() * 7 / 10);
  expect_one_line_error(run("run " + write_bytes("cut.gguf", bytes) + " -p hi"), 1,
                        "runs past the end of the file");
}

TEST(Cli, UnknownTensorType) {
  auto bytes = testing::build_tiny_model().to_bytes();
  const std::string name = "blk.0.attn_q.weight";
  auto it = std::search(bytes.begin(), bytes.end(), name.begin(), name.end());
  ASSERT_NE(it, bytes.end());
  // name, then u32 n_dims (2), two u64 dims, then the u32 type.
  const size_t type_at = static_cast<size_t>(it - bytes.begin()) + name.size() + 4 + 16;
  const uint32_t bogus = 200;
  std::memcpy(&bytes[type_at], &bogus, 4);
  expect_one_line_error(run("run " + write_bytes("badtype.gguf", bytes) + " -p hi"), 1,
                        "unknown type 200");
}

TEST(Cli, UnsupportedArchitecture) {
  testing::TinyModelSpec s;
  s.architecture = "mamba";
  expect_one_line_error(run("run " + testing::write_tiny_model("mamba.gguf", s) + " -p hi"), 1,
                        "architecture 'mamba' is not supported");
}

TEST(Cli, PromptLongerThanContext) {
  std::string prompt(400, 'a');
  for (size_t i = 1; i < prompt.size(); i += 2) prompt[i] = ' ';
  expect_one_line_error(run("run " + tiny_path() + " --no-chat --ctx 32 -p '" + prompt + "'"), 1,
                        "does not fit the context");
}

TEST(Cli, ContextBeyondTheModel) {
  expect_one_line_error(run("run " + tiny_path() + " --ctx 100000 -p hi"), 1,
                        "exceeds the model's trained context");
}

TEST(Cli, NonNumericFlag) {
  expect_one_line_error(run("run " + tiny_path() + " -n abc -p hi"), 2, "-n");
  expect_one_line_error(run("run " + tiny_path() + " --ctx -5 -p hi"), 2, "--ctx");
}

TEST(Cli, UnknownAdmissionPolicy) {
  expect_one_line_error(run("serve " + tiny_path() + " --admission bogus"), 2,
                        "--admission: bogus not in {reserve,prompt}");
  expect_one_line_error(run("batch " + tiny_path() + " --in a --out b --admission greedy"), 2,
                        "--admission: greedy not in {reserve,prompt}");
}

TEST(Cli, UnknownSubcommand) {
  expect_one_line_error(run("frobnicate"), 2, "frobnicate");
}

// The kernel environment variables: a bad value is a usage error before
// anything runs, in snug and in snug-serve (serve, batch) alike; 0 and 1 run.
TEST(Cli, BadKernelEnvironment) {
  struct Env {
    const char* name;
    const char* value;
    const char* needle;
  };
  for (Env e : {Env{"SNUG_GGML_ORDER", "yes", "SNUG_GGML_ORDER: 'yes' is neither 1"},
                Env{"SNUG_GGML_ORDER", "2", "SNUG_GGML_ORDER: '2'"},
                Env{"SNUG_SIMD_TARGET", "AVX9", "SNUG_SIMD_TARGET"}}) {
    ASSERT_EQ(setenv(e.name, e.value, 1), 0);
    expect_one_line_error(run("run " + tiny_path() + " --no-chat -n 1 -p hi"), 2, e.needle);
    expect_one_line_error(run("serve " + tiny_path()), 2, e.needle);
    expect_one_line_error(run("batch " + tiny_path() + " --in a --out b"), 2, e.needle);
    unsetenv(e.name);
  }
  for (const char* v : {"0", "1"}) {
    ASSERT_EQ(setenv("SNUG_GGML_ORDER", v, 1), 0);
    RunResult r = run("run " + tiny_path() + " --no-chat --temp 0 -n 2 -p hi");
    unsetenv("SNUG_GGML_ORDER");
    EXPECT_EQ(r.code, 0) << v << ": " << r.err;
  }
}

TEST(Cli, UnknownModelName) {
  expect_one_line_error(run("run nosuchmodel -p hi"), 1, "no model file or known model");
}

TEST(Cli, BadTokenIdsFile) {
  const std::string s = "1 2 99999999\n";
  expect_one_line_error(run("run " + tiny_path() + " --token-ids-file " +
                            write_bytes("ids.txt", {s.begin(), s.end()})),
                        1, "is not a token id");
}

// Names in the file are text a hostile header chose: plan's table and run's log
// quote them escaped, so no escape sequence reaches the terminal.
TEST(Cli, ModelNamesAreEscapedOnTheTerminal) {
  testing::TinyModelSpec spec;
  spec.name = "evil\x1b[2J\x1b]0;title\x07name\nsecond line";
  gguf::Writer w = testing::build_tiny_model(spec);
  const std::string path =
      (std::filesystem::temp_directory_path() / "snug_tests" / "cli_escape.gguf").string();
  ASSERT_TRUE(w.write(path).ok());
  RunResult plan = run("plan " + path);
  EXPECT_EQ(plan.code, 0) << plan.err;
  EXPECT_EQ(plan.out.find('\x1b'), std::string::npos) << plan.out;
  EXPECT_NE(plan.out.find("evil\\x1B[2J"), std::string::npos) << plan.out;
  RunResult gen = run("run " + path + " -p hi -n 2 -v");
  EXPECT_EQ(gen.code, 0) << gen.err;
  EXPECT_EQ(gen.err.find('\x1b'), std::string::npos) << gen.err;
}

TEST(Cli, PlanPrintsWhatItCostsAndWhatFits) {
  RunResult r = run("plan " + tiny_path() + " --memory 64MiB");
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* s : {"weights by type", "KV cache", "workspace", "tokenizer",
                        "predicted peak RSS", "max context", "q4_0"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  RunResult j = run("plan " + tiny_path() + " --json --ctx 128 --parallel 4 --kv-type f16");
  EXPECT_EQ(j.code, 0) << j.err;
  EXPECT_EQ(j.out.rfind("{\"", 0), 0u) << j.out;
  EXPECT_NE(j.out.find("\"predicted_peak_rss_bytes\":"), std::string::npos) << j.out;
  EXPECT_NE(j.out.find("\"parallel\":4"), std::string::npos) << j.out;
}

TEST(Cli, PlanReadsAHeaderOnlyFile) {
  const std::string path = testing::write_llama_header("cli_70b.gguf");
  RunResult r = run("plan " + path + " --memory 64GiB --threads 8");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("(header only)"), std::string::npos) << r.out;
  // More than it has: refused with what would fit, after the table.
  RunResult small = run("plan " + path + " --memory 48GiB --ctx 131072");
  EXPECT_EQ(small.code, 1);
  EXPECT_NE(small.err.find("--ctx "), std::string::npos) << small.err;
  // Running it needs the data.
  expect_one_line_error(run("run " + path + " -p hi"), 1, "runs past the end of the file");
}

TEST(Cli, BadBudgets) {
  for (const char* bad : {"12XB", "-1G", "", "0"}) {
    for (const char* cmd : {"run", "chat", "plan"}) {
      const std::string extra = std::string(cmd) == "run" ? " -p hi" : "";
      expect_one_line_error(
          run(std::string(cmd) + " " + tiny_path() + extra + " --memory='" + bad + "'"), 2,
          "--memory");
    }
  }
}

TEST(Cli, BudgetTooSmallIsRefusedBeforeLoading) {
  RunResult r = run("run " + tiny_path() + " -p hi --memory 1MiB");
  expect_one_line_error(r, 1, "but the memory budget is 1.0 MiB");
  EXPECT_NE(r.err.find("needs"), std::string::npos);
  expect_one_line_error(run("run " + tiny_path() + " -p hi --memory 1MiB --ctx 64"), 1,
                        "budget is 1.0 MiB");
  RunResult ok = run("run " + tiny_path() + " --no-chat --temp 0 -n 2 -p hi --memory 64MiB");
  EXPECT_EQ(ok.code, 0) << ok.err;
}

TEST(Cli, PlanContextBeyondTheModel) {
  expect_one_line_error(run("plan " + tiny_path() + " --ctx 100000"), 1,
                        "exceeds the model's trained context");
  expect_one_line_error(run("plan " + tiny_path() + " --kv-type q5_1"), 1, "--kv-type");
}

TEST(Cli, PlanSizesThatOverflow) {
  const std::string path =
      testing::write_llama_header("cli_overflow.gguf", 512, 4096, 512, 4096, 256);
  expect_one_line_error(run("plan " + path + " --ctx 131072 --parallel 65536 --memory 1G"), 1,
                        "overflows");
}

}  // namespace
}  // namespace snug
