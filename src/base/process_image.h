// The program's own image: the executable and the shared libraries it has
// loaded, as /proc/self/maps lists them.
//
// How much of it is resident is not the program's choice: the kernel's
// fault-around maps whatever part of a page-cache folio (up to a whole large
// folio on recent kernels) lies around each page the program executes, and
// the folios' sizes follow how the files were read or written before. The
// same binary therefore measured 1 to 3 MiB apart from one machine to the
// next. Populating the image at start makes it all resident everywhere, so
// the plan can count its exact size instead of a constant measured on one
// machine. The pages are clean, shared with every process that maps the same
// files, and reclaimable.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace snug {

struct ImageRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;
};

// The readable file mappings of every object that has an executable mapping
// (ELF objects; a mapped model or pack file has none), from maps-format text.
// Guard gaps (---p), anonymous memory and pseudo-files ([heap], [vdso]) are
// not part of it. Malformed lines are skipped.
std::vector<ImageRange> image_ranges(std::string_view maps);

// Total bytes of this process's image, read once from /proc/self/maps and
// cached (0 where /proc is unreadable). The same executable with the same
// libraries gives the same figure in every process, so `snug plan` and
// `snug run` agree on it byte for byte.
uint64_t process_image_bytes();
// What a sanitizer build counts instead (about the release snug's image).
constexpr uint64_t kReleaseImageBytes = 12 << 20;

// Makes the whole image resident (MADV_POPULATE_READ; a read per page on a
// kernel without it, or when the kernel refuses). Called first thing in main.
void populate_process_image();

}  // namespace snug
