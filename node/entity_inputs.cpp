#include "node/entity_inputs.h"

#include "engine/block_hash.h"
#include "engine/entity_store.h"
#include "engine/model_config.h"

namespace recgpt::node {

Result<std::optional<EntityStore>> open_entity_store(const std::string& path, const ModelConfig& config) {
  if (path.empty()) return std::optional<EntityStore>();
  RECGPT_ASSIGN_OR_RETURN(EntityStore store, EntityStore::open(path));
  if (!config.entity_adaptor || store.dim() != config.entity_adaptor->entity_dim) {
    return invalid_argument("entity store " + path + " holds vectors of dim " + std::to_string(store.dim()) +
                            ", which the model's adaptor does not take");
  }
  return std::optional<EntityStore>(std::move(store));
}

Result<ResolvedEntities> resolve_entities(const google::protobuf::RepeatedPtrField<control::EntityInput>& entities,
                                          int entity_dim, const EntityStore* store, const std::string& node_kind) {
  ResolvedEntities resolved;
  for (const control::EntityInput& entity : entities) {
    if (entity.has_vector()) {
      if (entity.vector().values_size() != entity_dim) {
        return invalid_argument("an entity vector has " + std::to_string(entity.vector().values_size()) +
                                " values, the model's adaptor takes " + std::to_string(entity_dim));
      }
      resolved.vectors.insert(resolved.vectors.end(), entity.vector().values().begin(), entity.vector().values().end());
      resolved.keys.push_back(
          entity_key_from_vector(std::span(resolved.vectors).last(static_cast<size_t>(entity_dim))));
      continue;
    }
    if (store == nullptr) {
      return unimplemented("entity '" + entity.entity_id() + "' is given by id, but this " + node_kind +
                           " node has no entity store");
    }
    std::optional<std::span<const float>> vector = store->find(entity.entity_id());
    if (!vector) return not_found("entity '" + entity.entity_id() + "' is not in the entity store");
    resolved.vectors.insert(resolved.vectors.end(), vector->begin(), vector->end());
    resolved.keys.push_back(entity_key_from_id(entity.entity_id()));
  }
  return resolved;
}

}  // namespace recgpt::node
