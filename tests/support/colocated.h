// The reference of disaggregated runs: what the engine generates for a request alone in one process.
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>
#include <vector>

#include "engine/generator.h"
#include "engine/model_files.h"

namespace recgpt::testing {

// The tokens a colocated Generator produces for `request`, any sampling (at most 500 steps).
inline std::vector<int32_t> colocated_tokens(const ModelFiles& model, const GenerationRequest& request) {
  auto generator = Generator::create(model, {});
  REQUIRE(generator.is_ok());
  REQUIRE((*generator)->add(request).is_ok());
  std::vector<int32_t> tokens;
  for (int step = 0; step < 500 && !(*generator)->idle(); ++step) {
    auto produced = (*generator)->step();
    REQUIRE(produced.is_ok());
    for (const StepToken& token : *produced) {
      if (token.token >= 0) tokens.push_back(token.token);
    }
  }
  return tokens;
}

}  // namespace recgpt::testing
