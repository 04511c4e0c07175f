// Stop strings over streamed text: holds back text that might be the start of
// a stop string and cuts at the first complete one, so a client never sees
// any part of a stop string.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace snug::engine {

class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `text`; returns the text now safe to release. Sets *stopped when
  // a stop string completed (the text before it is released, the rest dropped).
  std::string push(std::string_view text, bool* stopped);
  // Releases whatever is held back (at the end of generation).
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
};

}  // namespace snug::engine
