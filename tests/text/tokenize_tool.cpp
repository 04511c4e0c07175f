// Reference-comparison driver: tokenizes JSON lines from stdin with snug's tokenizer.
//
// usage: tokenize_tool MODEL.gguf < requests.jsonl
// request:  {"hex": "<input bytes as hex>", "special": bool, "add_special": bool}
// response: {"ids": [...], "decoded_hex": "<decode(ids) as hex>"} or {"error": "..."}
// request:  {"pieces": [ids]}  -> {"pieces_hex": [piece(id) as hex, ...]}
// request:  {"chat": template, "messages": [{role, content}], "add_generation_prompt": bool,
//            "bos_token": str, "eos_token": str} -> {"rendered": str} or {"error": "..."}
// request:  {"info": true}     -> {"n_vocab", "bos", "eos", "eog": [ids]}
// Hex keeps arbitrary bytes (invalid UTF-8 included) intact through JSON.
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "gguf/gguf.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace {

std::string from_hex(const std::string& h) {
  std::string out;
  const auto val = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<char>(val(h[i]) * 16 + val(h[i + 1])));
  return out;
}

std::string to_hex(const std::string& s) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) out.push_back(kHex[c >> 4]), out.push_back(kHex[c & 15]);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf < requests.jsonl\n", argv[0]);
    return 2;
  }
  auto file = snug::gguf::File::open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "error: %s\n", file.error().message.c_str());
    return 1;
  }
  auto tok = snug::text::Tokenizer::from_gguf(*file);
  if (!tok.ok()) {
    std::fprintf(stderr, "error: %s\n", tok.error().message.c_str());
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    nlohmann::json out;
    try {
      const auto req = nlohmann::json::parse(line);
      if (req.contains("info")) {
        std::vector<int32_t> eog;
        for (int32_t id = 0; id < tok->n_vocab(); ++id)
          if (tok->is_eog(id)) eog.push_back(id);
        out = {{"n_vocab", tok->n_vocab()}, {"bos", tok->bos()}, {"eos", tok->eos()}, {"eog", eog}};
        std::cout << out.dump() << "\n" << std::flush;
        continue;
      }
      if (req.contains("chat")) {
        std::vector<snug::text::ChatMessage> msgs;
        for (const auto& m : req.at("messages")) msgs.push_back({m.at("role"), m.at("content")});
        auto r = snug::text::render_chat(req.at("chat").get<std::string>(), msgs,
                                         req.value("add_generation_prompt", false),
                                         req.value("bos_token", ""), req.value("eos_token", ""));
        out = r.ok() ? nlohmann::json{{"rendered", *r}}
                     : nlohmann::json{{"error", r.error().message}};
        std::cout << out.dump() << "\n" << std::flush;
        continue;
      }
      if (req.contains("pieces")) {
        std::vector<std::string> pieces;
        for (int32_t id : req.at("pieces").get<std::vector<int32_t>>())
          pieces.push_back(to_hex(tok->piece(id)));
        out["pieces_hex"] = pieces;
        std::cout << out.dump() << "\n" << std::flush;
        continue;
      }
      const std::string text = req.contains("hex") ? from_hex(req.at("hex").get<std::string>())
                                                   : req.at("text").get<std::string>();
      const auto ids =
          tok->encode(text, req.value("add_special", false), req.value("special", false));
      out["ids"] = ids;
      out["decoded_hex"] = to_hex(tok->decode(ids));
    } catch (const std::exception& e) {
      out = {{"error", e.what()}};
    }
    std::cout << out.dump() << "\n" << std::flush;
  }
  return 0;
}
