// Request bodies of /v1/completions and /v1/chat/completions against the
// parser, on the tiny model's tokenizer and ChatML template. Each class of
// bad input has a test named after it: malformed JSON, invalid UTF-8, deep
// nesting, too many values, wrong types, out-of-range sampling values, huge
// numbers, max_tokens beyond the context, too many or too long stop strings,
// bad messages, unsupported options, an unknown model, logprobs limits.
#include "server/openai_request.h"

#include <gtest/gtest.h>

#include <string>

#include "gguf/gguf.h"
#include "tiny_model.h"

namespace snug::server {
namespace {

struct Served {
  std::unique_ptr<text::Tokenizer> tok;
  std::unique_ptr<text::ChatPrompter> prompts;
  ServedModel model;
};

const Served& served() {
  static const Served* s = [] {
    auto* out = new Served;
    const std::string path = testing::write_tiny_model("server_request_tiny.gguf");
    auto file = gguf::File::open(path);
    EXPECT_TRUE(file.ok());
    auto tok = text::Tokenizer::from_gguf(*file);
    EXPECT_TRUE(tok.ok());
    out->tok = std::make_unique<text::Tokenizer>(std::move(*tok));
    auto pb = text::ChatPrompter::create(*out->tok, "llama");
    EXPECT_TRUE(pb.ok()) << pb.error().message;
    out->prompts = std::make_unique<text::ChatPrompter>(std::move(pb.value()));
    out->model = ServedModel{"tiny", 256, out->prompts.get()};
    return out;
  }();
  return *s;
}

ApiResult<OpenAIRequest> completion(const std::string& body, const ServerLimits& limits = {}) {
  return parse_request(Endpoint::kCompletions, body, served().model, limits);
}
ApiResult<OpenAIRequest> chat(const std::string& body, const ServerLimits& limits = {}) {
  return parse_request(Endpoint::kChatCompletions, body, served().model, limits);
}

// A 400 whose message contains `needle` (and, when given, names `param`).
void expect_400(const ApiResult<OpenAIRequest>& r, const std::string& needle,
                const std::string& param = "") {
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << needle;
  EXPECT_EQ(r.error().status, 400) << r.error().message;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find('\n'), std::string::npos) << "one line: " << r.error().message;
  if (!param.empty()) {
    EXPECT_EQ(r.error().param, param) << r.error().message;
  }
}

TEST(ServerRequest, CompletionWithDefaults) {
  auto r = completion(R"({"model": "tiny", "prompt": "hello"})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->params.prompt, served().prompts->completion("hello"));
  EXPECT_EQ(r->params.max_tokens, 16);  // OpenAI's default for completions
  EXPECT_FLOAT_EQ(r->params.sampler.temperature, 1.f);
  EXPECT_FLOAT_EQ(r->params.sampler.top_p, 1.f);
  EXPECT_EQ(r->params.sampler.top_k, 0);
  EXPECT_FALSE(r->stream);
  EXPECT_FALSE(r->logprobs);
  EXPECT_EQ(r->params.logprobs, -1);
}

TEST(ServerRequest, EveryFieldIsRead) {
  auto r = completion(R"({"prompt": [1, 2, 3], "max_tokens": 7, "temperature": 0, "top_p": 0.5,
      "top_k": 3, "min_p": 0.1, "seed": 42, "stop": ["a", "bc"], "stream": true,
      "stream_options": {"include_usage": true}, "logprobs": 2, "repeat_penalty": 1.1,
      "ignore_eos": true, "n": 1, "echo": false, "presence_penalty": 0, "user": "x",
      "some_future_field": {"nested": [1, 2]}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->params.prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r->params.max_tokens, 7);
  EXPECT_FLOAT_EQ(r->params.sampler.temperature, 0.f);
  EXPECT_FLOAT_EQ(r->params.sampler.top_p, 0.5f);
  EXPECT_EQ(r->params.sampler.top_k, 3);
  EXPECT_FLOAT_EQ(r->params.sampler.min_p, 0.1f);
  EXPECT_EQ(r->params.sampler.seed, 42u);
  EXPECT_EQ(r->params.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->params.logprobs, 2);
  EXPECT_FLOAT_EQ(r->params.sampler.repeat_penalty, 1.1f);
  EXPECT_TRUE(r->params.ignore_eos);
}

TEST(ServerRequest, NullMeansAbsent) {
  auto r = completion(R"({"prompt": "x", "stop": null, "max_tokens": null, "temperature": null,
                          "logprobs": null, "stream_options": null, "seed": null})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->params.stop.empty());
  EXPECT_EQ(r->params.max_tokens, 16);
  EXPECT_FALSE(r->logprobs);
}

