#pragma once
// The programs the integration tests start. Their build-tree paths are compiled in; where the programs were moved
// (scripts/gpu_check.sh runs them from a bundle on the GPU machine) the environment names them instead:
// RECGPT for `recgpt`, KV_TRANSFER_PEER for `kv_transfer_peer`.
#include <cstdlib>
#include <string>

namespace recgpt::testing {

inline std::string program_path(const char* environment_name, const char* built_path) {
  const char* moved = std::getenv(environment_name);
  return moved != nullptr && *moved != '\0' ? moved : built_path;
}

inline std::string recgpt_program() { return program_path("RECGPT", RECGPT_PATH); }

inline std::string kv_transfer_peer_program() { return program_path("KV_TRANSFER_PEER", KV_TRANSFER_PEER_PATH); }

}  // namespace recgpt::testing
