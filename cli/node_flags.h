// The flags every node service takes (`recgpt prefill`, `recgpt decode`): identity, ports, KV transfer, required
// peers, the entity store, decoding catalogues and the drain deadline. `Options` is the service's options struct
// (the same field names in each).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "cli/node_runner.h"

namespace recgpt::cli {

// Flags read as text, then parsed into the options by apply_node_flag_texts.
struct NodeFlagTexts {
  std::vector<std::string> transfer_settings;  // key=value
  std::vector<std::string> catalogues;         // name=path
  int drain_seconds = 30;
};

template <typename Options>
void add_node_service_flags(CLI::App& command, Options& server, NodeFlagTexts& texts) {
  std::vector<std::string>& transfer_settings = texts.transfer_settings;
  int& drain_seconds = texts.drain_seconds;
  command.add_option("--node-id", server.node_id, "This node's name in handshakes and metrics");
  command.add_option("--listen", server.address, "Address of the control and admin ports");
  command.add_option("--port", server.port, "Control port (0: any free port)");
  command.add_option("--admin-port", server.admin_port, "Admin HTTP port (0: any free port)");
  command.add_option("--transfer-backend", server.transfer_backend, "KV transfer backend (ucx, local)");
  command.add_option("--transfer-setting", transfer_settings, "Transfer backend setting key=value");
  command.add_option("--require-peer", server.required_peers,
                     "host:port of a node this one needs; /readyz is 503 until each answers a hello (repeatable)");
  command.add_option("--entity-store", server.entity_store,
                     "Entity store for entities given by id (a decode node needs it only to prefill locally)");
  command.add_option("--catalogue", texts.catalogues,
                     "A choice catalogue for constrained decoding, name=path (one choice per line; repeatable)");
  command.add_option("--drain-seconds", drain_seconds, "On SIGTERM, how long running work may take to finish")
      ->check(CLI::Range(0, 3600));
}

template <typename Options>
Status apply_node_flag_texts(const NodeFlagTexts& texts, Options& server) {
  RECGPT_ASSIGN_OR_RETURN(server.transfer_settings, parse_key_values(texts.transfer_settings, "--transfer-setting"));
  RECGPT_ASSIGN_OR_RETURN(server.catalogues, parse_key_values(texts.catalogues, "--catalogue"));
  return Status::ok();
}

}  // namespace recgpt::cli