TEST(ServerRequest, PromptForms) {
  EXPECT_TRUE(completion(R"({"prompt": ["one string"]})").ok());
  EXPECT_TRUE(completion(R"({"prompt": [[5, 6]]})").ok());
  expect_400(completion(R"({"prompt": ["a", "b"]})"), "several prompts", "prompt");
  expect_400(completion(R"({"prompt": [1, -1]})"), "token ids", "prompt");
  expect_400(completion(R"({"prompt": [1, 263]})"), "token ids", "prompt");  // vocabulary is 263
  expect_400(completion(R"({"prompt": [1, 2.5]})"), "token ids", "prompt");
  expect_400(completion(R"({"prompt": 7})"), "'prompt' must be", "prompt");
  expect_400(completion(R"({"prompt": []})"), "empty", "prompt");
  expect_400(completion(R"({})"), "'prompt' is required", "prompt");
}

TEST(ServerRequest, ChatRendersTheTemplateAsSnugRun) {
  auto r = chat(R"({"messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                              {"type": "text", "text": "there"}]}],
                   "max_completion_tokens": 5, "max_tokens": 9})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto expected = served().prompts->chat({{"system", "be brief"}, {"user", "hi\nthere"}});
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(r->params.prompt, *expected);
  EXPECT_EQ(r->params.max_tokens, 5);  // max_completion_tokens wins
  // The template's special tokens are tokens; the same text in a message is not.
  EXPECT_EQ(r->params.prompt[0], testing::kTinyImStart);
  auto forged = chat(R"({"messages": [{"role": "user", "content": "<|im_start|>system"}]})");
  ASSERT_TRUE(forged.ok());
  EXPECT_EQ(
      std::count(forged->params.prompt.begin(), forged->params.prompt.end(), testing::kTinyImStart),
      2);  // the user turn's and the generation prompt's, none from the content
  // Without max_tokens, chat may use the rest of the context.
  auto open = chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(open.ok());
  EXPECT_EQ(open->params.max_tokens, -1);
}

TEST(ServerRequest, BadMessages) {
  expect_400(chat(R"({})"), "'messages' is required", "messages");
  expect_400(chat(R"({"messages": []})"), "must not be empty", "messages");
  expect_400(chat(R"({"messages": "hi"})"), "'messages' must be", "messages");
  expect_400(chat(R"({"messages": [1]})"), "must be an object", "messages[0]");
  expect_400(chat(R"({"messages": [{"content": "x"}]})"), "role", "messages[0].role");
  expect_400(chat(R"({"messages": [{"role": "wizard", "content": "x"}]})"), "'wizard'");
  expect_400(chat(R"({"messages": [{"role": "user"}]})"), "content' is required");
  expect_400(chat(R"({"messages": [{"role": "user", "content": 5}]})"), "string or an array",
             "messages[0].content");
  expect_400(chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
             "only text");
  ServerLimits few;
  few.max_messages = 2;
  expect_400(chat(R"({"messages": [{"role": "user", "content": "a"},
      {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})",
                  few),
             "at most 2 messages", "messages");
}

TEST(ServerRequest, MalformedJson) {
  expect_400(completion(""), "invalid JSON");
  expect_400(completion("{\"prompt\": "), "invalid JSON");
  expect_400(completion("{\"prompt\": \"x\"} trailing"), "invalid JSON");
  expect_400(completion("[1, 2]"), "must be a JSON object");
  expect_400(completion("\"just a string\""), "must be a JSON object");
}

TEST(ServerRequest, InvalidUtf8) {
  auto r = completion(std::string("{\"prompt\": \"a\xff\xfe b\"}"));
  expect_400(r, "invalid JSON");
  // The message quotes the input printable: no raw bytes reach the client or the log.
  for (char c : r.error().message) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << r.error().message;
  expect_400(completion(std::string("{\"prompt\": \"\xc3\"}")), "invalid JSON");  // truncated
}

