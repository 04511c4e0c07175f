#include "load_replay.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gguf/gguf.h"
#include "memory/ledger.h"
#include "model/config.h"
#include "model/model.h"
#include "plan/footprint.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace snug::testing {
namespace {

template <typename T>
Status status_of(const Result<T>& r) {
  return r.ok() ? ok_status() : Status(r.error());
}

// Encodes and decodes a probe text with every flag combination; renders the
// chat template. Returns the tokenizer's and the template's status.
void use_tokenizer(const gguf::File& file, LoadOutcome& out) {
  auto tok = text::Tokenizer::from_gguf(file);
  out.tokenizer = status_of(tok);
  if (!tok.ok()) return;
  static const std::string kProbe =
      std::string("Hello world! \xff\xfe<|im_start|>user\n \xF0\x9F\x98\x80 12345 ") + '\0' +
      " <s></s> end";
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tok->encode(kProbe, special, special);
    for (int32_t id : ids) {
      if (id < 0 || id >= tok->n_vocab()) {
        std::fprintf(stderr, "replay_load: token id %d outside the vocabulary of %d\n", id,
                     tok->n_vocab());
        std::abort();
      }
    }
    (void)tok->decode(ids);
  }
  if (tok->chat_template().empty()) return;
  auto t = text::ChatTemplate::parse(tok->chat_template());
  out.chat = status_of(t);
  if (!t.ok()) return;
  text::ChatLimits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_steps = 100'000;
  out.chat =
      status_of(t->render({{"user", "hi"}, {"assistant", "yo"}}, true, "<s>", "</s>", limits));
}

}  // namespace

bool LoadOutcome::loaded() const {
  return errors().empty();
}

std::vector<const Error*> LoadOutcome::errors() const {
  std::vector<const Error*> out;
  for (const Status* s : {&header, &plan, &config, &tokenizer, &chat, &model}) {
    if (!s->ok()) out.push_back(&s->error());
  }
  return out;
}

LoadOutcome replay_load(std::span<const uint8_t> bytes) {
  LoadOutcome out;
  auto header = gguf::File::parse(bytes, "replay", {.allow_missing_data = true});
  out.header = status_of(header);
  if (!header.ok()) return out;
  out.plan = status_of(plan::plan_model(*header));
  out.config = status_of(model::read_config(*header));
  use_tokenizer(*header, out);

  auto strict = gguf::File::parse(bytes, "replay");
  if (!strict.ok()) {
    out.model = strict.error();
    return out;
  }
  memory::Ledger ledger;
  out.model = status_of(model::Model::from_file(std::move(*strict), &ledger));
  return out;
}

}  // namespace snug::testing
