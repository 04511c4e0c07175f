// The malformed-GGUF catalogue through the snug binary, end to end: for every
// case `snug run FILE -p hi` and `snug inspect FILE` must exit with code 1 (not
// a signal, not success), print exactly one line on stderr starting with
// "snug: error:" that names the defect, and nothing on stdout.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "malformed_cases.h"
#include "run_binary.h"

namespace snug {
namespace {

namespace fs = std::filesystem;

using testing::RunResult;

RunResult run(const std::string& args) {
  return testing::run_binary(SNUG_BIN, args, "malformed_cli");
}

std::string write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
  return testing::write_scratch_file("malformed_cli", name, bytes);
}

void expect_clean_failure(const RunResult& r, const std::string& needle) {
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("snug: error: ", 0), 0u) << r.err;
  if (!needle.empty()) {
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  }
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(MalformedCli, RunRefusesEveryCase) {
  for (const auto& c : testing::malformed_catalogue()) {
    SCOPED_TRACE(c.name);
    const std::string path = write_file(c.name + ".gguf", c.bytes);
    expect_clean_failure(run("run " + path + " --no-chat -n 1 -p hi"), c.expect);
    fs::remove(path);
  }
}

// inspect and plan read the header only (tensor data may be missing): they may
// accept a file whose defect is in its data or weights, but never crash.
TEST(MalformedCli, InspectAndPlanNeverCrash) {
  for (const auto& c : testing::malformed_catalogue()) {
    SCOPED_TRACE(c.name);
    const std::string path = write_file(c.name + ".gguf", c.bytes);
    for (const char* cmd : {"inspect ", "plan "}) {
      RunResult r = run(cmd + path);
      EXPECT_TRUE(r.code == 0 || r.code == 1) << cmd << "exit " << r.code << ": " << r.err;
      if (r.code == 1) expect_clean_failure(r, "");
    }
    fs::remove(path);
  }
}

}  // namespace
}  // namespace snug
