// The plan against the real process on SmolLM2: predicted peak RSS within 1%
// of the kernel's measure of the process (wait4's ru_maxrss) across contexts; a budget that cannot
// hold the model is refused before the weights are touched; inside a real cgroup memory limit, the
// default budget auto-fits a context and the run succeeds. Skips when models/ lacks SmolLM2 or (for
// the cgroup case) cgroups cannot be made.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "measured_run.h"
#include "required_file.h"

namespace snug {
namespace {

namespace fs = std::filesystem;

const std::string kModel = std::string(SNUG_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

using Proc = testing::MeasuredRun;
const auto run = testing::run_measured;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The model is fetched by scripts/setup (testing::have_file: a skip outside CI,
// a failure where the run must check everything).
bool have_model() {
  return snug::testing::have_file(kModel, "scripts/fetch-models");
}

// The pieces of a command line, joined.
template <class... S>
std::string cat(const S&... parts) {
  std::string out;
  (out.append(parts), ...);
  return out;
}

std::string snug(const std::string& args) {
  return std::string(SNUG_BIN) + " " + args;
}

// bench/plan_accuracy, shortened: three contexts at one thread. The bound is 1%
// or 1 MiB (testing::rss_close): with the image counted at its size the worst
// error measured +0.25% over ctx 512..8192 and 1..2 threads on an Intel Xeon
// (docs/BENCHMARKS.md); the two kernel figures (VmHWM, ru_maxrss) differ by up
// to 0.2 MiB. The bound still fails when the tokenizer (3.7 MiB), the parsed
// header (3.2 MiB) or the workspace goes uncounted. The full sweep is the slow
// test plan_accuracy_sweep.
TEST(PlanRun, PredictionWithinOnePercentOfPeakRss) {
  if (!have_model()) return;
#ifdef SNUG_SANITIZE
  GTEST_SKIP() << "sanitizer builds change the process baseline";
#endif
  for (int ctx : {512, 2048, 8192}) {
    const std::string shape = " --json -t 1 --ctx " + std::to_string(ctx);
    Proc plan = run(snug(cat("plan ", kModel, shape)));
    ASSERT_EQ(plan.code, 0) << plan.err;
    Proc p = run(
        snug(cat("run ", kModel, " -p 'Explain what a lighthouse does.' -n 16 --temp 0", shape)));
    ASSERT_EQ(p.code, 0) << p.err;
    auto j = nlohmann::json::parse(p.out);
    const double planned =
        nlohmann::json::parse(plan.out)["predicted_peak_rss_bytes"].get<double>();
    const double predicted = j["predicted_peak_rss_bytes"].get<double>();
    const double measured = static_cast<double>(p.max_rss);
    const double error = testing::rss_error(predicted, measured);
    std::printf("ctx %5d: predicted %.2f MiB, measured %.2f MiB (%+.2f%%)\n", ctx,
                predicted / (1 << 20), measured / (1 << 20), 100 * error);
    EXPECT_EQ(planned, predicted) << "snug plan and snug run disagree at ctx " << ctx;
    EXPECT_TRUE(testing::rss_close(predicted, measured))
        << "ctx " << ctx << ": predicted " << predicted << " measured " << measured;
  }
}

// --repack: the matrices packed into private memory of the same size. The
// plan (resident instead of mapped) still predicts the peak within 1%, and
// the greedy text is the same as from the mapped weights.
TEST(PlanRun, RepackedRunKeepsThePredictionAndTheText) {
  if (!have_model()) return;
#ifdef SNUG_SANITIZE
  GTEST_SKIP() << "sanitizer builds change the process baseline";
#endif
  const std::string shape = " --json -t 1 --ctx 512";
  const std::string prompt = " -p 'Explain what a lighthouse does.' -n 24 --temp 0";
  Proc plan = run(snug("plan " + kModel + shape + " --repack"));
  ASSERT_EQ(plan.code, 0) << plan.err;
  Proc mapped = run(snug("run " + kModel + prompt + shape));
  ASSERT_EQ(mapped.code, 0) << mapped.err;
  Proc packed = run(snug("run " + kModel + prompt + shape + " --repack"));
  ASSERT_EQ(packed.code, 0) << packed.err;
  const auto jm = nlohmann::json::parse(mapped.out), jp = nlohmann::json::parse(packed.out);
  EXPECT_EQ(jp["text"], jm["text"]);
  EXPECT_EQ(jp["token_ids"], jm["token_ids"]);
  const double predicted = jp["predicted_peak_rss_bytes"].get<double>();
  EXPECT_EQ(nlohmann::json::parse(plan.out)["predicted_peak_rss_bytes"].get<double>(), predicted);
  const double error = testing::rss_error(predicted, static_cast<double>(packed.max_rss));
  std::printf("--repack: predicted %.2f MiB, measured %.2f MiB (%+.2f%%)\n", predicted / (1 << 20),
              static_cast<double>(packed.max_rss) / (1 << 20), 100 * error);
  EXPECT_TRUE(testing::rss_close(predicted, static_cast<double>(packed.max_rss)));
  // Where the kernels pack (AVX512-VNNI), the plan says the matrices are resident.
  const auto weights = nlohmann::json::parse(plan.out)["weights"];
  if (jp["matmul_kernels"].dump().find("avx512vnni") != std::string::npos) {
    EXPECT_GT(weights["resident_bytes"].get<double>(), 90.0 * (1 << 20)) << plan.out;
  }
}

// --pack-dir: the first run packs into a file there, the second maps that
// file; both keep the plan within 1% of the peak and the mapped weights'
// text, and the plan counts the pack file as mapped, nothing resident.
TEST(PlanRun, PackDirRunsKeepThePredictionAndTheText) {
  if (!have_model()) return;
#ifdef SNUG_SANITIZE
  GTEST_SKIP() << "sanitizer builds change the process baseline";
#endif
  const fs::path dir = fs::temp_directory_path() / ("snug_pack_dir_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string shape = " --json -t 1 --ctx 512";
  const std::string prompt = " -p 'Explain what a lighthouse does.' -n 24 --temp 0";
  const std::string pack = " --pack-dir " + dir.string();
  Proc plan = run(snug("plan " + kModel + shape + pack));
  ASSERT_EQ(plan.code, 0) << plan.err;
  Proc mapped = run(snug("run " + kModel + prompt + shape));
  ASSERT_EQ(mapped.code, 0) << mapped.err;
  const auto jm = nlohmann::json::parse(mapped.out);
  const double planned = nlohmann::json::parse(plan.out)["predicted_peak_rss_bytes"].get<double>();
  bool packs = false;
  for (const char* which : {"first (writes the file)", "second (maps it)"}) {
    Proc p = run(snug(cat("run ", kModel, prompt, shape, " -v", pack)));
    ASSERT_EQ(p.code, 0) << p.err;
    const auto j = nlohmann::json::parse(p.out);
    EXPECT_EQ(j["text"], jm["text"]) << which;
    EXPECT_EQ(j["token_ids"], jm["token_ids"]) << which;
    const double predicted = j["predicted_peak_rss_bytes"].get<double>();
    EXPECT_EQ(predicted, planned) << which;
    const double error = testing::rss_error(predicted, static_cast<double>(p.max_rss));
    std::printf("--pack-dir, %s: predicted %.2f MiB, measured %.2f MiB (%+.2f%%)\n", which,
                predicted / (1 << 20), static_cast<double>(p.max_rss) / (1 << 20), 100 * error);
    EXPECT_TRUE(testing::rss_close(predicted, static_cast<double>(p.max_rss))) << which;
    packs = j["matmul_kernels"].dump().find("avx512vnni") != std::string::npos;
    if (!packs) {
      EXPECT_NE(p.err.find("take no packed form"), std::string::npos) << p.err;
    } else if (std::string(which).rfind("first", 0) == 0) {
      EXPECT_NE(p.err.find("of matrices packed for the"), std::string::npos) << p.err;
    } else {
      EXPECT_NE(p.err.find("of packed matrices mapped from " + dir.string()), std::string::npos)
          << p.err;
    }
  }
  // A pack directory that cannot be made (under a regular file): one warning,
  // and the run goes on with the mapped weights.
  Proc unmade = run(snug("run " + kModel + prompt + shape + " --pack-dir " + kModel + "/packs"));
  ASSERT_EQ(unmade.code, 0) << unmade.err;
  EXPECT_EQ(nlohmann::json::parse(unmade.out)["text"], jm["text"]);
  if (packs) {
    EXPECT_NE(unmade.err.find("cannot create the pack directory"), std::string::npos) << unmade.err;
    EXPECT_NE(unmade.err.find("the weights stay mapped, unpacked"), std::string::npos)
        << unmade.err;
    EXPECT_EQ(std::count(unmade.err.begin(), unmade.err.end(), '\n'), 1) << unmade.err;
  }
  const auto weights = nlohmann::json::parse(plan.out)["weights"];
  EXPECT_EQ(weights["resident_bytes"].get<double>(), 0.0) << plan.out;
  int files = 0;
  if (fs::exists(dir)) {
    for (const auto& e : fs::directory_iterator(dir)) files += e.path().extension() == ".snugpack";
  }
  EXPECT_EQ(files, packs ? 1 : 0);
  fs::remove_all(dir);
}

// A file with a tensor no family reads (a multimodal converter's extra
// tower, say): 64 MiB of it between two layers of SmolLM2. The plan counts
// the bound tensors only, and a --pack-dir run, which maps what the forward
// pass reads up front, must map no more. It mapped every tensor's unpacked
// bytes, 49% over the plan on this file, until the reader took its ranges
// from the bound tensors; then faults near the extra tensor still mapped
// 1.4 MiB of it (1.1% over) until its pages were let go with the packed
// rows' (file_pages.h).
TEST(PlanRun, PackDirRunOfAFileWithAnUnboundTensorKeepsThePrediction) {
  if (!have_model()) return;
#ifdef SNUG_SANITIZE
  GTEST_SKIP() << "sanitizer builds change the process baseline";
#endif
  const fs::path tmp = fs::temp_directory_path() / ("snug_unbound_" + std::to_string(::getpid()));
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string model = (tmp / "smollm2-extra.gguf").string();
  {
    auto f = gguf::File::open(kModel);
    ASSERT_TRUE(f.ok()) << f.error().message;
    gguf::Writer w;
    for (const auto& kv : f->metadata()) {
      if (kv.key != "general.alignment") w.set_value(kv.key, kv.value);
    }
    const std::vector<uint8_t> extra(64u << 20, 0x3c);
    for (const auto& t : f->tensors()) {
      w.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne.begin(), t.ne.begin() + t.n_dims),
                   {t.data, t.bytes});
      if (t.name == "blk.10.ffn_down.weight") {
        w.add_tensor("mm.extra.weight", tensor::DType::kF32, {16 << 20}, extra);
      }
    }
    ASSERT_TRUE(w.write(model).ok());
  }
  const std::string shape = " --json -t 1 --ctx 512 --pack-dir " + (tmp / "packs").string();
  const std::string prompt = " -p 'Explain what a lighthouse does.' -n 24 --temp 0";
  Proc plan = run(snug("plan " + model + shape));
  ASSERT_EQ(plan.code, 0) << plan.err;
  Proc alone = run(snug("run " + kModel + prompt + " --json -t 1 --ctx 512"));
  ASSERT_EQ(alone.code, 0) << alone.err;
  const double planned = nlohmann::json::parse(plan.out)["predicted_peak_rss_bytes"].get<double>();
  for (const char* which : {"first (writes the file)", "second (maps it)"}) {
    Proc p = run(snug(cat("run ", model, prompt, shape)));
    ASSERT_EQ(p.code, 0) << p.err;
    EXPECT_EQ(nlohmann::json::parse(p.out)["text"], nlohmann::json::parse(alone.out)["text"]);
    const double error = testing::rss_error(planned, static_cast<double>(p.max_rss));
    std::printf("unbound tensor, --pack-dir, %s: predicted %.2f MiB, measured %.2f MiB (%+.2f%%)\n",
                which, planned / (1 << 20), static_cast<double>(p.max_rss) / (1 << 20),
                100 * error);
    EXPECT_TRUE(testing::rss_close(planned, static_cast<double>(p.max_rss))) << which;
  }
  fs::remove_all(tmp);
}

TEST(PlanRun, TooSmallBudgetIsRefusedBeforeLoading) {
  if (!have_model()) return;
  Proc p = run(snug("run " + kModel + " -p hi --memory 64MiB"));
  EXPECT_EQ(p.code, 1);
  EXPECT_EQ(p.err.rfind("snug: error: ", 0), 0u) << p.err;
  EXPECT_EQ(std::count(p.err.begin(), p.err.end(), '\n'), 1) << p.err;
  EXPECT_NE(p.err.find("budget is 64.0 MiB"), std::string::npos) << p.err;
  EXPECT_TRUE(p.out.empty());
  // The 92 MiB of weights were never touched: the process stayed near its baseline.
  EXPECT_LT(p.max_rss, 40 * 1024 * 1024ull) << p.max_rss;
  // The same budget with a fitting context is taken.
  Proc ok = run(snug("run " + kModel + " -p hi -n 4 --temp 0 --memory 160MiB -v"));
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_NE(ok.err.find("chosen to fit the 160.0 MiB budget"), std::string::npos) << ok.err;
  EXPECT_LT(ok.max_rss, 160 * 1024 * 1024ull);
}

TEST(PlanRun, OneShotRunTakesWhatItNeeds) {
  if (!have_model()) return;
#ifdef SNUG_SANITIZE
  GTEST_SKIP() << "sanitizer builds change the process baseline";
#endif
  const std::string args =
      "run " + kModel + " -p 'Explain what a lighthouse does.' -n 96 " + "--temp 0 --json";
  Proc one_shot = run(snug(args));
  Proc full = run(snug(args + " --ctx 8192"));
  ASSERT_EQ(one_shot.code, 0) << one_shot.err;
  ASSERT_EQ(full.code, 0) << full.err;
  auto j = nlohmann::json::parse(one_shot.out);
  const int prompt = static_cast<int>(j["prompt_token_ids"].size());
  EXPECT_EQ(j["context"].get<int>(), (prompt + 96 + 15) / 16 * 16);
  EXPECT_EQ(j["token_ids"], nlohmann::json::parse(full.out)["token_ids"]);
  // The 8192-token f16 cache alone is 180 MiB; prompt + 96 tokens take 3 MiB.
  EXPECT_LT(one_shot.max_rss + (150ull << 20), full.max_rss)
      << "one-shot " << one_shot.max_rss << " full context " << full.max_rss;
  const double predicted = j["predicted_peak_rss_bytes"].get<double>();
  EXPECT_LT(std::abs(predicted - static_cast<double>(one_shot.max_rss)) / predicted, 0.05)
      << "predicted " << predicted << " measured " << one_shot.max_rss;
}

// A memory cgroup with `limit` bytes (v2 where the memory controller is
// enabled, else v1); "" when this machine does not permit one.
std::string make_cgroup(uint64_t limit) {
  const std::string name = "snug-test-" + std::to_string(::getpid());
  std::error_code ec;
  struct Kind {
    std::string dir, limit_file;
    bool ok;
  };
  const Kind kinds[] = {
      {"/sys/fs/cgroup/", "memory.max",
       slurp("/sys/fs/cgroup/cgroup.subtree_control").find("memory") != std::string::npos},
      {"/sys/fs/cgroup/memory/", "memory.limit_in_bytes",
       fs::exists("/sys/fs/cgroup/memory/memory.limit_in_bytes", ec)},
  };
  for (const Kind& k : kinds) {
    if (!k.ok) continue;
    std::string cg = k.dir + name;
    if (!fs::create_directory(cg, ec)) continue;
    std::ofstream(cg + "/" + k.limit_file) << limit;
    if (slurp(cg + "/" + k.limit_file).find(std::to_string(limit)) == 0) return cg;
    ::rmdir(cg.c_str());
  }
  return "";
}

TEST(PlanRun, RunsInsideACgroupLimitWithTheFittedContext) {
  if (!have_model()) return;
#ifdef SNUG_SANITIZE
  GTEST_SKIP() << "sanitizer builds need more memory than the plan";
#endif
  const uint64_t limit = 300ull << 20;  // a multiple of the page size, which v1 rounds to
  const std::string cg = make_cgroup(limit);
  if (cg.empty()) GTEST_SKIP() << "cannot create a memory cgroup here (needs root and cgroupfs)";
  // chat, not run -n: a one-shot run would size its context to the prompt instead.
  Proc p = run("echo $$ > " + cg + "/cgroup.procs && echo 'Name three colours.' | " +
               snug("chat " + kModel + " -n 16 --temp 0 -v --memory-report"));
  ::rmdir(cg.c_str());  // a cgroup directory is removed empty, with rmdir
  ASSERT_EQ(p.code, 0) << p.err;
  const size_t at = p.err.find("context ");
  ASSERT_NE(at, std::string::npos) << p.err;
  const int ctx = std::atoi(p.err.c_str() + at + 8);
  EXPECT_GT(ctx, 1024) << p.err;
  EXPECT_LT(ctx, 8192) << p.err;  // the full context would not fit 300 MB with headroom
  EXPECT_NE(p.err.find("cgroup"), std::string::npos) << p.err;
  EXPECT_LT(p.max_rss, limit);
}

}  // namespace
}  // namespace snug
