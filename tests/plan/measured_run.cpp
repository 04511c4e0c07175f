#include "measured_run.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "run_binary.h"

namespace snug::testing {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

MeasuredRun run_measured(const std::string& cmd) {
  const fs::path d = scratch_dir("measured");
  const std::string full = cmd + " >" + (d / "out").string() + " 2>" + (d / "err").string();
  MeasuredRun r;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  struct rusage ru {};
  ::wait4(pid, &status, 0, &ru);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.max_rss = static_cast<uint64_t>(ru.ru_maxrss) * 1024;
  r.out = slurp(d / "out");
  r.err = slurp(d / "err");
  return r;
}

double rss_error(double predicted, double measured) {
  return (predicted - measured) / measured;
}

bool rss_close(double predicted, double measured) {
  return std::abs(rss_error(predicted, measured)) < 0.01 ||
         std::abs(predicted - measured) < 1.0 * (1 << 20);
}

}  // namespace snug::testing
