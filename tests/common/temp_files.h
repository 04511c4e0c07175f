// What an atomic writer may leave behind: gguf::Writer writes PATH.tmp.PID.N
// and renames it over PATH, so a failed or finished write must leave no file
// whose name starts with PATH's name + ".tmp" beside it.
#pragma once

#include <string>

namespace snug::testing {

// True when the directory of `path` holds a temporary file of a write to it.
bool temp_file_left(const std::string& path);

}  // namespace snug::testing
