// The entities of a prompt as control frames carry them (EntityInput: a vector, or an id for the node's entity
// store), resolved to what the engine takes: one vector and one prefix-cache key per entity token, in order.
// Prefill nodes and decode nodes that prefill locally resolve them the same way.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/entity_store.h"
#include "proto/control.pb.h"

namespace recgpt {
struct ModelConfig;
}

namespace recgpt::node {

struct ResolvedEntities {
  std::vector<float> vectors;  // [entities, entity_dim]
  std::vector<uint64_t> keys;  // entity_key_from_vector or entity_key_from_id, one per entity
};

// The entity store at `path` (none when empty), checked against the model's adaptor: kInvalidArgument when its
// vectors are not the adaptor's input size; the store's own errors when it cannot be read.
Result<std::optional<EntityStore>> open_entity_store(const std::string& path, const ModelConfig& config);

// kInvalidArgument for a vector of the wrong size; kUnimplemented for an id when `store` is null (this node has
// no entity store); kNotFound for an id the store lacks.
Result<ResolvedEntities> resolve_entities(const google::protobuf::RepeatedPtrField<control::EntityInput>& entities,
                                          int entity_dim, const EntityStore* store, const std::string& node_kind);

}  // namespace recgpt::node
