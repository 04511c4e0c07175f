// Slow (label slow): the fast tier's malformed-file checks at full length. The
// valid tiny model cut short at every byte (the fast tier cuts every header
// byte and every 997th data byte), and every byte of its header replaced by
// each of a few values, all through replay_load, the GGUF fuzzer's path: no
// cut loads, and every refusal is one line.
#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>

#include "gguf/gguf.h"
#include "load_replay.h"
#include "malformed_cases.h"

namespace snug {
namespace {

using testing::replay_load;

// Returns the number of refused inputs; records a failure for each error that
// is not one short line.
bool check_errors(const testing::LoadOutcome& o, const std::string& what) {
  for (const Error* e : o.errors()) {
    if (e->message.empty() || e->message.find('\n') != std::string::npos ||
        e->message.size() >= 400) {
      ADD_FAILURE() << what << ": not a one-line error: " << e->message;
    }
  }
  return !o.loaded();
}

TEST(MalformedSweep, EveryCutIsRefused) {
  const auto& full = testing::valid_tiny_bytes();
  int64_t refused = 0;
  for (size_t n = 0; n < full.size(); ++n) {
    const auto o = replay_load(std::span(full.data(), n));
    refused += check_errors(o, "cut at " + std::to_string(n));
    if (o.loaded()) ADD_FAILURE() << "the file cut at " << n << " of " << full.size() << " loaded";
  }
  std::printf("%zu cuts, %lld refused\n", full.size(), static_cast<long long>(refused));
}

TEST(MalformedSweep, EveryHeaderByteReplaced) {
  std::vector<uint8_t> bytes = testing::valid_tiny_bytes();
  auto f = gguf::File::parse(bytes, "tiny");
  ASSERT_TRUE(f.ok());
  const size_t header = f->data_offset();
  int64_t total = 0, refused = 0;
  std::set<std::string> messages;
  for (size_t at = 0; at < header; ++at) {
    const uint8_t orig = bytes[at];
    for (uint8_t v :
         {uint8_t{0x00}, uint8_t{0xFF}, uint8_t{0x80}, static_cast<uint8_t>(orig ^ 1)}) {
      if (v == orig) continue;
      bytes[at] = v;
      const auto o = replay_load(bytes);
      refused += check_errors(o, "byte " + std::to_string(at) + " = " + std::to_string(v));
      for (const Error* e : o.errors()) messages.insert(e->message.substr(0, 40));
      ++total;
    }
    bytes[at] = orig;
  }
  std::printf("%zu header bytes, %lld variants, %lld refused, %zu distinct error openings\n",
              header, static_cast<long long>(total), static_cast<long long>(refused),
              messages.size());
  // Most single-byte changes in a header (lengths, counts, types, magic) must be caught.
  EXPECT_GT(refused, total / 10);
}

}  // namespace
}  // namespace snug
