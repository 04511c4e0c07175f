// Tokenizers on tiny vocabularies built in memory: BPE merge order, SPM byte
// fallback, special-token parsing, streaming decode, and bad metadata.
#include <gtest/gtest.h>

#include "required_file.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "text/stream_decoder.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace snug::text {
namespace {

// Keeps the GGUF bytes alive for the File that views them.
struct TinyModel {
  std::vector<uint8_t> bytes;
  Result<gguf::File> file = Error{"unset"};
  Result<Tokenizer> tok = Error{"unset"};
};

std::unique_ptr<TinyModel> build(const gguf::Writer& w) {
  auto m = std::make_unique<TinyModel>();
  m->bytes = w.to_bytes();
  m->file = gguf::File::parse(m->bytes, "tiny.gguf");
  if (m->file.ok()) m->tok = Tokenizer::from_gguf(*m->file);
  return m;
}

// GPT-2 mapped form of a byte string ("a b" -> "aĠb").
std::string mapped(std::string_view s) {
  std::string out;
  for (unsigned char c : s) unicode::append_utf8(out, unicode::byte_to_cpt(c));
  return out;
}

struct BpeSpec {
  std::vector<std::string> tokens;  // plain bytes; mapped when written
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // "left right" in plain bytes
};

gguf::Writer bpe_writer(const BpeSpec& spec, const char* pre = "smollm") {
  gguf::Writer w;
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", pre);
  std::vector<std::string> toks;
  for (size_t i = 0; i < spec.tokens.size(); ++i)
    toks.push_back(spec.types.size() > i && spec.types[i] == 3 ? spec.tokens[i]
                                                               : mapped(spec.tokens[i]));
  w.set_strings("tokenizer.ggml.tokens", toks);
  if (!spec.types.empty()) w.set_i32s("tokenizer.ggml.token_type", spec.types);
  std::vector<std::string> merges;
  for (const std::string& m : spec.merges) {
    const size_t sp = m.find(' ');
    merges.push_back(mapped(m.substr(0, sp)) + " " + mapped(m.substr(sp + 1)));
  }
  w.set_strings("tokenizer.ggml.merges", merges);
  return w;
}

BpeSpec abc_spec(std::vector<std::string> merges) {
  BpeSpec s;
  s.tokens = {"<|im_start|>",
              "a",
              "b",
              "c",
              " ",
              "ab",
              "bc",
              "abc",
              "<",
              "|",
              "_",
              "i",
              "m",
              "s",
              "t",
              "r",
              ">"};
  s.types.assign(s.tokens.size(), 1);
  s.types[0] = 3;
  s.merges = std::move(merges);
  return s;
}

TEST(Bpe, LowerRankMergesFirst) {
  auto m = build(bpe_writer(abc_spec({"b c", "a b", "ab c"})));
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  // "b c" (rank 0) wins over "a b" (rank 1); "a bc" is no merge, so it stops there.
  EXPECT_EQ(m->tok->encode("abc", false, false), (std::vector<int32_t>{1, 6}));
  auto m2 = build(bpe_writer(abc_spec({"a b", "b c", "ab c"})));
  ASSERT_TRUE(m2->tok.ok());
  EXPECT_EQ(m2->tok->encode("abc", false, false), (std::vector<int32_t>{7}));
  EXPECT_EQ(m2->tok->decode(std::vector<int32_t>{7, 4, 1}), "abc a");
  EXPECT_EQ(m2->tok->piece(4), " ");
}

TEST(Bpe, SpecialTokensParsedOnlyWhenAsked) {
  auto m = build(bpe_writer(abc_spec({"a b"})));
  ASSERT_TRUE(m->tok.ok());
  const auto on = m->tok->encode("a<|im_start|>b", false, true);
  EXPECT_EQ(on, (std::vector<int32_t>{1, 0, 2}));
  const auto off = m->tok->encode("a<|im_start|>b", false, false);
  EXPECT_EQ(std::count(off.begin(), off.end(), 0), 0);
  EXPECT_GT(off.size(), 3u);
  // Control tokens print nothing in decode, their text in piece.
  EXPECT_EQ(m->tok->decode(on), "ab");
  EXPECT_EQ(m->tok->piece(0), "<|im_start|>");
}

// 8x the word must cost about 8x the time, not 64x (a quadratic merge loop):
// best of three runs of each, 40x plus 0.1 s allowed. Measured 15x on an idle
// 2-core machine (the 1 MiB word's working set leaves L2) and 28x under load;
// an absolute 1 s bound failed there while the scaling was unchanged.
TEST(Bpe, LongRepeatedWordIsNotQuadratic) {
  BpeSpec s;
  s.tokens = {"a", "aa", "aaaa", "aaaaaaaa"};
  s.merges = {"a a", "aa aa", "aaaa aaaa"};
  auto m = build(bpe_writer(s));
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  auto best_seconds = [&](size_t n) {
    const std::string word(n, 'a');
    double best = 1e9;
    for (int i = 0; i < 3; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = m->tok->encode(word, false, false);
      best = std::min(best,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      EXPECT_EQ(ids.size(), word.size() / 8);
    }
    return best;
  };
  [[maybe_unused]] const double small = best_seconds(1 << 17), large = best_seconds(1 << 20);
#if defined(NDEBUG) && !defined(SNUG_SANITIZE)  // timing holds for optimized builds only
  EXPECT_LT(large, 40 * small + 0.1) << "128 KiB: " << small << " s, 1 MiB: " << large << " s";
#endif
}

TEST(Bpe, InvalidUtf8BecomesReplacementCharacter) {
  BpeSpec s;
  s.tokens = {"a", "\xEF", "\xBF", "\xBD", "\xEF\xBF", "\xEF\xBF\xBD"};
  s.merges = {"\xEF \xBF", "\xEF\xBF \xBD"};
  auto m = build(bpe_writer(s));
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  // llama.cpp replaces each malformed byte with U+FFFD before byte-level BPE.
  EXPECT_EQ(m->tok->encode("a\xFF"
                           "a",
                           false, false),
            (std::vector<int32_t>{0, 5, 0}));
}

TEST(Bpe, RejectsMergeOfUnknownToken) {
  auto m = build(bpe_writer(abc_spec({"a z"})));
  ASSERT_FALSE(m->tok.ok());
  EXPECT_NE(m->tok.error().message.find("unknown token"), std::string::npos)
      << m->tok.error().message;
}

TEST(Bpe, RejectsUnknownPreTokenizer) {
  auto m = build(bpe_writer(abc_spec({}), "no-such-pre"));
  ASSERT_FALSE(m->tok.ok());
  EXPECT_NE(m->tok.error().message.find("no-such-pre"), std::string::npos);
}

// SPM vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces with scores.
gguf::Writer spm_writer(std::vector<std::string> pieces, std::vector<float> piece_scores,
                        uint32_t eos = 2) {
  gguf::Writer w;
  w.set_string("tokenizer.ggml.model", "llama");
  std::vector<std::string> toks = {"<unk>", "<s>", "</s>", "<end_of_turn>", "<b>"};
  std::vector<int32_t> types = {2, 3, 3, 3, 4};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    toks.push_back(buf);
    types.push_back(6);
  }
  std::vector<float> scores(toks.size(), 0.0f);
  for (size_t i = 0; i < pieces.size(); ++i) {
    toks.push_back(pieces[i]);
    types.push_back(1);
    scores.push_back(piece_scores[i]);
  }
  w.set_strings("tokenizer.ggml.tokens", toks);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_f32s("tokenizer.ggml.scores", scores);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", eos);
  w.set_bool("tokenizer.ggml.add_space_prefix", false);
  return w;
}

constexpr int32_t kFirstPiece = 5 + 256;
int32_t byte_id(uint8_t b) {
  return 5 + b;
}

TEST(Spm, MergesByScoreAndFallsBackToBytes) {
  // Pieces: ▁ a b ab ▁a; "ab" scores higher than "▁a".
  auto m = build(spm_writer({"\xE2\x96\x81", "a", "b", "ab",
                             "\xE2\x96\x81"
                             "a"},
                            {-1, -1, -1, -2, -3}));
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  const Tokenizer& t = *m->tok;
  EXPECT_EQ(t.encode(" ab", false, false), (std::vector<int32_t>{kFirstPiece, kFirstPiece + 3}));
  // add_special prepends BOS (add_bos defaults to true for SPM).
  EXPECT_EQ(t.encode("a", true, false), (std::vector<int32_t>{1, kFirstPiece + 1}));
  // "é" is not a piece: its two bytes come out as <0xC3><0xA9>.
  EXPECT_EQ(t.encode("\xC3\xA9", false, false),
            (std::vector<int32_t>{byte_id(0xC3), byte_id(0xA9)}));
  EXPECT_EQ(t.decode(std::vector<int32_t>{kFirstPiece + 4, byte_id(0xC3), byte_id(0xA9)}),
            " a\xC3\xA9");
  EXPECT_EQ(t.piece(byte_id(0x41)), "A");
}

TEST(Spm, UserDefinedTokensAreAlwaysMatched) {
  auto m = build(spm_writer({"a"}, {-1}));
  ASSERT_TRUE(m->tok.ok());
  EXPECT_EQ(m->tok->encode("a<b>a", false, false),
            (std::vector<int32_t>{kFirstPiece, 4, kFirstPiece}));
  // Control tokens only with parse_special.
  const auto off = m->tok->encode("<end_of_turn>", false, false);
  EXPECT_EQ(std::count(off.begin(), off.end(), 3), 0);
  EXPECT_EQ(m->tok->encode("<end_of_turn>", false, true), (std::vector<int32_t>{3}));
  EXPECT_TRUE(m->tok->is_eog(3));
  EXPECT_TRUE(m->tok->is_eog(2));
  EXPECT_FALSE(m->tok->is_eog(kFirstPiece));
  EXPECT_EQ(m->tok->find_token("<b>"), 4);
  EXPECT_FALSE(m->tok->find_token("zzz").has_value());
  EXPECT_GT(m->tok->memory_bytes(), 0u);
}

TEST(StreamDecoder, NeverEmitsHalfACharacter) {
  auto m = build(spm_writer({"a"}, {-1}));
  ASSERT_TRUE(m->tok.ok());
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600 as 4 byte tokens
  const auto ids = m->tok->encode("a" + emoji + "a", false, false);
  ASSERT_EQ(ids.size(), 6u);
  StreamDecoder d(*m->tok);
  EXPECT_EQ(d.push(ids[0]), "a");
  EXPECT_EQ(d.push(ids[1]), "");
  EXPECT_EQ(d.push(ids[2]), "");
  EXPECT_EQ(d.push(ids[3]), "");
  EXPECT_EQ(d.pending_bytes(), 3u);
  EXPECT_EQ(d.push(ids[4]), emoji);
  EXPECT_EQ(d.push(ids[5]), "a");
  EXPECT_EQ(d.finish(), "");
  // A character cut off at the end, and a byte that can never start one.
  EXPECT_EQ(d.push(byte_id(0xF0)), "");
  EXPECT_EQ(d.push(byte_id(0x9F)), "");
  EXPECT_EQ(d.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.push(byte_id(0xFF)), "\xEF\xBF\xBD");
  EXPECT_EQ(d.push(byte_id(0xC3)), "");
  EXPECT_EQ(d.push(kFirstPiece),
            "\xEF\xBF\xBD"
            "a");  // C3 followed by 'a' is invalid
}

TEST(Vocab, RejectsBadMetadata) {
  {
    auto m = build(spm_writer({"a"}, {-1}, 100000));
    ASSERT_FALSE(m->tok.ok());
    EXPECT_NE(m->tok.error().message.find("eos_token_id"), std::string::npos)
        << m->tok.error().message;
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
    w.set_f32s("tokenizer.ggml.scores", {0, 0});
    auto m = build(w);
    ASSERT_FALSE(m->tok.ok());
    EXPECT_NE(m->tok.error().message.find("scores"), std::string::npos) << m->tok.error().message;
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"});
    w.set_i32s("tokenizer.ggml.token_type", {1, 1, 1, 1});
    auto m = build(w);
    ASSERT_FALSE(m->tok.ok());
    EXPECT_NE(m->tok.error().message.find("token_type"), std::string::npos);
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "<s>"});
    auto m = build(w);
    ASSERT_FALSE(m->tok.ok());
    EXPECT_NE(m->tok.error().message.find("duplicate"), std::string::npos);
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "wordpiece-9000");
    w.set_strings("tokenizer.ggml.tokens", {"a"});
    auto m = build(w);
    ASSERT_FALSE(m->tok.ok());
    EXPECT_NE(m->tok.error().message.find("wordpiece-9000"), std::string::npos);
  }
  {
    gguf::Writer w;
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_u32("tokenizer.ggml.tokens", 7);  // not an array
    auto m = build(w);
    ASSERT_FALSE(m->tok.ok());
  }
}

