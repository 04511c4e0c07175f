#include "required_file.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string_view>

namespace snug::testing {

bool inputs_required() {
  const char* ci = std::getenv("CI");
  const char* req = std::getenv("SNUG_REQUIRE_REFERENCE");
  return (ci != nullptr && std::string_view(ci) == "true") ||
         (req != nullptr && std::string_view(req) == "1");
}

bool have_file(const std::string& path, const std::string& how_to_get) {
  if (std::filesystem::exists(path)) return true;
  if (inputs_required()) {
    ADD_FAILURE() << path << " is missing (" << how_to_get << ") and this run requires it";
  } else {
    [&] { GTEST_SKIP() << "missing " << path << " (" << how_to_get << ")"; }();
  }
  return false;
}

}  // namespace snug::testing
