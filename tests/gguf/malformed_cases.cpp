#include "malformed_cases.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "gguf/gguf.h"
#include "gguf_surgery.h"
#include "tiny_model.h"

namespace snug::testing {
namespace {

constexpr uint64_t kHuge = ~uint64_t{0};  // 2^64 - 1
constexpr uint64_t kNearHuge = uint64_t{1} << 63;

// Header offsets in every GGUF file.
constexpr size_t kVersionAt = 4, kTensorCountAt = 8, kKvCountAt = 16, kFirstKeyAt = 24;

class Catalogue {
 public:
  Catalogue() : valid_(valid_tiny_bytes()) {}
  explicit Catalogue(const std::vector<uint8_t>& valid) : valid_(valid) {}

  // A defect applied to the editable layout.
  void edit(std::string name, std::string cls, std::string expect,
            const std::function<void(Layout&)>& fn) {
    Layout l = Layout::parse(valid_);
    fn(l);
    add(std::move(name), std::move(cls), l.bytes(), std::move(expect));
  }
  // A defect applied to the encoded bytes.
  void patch(std::string name, std::string cls, std::string expect,
             const std::function<void(std::vector<uint8_t>&)>& fn) {
    std::vector<uint8_t> b = valid_;
    fn(b);
    add(std::move(name), std::move(cls), std::move(b), std::move(expect));
  }
  void add(std::string name, std::string cls, std::vector<uint8_t> bytes, std::string expect) {
    cases.push_back({std::move(name), std::move(cls), std::move(bytes), std::move(expect)});
  }

  std::vector<MalformedCase> cases;

