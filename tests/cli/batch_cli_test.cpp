// `snug batch` on the tiny model: results keyed by custom_id, bad lines
// reported in the output while the job goes on, and a job killed halfway
// (its last line torn) that a rerun completes with every id exactly once.
// Classes of bad line tried: not JSON, not an object, missing custom_id,
// custom_id not a string, unknown url, method not POST, body not an object,
// a body the API refuses (temperature out of range, unknown field type),
// a prompt longer than the context, a duplicate custom_id. And the startup
// log's pointer to --pack-dir where the kernels repack the file's rows.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "run_binary.h"
#include "tensor/kernels.h"
#include "tiny_model.h"

namespace snug {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kTag = "batch_cli_test";

std::string tiny_path() {
  static const std::string p = testing::write_tiny_model("batch_tiny.gguf");
  return p;
}

std::string write_text(const std::string& name, const std::string& text) {
  return testing::write_scratch_file(kTag, name, std::vector<uint8_t>(text.begin(), text.end()));
}

std::string request_line(int i, int max_tokens) {
  json body = {{"model", "batch_tiny"}, {"max_tokens", max_tokens}, {"temperature", 0}};
  std::string url;
  if (i % 2 == 0) {
    url = "/v1/chat/completions";
    body["messages"] = {{{"role", "user"}, {"content", "hello number " + std::to_string(i)}}};
  } else {
    url = "/v1/completions";
    body["prompt"] = "line " + std::to_string(i) + " says";
  }
  return json{
      {"custom_id", "id-" + std::to_string(i)}, {"method", "POST"}, {"url", url}, {"body", body}}
      .dump();
}

// Every line of the results; `torn_tail`: the last may be cut short (not counted).
std::vector<json> read_results(const std::string& path, bool torn_tail = false) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (torn_tail && j.is_discarded() && in.peek() == EOF) break;
    EXPECT_FALSE(j.is_discarded()) << "torn or invalid line in the output: " << line;
    if (!j.is_discarded()) out.push_back(j);
  }
  return out;
}

std::string batch_cmd(const std::string& in, const std::string& out) {
  return std::string(SNUG_BIN) + " batch " + tiny_path() + " --in " + in + " --out " + out +
         " --ctx 128 --parallel 2 --max-seqs 2 --threads 1 --queue 4";
}

TEST(BatchCli, AnswersEveryLineAndReportsBadOnes) {
  std::string lines;
  for (int i = 0; i < 6; ++i) lines += request_line(i, 8) + "\n";
  lines += "not json at all\n";
  lines += "[1, 2]\n";
  lines += R"({"url": "/v1/completions", "body": {"prompt": "x"}})"
           "\n";
  lines += R"({"custom_id": 7, "url": "/v1/completions", "body": {"prompt": "x"}})"
           "\n";
  lines += R"({"custom_id": "bad-url", "url": "/v1/embeddings", "body": {"input": "x"}})"
           "\n";
  lines += R"({"custom_id": "bad-method", "method": "GET", "url": "/v1/completions", "body": {}})"
           "\n";
  lines += R"({"custom_id": "bad-body", "url": "/v1/completions", "body": "prompt"})"
           "\n";
  lines +=
      R"({"custom_id": "bad-temp", "url": "/v1/completions", "body": {"prompt": "x", "temperature": 9}})"
      "\n";
  lines +=
      R"({"custom_id": "bad-type", "url": "/v1/completions", "body": {"prompt": "x", "max_tokens": "many"}})"
      "\n";
  lines += json{{"custom_id", "too-long"},
                {"url", "/v1/completions"},
                {"body", {{"prompt", std::string(400, 'z')}}}}
               .dump() +
           "\n";
  lines += request_line(0, 8) + "\n";  // duplicate id-0
  const std::string in = write_text("basic.jsonl", lines);
  const std::string out = (testing::scratch_dir(kTag) / "basic_out.jsonl").string();
  fs::remove(out);
  testing::RunResult r = testing::run_binary("", batch_cmd(in, out) + " -q", kTag);
  ASSERT_EQ(r.code, 0) << r.err;
  std::map<std::string, json> by_id;
  int anonymous = 0;
  for (const json& j : read_results(out)) {
    if (j["custom_id"].is_string()) {
      EXPECT_TRUE(by_id.emplace(j["custom_id"].get<std::string>(), j).second)
          << "id twice: " << j["custom_id"];
    } else {
      ++anonymous;
      EXPECT_TRUE(j["response"].is_null());
      EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    }
  }
  EXPECT_EQ(anonymous, 4);  // not JSON, not an object, no custom_id, custom_id not a string
  for (int i = 0; i < 6; ++i) {
    const json& j = by_id.at("id-" + std::to_string(i));
    EXPECT_EQ(j["response"]["status_code"], 200);
    EXPECT_TRUE(j["error"].is_null());
    const json& body = j["response"]["body"];
    EXPECT_EQ(body["object"], i % 2 == 0 ? "chat.completion" : "text_completion");
    EXPECT_EQ(body["usage"]["completion_tokens"], 8);
  }
  for (const char* id : {"bad-url", "bad-method", "bad-body"}) {
    EXPECT_TRUE(by_id.at(id)["response"].is_null()) << id;
    EXPECT_FALSE(by_id.at(id)["error"].is_null()) << id;
  }
  for (const char* id : {"bad-temp", "bad-type", "too-long"}) {
    EXPECT_EQ(by_id.at(id)["response"]["status_code"], 400) << id;
    EXPECT_TRUE(by_id.at(id)["response"]["body"]["error"]["message"].is_string()) << id;
  }
  EXPECT_NE(r.err.find("already used"), std::string::npos) << r.err;
}

