// Random-weight models (`make_model` presets) for the forward-pass tests, written once per test process and
// mapped; and how far one set of logits is from another.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/model_files.h"

namespace recgpt::testing {

// The `preset` model of `seed` with `dtype` weights; its folder is removed once mapped (the mapping stays).
const ModelFiles& random_model(const std::string& preset, DType dtype, uint64_t seed);

// `count` token ids drawn with `seed` from the vocabulary, never the entity token.
std::vector<int32_t> random_tokens(const ModelConfig& config, int count, uint32_t seed);

// max |actual - expected| / max |expected|; infinity when `actual` holds a NaN or an infinity (an unwritten or
// overflowed output), so no tolerance passes it.
double relative_difference(std::span<const float> actual, std::span<const float> expected);

}  // namespace recgpt::testing