 private:
  const std::vector<uint8_t>& valid_;
};

std::vector<std::string> tiny_tokens() {
  auto f = gguf::File::parse(valid_tiny_bytes(), "tiny");
  std::vector<std::string> out;
  for (auto s : f->find("tokenizer.ggml.tokens")->strings) out.emplace_back(s);
  return out;
}

std::vector<uint8_t> i32s(const std::vector<int32_t>& v) {
  std::vector<uint8_t> out(v.size() * 4);
  for (size_t k = 0; k < v.size(); ++k) {
    auto e = enc_u32(static_cast<uint32_t>(v[k]));
    std::copy(e.begin(), e.end(), out.begin() + static_cast<ptrdiff_t>(4 * k));
  }
  return out;
}

void header_cases(Catalogue& c) {
  const std::vector<uint8_t> magic = {'G', 'G', 'U', 'F'};
  c.add("empty", "file of 0-4 bytes", {}, "is empty");
  c.add("one_byte", "file of 0-4 bytes", {'G'}, "too short to be a GGUF file");
  c.add("three_bytes", "file of 0-4 bytes", {'G', 'G', 'U'}, "too short to be a GGUF file");
  c.add("magic_only", "file of 0-4 bytes", magic, "GGUF header is cut off");
  c.patch("bad_magic", "bad magic", "not a GGUF file (bad magic)", [](auto& b) { b[0] = 'X'; });
  for (uint32_t v : {0u, 1u, 4u, 0xFFFFFFFFu}) {
    c.patch("version_" + std::to_string(v), "unsupported version",
            "GGUF version " + std::to_string(v) + " is not supported",
            [v](auto& b) { poke_u32(b, kVersionAt, v); });
  }
  c.patch("header_cut", "data cut short", "GGUF header is cut off", [](auto& b) { b.resize(20); });
  c.patch("tensor_count_huge", "tensor/kv count near 2^64", "tensor count",
          [](auto& b) { poke_u64(b, kTensorCountAt, kHuge); });
  c.patch("kv_count_huge", "tensor/kv count near 2^64", "metadata count",
          [](auto& b) { poke_u64(b, kKvCountAt, kNearHuge); });
  // Just under the bound the reader can check cheaply: must not reserve for it.
  c.patch("kv_count_at_bound", "tensor/kv count near 2^64", "runs past the end of the file",
          [](auto& b) { poke_u64(b, kKvCountAt, (b.size() - 24) / 12); });
  c.patch("tensor_count_at_bound", "tensor/kv count near 2^64", "dimensions (1 to 4 allowed)",
          [](auto& b) { poke_u64(b, kTensorCountAt, (b.size() - 24) / 24); });
  c.patch("key_length_huge", "key length near 2^64 or past EOF",
          "metadata key 0 runs past the end of the file",
          [](auto& b) { poke_u64(b, kFirstKeyAt, kHuge - 3); });
  c.patch("key_length_past_eof", "key length near 2^64 or past EOF",
          "metadata key 0 runs past the end of the file",
          [](auto& b) { poke_u64(b, kFirstKeyAt, b.size()); });
  // A length inside the file that runs the key over the value, the next keys and
  // their binary lengths: the message quotes the key escaped and cut short.
  c.patch("key_length_stretched", "name stretched over the bytes after it",
          "metadata 'general.architecture\\x08\\x00",
          [](auto& b) { poke_u64(b, kFirstKeyAt, 100); });
}

void metadata_cases(Catalogue& c) {
  c.edit("string_length_huge", "string length near 2^64 or past EOF",
         "string length runs past the end of the file",
         [](Layout& l) { l.set("general.architecture", kTagString, enc_u64(kHuge)); });
  c.edit("string_length_past_eof", "string length near 2^64 or past EOF",
         "string 0 runs past the end of the file", [](Layout& l) {
           auto v = enc_array(kTagString, 1, enc_u64(uint64_t{1} << 40));
           l.set("general.tags", kTagArray, v);
         });
  c.edit("value_type_unknown", "unknown value type", "has unknown value type 13",
         [](Layout& l) { l.set("general.note", 13, enc_u32(1)); });
  c.edit("value_type_negative", "unknown value type", "has unknown value type 4294967295",
         [](Layout& l) { l.kvs[0].type = 0xFFFFFFFF; });
  c.edit("array_elem_unknown", "unknown value type", "array of unknown value type 77",
         [](Layout& l) { l.set("general.list", kTagArray, enc_array(77, 0, {})); });
  c.edit("array_of_arrays", "arrays of arrays", "arrays of arrays are not supported",
         [](Layout& l) { l.set("general.nested", kTagArray, enc_array(kTagArray, 1, {})); });
  c.edit("string_array_count_huge", "array count larger than the file", "is larger than the file",
         [](Layout& l) {
           l.kv("tokenizer.ggml.tokens")->value = enc_array(kTagString, kNearHuge, {});
         });
  c.edit("numeric_array_count_overflow", "array count larger than the file",
         "elements runs past the end of the file", [](Layout& l) {
           l.kv("tokenizer.ggml.token_type")->value = enc_array(kTagI32, kHuge / 2, {});
         });
  c.edit("duplicate_key", "duplicate key", "duplicate metadata key 'general.name'",
         [](Layout& l) { l.kvs.push_back(*l.kv("general.name")); });
  c.edit("empty_key", "empty key", "is empty", [](Layout& l) { l.kvs[1].key.clear(); });
  c.edit("bool_value_2", "invalid bool", "is neither 0 nor 1",
         [](Layout& l) { l.set("tokenizer.ggml.add_bos_token", kTagBool, {2}); });
  c.edit("alignment_zero", "bad alignment", "general.alignment 0 is not a power of two",
         [](Layout& l) { l.set("general.alignment", kTagU32, enc_u32(0)); });
  c.edit("alignment_48", "bad alignment", "general.alignment 48 is not a power of two",
         [](Layout& l) { l.set("general.alignment", kTagU32, enc_u32(48)); });
  c.edit("alignment_u64", "bad alignment", "general.alignment must be u32, not u64",
         [](Layout& l) { l.set("general.alignment", kTagU64, enc_u64(32)); });
  c.edit("alignment_string", "bad alignment", "general.alignment must be u32, not string",
         [](Layout& l) { l.set("general.alignment", kTagString, enc_string("32")); });
}

void tensor_cases(Catalogue& c) {
  const char* q = "blk.0.attn_q.weight";
  c.edit("duplicate_tensor", "duplicate tensor name", "duplicate tensor name 'blk.0.attn_q.weight'",
         [q](Layout& l) { l.tensor("blk.0.attn_k.weight")->name = q; });
  c.patch("tensor_name_past_eof", "data cut short", "tensor name 0 runs past the end of the file",
          [](auto& b) {
            const std::string n = "token_embd.weight";
            auto it = std::search(b.begin(), b.end(), n.begin(), n.end());
            b.resize(static_cast<size_t>(it - b.begin()) + 5);
          });
  c.patch("tensor_name_length_huge", "key length near 2^64 or past EOF",
          "tensor name 0 runs past the end of the file", [](auto& b) {
            const std::string n = "token_embd.weight";
            auto it = std::search(b.begin(), b.end(), n.begin(), n.end());
            poke_u64(b, static_cast<size_t>(it - b.begin()) - 8, kHuge);
          });
  c.edit("five_dims", "more than 4 dimensions", "has 5 dimensions (1 to 4 allowed)",
         [q](Layout& l) {
           l.tensor(q)->dims = {64, 64, 1, 1, 1};
         });
  c.edit("zero_dims_count", "more than 4 dimensions", "has 0 dimensions",
         [q](Layout& l) { l.tensor(q)->dims = {}; });
  c.edit("dims_product_overflow", "dimension product or byte size overflows",
         "element count overflows", [q](Layout& l) {
           l.tensor(q)->dims = {uint64_t{1} << 32, uint64_t{1} << 32};
         });
  c.edit("bytes_overflow", "dimension product or byte size overflows", "byte size overflows",
         [q](Layout& l) {
           l.tensor(q)->dims = {uint64_t{1} << 31, uint64_t{1} << 31};
         });
  c.edit("dim_above_int64", "dimension product or byte size overflows", "is too large",
         [q](Layout& l) {
           l.tensor(q)->dims = {kHuge, 1};
         });
  c.edit("zero_dim", "zero dimension", "has a zero dimension", [q](Layout& l) {
    l.tensor(q)->dims = {64, 0};
  });
  c.edit("tensor_type_unknown", "unknown or negative tensor type", "has unknown type 200",
         [q](Layout& l) { l.tensor(q)->type = 200; });
  c.edit("tensor_type_negative", "unknown or negative tensor type", "has unknown type 4294967295",
         [q](Layout& l) { l.tensor(q)->type = 0xFFFFFFFF; });
  c.edit("tensor_type_removed", "unknown or negative tensor type", "has unknown type 4",
         [q](Layout& l) { l.tensor(q)->type = 4; });  // Q4_2, removed from ggml
  c.edit("row_not_block_multiple", "rows not a multiple of the block size",
         "is not a multiple of the q4_K block size 256",
         [q](Layout& l) { l.tensor(q)->type = 12; });
  c.edit("offset_misaligned", "misaligned offset", "is not aligned to 32",
         [q](Layout& l) { l.tensor(q)->offset += 4; });
  c.edit("offset_overlapping", "overlapping offsets", "overlaps another tensor's data",
         [](Layout& l) { l.tensors[3].offset = l.tensors[2].offset; });
  c.edit("offset_past_eof", "offset past EOF", "runs past the end of the file",
         [q](Layout& l) { l.tensor(q)->offset = (l.data.size() + 4096) / 32 * 32; });
  c.edit("offset_overflow", "offset past EOF", "offset overflows",
         [q](Layout& l) { l.tensor(q)->offset = kHuge / 32 * 32; });
  c.patch("data_cut_last_byte", "data cut short", "runs past the end of the file",
          [](auto& b) { b.pop_back(); });
  c.patch("data_cut_half", "data cut short", "runs past the end of the file",
          [](auto& b) { b.resize(b.size() / 2); });
  c.patch("cut_in_metadata", "data cut short", "larger than the file",
          [](auto& b) { b.resize(700); });
}

void hparam_cases(Catalogue& c) {
  const std::string a = "llama.";
  c.edit("arch_wrong_type", "hyper-parameter of the wrong type",
         "general.architecture' must be a string, not u32",
         [](Layout& l) { l.set("general.architecture", kTagU32, enc_u32(1)); });
  // A terminal escape and a newline in a string the error quotes: shown as \xNN.
  c.edit("arch_control_bytes", "control bytes in a quoted string",
         "architecture 'gpt\\x0A\\x1B[31mj' is not supported", [](Layout& l) {
           const std::string arch = "gpt\n\x1b[31mj";
           l.set("general.architecture", kTagString, enc_string(arch));
           for (RawKv& kv : l.kvs)
             if (kv.key.starts_with("llama.")) kv.key = arch + "." + kv.key.substr(6);
         });
  c.edit("arch_unsupported", "unsupported architecture", "architecture 'gpt-j' is not supported",
         [](Layout& l) {
           l.set("general.architecture", kTagString, enc_string("gpt-j"));
           for (RawKv& kv : l.kvs)
             if (kv.key.starts_with("llama.")) kv.key = "gpt-j." + kv.key.substr(6);
         });
  c.edit("layers_wrong_type", "hyper-parameter of the wrong type",
         "block_count' must be an integer, not string",
         [a](Layout& l) { l.set(a + "block_count", kTagString, enc_string("2")); });
  c.edit("layers_float", "hyper-parameter of the wrong type",
         "block_count' must be an integer, not f32",
         [a](Layout& l) { l.set(a + "block_count", kTagF32, enc_f32(2.f)); });
  c.edit("layers_negative", "hyper-parameter of absurd size", "block_count' is negative",
         [a](Layout& l) { l.set(a + "block_count", kTagI32, enc_u32(0xFFFFFFFF)); });
  c.edit("layers_millions", "hyper-parameter of absurd size", "block_count = 5000000",
         [a](Layout& l) { l.set(a + "block_count", kTagU32, enc_u32(5'000'000)); });
  c.edit("layers_more_than_tensors", "missing required tensor",
         "missing tensor 'blk.2.attn_norm.weight'",
         [a](Layout& l) { l.set(a + "block_count", kTagU32, enc_u32(4096)); });
  c.edit("heads_zero", "hyper-parameter of absurd size", "attention.head_count is zero",
         [a](Layout& l) { l.set(a + "attention.head_count", kTagU32, enc_u32(0)); });
  c.edit("heads_not_dividing", "heads not dividing the embedding",
         "embedding width 64 is not divisible by 5 heads", [a](Layout& l) {
           l.set(a + "attention.head_count", kTagU32, enc_u32(5));
           l.set(a + "attention.head_count_kv", kTagU32, enc_u32(5));
         });
  c.edit("kv_heads_not_dividing", "heads not dividing the embedding",
         "4 attention heads are not a multiple of 3 KV heads",
         [a](Layout& l) { l.set(a + "attention.head_count_kv", kTagU32, enc_u32(3)); });
  c.edit("width_absurd", "hyper-parameter of absurd size", "embedding_length = 4294967295",
         [a](Layout& l) { l.set(a + "embedding_length", kTagU32, enc_u32(0xFFFFFFFF)); });
  c.edit("context_absurd", "hyper-parameter of absurd size", "context_length = 1099511627776",
         [a](Layout& l) { l.set(a + "context_length", kTagU64, enc_u64(uint64_t{1} << 40)); });
  c.edit("head_size_absurd", "hyper-parameter of absurd size", "exceeds the supported",
         [a](Layout& l) { l.set(a + "attention.key_length", kTagU32, enc_u32(4096)); });
  c.edit("rope_dims_odd", "hyper-parameter of absurd size", "does not fit head size",
         [a](Layout& l) { l.set(a + "rope.dimension_count", kTagU32, enc_u32(7)); });
  c.edit("rope_base_nan", "hyper-parameter of absurd size",
         "rope parameters must be positive and finite", [a](Layout& l) {
           l.set(a + "rope.freq_base", kTagF32, enc_f32(std::numeric_limits<float>::quiet_NaN()));
         });
  c.edit("rope_base_inf", "hyper-parameter of absurd size",
         "rope parameters must be positive and finite", [a](Layout& l) {
           l.set(a + "rope.freq_base", kTagF32, enc_f32(std::numeric_limits<float>::infinity()));
         });
  c.edit("rope_scaling_unknown", "hyper-parameter of absurd size",
         "rope scaling 'longrope' is not supported",
         [a](Layout& l) { l.set(a + "rope.scaling.type", kTagString, enc_string("longrope")); });
  c.edit("rope_factor_negative", "hyper-parameter of absurd size",
         "rope parameters must be positive and finite",
         [a](Layout& l) { l.set(a + "rope.scaling.factor", kTagF32, enc_f32(-4.f)); });
  c.edit("rms_eps_negative", "hyper-parameter of absurd size", "is out of range",
         [a](Layout& l) { l.set(a + "attention.layer_norm_rms_epsilon", kTagF32, enc_f32(-1.f)); });
}

void vocab_cases(Catalogue& c) {
  const std::vector<std::string> toks = tiny_tokens();
  c.edit("vocab_not_embedding", "vocabulary size not matching the embedding",
         "tokenizer has 262 tokens but token_embd.weight has 263 rows", [toks](Layout& l) {
           auto t = toks;
           t.pop_back();
           l.kv("tokenizer.ggml.tokens")->value = enc_strings(t);
         });
  c.edit("tokens_not_strings", "vocabulary of the wrong type",
         "tokenizer.ggml.tokens must be an array of strings",
         [](Layout& l) { l.set("tokenizer.ggml.tokens", kTagU32, enc_u32(263)); });
  // Only a token generation needs is refused (an unused one only warns, and -1 means none:
  // tests/text/special_ids_test.cpp).
  c.edit("special_id_out_of_range", "special token id out of range",
         "eos_token_id = 263 is outside the vocabulary of 263 tokens",
         [](Layout& l) { l.set("tokenizer.ggml.eos_token_id", kTagU32, enc_u32(263)); });
  c.edit("special_id_negative", "special token id out of range", "eos_token_id' is negative",
         [](Layout& l) { l.set("tokenizer.ggml.eos_token_id", kTagI32, enc_u32(0xFFFFFFFB)); });
  c.edit("token_type_short", "scores/token-type array of the wrong length",
         "token_type has 262 entries but the vocabulary has 263 tokens", [](Layout& l) {
           l.kv("tokenizer.ggml.token_type")->value =
               enc_array(kTagI32, 262, i32s(std::vector<int32_t>(262, 1)));
         });
  c.edit("scores_long", "scores/token-type array of the wrong length",
         "scores has 300 entries but the vocabulary has 263 tokens", [](Layout& l) {
           l.set("tokenizer.ggml.scores", kTagArray,
                 enc_array(kTagF32, 300, std::vector<uint8_t>(1200, 0)));
         });
  c.edit("scores_strings", "scores/token-type array of the wrong length",
         "scores must be a numeric array",
         [](Layout& l) { l.set("tokenizer.ggml.scores", kTagArray, enc_strings({"a"})); });
  c.edit("merge_unknown_token", "merges naming unknown tokens", "names unknown token 'zz'",
         [](Layout& l) {
           l.kv("tokenizer.ggml.merges")->value = enc_strings({"h e", "zz q"});
         });
  c.edit("merge_without_space", "merges naming unknown tokens",
         "has no space separating its two parts",
         [](Layout& l) { l.kv("tokenizer.ggml.merges")->value = enc_strings({"he"}); });
  c.edit("merges_missing", "merges naming unknown tokens", "BPE vocabulary without",
         [](Layout& l) { l.remove_kv("tokenizer.ggml.merges"); });
  c.edit("duplicate_token_text", "duplicate token text", "duplicate token text", [toks](Layout& l) {
    auto t = toks;
    t[1] = t[0];
    l.kv("tokenizer.ggml.tokens")->value = enc_strings(t);
  });
  c.edit("tokenizer_model_unknown", "unsupported tokenizer", "unsupported tokenizer model 'bert'",
         [](Layout& l) { l.set("tokenizer.ggml.model", kTagString, enc_string("bert")); });
  c.edit("pretokenizer_unknown", "unsupported tokenizer", "unsupported pre-tokenizer 'nope'",
         [](Layout& l) { l.set("tokenizer.ggml.pre", kTagString, enc_string("nope")); });
  c.edit("chat_template_not_string", "hyper-parameter of the wrong type",
         "chat_template must be a string",
         [](Layout& l) { l.set("tokenizer.chat_template", kTagU32, enc_u32(7)); });
  c.edit("add_bos_wrong_type", "hyper-parameter of the wrong type",
         "add_bos_token' must be a bool, not u32",
         [](Layout& l) { l.set("tokenizer.ggml.add_bos_token", kTagU32, enc_u32(1)); });
}

void weight_cases(Catalogue& c) {
  c.edit("missing_tensor", "missing required tensor", "missing tensor 'blk.1.ffn_down.weight'",
         [](Layout& l) { l.remove_tensor("blk.1.ffn_down.weight"); });
  c.edit("missing_embedding", "missing required tensor", "missing tensor 'token_embd.weight'",
         [](Layout& l) { l.remove_tensor("token_embd.weight"); });
  c.edit("wrong_shape", "tensor of the wrong shape",
         "tensor 'blk.0.attn_k.weight' has shape [64, 16], expected [64, 32]", [](Layout& l) {
           l.tensor("blk.0.attn_k.weight")->dims = {64, 16};
         });
  c.edit("matrix_three_dims", "tensor of the wrong shape", "tensor 'blk.0.attn_k.weight' has shape",
         [](Layout& l) {
           l.tensor("blk.0.attn_k.weight")->dims = {64, 16, 2};
         });
  c.edit("embedding_width", "tensor of the wrong shape", "token_embd.weight has width 32",
         [](Layout& l) {
           l.tensor("token_embd.weight")->dims = {32, 263};
         });
  c.edit("norm_wrong_type", "tensor of the wrong type", "must be f32, not f16",
         [](Layout& l) { l.tensor("output_norm.weight")->type = 1; });
  c.edit("matrix_type_no_kernels", "tensor of the wrong type", "which snug cannot compute with",
         [](Layout& l) { l.tensor("blk.0.attn_q.weight")->type = 26; });  // i32
}

// A family's own header and tensors, on a tiny Gemma 3 model.
void family_cases(std::vector<MalformedCase>& out) {
  static const std::vector<uint8_t> gemma = [] {
    TinyModelSpec s;
    s.architecture = "gemma3";
    return build_tiny_model(s).to_bytes();
  }();
  Catalogue c(gemma);
  const std::string w = "gemma3.attention.sliding_window";
  c.edit("gemma_window_missing", "inconsistent family header", "missing " + w,
         [w](Layout& l) { l.remove_kv(w); });
  c.edit("gemma_window_zero", "inconsistent family header", w + " is zero",
         [w](Layout& l) { l.set(w, kTagU32, enc_u32(0)); });
  c.edit("gemma_window_beyond_context", "inconsistent family header",
         "sliding window of 4096 tokens exceeds the trained context of 256",
         [w](Layout& l) { l.set(w, kTagU32, enc_u32(4096)); });
  c.edit("gemma_q_norm_missing", "missing required tensor",
         "missing tensor 'blk.1.attn_q_norm.weight'",
         [](Layout& l) { l.remove_tensor("blk.1.attn_q_norm.weight"); });
  c.edit("gemma_post_norm_short", "tensor of the wrong shape",
         "'blk.0.post_ffw_norm.weight' has 32 elements, expected 64",
         [](Layout& l) { l.tensor("blk.0.post_ffw_norm.weight")->dims = {32}; });
  for (MalformedCase& m : c.cases) out.push_back(std::move(m));
}

}  // namespace

const std::vector<uint8_t>& valid_tiny_bytes() {
  static const std::vector<uint8_t> bytes = build_tiny_model().to_bytes();
  return bytes;
}

const std::vector<MalformedCase>& malformed_catalogue() {
  static const std::vector<MalformedCase> all = [] {
    Catalogue c;
    header_cases(c);
    metadata_cases(c);
    tensor_cases(c);
    hparam_cases(c);
    vocab_cases(c);
    weight_cases(c);
    family_cases(c.cases);
    return std::move(c.cases);
  }();
  return all;
}

}  // namespace snug::testing
