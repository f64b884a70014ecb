// A short identity of a model's architecture and weights, exchanged in the nodes' handshake so that a prefill
// node and a decode node never mix KV of different models. Hashes config.json and, for every tensor, its dtype,
// shape and up to 4 KiB from its start, middle and end: different seeds or checkpoints differ, and it costs
// microseconds (a few pages per tensor), not a pass over the weights.
#pragma once

#include <string>

#include "common/status.h"

namespace recgpt {

class ModelFiles;

// 16 hex digits. kIoError when config.json cannot be read again.
Result<std::string> model_fingerprint(const ModelFiles& model);

}  // namespace recgpt