// A q8_0 model: where the dispatched kernels have a packed form of its
// matrices (AVX512-VNNI), the log says once that they repack the file's rows
// on every step and points to --pack-dir; with --pack-dir, or on targets
// without a packed form, it says nothing of it.
TEST(BatchCli, PointsToPackDirWhereTheKernelsRepackEveryStep) {
  testing::TinyModelSpec spec;
  spec.matrix_type = tensor::DType::kQ8_0;
  const std::string model = testing::write_tiny_model("batch_tiny_q8.gguf", spec);
  // The binary's kernels: this CPU's best, or the target SNUG_SIMD_TARGET names.
  if (const char* t = std::getenv("SNUG_SIMD_TARGET"); t != nullptr && *t != 0) {
    ASSERT_TRUE(tensor::limit_simd_target(t).ok()) << t;
  }
  const std::vector<uint8_t> row(64 * 68, 0);
  const tensor::MatView probe{tensor::DType::kQ8_0, row.data(), 64, 64, 68};
  const bool packable = tensor::matmul_packed_bytes(probe) > 0;
  const std::string in = write_text("hint.jsonl", request_line(1, 2) + "\n");
  const std::string out = (testing::scratch_dir(kTag) / "hint_out.jsonl").string();
  const std::string hint = "--pack-dir DIR packs them once";
  const auto run = [&](const std::string& extra) {
    fs::remove(out);
    const testing::RunResult r =
        testing::run_binary("",
                            std::string(SNUG_BIN) + " batch " + model + " --in " + in + " --out " +
                                out + " --ctx 128 --parallel 1 --threads 1 -v" + extra,
                            kTag);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(read_results(out).size(), 1u);
    return r.err;
  };
  const std::string mapped = run("");
  EXPECT_EQ(mapped.find(hint) != std::string::npos, packable) << mapped;
  const std::string dir = (testing::scratch_dir(kTag) / "packs").string();
  const std::string packed = run(" --pack-dir " + dir);
  EXPECT_EQ(packed.find(hint), std::string::npos) << packed;
  if (packable) {
    EXPECT_NE(packed.find("matrices packed at load"), std::string::npos) << packed;
  }
}

TEST(BatchCli, KilledHalfwayAndRerunAnswersEveryIdExactlyOnce) {
  constexpr int kLines = 200;
  std::string lines;
  for (int i = 0; i < kLines; ++i) lines += request_line(i, 96) + "\n";
  const std::string in = write_text("kill.jsonl", lines);
  const std::string out = (testing::scratch_dir(kTag) / "kill_out.jsonl").string();
  fs::remove(out);
  // Start, wait for some results, kill -9, then tear the last line as a kill
  // in the middle of a write would.
  const std::string script = batch_cmd(in, out) + " -q & pid=$!; " + "for i in $(seq 1 600); do " +
                             "n=$(cat " + out +
                             " 2>/dev/null | wc -l); [ \"$n\" -ge 40 ] && break; " +
                             "sleep 0.05; done; kill -9 $pid; wait $pid; " +
                             "printf '{\"custom_id\": \"id-1' >> " + out + "; exit 0";
  testing::RunResult killed = testing::run_binary("bash", write_text("kill.sh", script), kTag);
  ASSERT_EQ(killed.code, 0) << killed.err;
  const auto before = read_results(out, /*torn_tail=*/true);
  ::testing::Test::RecordProperty("results_before_rerun", static_cast<int>(before.size()));
  EXPECT_LT(before.size(), static_cast<size_t>(kLines)) << "the job finished before the kill";
  testing::RunResult r = testing::run_binary("", batch_cmd(in, out), kTag);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("torn line"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("already done"), std::string::npos) << r.err;
  std::map<std::string, int> count;
  for (const json& j : read_results(out)) {
    ++count[j["custom_id"].get<std::string>()];
    EXPECT_EQ(j["response"]["status_code"], 200);
  }
  EXPECT_EQ(count.size(), static_cast<size_t>(kLines));
  for (const auto& [id, n] : count) EXPECT_EQ(n, 1) << id;
}

}  // namespace
}  // namespace snug