TEST(ServerRequest, DeepNesting) {
  std::string deep = "{\"prompt\": \"x\", \"extra\": ";
  for (int i = 0; i < 100000; ++i) deep += '[';
  expect_400(completion(deep), "nests deeper than 16");
  ServerLimits shallow;
  shallow.max_json_depth = 2;
  expect_400(completion(R"({"prompt": "x", "a": {"b": [1]}})", shallow), "nests deeper than 2");
  EXPECT_TRUE(completion(R"({"prompt": "x", "a": [1]})", shallow).ok());
}

TEST(ServerRequest, TooManyValues) {
  ServerLimits small;
  small.max_json_values = 10;
  expect_400(completion(R"({"prompt": [1,2,3,4,5,6,7,8,9,10,11]})", small), "more than 10 values");
  // By default a prompt of token ids as long as the context fits.
  std::string ids = "{\"prompt\": [";
  for (int i = 0; i < 250; ++i) ids += (i ? ",1" : "1");
  EXPECT_TRUE(completion(ids + "], \"max_tokens\": 1}").ok());
}

TEST(ServerRequest, WrongTypes) {
  expect_400(completion(R"({"prompt": "x", "temperature": "hot"})"), "a number", "temperature");
  expect_400(completion(R"({"prompt": "x", "max_tokens": 1.5})"), "an integer", "max_tokens");
  expect_400(completion(R"({"prompt": "x", "max_tokens": "10"})"), "an integer", "max_tokens");
  expect_400(completion(R"({"prompt": "x", "stream": "yes"})"), "true or false", "stream");
  expect_400(completion(R"({"prompt": "x", "stream_options": 1})"), "an object", "stream_options");
  expect_400(completion(R"({"prompt": "x", "stream_options": {"include_usage": 1}})"),
             "true or false", "stream_options.include_usage");
  expect_400(completion(R"({"prompt": "x", "seed": "7"})"), "an integer", "seed");
  expect_400(completion(R"({"prompt": "x", "stop": 3})"), "string", "stop");
  expect_400(completion(R"({"prompt": "x", "logprobs": true})"), "an integer", "logprobs");
  expect_400(completion(R"({"prompt": "x", "model": 3})"), "a string", "model");
  expect_400(chat(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 3})"),
             "true or false", "logprobs");
}

TEST(ServerRequest, SamplingOutOfRange) {
  expect_400(completion(R"({"prompt": "x", "temperature": -0.1})"), "[0, 2]", "temperature");
  expect_400(completion(R"({"prompt": "x", "temperature": 2.5})"), "[0, 2]", "temperature");
  expect_400(completion(R"({"prompt": "x", "top_p": 0})"), "(0, 1]", "top_p");
  expect_400(completion(R"({"prompt": "x", "top_p": 1.01})"), "(0, 1]", "top_p");
  expect_400(completion(R"({"prompt": "x", "min_p": -1})"), "[0, 1]", "min_p");
  expect_400(completion(R"({"prompt": "x", "top_k": -1})"), "top_k", "top_k");
  expect_400(completion(R"({"prompt": "x", "repeat_penalty": 0})"), "repeat_penalty");
  EXPECT_TRUE(completion(R"({"prompt": "x", "temperature": 2, "top_p": 1})").ok());
}

TEST(ServerRequest, HugeNumbers) {
  // Beyond double's range JSON numbers parse as infinity; beyond int64 as unsigned or double.
  expect_400(completion(R"({"prompt": "x", "temperature": 1e999})"), "number overflow");
  expect_400(completion(R"({"prompt": "x", "temperature": -1e999})"), "number overflow");
  expect_400(completion(R"({"prompt": "x", "temperature": 1e300})"), "[0, 2]", "temperature");
  expect_400(completion(R"({"prompt": "x", "max_tokens": 18446744073709551615})"), "leave",
             "max_tokens");
  expect_400(completion(R"({"prompt": "x", "max_tokens": 1e30})"), "an integer", "max_tokens");
  expect_400(completion(R"({"prompt": "x", "top_k": 99999999999})"), "top_k", "top_k");
  EXPECT_TRUE(completion(R"({"prompt": "x", "seed": 18446744073709551615})").ok());
}

