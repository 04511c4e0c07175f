// A tiny SentencePiece-style vocabulary (tokenizer.ggml.model = "llama") as a GGUF
// file without tensors: <unk>, <s>, </s>, the 256 byte-fallback tokens <0xNN>, a
// few scored pieces and a user-defined token. For tokenizer tests and fuzzers that
// need the SPM path without a real model.
#pragma once

#include "gguf/gguf.h"

namespace snug::testing {

gguf::Writer build_tiny_spm_vocab();

}  // namespace snug::testing
