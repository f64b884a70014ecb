// `recgpt prefill`: a prefill node as a service. Speaks the control protocol on its port:
//   Hello           as the decode node's (role, model fingerprint, KV layout; refusals answered, then closed)
//   PrefillRequest  -> PrefillDone once the prompt's KV (past the decode node's cached prefix) landed in the
//                   decode node's reserved blocks, layer by layer as computed, and the decode node was notified;
//                   an Error otherwise (bad prompt, mismatched KV layout naming the field, transfer failure)
//   Cancel          naming a PrefillRequest in progress: it is dropped (answered with an Error) at the engine's
//                   next turn if it waits, else before its next step; as when its connection closes
// Work runs on one engine thread in steps of up to a token budget (batched, long prompts chunked), with this
// node's own prefix cache (so a shared user context is computed once). The admin port serves /metrics, /healthz,
// /readyz.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/dtype.h"
#include "prefill_node/prefill_worker_limits.h"

namespace boost::asio {
class io_context;
}

namespace recgpt {
class ModelFiles;
}

namespace recgpt::prefill {

struct PrefillServerOptions {
  std::string node_id = "prefill";
  std::string address = "127.0.0.1";
  uint16_t port = 0;
  uint16_t admin_port = 0;
  int64_t kv_cache_bytes = 256LL << 20;  // this node's prefix cache and working blocks
  int block_size = 16;
  DType kv_dtype = DType::kF32;  // must match the decode nodes' (the KV layouts are checked at connect)
  int threads = 0;               // compute threads, 0: all cores
  bool repack_weights = true;    // BackendOptions::repack_weights
  std::string backend = "cpu";   // compute backend (engine/backend.h); with cuda the KV pool is in GPU memory
  int cuda_device = 0;
  std::string entity_store;  // path of an entity store (entity inputs by id); empty: vectors must come inline
  std::string transfer_backend = "ucx";
  std::vector<std::pair<std::string, std::string>> transfer_settings;
  // Control addresses ("host:port") of nodes this one needs: /readyz is 503 until each answers a hello.
  std::vector<std::string> required_peers;
  std::vector<std::pair<std::string, std::string>> catalogues;  // name -> path: choice lists for constrained decoding
  PrefillWorkerLimits limits;
};

class PrefillServer {
 public:
  static Result<std::unique_ptr<PrefillServer>> start(boost::asio::io_context& io, const ModelFiles& model,
                                                      PrefillServerOptions options);
  virtual ~PrefillServer() = default;  // call on the io_context's thread; joins the engine thread
  virtual uint16_t port() const = 0;
  virtual uint16_t admin_port() const = 0;
  virtual void stop() = 0;
  // Graceful end (SIGTERM): stops accepting connections and new work (answered kUnavailable "draining"), lets
  // the prefill requests in progress finish, then runs `drained` on the io thread; at `within` it runs it anyway
  // (what is left is cancelled when the server is destroyed).
  virtual void drain(std::chrono::milliseconds within, std::function<void()> drained) = 0;
};

}  // namespace recgpt::prefill
