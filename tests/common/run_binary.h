// Running the snug binary from tests: exit code (128 + signal when killed),
// stdout and stderr captured through files in a per-process scratch folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace snug::testing {

struct RunResult {
  int code = -1;    // exit code, or 128 + signal
  std::string out;  // stdout
  std::string err;  // stderr
};

// A folder under the temp directory for this process and `tag`, removed with
// its files when the process exits (kept if SNUG_KEEP_TEST_FILES is set).
std::filesystem::path scratch_dir(const std::string& tag);
// Runs `binary args` through the shell with `input` on stdin.
RunResult run_binary(const std::string& binary, const std::string& args, const std::string& tag,
                     const std::string& input = "");
// Writes bytes to scratch_dir(tag)/name and returns the path.
std::string write_scratch_file(const std::string& tag, const std::string& name,
                               const std::vector<uint8_t>& bytes);

}  // namespace snug::testing
