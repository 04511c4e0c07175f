#include "vocabs.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "gguf_surgery.h"
#include "tiny_model.h"
#include "tiny_spm.h"

namespace snug::fuzz {
namespace {

// A File parsed from bytes this function keeps alive for the process.
gguf::File parse_kept(std::vector<uint8_t> bytes, const char* name) {
  static std::vector<std::unique_ptr<std::vector<uint8_t>>> kept;
  kept.push_back(std::make_unique<std::vector<uint8_t>>(std::move(bytes)));
  auto f = gguf::File::parse(*kept.back(), name);
  if (!f.ok()) {
    std::fprintf(stderr, "fuzz: %s does not parse: %s\n", name, f.error().message.c_str());
    std::abort();
  }
  return std::move(*f);
}

void add(std::vector<NamedTokenizer>& out, const std::string& name, const gguf::File& file) {
  auto tok = text::Tokenizer::from_gguf(file);
  if (!tok.ok()) {
    std::fprintf(stderr, "fuzz: tokenizer of %s: %s\n", name.c_str(), tok.error().message.c_str());
    std::abort();
  }
  std::string tmpl = tok->chat_template();
  out.push_back({name, std::move(*tok), std::move(tmpl)});
}

}  // namespace

std::vector<std::string> real_model_paths() {
  namespace fs = std::filesystem;
  const char* env = std::getenv("SNUG_MODELS");
  const fs::path dir = env ? fs::path(env) : fs::path(SNUG_SOURCE_DIR) / "models";
  std::vector<std::string> out;
  for (const char* f : {"SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"}) {
    std::error_code ec;
    if (fs::exists(dir / f, ec)) out.push_back((dir / f).string());
  }
  return out;
}

const std::vector<NamedTokenizer>& fuzz_tokenizers() {
  static const std::vector<NamedTokenizer> all = [] {
    std::vector<NamedTokenizer> out;
    testing::TinyModelSpec spec;
    spec.n_layers = 1;
    add(out, "tiny-bpe", parse_kept(testing::build_tiny_model(spec).to_bytes(), "tiny-bpe"));
    // The same vocabulary with SmolLM2's pre-tokenizer: no space clean-up, so
    // decode(encode(text)) must give back any valid UTF-8 text.
    testing::Layout smollm = testing::Layout::parse(testing::build_tiny_model(spec).to_bytes());
    smollm.set("tokenizer.ggml.pre", testing::kTagString, testing::enc_string("smollm"));
    add(out, "tiny-bpe-smollm", parse_kept(smollm.bytes(), "tiny-bpe-smollm"));
    add(out, "tiny-spm", parse_kept(testing::build_tiny_spm_vocab().to_bytes(), "tiny-spm"));
    for (const std::string& path : real_model_paths()) {
      auto f = gguf::File::open(path, {.allow_missing_data = true});
      if (!f.ok()) continue;
      add(out, std::filesystem::path(path).filename().string(), *f);
    }
    return out;
  }();
  return all;
}

}  // namespace snug::fuzz
