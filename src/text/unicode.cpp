#include "text/unicode.h"

#include <array>

namespace snug::text::unicode {

uint32_t decode_permissive(std::string_view s, size_t& offset) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[offset + k]); };
  const auto cont = [&](size_t k) { return offset + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const uint8_t lead = b(0);
  if (lead < 0x80) {
    offset += 1;
    return lead;
  }
  if ((lead & 0x40) == 0) {
    offset += 1;
    return kReplacement;
  }
  if ((lead & 0x20) == 0) {
    if (!cont(1)) {
      offset += 1;
      return kReplacement;
    }
    uint32_t c = ((lead & 0x1Fu) << 6) | (b(1) & 0x3Fu);
    offset += 2;
    return c;
  }
  if ((lead & 0x10) == 0) {
    if (!cont(1) || !cont(2)) {
      offset += 1;
      return kReplacement;
    }
    uint32_t c = ((lead & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
    offset += 3;
    return c;
  }
  if ((lead & 0x08) == 0) {
    if (!cont(1) || !cont(2) || !cont(3)) {
      offset += 1;
      return kReplacement;
    }
    uint32_t c =
        ((lead & 0x07u) << 18) | ((b(1) & 0x3Fu) << 12) | ((b(2) & 0x3Fu) << 6) | (b(3) & 0x3Fu);
    offset += 4;
    return c;
  }
  offset += 1;
  return kReplacement;
}

void append_utf8(std::string& out, uint32_t c) {
  if (c <= 0x7F) {
    out.push_back(static_cast<char>(c));
  } else if (c <= 0x7FF) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c <= 0xFFFF) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c <= 0x10FFFF) {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.append(kReplacementUtf8);
  }
}

namespace {

// Length of the well-formed sequence at s[i], 0 when ill-formed; when the input ends
// inside a sequence that is valid so far, returns 0 and sets *truncated.
size_t strict_length(std::string_view s, size_t i, bool* truncated, size_t* maximal_subpart) {
  const auto at = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t lead = at(0);
  *truncated = false;
  *maximal_subpart = 1;
  if (lead < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < n; ++k) {
    if (i + k >= s.size()) {
      *truncated = true;
      *maximal_subpart = k;
      return 0;
    }
    const uint8_t c = at(k);
    const bool ok = k == 1 ? (c >= lo && c <= hi) : (c & 0xC0) == 0x80;
    if (!ok) {
      *maximal_subpart = k;
      return 0;
    }
  }
  return n;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    bool truncated;
    size_t sub;
    const size_t n = strict_length(s, i, &truncated, &sub);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

ScanResult scan_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    bool truncated;
    size_t sub;
    const size_t n = strict_length(s, i, &truncated, &sub);
    if (n > 0) {
      i += n;
    } else if (truncated) {
      return {i, true};
    } else {
      i += sub;
    }
  }
  return {i, false};
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    bool truncated;
    size_t sub;
    const size_t n = strict_length(s, i, &truncated, &sub);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append(kReplacementUtf8);
      i += sub;
    }
  }
  return out;
}

namespace {

struct ByteMap {
  std::array<uint32_t, 256> to_cpt{};
  std::array<int16_t, 324> to_byte{};
  ByteMap() {
    to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      to_cpt[b] = printable ? static_cast<uint32_t>(b) : next++;
      to_byte[to_cpt[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

uint32_t byte_to_cpt(uint8_t b) {
  return byte_map().to_cpt[b];
}

int cpt_to_byte(uint32_t cpt) {
  if (cpt >= byte_map().to_byte.size()) return -1;
  return byte_map().to_byte[cpt];
}

}  // namespace snug::text::unicode