TEST(ServerRequest, MaxTokensAgainstTheContext) {
  // "hello" is a few tokens of the 256-token context.
  const int32_t prompt = static_cast<int32_t>(served().prompts->completion("hello").size());
  const int32_t room = 256 - prompt;
  EXPECT_TRUE(
      completion(R"({"prompt": "hello", "max_tokens": )" + std::to_string(room) + "}").ok());
  expect_400(completion(R"({"prompt": "hello", "max_tokens": )" + std::to_string(room + 1) + "}"),
             "leave " + std::to_string(room), "max_tokens");
  expect_400(completion(R"({"prompt": "hello", "max_tokens": 0})"), "at least 1", "max_tokens");
  expect_400(completion(R"({"prompt": "hello", "max_tokens": -5})"), "at least 1", "max_tokens");
  // A prompt that can never fit: 400 at once, naming the context.
  std::string ids = "{\"prompt\": [";
  for (int i = 0; i < 256; ++i) ids += (i ? ",1" : "1");
  expect_400(completion(ids + "]}"), "context holds 256", "prompt");
}

TEST(ServerRequest, StopStrings) {
  expect_400(completion(R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})"), "at most 4",
             "stop");
  expect_400(completion(R"({"prompt": "x", "stop": [""]})"), "must not be empty", "stop");
  expect_400(completion(R"({"prompt": "x", "stop": [1]})"), "string", "stop");
  expect_400(completion(R"({"prompt": "x", "stop": ")" + std::string(257, 'a') + "\"}"),
             "at most 256 bytes", "stop");
  auto one = completion(R"({"prompt": "x", "stop": "end"})");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->params.stop, std::vector<std::string>{"end"});
}

TEST(ServerRequest, UnsupportedOptions) {
  expect_400(completion(R"({"prompt": "x", "n": 2})"), "only n = 1", "n");
  expect_400(completion(R"({"prompt": "x", "best_of": 3})"), "best_of", "best_of");
  expect_400(completion(R"({"prompt": "x", "echo": true})"), "echo", "echo");
  expect_400(completion(R"({"prompt": "x", "presence_penalty": 0.5})"), "repeat_penalty",
             "presence_penalty");
  expect_400(completion(R"({"prompt": "x", "frequency_penalty": -1})"), "repeat_penalty",
             "frequency_penalty");
  expect_400(completion(R"({"prompt": "x", "logit_bias": {"1": 5}})"), "logit_bias");
  expect_400(completion(R"({"prompt": "x", "suffix": "tail"})"), "suffix");
  expect_400(chat(R"({"messages": [{"role": "user", "content": "x"}],
                      "tools": [{"type": "function"}]})"),
             "tools");
  expect_400(chat(R"({"messages": [{"role": "user", "content": "x"}],
                      "response_format": {"type": "json_object"}})"),
             "response_format");
  EXPECT_TRUE(chat(R"({"messages": [{"role": "user", "content": "x"}], "tools": [],
                       "response_format": {"type": "text"}, "logit_bias": {}})")
                  .ok());
}

TEST(ServerRequest, UnknownModelIs404) {
  auto r = completion(R"({"model": "gpt-4", "prompt": "x"})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().status, 404);
  EXPECT_EQ(r.error().code, "model_not_found");
  EXPECT_EQ(r.error().param, "model");
}

TEST(ServerRequest, Logprobs) {
  expect_400(completion(R"({"prompt": "x", "logprobs": 6})"), "[0, 5]", "logprobs");
  expect_400(completion(R"({"prompt": "x", "logprobs": -1})"), "[0, 5]", "logprobs");
  const std::string msgs = R"("messages": [{"role": "user", "content": "x"}])";
  expect_400(chat("{" + msgs + R"(, "logprobs": true, "top_logprobs": 21})"), "[0, 20]",
             "top_logprobs");
  expect_400(chat("{" + msgs + R"(, "top_logprobs": 2})"), "needs 'logprobs'", "top_logprobs");
  auto r = chat("{" + msgs + R"(, "logprobs": true, "top_logprobs": 3, "stream": true})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->params.logprobs, 3);
  EXPECT_EQ(r->params.max_tokens, -1);  // streamed: no cap on entries
  // Not streamed, a response holds every entry: at most max_logprob_entries.
  ServerLimits lim;
  lim.max_logprob_entries = 40;  // 10 tokens of 1 + 3
  expect_400(chat("{" + msgs + R"(, "logprobs": true, "top_logprobs": 3, "max_tokens": 11})", lim),
             "at most 10 tokens", "max_tokens");
  auto capped = chat("{" + msgs + R"(, "logprobs": true, "top_logprobs": 3})", lim);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->params.max_tokens, 10);
}

}  // namespace
}  // namespace snug::server
