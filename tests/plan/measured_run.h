// Runs the snug binary as a child process and takes its peak resident set from
// the kernel (wait4's ru_maxrss: the child's VmHWM, measured outside it), so the
// plan's prediction is checked against a figure the process did not compute.
#pragma once

#include <cstdint>
#include <string>

namespace snug::testing {

struct MeasuredRun {
  int code = -1;         // exit code, or 128 + signal
  uint64_t max_rss = 0;  // the child's peak RSS, bytes
  std::string out, err;  // stdout, stderr
};

// Runs `cmd` under /bin/sh (which execs a single command in place).
MeasuredRun run_measured(const std::string& cmd);

// The relative error of a predicted peak against the measured one.
double rss_error(double predicted, double measured);

}  // namespace snug::testing
