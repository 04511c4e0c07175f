// Turning a conversation into prompt tokens: the model's chat template (or
// the fallback for its family), then the tokenizer with special-token parsing.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "cli/common.h"
#include "text/chat_template.h"

namespace snug::cli {

// Renders `messages` with add_generation_prompt and tokenizes the result. A
// template that prints the BOS token itself does not get a second one.
Result<std::vector<int32_t>> chat_prompt(const LoadedModel& lm,
                                         const std::vector<text::ChatMessage>& messages);

}  // namespace snug::cli
