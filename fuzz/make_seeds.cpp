// Writes the fuzzers' seed corpora under DIR (scripts/fuzz calls it before each
// run, so no large binary is committed):
//   DIR/gguf/           every malformed-catalogue case, a valid one-layer tiny
//                       model, the tiny SPM vocabulary, and the first 64 KiB of
//                       each real model file present (its header's start);
//   DIR/tokenizer/      texts for each tokenizer and flag combination;
//   DIR/chat_template/  each known template with a short conversation.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "malformed_cases.h"
#include "tiny_model.h"
#include "tiny_spm.h"
#include "vocabs.h"

namespace {

namespace fs = std::filesystem;

void write(const fs::path& p, const void* data, size_t n) {
  std::ofstream(p, std::ios::binary)
      .write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}
void write(const fs::path& p, const std::vector<uint8_t>& b) {
  write(p, b.data(), b.size());
}
void write(const fs::path& p, const std::string& s) {
  write(p, s.data(), s.size());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace snug;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  for (const char* sub : {"gguf", "tokenizer", "chat_template"}) fs::create_directories(dir / sub);

  for (const auto& c : testing::malformed_catalogue())
    write(dir / "gguf" / (c.name + ".gguf"), c.bytes);
  testing::TinyModelSpec spec;
  spec.n_layers = 1;
  spec.n_embd = 16;
  spec.n_ff = 32;
  spec.n_heads = 2;
  spec.n_kv_heads = 1;
  write(dir / "gguf" / "valid_small.gguf", testing::build_tiny_model(spec).to_bytes());
  spec.matrix_type = tensor::DType::kQ8_0;
  spec.n_embd = 32;
  write(dir / "gguf" / "valid_q8_0.gguf", testing::build_tiny_model(spec).to_bytes());
  write(dir / "gguf" / "tiny_spm.gguf", testing::build_tiny_spm_vocab().to_bytes());
  for (const std::string& path : fuzz::real_model_paths()) {
    std::vector<char> head(64 << 10);
    std::ifstream in(path, std::ios::binary);
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    write(dir / "gguf" / ("head_" + fs::path(path).filename().string()), head.data(),
          static_cast<size_t>(in.gcount()));
  }

  const std::vector<std::string> texts = {
      "Hello world",
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
      "<start_of_turn>user\nhi<end_of_turn>",
      "  leading and   inner   spaces\t\ttabs\n\nnewlines  ",
      "caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80\xF0\x9F\x98\x80 \xED\x95\x9C",
      "invalid \xff\xfe\xc3 \xe2\x82 \xed\xa0\x80 utf8",
      "1234567890 3.14159 -42 0x1F",
      "it's you're we've I'm they'll he'd",
      std::string("nul\0inside", 10),
      "<0x41><s></s><unk><|user|>",
  };
  const size_t n_tok = fuzz::fuzz_tokenizers().size();
  int k = 0;
  for (size_t t = 0; t < n_tok; ++t) {
    for (uint8_t flags : {0x00, 0xC0}) {
      for (const std::string& s : texts) {
        std::string seed(1, static_cast<char>(flags | t));
        seed += s;
        write(dir / "tokenizer" / ("seed_" + std::to_string(k++)), seed);
      }
    }
  }

  const std::string conversation = std::string("You are terse.") + '\x01' + "Hi there" + '\x01' +
                                   "Hello! How can I help?" + '\x01' + "  Tell me a joke.  ";
  k = 0;
  for (uint8_t t = 0; t < 8; ++t) {
    std::string seed(1, static_cast<char>(0xC1 | (t << 1)));
    write(dir / "chat_template" / ("known_" + std::to_string(k++)), seed + conversation);
  }
  for (const auto& t : fuzz::fuzz_tokenizers()) {
    if (t.chat_template.empty()) continue;
    std::string seed(1, '\x40');
    seed += t.chat_template;
    seed += '\0';
    write(dir / "chat_template" / ("source_" + std::to_string(k++)), seed + conversation);
  }
  return 0;
}
