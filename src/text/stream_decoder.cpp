#include "text/stream_decoder.h"

#include "text/unicode.h"

namespace snug::text {

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_->visible_piece(id);
  const unicode::ScanResult scan = unicode::scan_utf8(pending_);
  std::string out = unicode::sanitize_utf8(std::string_view(pending_).substr(0, scan.complete));
  pending_.erase(0, scan.complete);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out = unicode::sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace snug::text
