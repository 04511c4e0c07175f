#include "text/vocab.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

#include <fmt/format.h>

#include "text/pretokenize.h"
#include "text/unicode.h"

namespace snug::text {

namespace {

uint64_t hash_text(std::string_view s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h ^ (h >> 29);
}

}  // namespace

Result<int32_t> TokenTable::add(std::string_view text) {
  arena_.append(text);
  if (arena_.size() > UINT32_MAX) return make_error("token texts exceed 4 GiB");
  offsets_.push_back(static_cast<uint32_t>(arena_.size()));
  return size() - 1;
}

void TokenTable::finish() {
  size_t cap = 16;
  while (cap < static_cast<size_t>(size()) * 2) cap <<= 1;
  slots_.assign(cap, -1);
  for (int32_t id = 0; id < size(); ++id) {
    size_t i = hash_text(text(id)) & (cap - 1);
    while (slots_[i] >= 0) i = (i + 1) & (cap - 1);
    slots_[i] = id;
  }
}

int32_t TokenTable::find(std::string_view s) const {
  if (slots_.empty()) return -1;
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash_text(s) & mask;; i = (i + 1) & mask) {
    const int32_t id = slots_[i];
    if (id < 0) return -1;
    if (text(id) == s) return id;
  }
}

uint64_t TokenTable::memory_bytes() const {
  return arena_.capacity() + offsets_.capacity() * sizeof(uint32_t) +
         slots_.capacity() * sizeof(int32_t);
}

uint64_t Vocab::memory_bytes() const {
  // unordered_map: one node (key, value, next pointer, cached hash) per entry plus buckets.
  const uint64_t merge_bytes =
      merges.size() * (sizeof(uint64_t) + sizeof(Merge) + 2 * sizeof(void*)) +
      merges.bucket_count() * sizeof(void*);
  return sizeof(Vocab) + model.capacity() + pre.capacity() + tokens.memory_bytes() +
         scores.capacity() * sizeof(float) + attrs.capacity() * sizeof(uint32_t) + eog.capacity() +
         special_tokens.capacity() * sizeof(int32_t) + merge_bytes;
}

