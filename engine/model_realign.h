// Rewrites a model folder's safetensors files with our writer, whose data section starts on a cache line
// (kSafetensorsDataAlignment), so that a checkpoint from Hugging Face's writer (8-byte padding: tensors a few bytes
// off a line, decode ~7% slower on the CPU engine) decodes at full speed. Tensors and their bytes are unchanged;
// within a file, tensors whose byte counts are whole cache lines come first, so that all of them stay aligned.
#pragma once

#include <string>

#include "common/status.h"

namespace recgpt {

// Writes every *.safetensors file of `model_dir` realigned into `out_dir` (which must not exist; created with its
// parents) and copies every other regular file of the folder as it is (config.json, tokenizer.json, a shard index:
// tensor names and file names do not change). kNotFound / kInvalidArgument for the folders, the errors of
// SafetensorsFile::open naming a corrupt file, kIoError for failed writes (out_dir is then left incomplete).
Status realign_model_files(const std::string& model_dir, const std::string& out_dir);

}  // namespace recgpt
