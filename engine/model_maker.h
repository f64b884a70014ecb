// `recgpt make-model`: writes a Hugging Face-format Qwen3 folder with deterministic random weights, the
// entity adaptor, and a byte-level BPE tokenizer trained on the corpus shipped in the repo. Nothing it
// writes is committed: tests and the demo generate their models.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/dtype.h"
#include "engine/model_config.h"

namespace recgpt {

struct MakeModelOptions {
  std::string preset = "tiny";  // tiny, small, qwen3-0.6b
  uint64_t seed = 0;
  DType dtype = DType::kF32;  // of the weights on disk: kF32 or kBF16
  std::string out_dir;
};

std::vector<std::string> model_preset_names();

// The config of a preset before the tokenizer is trained (vocab_size and entity_token_id are final only
// after make_model: a small preset's vocabulary is the tokenizer's).
Result<ModelConfig> model_preset(std::string_view name);

// Creates out_dir (and parents) and writes config.json, model.safetensors and tokenizer.json.
Status make_model(const MakeModelOptions& options);

// The text the tokenizer is trained on (data/tokenizer_corpus.txt, compiled into the binary).
std::string_view builtin_tokenizer_corpus();

}  // namespace recgpt
