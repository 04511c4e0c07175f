#include "text/tokenizer.h"

#include "text/bpe.h"
#include "text/pretokenize.h"
#include "text/special_tokens.h"
#include "text/spm.h"
#include "text/unicode.h"
#include "text/vocab.h"

namespace snug::text {

struct Tokenizer::State {
  Vocab vocab;
  std::optional<PreTokenizer> pre;  // BPE only
  std::unique_ptr<SpecialTokenMatcher> special;
  std::string chat_template;
};

Result<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
  auto s = std::make_shared<State>();
  SNUG_ASSIGN_OR_RETURN(s->vocab, Vocab::from_gguf(file));
  if (s->vocab.type == VocabType::kBpe) {
    SNUG_ASSIGN_OR_RETURN(PreTokenizer pre,
                          PreTokenizer::create(*find_pre_tokenizer(s->vocab.pre)));
    s->pre.emplace(std::move(pre));
  }
  s->special = std::make_unique<SpecialTokenMatcher>(s->vocab);
  if (const gguf::Value* t = file.find("tokenizer.chat_template")) {
    if (t->type != gguf::ValueType::kString)
      return make_error("'", file.name(), "': tokenizer.chat_template must be a string");
    s->chat_template = std::string(t->str);
  }
  Tokenizer tok;
  tok.s_ = std::move(s);
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  return encode(text, add_special, parse_special, {});
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special,
                                       std::span<const TextSpan> plain) const {
  const Vocab& v = s_->vocab;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  const std::vector<Fragment> frags = s_->special->partition(text, parse_special, plain);
  if (add_special && v.add_bos && v.special.bos >= 0) out.push_back(v.special.bos);
  if (v.type == VocabType::kBpe) {
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        bpe_encode(v, *s_->pre, text.substr(f.offset, f.length), &out);
      }
    }
  } else {
    bool prev_special = true;  // the first fragment gets the space prefix
    std::string escaped;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      escaped.clear();
      if (v.add_space_prefix && prev_special) escaped.append("\xE2\x96\x81");
      for (char c : text.substr(f.offset, f.length)) {
        if (c == ' ') {
          escaped.append("\xE2\x96\x81");
        } else {
          escaped.push_back(c);
        }
      }
      spm_encode(v, escaped, &out);
      prev_special = false;
    }
  }
  if (add_special && v.add_eos && v.special.eos >= 0) out.push_back(v.special.eos);
  return out;
}

namespace {

void append_bpe_normal(std::string_view text, std::string* out) {
  for (size_t off = 0; off < text.size();) {
    const size_t start = off;
    const uint32_t cpt = unicode::decode_permissive(text, off);
    const int b = unicode::cpt_to_byte(cpt);
    if (b >= 0) {
      out->push_back(static_cast<char>(b));
      continue;
    }
    // Not a mapped byte: llama.cpp's llama_decode_text writes this marker.
    static const char* kHex = "0123456789abcdef";
    std::string utf8;
    unicode::append_utf8(utf8, cpt);
    out->append("[UNK_BYTE_0x");
    for (unsigned char c : utf8) out->push_back(kHex[c >> 4]), out->push_back(kHex[c & 15]);
    out->append(text);
    out->append("]");
    (void)start;
  }
}

void append_piece(const Vocab& v, int32_t id, bool special, std::string* out) {
  if (id < 0 || id >= v.size()) return;
  const uint32_t attr = v.attrs[id];
  if (!special && (attr & (kAttrUnknown | kAttrControl))) return;
  const std::string_view text = v.text(id);
  if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) {
    out->append(text);
    return;
  }
  if (v.type == VocabType::kBpe) {
    if (attr & kAttrNormal) append_bpe_normal(text, out);
    return;
  }
  if (attr & kAttrNormal) {
    for (size_t i = 0; i < text.size(); ++i) {
      if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
        out->push_back(' ');
        i += 2;
      } else {
        out->push_back(text[i]);
      }
    }
  } else if ((attr & kAttrByte) && text.size() >= 6) {
    const auto hex = [](char c) {
      return c >= '0' && c <= '9'   ? c - '0'
             : c >= 'a' && c <= 'f' ? c - 'a' + 10
             : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                    : 0;
    };
    out->push_back(static_cast<char>(hex(text[3]) * 16 + hex(text[4])));
  }
}

// llama.cpp's clean_up_tokenization_spaces passes over detokenized text.
std::string clean_spaces(const std::string& in) {
  std::string t = in;
  // " ?", " !", " .", " ," lose the space.
  std::string a;
  for (size_t i = 0; i < t.size(); ++i) {
    const char x = t[i];
    if (i > 0 && t[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') && !a.empty())
      a.pop_back();
    a.push_back(x);
  }
  // " ' " becomes "'".
  std::string b;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i];
    if (i > 0 && x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back();
      b.push_back(x);
      ++i;
      continue;
    }
    b.push_back(x);
  }
  // " 's", " 'm", " 're", " 've" lose the space.
  std::string c;
  for (size_t i = 0; i < b.size(); ++i) {
    const char x = b[i];
    if (i > 0 && b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      const bool drop =
          x1 == 's' || x1 == 'm' ||
          (i + 2 < b.size() && ((x1 == 'r' && b[i + 2] == 'e') || (x1 == 'v' && b[i + 2] == 'e')));
      if (drop && !c.empty()) c.pop_back();
    }
    c.push_back(x);
  }
  return c;
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const Vocab& v = s_->vocab;
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i == 0 && v.add_space_prefix) {
      // llama.cpp strips one leading space from the first piece.
      std::string p;
      append_piece(v, ids[0], false, &p);
      out.append(!p.empty() && p[0] == ' ' ? p.substr(1) : p);
      continue;
    }
    append_piece(v, ids[i], false, &out);
  }
  return v.clean_spaces ? clean_spaces(out) : out;
}

std::string Tokenizer::piece(int32_t id) const {
  std::string out;
  append_piece(s_->vocab, id, true, &out);
  return out;
}

std::string Tokenizer::visible_piece(int32_t id) const {
  std::string out;
  append_piece(s_->vocab, id, false, &out);
  return out;
}

int32_t Tokenizer::n_vocab() const {
  return s_->vocab.size();
}
int32_t Tokenizer::bos() const {
  return s_->vocab.special.bos;
}
int32_t Tokenizer::eos() const {
  return s_->vocab.special.eos;
}
bool Tokenizer::add_bos() const {
  return s_->vocab.add_bos;
}
bool Tokenizer::add_eos() const {
  return s_->vocab.add_eos;
}

bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && id < n_vocab() && s_->vocab.eog[id] != 0;
}

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < n_vocab() && (s_->vocab.attrs[id] & kAttrControl) != 0;
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  const int32_t id = s_->vocab.find(text);
  if (id < 0) return std::nullopt;
  return id;
}

std::string_view Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return {};
  return s_->vocab.text(id);
}

const std::vector<std::string>& Tokenizer::warnings() const {
  return s_->vocab.warnings;
}

uint64_t Tokenizer::memory_bytes() const {
  return sizeof(State) + s_->vocab.memory_bytes() + (s_->pre ? s_->pre->memory_bytes() : 0) +
         s_->special->memory_bytes() + s_->chat_template.capacity();
}

const std::string& Tokenizer::chat_template() const {
  return s_->chat_template;
}
const std::string& Tokenizer::model_type() const {
  return s_->vocab.model;
}
const Vocab& Tokenizer::vocab() const {
  return s_->vocab;
}

}  // namespace snug::text
