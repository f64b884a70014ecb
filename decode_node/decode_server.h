// `recgpt decode`: a decode node as a service. Speaks the control protocol (proto/control.proto) on its port:
//   Hello        first frame of every connection, answered with this node's Hello (role, model fingerprint, KV
//                layout, transfer endpoint and the KV pool's region key); another model's fingerprint or protocol
//                version is answered with an Error and the connection closed
//   ReserveKv    -> Reservation (blocks the prefill node fills) or NoRoom, at once
//   StartDecode  -> TokenChunk frames under the call's request id until one has `finished`; with
//                prefill_locally, this node computes the prompt first (entities by vector, or by id from
//                --entity-store): the router's fallback when no prefill node can take the call
//   Cancel       (request id of a ReserveKv or StartDecode call) ends that reservation or sequence
// A connection that closes cancels everything it reserved or started. The admin port serves /metrics,
// /healthz, /readyz. The engine runs on DecodeCore's thread; the network on the caller's io_context.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/generator.h"

namespace boost::asio {
class io_context;
}

namespace recgpt::decode {

struct DecodeServerOptions {
  std::string node_id = "decode";
  std::string address = "127.0.0.1";
  uint16_t port = 0;        // 0: ephemeral (see DecodeServer::port)
  uint16_t admin_port = 0;  // 0: ephemeral
  std::string transfer_backend = "ucx";
  std::vector<std::pair<std::string, std::string>> transfer_settings;
  // Control addresses ("host:port") of nodes this one needs: /readyz is 503 until each answers a hello.
  std::vector<std::string> required_peers;
  std::vector<std::pair<std::string, std::string>> catalogues;  // name -> path: choice lists for constrained decoding
  std::string entity_store;  // for entities given by id to a local prefill; empty: vectors must come inline
  GeneratorOptions engine;
};

class DecodeServer {
 public:
  // Loads nothing itself: `model` must outlive the server. Errors: the engine's (KV pool), the transfer
  // backend's, or a port that cannot be bound.
  static Result<std::unique_ptr<DecodeServer>> start(boost::asio::io_context& io, const ModelFiles& model,
                                                     DecodeServerOptions options);
  virtual ~DecodeServer() = default;  // call on the io_context's thread
  virtual uint16_t port() const = 0;
  virtual uint16_t admin_port() const = 0;
  // Stops accepting and closes every connection (cancelling their work). Call on the io_context's thread.
  virtual void stop() = 0;
  // Graceful end (SIGTERM): stops accepting connections and new work (answered kUnavailable "draining"), lets
  // the reservations and sequences in progress finish, then runs `drained` on the io thread; at `within` it runs it
  // anyway (what is left is cancelled when the server is destroyed).
  virtual void drain(std::chrono::milliseconds within, std::function<void()> drained) = 0;
};

}  // namespace recgpt::decode
