// The "tiny" preset as `recgpt make-model` writes it (random weights, the trained tokenizer), in a temporary
// directory removed with it: for tests that need a real tokenizer or a model to generate with.
#pragma once

#include <catch2/catch.hpp>
#include <memory>

#include "engine/model_files.h"
#include "engine/model_maker.h"
#include "engine/tokenizer.h"
#include "tests/unit/engine/tiny_model_folder.h"

namespace recgpt::testing {

struct TinyPreset {
  TemporaryDirectory dir;
  std::unique_ptr<ModelFiles> model = made(dir.path());
  Tokenizer tokenizer = Tokenizer::load(model->tokenizer_path()).value();

  int32_t id(const char* token) const { return *tokenizer.token_to_id(token); }

 private:
  static std::unique_ptr<ModelFiles> made(const std::string& path) {
    REQUIRE(make_model({"tiny", 4, DType::kF32, path}).is_ok());
    return ModelFiles::open(path).value();
  }
};

}  // namespace recgpt::testing