namespace {

constexpr std::string_view kPrefix = "tokenizer.ggml.";

std::string key(std::string_view k) {
  return std::string(kPrefix) + std::string(k);
}

uint32_t attr_from_type(int64_t type) {
  switch (type) {
    case 1:
      return kAttrNormal;
    case 2:
      return kAttrUnknown;
    case 3:
      return kAttrControl;
    case 4:
      return kAttrUserDefined;
    case 5:
      return kAttrUnused;
    case 6:
      return kAttrByte;
    default:
      return kAttrUndefined;
  }
}

// Numeric array `k` with exactly n elements, or nullptr when absent.
Result<const gguf::Value*> numeric_array(const gguf::File& f, std::string_view k, uint64_t n) {
  const gguf::Value* v = f.find(key(k));
  if (!v) return static_cast<const gguf::Value*>(nullptr);
  if (v->type != gguf::ValueType::kArray || v->elem_type == gguf::ValueType::kString ||
      v->elem_type == gguf::ValueType::kArray || v->elem_type == gguf::ValueType::kBool)
    return make_error("'", f.name(), "': ", key(k), " must be a numeric array");
  if (v->count != n)
    return make_error("'", f.name(), "': ", key(k), " has ", v->count,
                      " entries but the vocabulary has ", n, " tokens");
  return v;
}

// True for the "no such token" value llama.cpp's converters write: -1, stored as u32
// 0xFFFFFFFF (or as a signed -1, or u64 all ones).
bool is_none_id(const gguf::Value& v) {
  switch (v.type) {
    case gguf::ValueType::kU32:
      return v.u == UINT32_MAX;
    case gguf::ValueType::kU64:
      return v.u == UINT64_MAX;
    case gguf::ValueType::kI8:
    case gguf::ValueType::kI16:
    case gguf::ValueType::kI32:
    case gguf::ValueType::kI64:
      return v.i == -1;
    default:
      return false;
  }
}

// The special-token ids, read as llama.cpp reads them (llama-vocab.cpp, load()): a default
// that this vocabulary cannot hold is dropped, and a key overrides the default, except:
// - -1 means the model has no such token (llama.cpp would keep the default);
// - another id outside the vocabulary is refused for a token generation needs (eos, and
//   bos when add_bos_token is set), and otherwise ignored with a warning in v.warnings,
//   keeping the default, as llama.cpp does ("bad special token ... using default id").
// Expects v.add_bos to be final.
Status read_special_ids(const gguf::File& f, Vocab& v) {
  struct Field {
    const char* name;
    int32_t* id;
  };
  SpecialIds& s = v.special;
  const Field fields[] = {
      {"bos_token_id", &s.bos},         {"eos_token_id", &s.eos},
      {"eot_token_id", &s.eot},         {"eom_token_id", &s.eom},
      {"unknown_token_id", &s.unk},     {"seperator_token_id", &s.sep},
      {"padding_token_id", &s.pad},     {"fim_pre_token_id", &s.fim_pre},
      {"fim_suf_token_id", &s.fim_suf}, {"fim_mid_token_id", &s.fim_mid},
      {"fim_pad_token_id", &s.fim_pad}, {"fim_rep_token_id", &s.fim_rep},
      {"fim_sep_token_id", &s.fim_sep},
  };
  for (const Field& fld : fields) {
    if (*fld.id >= v.size()) *fld.id = -1;  // a default that this vocabulary cannot hold
    const gguf::Value* value = f.find(key(fld.name));
    if (!value) continue;
    if (is_none_id(*value)) {
      *fld.id = -1;
      continue;
    }
    SNUG_ASSIGN_OR_RETURN(uint64_t id, f.get_uint(key(fld.name)));
    if (id < static_cast<uint64_t>(v.size())) {
      *fld.id = static_cast<int32_t>(id);
      continue;
    }
    const bool needed = fld.id == &s.eos || (fld.id == &s.bos && v.add_bos);
    if (needed)
      return make_error(
          "'", f.name(), "': ", key(fld.name), " = ", id, " is outside the vocabulary of ",
          v.size(), " tokens, and generation needs ",
          fld.id == &s.eos ? "the end-of-sequence token" : "the BOS token (add_bos_token is set)");
    v.warnings.push_back(fmt::format(
        "'{}': {} = {} is outside the vocabulary of {} tokens; {}", f.name(), key(fld.name), id,
        v.size(),
        *fld.id >= 0 ? fmt::format("using the default id {}", *fld.id) : std::string("ignored")));
  }
  return ok_status();
}

Status read_merges(const gguf::File& f, Vocab& v) {
  const gguf::Value* m = f.find(key("merges"));
  if (!m) return make_error("'", f.name(), "': BPE vocabulary without ", key("merges"));
  if (m->type != gguf::ValueType::kArray || m->elem_type != gguf::ValueType::kString)
    return make_error("'", f.name(), "': ", key("merges"), " must be an array of strings");
  v.merges.reserve(m->strings.size());
  for (size_t i = 0; i < m->strings.size(); ++i) {
    const std::string_view word = m->strings[i];
    const size_t pos = word.size() > 1 ? word.find(' ', 1) : std::string_view::npos;
    if (pos == std::string_view::npos)
      return make_error("'", f.name(), "': merge ", i, " has no space separating its two parts");
    const std::string_view a = word.substr(0, pos), b = word.substr(pos + 1);
    const int32_t ia = v.find(a), ib = v.find(b);
    if (ia < 0 || ib < 0)
      return make_error("'", f.name(), "': merge ", i, " names unknown token '",
                        printable(ia < 0 ? a : b), "'");
    std::string joined(a);
    joined.append(b);
    const uint64_t k =
        (static_cast<uint64_t>(static_cast<uint32_t>(ia)) << 32) | static_cast<uint32_t>(ib);
    // The first occurrence keeps its rank, as llama.cpp's emplace does.
    v.merges.emplace(k, Vocab::Merge{static_cast<int32_t>(i), v.find(joined)});
  }
  return ok_status();
}

// Token texts llama.cpp treats as end-of-turn / end-of-generation markers.
// Token texts llama.cpp treats as end-of-turn / end-of-generation markers (llama-vocab.cpp,
// the version bundled with llama-cpp-python 0.3.36); found ones are forced to CONTROL.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<\xEF\xBD\x9C"  // NOLINT(bugprone-suspicious-missing-comma)
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
    "<end_of_utterance>"};
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\xEF\xBD\x9C"  // NOLINT(bugprone-suspicious-missing-comma)
    "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
    "[e~["};
