#include "base/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "base/check.h"

namespace snug {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarn)};
}  // namespace

void set_log_level(LogLevel level) {
  g_level.store(static_cast<int>(level));
}
LogLevel log_level() {
  return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}

void log_line(LogLevel level, const std::string& line) {
  static const char* const kPrefix[] = {"debug", "info", "warning", "error", ""};
  std::fprintf(stderr, "snug: %s: %s\n", kPrefix[static_cast<int>(level)], line.c_str());
}

[[noreturn]] void check_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "snug: internal error: check '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace snug
