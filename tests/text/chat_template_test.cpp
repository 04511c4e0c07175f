// Chat-template rendering: the real SmolLM2 template, the built-in fallbacks, Jinja
// edge cases, and templates that must fail cleanly (unknown constructs, runaway loops).
#include <gtest/gtest.h>

#include <filesystem>

#include "gguf/gguf.h"
#include "text/chat_template.h"

namespace snug::text {
namespace {

// SmolLM2-135M-Instruct's tokenizer.chat_template, used when the model file is absent.
const char* kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' "
    "}}{% "
    "endif %}";

std::string smollm2_template() {
  const std::string path = std::string(SNUG_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (std::filesystem::exists(path)) {
    auto f = gguf::File::open(path);
    if (f.ok()) {
      auto s = f->get_string("tokenizer.chat_template");
      if (s.ok()) return *s;
    }
  }
  return kSmolLm2Template;
}

std::string render(const std::string& tmpl, const std::vector<ChatMessage>& msgs = {},
                   bool agp = false) {
  auto r = render_chat(tmpl, msgs, agp, "<s>", "</s>");
  return r.ok() ? *r : "ERROR: " + r.error().message;
}

std::string error_of(const std::string& tmpl, const std::vector<ChatMessage>& msgs = {}) {
  auto r = render_chat(tmpl, msgs, false, "<s>", "</s>");
  return r.ok() ? "" : r.error().message;
}

TEST(ChatTemplate, SmolLm2) {
  const std::string t = smollm2_template();
  EXPECT_EQ(render(t, {{"user", "Hi!"}}, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n"
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render(t, {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}}, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
}

TEST(ChatTemplate, BuiltinFallbacks) {
  EXPECT_EQ(render(std::string(builtin_chat_template("chatml")), {{"user", "Hi"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  const std::string gemma(builtin_chat_template("gemma"));
  EXPECT_EQ(
      render(gemma, {{"system", "Be brief."}, {"user", " Hi \n"}, {"assistant", "Hello"}}, true),
      "<s><start_of_turn>user\nBe "
      "brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
      "<start_of_turn>model\n");
  EXPECT_NE(error_of(gemma, {{"assistant", "x"}}).find("Conversation roles must alternate"),
            std::string::npos);
  EXPECT_TRUE(builtin_chat_template("nonexistent").empty());
}

TEST(ChatTemplate, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("{% if true %}\n  yes\n  {% endif %}\nend"), "  yes\nend");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("a {{- 'x' -}} b"), "axb");
  EXPECT_EQ(render("x\n"), "x");  // one trailing newline is dropped
  EXPECT_EQ(render("a{# comment #}b"), "ab");
  EXPECT_EQ(render("  {%+ if true %}x{% endif %}"), "  x");
}

TEST(ChatTemplate, Expressions) {
  std::vector<ChatMessage> m = {
      {"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}};
  EXPECT_EQ(render("{% for x in messages %}{{ loop.index }}{{ x.role[0] }}{% if not loop.last "
                   "%},{% endif %}{% endfor %}",
                   m),
            "1s,2u,3a,4u");
  EXPECT_EQ(render("{% for x in messages[1:] %}{{ x['content'] }}{% endfor %}", m), "U1A1U2");
  EXPECT_EQ(render("{% for x in messages[::-1] %}{{ x.content }}{% endfor %}", m), "U2A1U1S");
  EXPECT_EQ(
      render(
          "{% for x in messages if x.role == 'user' %}{{ x.content }}{{ loop.length }}{% endfor %}",
          m),
      "U12U22");
  EXPECT_EQ(
      render("{{ messages | length }} {{ messages[-1].content | lower }} {{ 'ab' | upper }}", m),
      "4 u2 AB");
  EXPECT_EQ(render("{{ '  pad  ' | trim }}|{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ 7 % 3 }}|{{ 'a' ~ 1 }}"),
            "pad|7|3|1|a1");
  EXPECT_EQ(render("{% if 'x' in 'axb' and 2 not in [1, 3] %}ok{% endif %}"), "ok");
  EXPECT_EQ(render("{{ 'yes' if add_generation_prompt else 'no' }}", {}, true), "yes");
  EXPECT_EQ(render("{% if x is defined %}d{% elif y is not defined %}u{% else %}e{% endif %}"),
            "u");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i "
                   "%}{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(render("{% set x = 1 %}{% for i in range(3) %}{% set x = i %}{% endfor %}{{ x }}"),
            "1");  // loop scope
  EXPECT_EQ(render("{{ bos_token }}{{ eos_token }}"), "<s></s>");
  EXPECT_EQ(
      render(
          "{{ ['a', 'b'] | join(', ') }}|{{ 'a,b'.split(',') | last }}|{{ 'Hi'.startswith('H') }}"),
      "a, b|b|True");
  EXPECT_EQ(render("{{ {'a': [1, 'x', none, true]} | tojson }}"),
            "{\"a\": [1, \"x\", null, true]}");
  EXPECT_EQ(
      render("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
      "012");
  EXPECT_EQ(render("{% for i in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% set s %}in{{ 1 }}{% endset %}[{{ s }}]"), "[in1]");
  EXPECT_EQ(render("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') "
                   "| join }}",
                   m),
            "U1U2");
  EXPECT_EQ(render("{{ undefined_thing }}|{{ none }}|{{ 1.5 }}|{{ [1, 'a'] }}"),
            "|None|1.5|[1, 'a']");
}

TEST(ChatTemplate, ErrorsNotCrashes) {
  EXPECT_NE(error_of("{% macro m() %}{% endmacro %}").find("unsupported tag"), std::string::npos);
  EXPECT_NE(error_of("{% include 'x' %}").find("unsupported tag"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' | no_such_filter }}").find("unknown filter"), std::string::npos);
  EXPECT_NE(error_of("{{ x is no_such_test }}").find("unknown test"), std::string::npos);
  EXPECT_NE(error_of("{{ open('/etc/passwd') }}").find("not callable"), std::string::npos);
  EXPECT_NE(error_of("{% if true %}no end").find("endif"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 + }}").find("line 1"), std::string::npos);
  EXPECT_NE(error_of("{{ 'unterminated }}").find("unterminated"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 / 0 }}").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("{{ raise_exception('bad roles') }}").find("bad roles"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("unsupported operands"), std::string::npos);
  // Work is bounded: loops that would run "forever", exponential strings, deep nesting.
  EXPECT_NE(error_of("{% for i in range(1000000000) %}{{ i }}{% endfor %}").find("steps"),
            std::string::npos);
  EXPECT_NE(
      error_of("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
          .find("exceeds"),
      std::string::npos);
  EXPECT_NE(error_of("{% set s = 'ab' %}{% for i in range(64) %}{% set s = s + s %}{% endfor %}")
                .find("exceeds"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 100000000000 }}").find("exceeds"), std::string::npos);
  EXPECT_FALSE(
      error_of("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}").empty());
  std::string nested;
  for (int i = 0; i < 10000; ++i) nested += "{% if true %}";
  EXPECT_FALSE(error_of(nested).empty());
}

TEST(ChatTemplate, LimitsAreConfigurable) {
  auto t = ChatTemplate::parse("{% for m in messages %}{{ m.content }}{% endfor %}");
  ASSERT_TRUE(t.ok());
  ChatLimits small;
  small.max_output_bytes = 10;
  auto r = t->render({{"user", std::string(100, 'x')}}, false, "", "", small);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("10 bytes"), std::string::npos);
}

}  // namespace
}  // namespace snug::text
