// Per-family hyper-parameters (internal to model/). read_config reads what
// every family shares, then the family's reader sets what is its own: rope
// mode and sets, per-layer windows, which optional weights it has, the
// activation. The graph is forward_decoder's (decoder.cpp), so a family is
// one small file.
#pragma once

#include "base/result.h"
#include "gguf/gguf.h"
#include "model/config.h"

namespace snug::model {

Status read_gemma3(const gguf::File& f, ModelConfig& c);  // gemma3.cpp
Status read_qwen(const gguf::File& f, ModelConfig& c);    // qwen.cpp: qwen2 and qwen3

}  // namespace snug::model
