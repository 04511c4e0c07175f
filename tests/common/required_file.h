// Files the tests need but do not build (the real models, fetched by
// scripts/setup). Outside CI a missing one skips the test with the reason;
// where a run must check everything (CI=true or SNUG_REQUIRE_REFERENCE=1, set
// by .ci/run) its absence fails the test, so a skip can never pass for a check.
#pragma once

#include <string>

namespace snug::testing {

// True when the test must fail rather than skip for a missing input.
bool inputs_required();

// True when `path` exists. Otherwise records a failure (inputs_required()) or
// a skip naming the file and how to get it; the caller then returns:
//   if (!have_file(path, "scripts/fetch-models")) return;
bool have_file(const std::string& path, const std::string& how_to_get);

}  // namespace snug::testing
