// Special-token ids in tokenizer.ggml.*_token_id as llama.cpp's converters write them:
// -1 (0xFFFFFFFF) for a token the model does not have, and now and then an id past the
// end of the vocabulary. -1 means none; an out-of-range id is refused only for a token
// generation needs (eos; bos when add_bos_token is set) and is otherwise a warning.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"
#include "text/tokenizer.h"
#include "text/vocab.h"
#include "tiny_model.h"

namespace snug::text {
namespace {

using testing::converter_style_spec;
using testing::kTinyEndOfText;
using testing::kTinySpmVocab;
using testing::kTinyVocab;
using testing::TinyModelSpec;
using testing::TinyVocab;

constexpr uint32_t kMinusOne = 0xFFFFFFFFu;

// Keeps the GGUF bytes alive for the File that views them.
struct Loaded {
  std::vector<uint8_t> bytes;
  Result<gguf::File> file = Error{"unset"};
  Result<Tokenizer> tok = Error{"unset"};
};

std::unique_ptr<Loaded> load(const gguf::Writer& w) {
  auto m = std::make_unique<Loaded>();
  m->bytes = w.to_bytes();
  m->file = gguf::File::parse(m->bytes, "tiny.gguf");
  if (m->file.ok()) m->tok = Tokenizer::from_gguf(*m->file);
  return m;
}

TinyModelSpec one_layer() {
  TinyModelSpec spec;
  spec.n_layers = 1;
  return spec;
}

std::unique_ptr<Loaded> load(TinyVocab vocab, std::vector<std::pair<std::string, uint32_t>> ids) {
  TinyModelSpec spec = one_layer();
  spec.vocab = vocab;
  spec.special_ids = std::move(ids);
  return load(testing::build_tiny_model(spec));
}

TEST(SpecialIds, MinusOneMeansNoneForEveryUnusedKey) {
  for (TinyVocab vocab : {TinyVocab::kBpe, TinyVocab::kSpm}) {
    auto m = load(vocab, {{"seperator_token_id", kMinusOne},
                          {"padding_token_id", kMinusOne},
                          {"unknown_token_id", kMinusOne},
                          {"eom_token_id", kMinusOne},
                          {"fim_pre_token_id", kMinusOne},
                          {"fim_suf_token_id", kMinusOne},
                          {"fim_mid_token_id", kMinusOne}});
    ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
    const SpecialIds& s = m->tok->vocab().special;
    EXPECT_EQ(s.sep, -1);
    EXPECT_EQ(s.pad, -1);
    EXPECT_EQ(s.unk, -1);  // SPM's default would be 0
    EXPECT_EQ(s.eom, -1);
    EXPECT_EQ(s.fim_pre, -1);
    EXPECT_EQ(s.fim_suf, -1);
    EXPECT_EQ(s.fim_mid, -1);
    EXPECT_TRUE(m->tok->warnings().empty()) << m->tok->warnings().front();
    // Tokenizing still works, and nothing decodes an id of -1.
    EXPECT_EQ(m->tok->decode(m->tok->encode("hello", false, false)), "hello");
  }
}

TEST(SpecialIds, MinusOneAsSignedIntegerMeansNone) {
  gguf::Writer w = testing::build_tiny_model(one_layer());
  w.set_i32("tokenizer.ggml.padding_token_id", -1);
  auto m = load(w);
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  EXPECT_EQ(m->tok->vocab().special.pad, -1);
  EXPECT_TRUE(m->tok->warnings().empty());
}

TEST(SpecialIds, OtherNegativeIdIsRefused) {
  gguf::Writer w = testing::build_tiny_model(one_layer());
  w.set_i32("tokenizer.ggml.padding_token_id", -7);
  auto m = load(w);
  ASSERT_FALSE(m->tok.ok());
  EXPECT_NE(m->tok.error().message.find("padding_token_id' is negative"), std::string::npos)
      << m->tok.error().message;
}

TEST(SpecialIds, MinusOneEosMeansTheModelHasNone) {
  auto m = load(TinyVocab::kBpe, {{"eos_token_id", kMinusOne}});
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  EXPECT_EQ(m->tok->eos(), -1);
  // <|endoftext|> still ends generation: llama.cpp finds it by its text.
  EXPECT_TRUE(m->tok->is_eog(kTinyEndOfText));
}

TEST(SpecialIds, MinusOneBosIsRefusedWhenTheVocabularyAddsIt) {
  auto m = load(TinyVocab::kSpm, {{"bos_token_id", kMinusOne}});  // SPM adds BOS
  ASSERT_FALSE(m->tok.ok());
  EXPECT_EQ(m->tok.error().message,
            "'tiny.gguf': add_bos_token is set but the vocabulary has no BOS token");
}

TEST(SpecialIds, MinusOneBosIsNoneWhenNotAdded) {
  auto m = load(TinyVocab::kBpe, {{"bos_token_id", kMinusOne}});  // add_bos_token = false
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  EXPECT_EQ(m->tok->bos(), -1);
  EXPECT_EQ(m->tok->encode("he", true, false), (std::vector<int32_t>{256}));
}

TEST(SpecialIds, MinusOneEosIsRefusedWhenTheVocabularyAddsIt) {
  TinyModelSpec spec = one_layer();
  spec.special_ids = {{"eos_token_id", kMinusOne}};
  gguf::Writer w = testing::build_tiny_model(spec);
  w.set_bool("tokenizer.ggml.add_eos_token", true);
  auto m = load(w);
  ASSERT_FALSE(m->tok.ok());
  EXPECT_EQ(m->tok.error().message,
            "'tiny.gguf': add_eos_token is set but the vocabulary has no EOS token");
}

TEST(SpecialIds, OutOfRangeEosIsRefused) {
  for (uint32_t id : {static_cast<uint32_t>(kTinyVocab), 100000u, 0xFFFFFFFEu}) {
    auto m = load(TinyVocab::kBpe, {{"eos_token_id", id}});
    ASSERT_FALSE(m->tok.ok()) << id;
    EXPECT_EQ(m->tok.error().message,
              "'tiny.gguf': tokenizer.ggml.eos_token_id = " + std::to_string(id) +
                  " is outside the vocabulary of 263 tokens, and generation needs the "
                  "end-of-sequence token");
  }
}

TEST(SpecialIds, OutOfRangeBosIsRefusedWhenTheVocabularyAddsIt) {
  auto m = load(TinyVocab::kSpm, {{"bos_token_id", kTinySpmVocab}});
  ASSERT_FALSE(m->tok.ok());
  EXPECT_EQ(m->tok.error().message,
            "'tiny.gguf': tokenizer.ggml.bos_token_id = 281 is outside the vocabulary of 281 "
            "tokens, and generation needs the BOS token (add_bos_token is set)");
}

TEST(SpecialIds, OutOfRangeBosIsAWarningWhenNotAdded) {
  // As llama.cpp: the key is ignored and BPE's default BOS (11) stays.
  auto m = load(TinyVocab::kBpe, {{"bos_token_id", 5000}});
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  EXPECT_EQ(m->tok->bos(), 11);
  ASSERT_EQ(m->tok->warnings().size(), 1u);
  EXPECT_EQ(m->tok->warnings()[0],
            "'tiny.gguf': tokenizer.ggml.bos_token_id = 5000 is outside the vocabulary of 263 "
            "tokens; using the default id 11");
}

TEST(SpecialIds, OutOfRangeUnusedIdIsAWarningPerKey) {
  auto m = load(TinyVocab::kSpm, {{"padding_token_id", kTinySpmVocab},
                                  {"seperator_token_id", 1u << 20},
                                  {"unknown_token_id", 99999}});
  ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
  const SpecialIds& s = m->tok->vocab().special;
  EXPECT_EQ(s.pad, -1);
  EXPECT_EQ(s.sep, -1);
  EXPECT_EQ(s.unk, 0);  // SPM's default, as llama.cpp keeps it
  const std::vector<std::string> want = {
      "'tiny.gguf': tokenizer.ggml.unknown_token_id = 99999 is outside the vocabulary of 281 "
      "tokens; using the default id 0",
      "'tiny.gguf': tokenizer.ggml.seperator_token_id = 1048576 is outside the vocabulary of "
      "281 tokens; ignored",
      "'tiny.gguf': tokenizer.ggml.padding_token_id = 281 is outside the vocabulary of 281 "
      "tokens; ignored"};
  EXPECT_EQ(m->tok->warnings(), want);
  // BOS is still added and the text round-trips.
  const auto ids = m->tok->encode("hello", true, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(m->tok->decode(ids), " hello");
}

TEST(SpecialIds, ConverterStyleFixturesLoadWithOneWarning) {
  for (TinyVocab vocab : {TinyVocab::kBpe, TinyVocab::kSpm}) {
    auto m = load(testing::build_tiny_model(converter_style_spec(vocab)));
    ASSERT_TRUE(m->tok.ok()) << m->tok.error().message;
    EXPECT_EQ(m->tok->vocab().special.sep, -1);
    EXPECT_EQ(m->tok->vocab().special.pad, -1);
    ASSERT_EQ(m->tok->warnings().size(), 1u);
    EXPECT_NE(m->tok->warnings()[0].find("padding_token_id"), std::string::npos);
  }
}

}  // namespace
}  // namespace snug::text
