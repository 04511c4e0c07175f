#include "base/process_image.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "base/mapped_file.h"

namespace snug {
namespace {

struct MapsLine {
  ImageRange range;
  bool readable = false;
  bool executable = false;
  std::pair<std::string, uint64_t> identity;  // device, inode
};

// "begin-end perms offset dev inode [path]"; false for what is not a file mapping.
bool parse_line(const std::string& line, MapsLine* out) {
  std::istringstream in(line);
  std::string span, perms, offset, dev, path;
  uint64_t inode = 0;
  if (!(in >> span >> perms >> offset >> dev >> inode) || perms.size() < 4 || inode == 0) {
    return false;
  }
  std::getline(in >> std::ws, path);
  if (path.empty() || path[0] == '[') return false;
  const size_t dash = span.find('-');
  if (dash == std::string::npos) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long begin = std::strtoull(span.c_str(), &end, 16);
  if (errno != 0 || end != span.c_str() + dash) return false;
  const unsigned long long stop = std::strtoull(span.c_str() + dash + 1, &end, 16);
  if (errno != 0 || *end != '\0' || stop <= begin) return false;
  out->range = {static_cast<uintptr_t>(begin), static_cast<uintptr_t>(stop)};
  out->readable = perms[0] == 'r';
  out->executable = perms[2] == 'x';
  out->identity = {dev, inode};
  return true;
}

}  // namespace

std::vector<ImageRange> image_ranges(std::string_view maps) {
  std::vector<MapsLine> lines;
  std::set<std::pair<std::string, uint64_t>> objects;
  std::istringstream in{std::string(maps)};
  std::string text;
  while (std::getline(in, text)) {
    MapsLine l;
    if (!parse_line(text, &l)) continue;
    if (l.executable) objects.insert(l.identity);
    lines.push_back(std::move(l));
  }
  std::vector<ImageRange> out;
  for (const MapsLine& l : lines) {
    if (l.readable && objects.count(l.identity) != 0) out.push_back(l.range);
  }
  return out;
}

namespace {

// This process's image, read from /proc/self/maps once: it does not change.
const std::vector<ImageRange>& self_image() {
  static const std::vector<ImageRange> ranges = [] {
    std::ifstream in("/proc/self/maps");
    std::stringstream ss;
    ss << in.rdbuf();
    return image_ranges(ss.str());
  }();
  return ranges;
}

}  // namespace

uint64_t process_image_bytes() {
#ifdef SNUG_SANITIZE
  // A sanitizer build's image (100 MiB with the runtime) and its shadow
  // memory are not what a user runs, and no test holds its plan to its RSS:
  // it counts what the release build's image takes, so that a budget means
  // the same to both builds.
  return kReleaseImageBytes;
#endif
  uint64_t total = 0;
  for (const ImageRange& r : self_image()) total += r.end - r.begin;
  return total;
}

void populate_process_image() {
#ifdef SNUG_SANITIZE
  return;  // its image is not counted (process_image_bytes)
#endif
  for (const ImageRange& r : self_image()) {
    // NOLINTNEXTLINE(performance-no-int-to-ptr): an address /proc/self/maps printed
    populate_read(reinterpret_cast<const void*>(r.begin), r.end - r.begin);
  }
}

}  // namespace snug