TEST(RealModels, LargePromptsEncode) {
  for (const char* name : {"SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"}) {
    const std::string path = std::string(SNUG_SOURCE_DIR) + "/models/" + name;
    if (!snug::testing::have_file(path, "scripts/fetch-models")) return;
    auto file = gguf::File::open(path);
    ASSERT_TRUE(file.ok()) << file.error().message;
    auto tok = Tokenizer::from_gguf(*file);
    ASSERT_TRUE(tok.ok()) << tok.error().message;
    std::string prompt;
    const std::string para =
        "The quick brown fox jumps over the lazy dog 1234567890 times; <|im_start|> déjà vu 日本語 "
        "🎉\n\n";
    while (prompt.size() < (10u << 20)) prompt += para;
    // Linear time on these tokenizers is held by hostile_prompt_test's scaling
    // test; here a 10 MiB prompt and a 1 MiB word must encode at all.
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok->encode(prompt, true, true);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GT(ids.size(), prompt.size() / 8);
    std::printf("%s: 10 MiB prompt -> %zu tokens in %.2f s\n", name, ids.size(), secs);
    const std::string word(1 << 20, 'x');
    EXPECT_FALSE(tok->encode(word, false, false).empty()) << name;
  }
}

}  // namespace
}  // namespace snug::text