constexpr std::string_view kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
                                             "[PAD]"};
constexpr std::string_view kFimRepTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                             "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepTexts[] = {"<|file_sep|>"};

template <size_t N>
void detect(Vocab& v, int32_t& id, const std::string_view (&texts)[N]) {
  if (id >= 0) return;
  for (std::string_view t : texts) {
    const int32_t found = v.find(t);
    if (found >= 0) {
      id = found;
      v.attrs[found] |= kAttrControl;
      return;
    }
  }
}

void build_end_of_generation(Vocab& v) {
  detect(v, v.special.eot, kEotTexts);
  detect(v, v.special.fim_pad, kFimPadTexts);
  detect(v, v.special.fim_rep, kFimRepTexts);
  detect(v, v.special.fim_sep, kFimSepTexts);
  if (v.special.eom < 0) {
    const int32_t id = v.find("<|eom_id|>");
    if (id >= 0) v.special.eom = id, v.attrs[id] |= kAttrControl;
  }
  // Control tokens named "unused" are unused (Gemma's <unusedN>).
  for (int32_t id = 0; id < v.size(); ++id) {
    if ((v.attrs[id] & kAttrControl) && v.text(id).find("unused") != std::string_view::npos)
      v.attrs[id] |= kAttrUnused;
  }
  v.eog.assign(v.size(), 0);
  for (int32_t id : {v.special.fim_pad, v.special.fim_rep, v.special.fim_sep, v.special.eos,
                     v.special.eot, v.special.eom})
    if (id >= 0) v.eog[id] = 1;
  for (std::string_view t : kEogTexts) {
    const int32_t id = v.find(t);
    if (id >= 0) v.eog[id] = 1, v.attrs[id] |= kAttrControl;
  }
  // gpt-oss: these structural tokens are always rendered.
  for (std::string_view t : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}) {
    const int32_t id = v.find(t);
    if (id >= 0) v.attrs[id] = kAttrUserDefined;
  }
  const auto eog_id = [&](std::string_view t) {
    const int32_t id = v.find(t);
    return id >= 0 && v.eog[id] ? id : -1;
  };
  // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
  const int32_t end = eog_id("<|end|>");
  const bool has_call = eog_id("<|call|>") >= 0 || eog_id("<|calls|>") >= 0;
  if (end >= 0 && has_call && (eog_id("<|return|>") >= 0 || eog_id("<|flush|>") >= 0)) {
    v.eog[end] = 0;
    v.attrs[end] = kAttrUserDefined;
  }
  // gemma4 / paddleocr: "</s>" is ordinary text when "<|tool_response>" exists.
  const int32_t s = eog_id("</s>");
  if (s >= 0 && eog_id("<|tool_response>") >= 0) {
    v.eog[s] = 0;
    v.attrs[s] = kAttrNormal;
  }
}

}  // namespace

