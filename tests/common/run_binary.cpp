#include "run_binary.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

namespace snug::testing {
namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The scratch folders this process made, removed when it exits (each gtest
// case runs in a process of its own under ctest) unless SNUG_KEEP_TEST_FILES
// is set: thousands of runs otherwise leave thousands of folders behind.
class ScratchFolders {
 public:
  ~ScratchFolders() {
    if (std::getenv("SNUG_KEEP_TEST_FILES") != nullptr) return;
    std::error_code ec;
    for (const std::filesystem::path& d : made_) std::filesystem::remove_all(d, ec);
  }
  void add(const std::filesystem::path& d) {
    const std::lock_guard<std::mutex> lock(mu_);
    made_.insert(d);
  }

 private:
  std::mutex mu_;
  std::set<std::filesystem::path> made_;
};

ScratchFolders& scratch_folders() {
  static ScratchFolders folders;
  return folders;
}

}  // namespace

std::filesystem::path scratch_dir(const std::string& tag) {
  std::filesystem::path d =
      std::filesystem::temp_directory_path() / ("snug_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  scratch_folders().add(d);
  return d;
}

RunResult run_binary(const std::string& binary, const std::string& args, const std::string& tag,
                     const std::string& input) {
  const std::filesystem::path d = scratch_dir(tag);
  std::ofstream(d / "in", std::ios::binary) << input;
  const std::string cmd = binary + " " + args + " <" + (d / "in").string() + " >" +
                          (d / "out").string() + " 2>" + (d / "err").string();
  const int status = std::system(cmd.c_str());
  RunResult r;
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.code = 128 + WTERMSIG(status);
  r.out = slurp(d / "out");
  r.err = slurp(d / "err");
  return r;
}

std::string write_scratch_file(const std::string& tag, const std::string& name,
                               const std::vector<uint8_t>& bytes) {
  const std::filesystem::path p = scratch_dir(tag) / name;
  std::ofstream(p, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  return p.string();
}

}  // namespace snug::testing
