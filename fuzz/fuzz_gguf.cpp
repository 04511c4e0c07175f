// Fuzzes everything that reads a GGUF file before a token is computed, in the
// order the CLI runs it: the reader (header, metadata, tensor directory, tensor
// bounds; strict and header-only), the planner's footprint, the hyper-parameter
// checks, the tokenizer built from the metadata (then used on a probe text), the
// model's chat template, and weight binding. Every step may refuse the input
// with an Error; an abort, a sanitizer report, a leak or a timeout is a bug.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "gguf/gguf.h"
#include "memory/ledger.h"
#include "model/config.h"
#include "model/model.h"
#include "plan/footprint.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {

using namespace snug;

void use_tokenizer(const gguf::File& file) {
  auto tok = text::Tokenizer::from_gguf(file);
  if (!tok.ok()) return;
  static const std::string kProbe =
      "Hello world! \xff\xfe<|im_start|>user\n \xF0\x9F\x98\x80 12345 \x00 <s></s> end";
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tok->encode(kProbe, special, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok->n_vocab()) {
        std::fprintf(stderr, "fuzz_gguf: token id %d outside the vocabulary\n", id);
        std::abort();
      }
    }
    (void)tok->decode(ids);
  }
  if (!tok->chat_template().empty()) {
    text::ChatLimits limits;
    limits.max_output_bytes = 1 << 20;
    limits.max_steps = 100'000;
    auto t = text::ChatTemplate::parse(tok->chat_template());
    if (t.ok()) (void)t->render({{"user", "hi"}, {"assistant", "yo"}}, true, "<s>", "</s>", limits);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  auto header = gguf::File::parse(bytes, "fuzz", {.allow_missing_data = true});
  if (!header.ok()) return 0;
  (void)plan::plan_model(*header);
  (void)model::read_config(*header);
  use_tokenizer(*header);

  auto strict = gguf::File::parse(bytes, "fuzz");
  if (!strict.ok()) return 0;
  memory::Ledger ledger;
  (void)model::Model::from_file(std::move(*strict), &ledger);
  return 0;
}
