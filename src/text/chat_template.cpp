#include "text/chat_template.h"

#include "text/jinja_lexer.h"
#include "text/jinja_parser.h"

namespace snug::text {

namespace {

constexpr std::string_view kChatml = R"({%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\n' }}
{%- endif -%})";

// Gemma 3's template for text-only messages.
constexpr std::string_view kGemma = R"({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {{- message['content'] | trim }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%})";

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view source) {
  SNUG_ASSIGN_OR_RETURN(std::vector<jinja::Segment> segs, jinja::lex(source));
  SNUG_ASSIGN_OR_RETURN(jinja::Body body, jinja::parse(segs));
  ChatTemplate t;
  t.body_ = std::make_shared<const jinja::Body>(std::move(body));
  return t;
}

Result<std::string> ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt, const std::string& bos_token,
                                         const std::string& eos_token,
                                         const ChatLimits& limits) const {
  using jinja::Value;
  Value globals = Value::new_dict();
  Value list = Value::new_list();
  for (const ChatMessage& m : messages) {
    Value msg = Value::new_dict();
    msg.dict->set("role", Value::string(m.role));
    msg.dict->set("content", Value::string(m.content));
    list.list->push_back(std::move(msg));
  }
  globals.dict->set("messages", std::move(list));
  globals.dict->set("add_generation_prompt", Value::boolean(add_generation_prompt));
  globals.dict->set("bos_token", Value::string(bos_token));
  globals.dict->set("eos_token", Value::string(eos_token));
  for (const char* fn : {"raise_exception", "range", "namespace", "strftime_now", "dict"})
    globals.dict->set(fn, Value::function(fn));
  return jinja::render(*body_, globals, limits);
}

Result<std::string> render_chat(const std::string& tmpl, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& bos_token,
                                const std::string& eos_token) {
  SNUG_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(tmpl));
  return t.render(messages, add_generation_prompt, bos_token, eos_token);
}

std::string_view builtin_chat_template(std::string_view name) {
  if (name == "chatml") return kChatml;
  if (name == "gemma") return kGemma;
  return {};
}

std::string_view fallback_chat_template_name(const Tokenizer& tokenizer,
                                             std::string_view architecture) {
  if (architecture.starts_with("gemma") || tokenizer.find_token("<start_of_turn>")) return "gemma";
  return "chatml";
}

std::string select_chat_template(const Tokenizer& tokenizer, std::string_view architecture) {
  if (!tokenizer.chat_template().empty()) return tokenizer.chat_template();
  return std::string(builtin_chat_template(fallback_chat_template_name(tokenizer, architecture)));
}

}  // namespace snug::text
