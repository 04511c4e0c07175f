#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretokenize.h"

#include <pcre2.h>

#include "text/unicode.h"

namespace snug::text {

namespace {

constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr std::string_view kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const std::vector<PreTokenizerSpec>& specs() {
  static const std::vector<PreTokenizerSpec> all = {
      {{"", "default"},
       {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"},
       false,
       true,
       false},
      {{"gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de"},
       {kGpt2},
       false,
       true,
       false},
      {{"smollm", "command-r"}, {R"(\p{N})", kGpt2}, false, false, false},
      {{"starcoder", "refact", "codeshell", "exaone", "minerva-7b"},
       {R"(\p{N})", kGpt2},
       false,
       true,
       false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"},
       {kLlama3},
       true,
       true,
       true},
      {{"qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"}, {kQwen2}, false, false, false},
  };
  return all;
}

}  // namespace

const PreTokenizerSpec* find_pre_tokenizer(std::string_view name) {
  for (const PreTokenizerSpec& s : specs())
    for (std::string_view n : s.names)
      if (n == name) return &s;
  return nullptr;
}

struct PreTokenizer::Impl {
  std::vector<pcre2_code*> codes;
  ~Impl() {
    for (pcre2_code* c : codes) pcre2_code_free(c);
  }
};

PreTokenizer::PreTokenizer() : impl_(std::make_unique<Impl>()) {}
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

Result<PreTokenizer> PreTokenizer::create(const PreTokenizerSpec& spec) {
  PreTokenizer p;
  for (std::string_view pattern : spec.patterns) {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
    if (!code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return make_error("pre-tokenizer regex fails to compile at ", err_off, ": ",
                        reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
    p.impl_->codes.push_back(code);
  }
  return p;
}

uint64_t PreTokenizer::memory_bytes() const {
  uint64_t total = sizeof(Impl);
  for (pcre2_code* c : impl_->codes) {
    size_t size = 0;
    pcre2_pattern_info(c, PCRE2_INFO_SIZE, &size);
    total += size;
  }
  return total;
}

void PreTokenizer::split(std::string_view text, Words* out) const {
  out->bytes.clear();
  out->ends.clear();
  if (text.empty()) return;

  // `subject` is strictly valid UTF-8 for PCRE2; `bytes` is what llama.cpp feeds to BPE
  // (its lossy decode re-encoded). They have equal lengths at every code point: they
  // differ only where a surrogate (3 bytes) stands in `subject` as U+FFFD (3 bytes).
  std::string subject;
  if (unicode::is_valid_utf8(text)) {
    out->bytes.assign(text);
  } else {
    out->bytes.reserve(text.size() + 16);
    subject.reserve(text.size() + 16);
    for (size_t off = 0; off < text.size();) {
      const uint32_t cpt = unicode::decode_permissive(text, off);
      unicode::append_utf8(out->bytes, cpt);
      const bool representable = cpt <= 0x10FFFF && (cpt < 0xD800 || cpt > 0xDFFF);
      unicode::append_utf8(subject, representable ? cpt : unicode::kReplacement);
    }
  }
  const std::string& subj = subject.empty() ? out->bytes : subject;
  const auto* base = reinterpret_cast<PCRE2_SPTR>(subj.data());

  // Boundaries of the current pieces; each pattern refines them.
  std::vector<uint32_t> ends = {static_cast<uint32_t>(subj.size())};
  std::vector<uint32_t> next;
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  for (pcre2_code* code : impl_->codes) {
    next.clear();
    uint32_t start = 0;
    for (uint32_t end : ends) {
      const PCRE2_SPTR piece = base + start;
      const PCRE2_SIZE len = end - start;
      PCRE2_SIZE pos = 0, last = 0;
      while (pos < len) {
        // NO_UTF_CHECK: pieces start and end on code point boundaries of valid UTF-8;
        // without it PCRE2 would re-validate the whole piece on every call.
        const int rc = pcre2_match(code, piece, len, pos, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc < 0) break;
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) {  // empty match: step one code point
          pos = ov[0] + 1;
          while (pos < len && (piece[pos] & 0xC0) == 0x80) ++pos;
          continue;
        }
        if (ov[0] > last) next.push_back(start + static_cast<uint32_t>(ov[0]));
        next.push_back(start + static_cast<uint32_t>(ov[1]));
        last = pos = ov[1];
      }
      if (last < len) next.push_back(end);
      start = end;
    }
    ends.swap(next);
  }
  pcre2_match_data_free(md);
  out->ends = std::move(ends);
}

}  // namespace snug::text
