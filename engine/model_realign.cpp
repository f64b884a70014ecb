#include "engine/model_realign.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <vector>

#include "engine/safetensors.h"

namespace recgpt {
namespace {

namespace fs = std::filesystem;

Status realign_file(const fs::path& from, const fs::path& to) {
  RECGPT_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(from.string()));
  std::vector<SafetensorsTensor> tensors(file.entries().begin(), file.entries().end());
  std::stable_partition(tensors.begin(), tensors.end(), [](const SafetensorsTensor& tensor) {
    return tensor.bytes.size() % kSafetensorsDataAlignment == 0;
  });
  return write_safetensors(to.string(), tensors);
}

}  // namespace

Status realign_model_files(const std::string& model_dir, const std::string& out_dir) {
  std::error_code error;
  if (!fs::is_directory(model_dir, error)) return not_found("model folder '" + model_dir + "' does not exist");
  if (fs::exists(out_dir, error)) {
    return invalid_argument("output folder '" + out_dir + "' already exists (it is written whole, never merged)");
  }
  if (!fs::create_directories(out_dir, error)) {
    return io_error("cannot create '" + out_dir + "': " + error.message());
  }
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(model_dir, error)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  if (error) return io_error("cannot list '" + model_dir + "': " + error.message());
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) {
    const fs::path target = fs::path(out_dir) / file.filename();
    if (file.extension() == ".safetensors") {
      RECGPT_RETURN_IF_ERROR(realign_file(file, target));
    } else if (!fs::copy_file(file, target, error)) {
      return io_error("cannot copy '" + file.string() + "' to '" + target.string() + "': " + error.message());
    }
  }
  return Status::ok();
}

}  // namespace recgpt
