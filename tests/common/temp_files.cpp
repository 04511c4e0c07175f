#include "temp_files.h"

#include <filesystem>
#include <system_error>

namespace snug::testing {

bool temp_file_left(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.filename().string() + ".tmp";
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path(), ec)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) return true;
  }
  return false;
}

}  // namespace snug::testing
