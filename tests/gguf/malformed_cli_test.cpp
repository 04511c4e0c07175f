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

namespace snug {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int code = -1;  // exit code, or 128 + signal
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path temp_dir() {
  fs::path d = fs::temp_directory_path() / ("snug_malformed_cli_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

RunResult run(const std::string& args) {
  const fs::path d = temp_dir();
  const std::string cmd = std::string(SNUG_BIN) + " " + args + " </dev/null >" +
                          (d / "out").string() + " 2>" + (d / "err").string();
  const int status = std::system(cmd.c_str());
  RunResult r;
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.code = 128 + WTERMSIG(status);
  r.out = slurp(d / "out");
  r.err = slurp(d / "err");
  return r;
}

std::string write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
  const fs::path p = temp_dir() / name;
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  return p.string();
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
