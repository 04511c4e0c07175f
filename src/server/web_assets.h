// The web page `snug serve` serves at / (web/: a chat and the memory picture),
// compiled into the server by cmake/embed_web.cmake so that the binary needs
// no files beside it.
#pragma once

#include <span>
#include <string_view>

namespace snug::server {

struct WebAsset {
  std::string_view path;  // "/", "/app.js", "/style.css"
  std::string_view content_type;
  std::string_view body;
};

std::span<const WebAsset> web_assets();

}  // namespace snug::server