Result<Vocab> Vocab::from_gguf(const gguf::File& f) {
  Vocab v;
  SNUG_ASSIGN_OR_RETURN(v.model, f.get_string(key("model")));
  if (v.model == "gpt2") {
    v.type = VocabType::kBpe;
    v.special.bos = 11, v.special.eos = 11;  // llama.cpp's defaults for BPE
  } else if (v.model == "llama") {
    v.type = VocabType::kSpm;
    v.special.bos = 1, v.special.eos = 2, v.special.unk = 0;
    v.add_bos = true;
    v.add_space_prefix = true;
  } else {
    return make_error("'", f.name(), "': unsupported tokenizer model '", printable(v.model),
                      "' (supported: gpt2, llama)");
  }
  if (f.find(key("pre"))) {
    SNUG_ASSIGN_OR_RETURN(v.pre, f.get_string(key("pre")));
  }
  if (v.type == VocabType::kBpe) {
    const PreTokenizerSpec* spec = find_pre_tokenizer(v.pre);
    if (!spec)
      return make_error("'", f.name(), "': unsupported pre-tokenizer '", printable(v.pre), "'");
    v.ignore_merges = spec->ignore_merges;
    v.clean_spaces = spec->clean_spaces;
    v.add_bos = spec->add_bos;
  }

  const gguf::Value* toks = f.find(key("tokens"));
  if (!toks || toks->type != gguf::ValueType::kArray || toks->elem_type != gguf::ValueType::kString)
    return make_error("'", f.name(), "': ", key("tokens"),
                      " is missing or not an array of strings");
  const uint64_t n = toks->strings.size();
  if (n == 0) return make_error("'", f.name(), "': the vocabulary is empty");
  if (n > INT32_MAX)
    return make_error("'", f.name(), "': vocabulary of ", n, " tokens is too large");
  SNUG_ASSIGN_OR_RETURN(const gguf::Value* scores, numeric_array(f, "scores", n));
  SNUG_ASSIGN_OR_RETURN(const gguf::Value* types, numeric_array(f, "token_type", n));

  v.scores.assign(n, 0.0f);
  v.attrs.assign(n, kAttrNormal);
  for (uint64_t i = 0; i < n; ++i) {
    std::string_view word = toks->strings[i];
    std::string empty_name;
    if (word.empty()) {  // llama.cpp renames empty tokens so every text stays unique
      empty_name = "[EMPTY_" + std::to_string(i) + "]";
      word = empty_name;
    }
    SNUG_RETURN_IF_ERROR(v.tokens.add(word));
    if (scores) v.scores[i] = static_cast<float>(scores->array_f64(i));
    if (types) v.attrs[i] = attr_from_type(types->array_i64(i));
  }
  v.tokens.finish();
  for (int32_t id = 0; id < v.size(); ++id) {
    const int32_t found = v.find(v.text(id));
    if (found != id)
      return make_error("'", f.name(), "': duplicate token text in the vocabulary (ids ", found,
                        " and ", id, ")");
  }

  SNUG_ASSIGN_OR_RETURN(v.add_bos, f.get_bool_or(key("add_bos_token"), v.add_bos));
  SNUG_ASSIGN_OR_RETURN(v.add_eos, f.get_bool_or(key("add_eos_token"), v.add_eos));
  SNUG_ASSIGN_OR_RETURN(v.add_space_prefix,
                        f.get_bool_or(key("add_space_prefix"), v.add_space_prefix));
  SNUG_RETURN_IF_ERROR(read_special_ids(f, v));
  if (v.add_bos && v.special.bos < 0)
    return make_error("'", f.name(), "': add_bos_token is set but the vocabulary has no BOS token");
  if (v.add_eos && v.special.eos < 0)
    return make_error("'", f.name(), "': add_eos_token is set but the vocabulary has no EOS token");

  if (v.type == VocabType::kBpe) SNUG_RETURN_IF_ERROR(read_merges(f, v));
  build_end_of_generation(v);

  for (int32_t id = 0; id < v.size(); ++id)
    if (v.attrs[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown))
      v.special_tokens.push_back(id);
  std::stable_sort(v.special_tokens.begin(), v.special_tokens.end(),
                   [&](int32_t a, int32_t b) { return v.text(a).size() > v.text(b).size(); });

  for (int b = 0; b < 256; ++b) {
    std::string mapped;
    unicode::append_utf8(mapped, unicode::byte_to_cpt(static_cast<uint8_t>(b)));
    v.bpe_byte_token[b] = v.find(mapped);
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    int32_t id = v.find(hex);
    if (id < 0) id = v.find(std::string(1, static_cast<char>(b)));
    v.spm_byte_token[b] = id >= 0 ? id : v.special.unk;
  }
  return v;
}

}  // namespace snug::text
