#include "router/workflow_definition.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/json_depth.h"
#include "engine/json_schema.h"

namespace recgpt {
std::string_view builtin_workflow_intent();  // generated: cmake/EmbedText.cmake
std::string_view builtin_workflow_explain();
std::string_view builtin_workflow_judge();
}  // namespace recgpt

namespace recgpt::router {
namespace {

// ordered_json keeps an object's keys in the file's order: a step's JSON schema is written in its order.
using json = nlohmann::ordered_json;

// Reads one JSON object's fields, failing with the field's path on the first problem.
class Reader {
 public:
  Reader(const json& object, std::string path) : object_(object), path_(std::move(path)) {}

  const json* find(const char* key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string at(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  Status string(const char* key, std::string& out, bool required) const {
    const json* value = find(key);
    if (value == nullptr) return required ? invalid_argument(at(key) + " is missing") : Status::ok();
    if (!value->is_string()) return invalid_argument(at(key) + " must be a string");
    out = value->get<std::string>();
    return Status::ok();
  }
  Status integer(const char* key, int32_t& out, int32_t low, int32_t high) const {
    const json* value = find(key);
    if (value == nullptr) return Status::ok();
    if (!value->is_number_integer() || value->get<int64_t>() < low || value->get<int64_t>() > high) {
      return invalid_argument(at(key) + " must be an integer from " + std::to_string(low) + " to " +
                              std::to_string(high));
    }
    out = static_cast<int32_t>(value->get<int64_t>());
    return Status::ok();
  }
  Status strings(const char* key, std::vector<std::string>& out) const {
    const json* value = find(key);
    if (value == nullptr) return Status::ok();
    if (!value->is_array() || value->empty()) return invalid_argument(at(key) + " must be a non-empty array");
    for (const json& item : *value) {
      if (!item.is_string() || item.get<std::string>().empty()) {
        return invalid_argument(at(key) + " must hold non-empty strings");
      }
      out.push_back(item.get<std::string>());
    }
    return Status::ok();
  }
  Status only(std::initializer_list<const char*> known) const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      bool listed = false;
      for (const char* key : known) listed = listed || it.key() == key;
      if (!listed) return invalid_argument(at(it.key()) + " is not a known field");
    }
    return Status::ok();
  }

 private:
  const json& object_;
  std::string path_;
};

bool is_option(const std::string& name) {
  for (const WorkflowOptionLimit& option : kWorkflowOptions)
    if (name == option.name) return true;
  return false;
}

Status parse_constraint(const json& value, const std::string& path, StepConstraint& constraint) {
  if (!value.is_object()) return invalid_argument(path + " must be an object");
  Reader reader(value, path);
  RECGPT_RETURN_IF_ERROR(reader.only(
      {"kind", "catalogue", "choices", "items_of", "line_prefix", "max_line_tokens", "max_items", "schema"}));
  std::string kind;
  RECGPT_RETURN_IF_ERROR(reader.string("kind", kind, true));
  if (kind == "catalogue") {
    constraint.kind = ConstraintKind::kCatalogue;
    RECGPT_RETURN_IF_ERROR(reader.string("catalogue", constraint.catalogue, true));
  } else if (kind == "choices") {
    constraint.kind = ConstraintKind::kChoices;
    RECGPT_RETURN_IF_ERROR(reader.strings("choices", constraint.choices));
    if (constraint.choices.empty()) return invalid_argument(reader.at("choices") + " is missing");
  } else if (kind == "items_of") {
    constraint.kind = ConstraintKind::kItemsOf;
    RECGPT_RETURN_IF_ERROR(reader.string("items_of", constraint.items_of, true));
  } else if (kind == "lines") {
    constraint.kind = ConstraintKind::kLines;
    RECGPT_RETURN_IF_ERROR(reader.string("line_prefix", constraint.line_prefix, false));
    RECGPT_RETURN_IF_ERROR(reader.integer("max_line_tokens", constraint.max_line_tokens, 1, 1024));
  } else if (kind == "json") {
    constraint.kind = ConstraintKind::kJson;
    if (const json* schema = reader.find("schema")) {
      constraint.json_schema = schema->dump();  // the file's depth was bounded before it was parsed
      if (auto compiled = JsonSchema::compile(constraint.json_schema); !compiled.is_ok()) {
        return invalid_argument(reader.at("schema") + ": " + compiled.status().message());
      }
    }
  } else {
    return invalid_argument(reader.at("kind") + " must be catalogue, choices, items_of, lines or json, not '" + kind +
                            "'");
  }
  if (const json* max_items = reader.find("max_items")) {
    if (max_items->is_string()) {
      constraint.max_items_option = max_items->get<std::string>();
      if (!is_option(constraint.max_items_option)) {
        return invalid_argument(reader.at("max_items") + " names no option: '" + constraint.max_items_option + "'");
      }
    } else {
      RECGPT_RETURN_IF_ERROR(reader.integer("max_items", constraint.max_items, 1, 1024));
    }
  }
  return Status::ok();
}

// Every variable of `step`'s prompt is one the step can have when it runs.
Status check_variables(const WorkflowStep& step, const std::set<std::string>& earlier, const std::string& path) {
  RECGPT_ASSIGN_OR_RETURN(std::vector<std::string> variables, template_variables(step.prompt));
  for (const std::string& variable : variables) {
    if (variable == "item") {
      if (!step.fans_out()) return invalid_argument(path + " uses {{item}} but the step does not fan out");
      continue;
    }
    if (variable.rfind("steps.", 0) == 0) {
      const size_t dot = variable.rfind('.');
      const std::string name = variable.substr(6, dot - 6);
      const std::string part = variable.substr(dot + 1);
      if (dot <= 6 || earlier.count(name) == 0 || (part != "text" && part != "items")) {
        return invalid_argument(path + " uses {{" + variable + "}}: not the text or items of an earlier step");
      }
      continue;
    }
    if (variable.rfind("options.", 0) == 0 && is_option(variable.substr(8))) continue;
    if (variable == "request.item" || variable == "request.candidate" || variable == "request.queries" ||
        variable == "request.environment")
      continue;
    return invalid_argument(path + " uses an unknown variable {{" + variable + "}}");
  }
  return Status::ok();
}

Status parse_step(const json& value, const std::string& path, const std::set<std::string>& earlier,
                  WorkflowStep& step) {
  if (!value.is_object()) return invalid_argument(path + " must be an object");
  Reader reader(value, path);
  RECGPT_RETURN_IF_ERROR(reader.only({"name", "prompt", "fan_out", "constraint", "output", "line_prefix", "max_tokens",
                                      "temperature", "deadline_ms", "retries"}));
  RECGPT_RETURN_IF_ERROR(reader.string("name", step.name, true));
  if (step.name.empty() || step.name.find_first_of(". {}") != std::string::npos) {
    return invalid_argument(reader.at("name") + " must be a non-empty word");
  }
  if (earlier.count(step.name) > 0) return invalid_argument(reader.at("name") + " repeats '" + step.name + "'");
  RECGPT_RETURN_IF_ERROR(reader.string("prompt", step.prompt, true));
  if (const json* fan_out = reader.find("fan_out")) {
    if (fan_out->is_string()) {
      step.fan_out_step = fan_out->get<std::string>();
      if (earlier.count(step.fan_out_step) == 0) {
        return invalid_argument(reader.at("fan_out") + " names no earlier step: '" + step.fan_out_step + "'");
      }
    } else {
      RECGPT_RETURN_IF_ERROR(reader.strings("fan_out", step.fan_out_list));
    }
  }
  if (const json* constraint = reader.find("constraint")) {
    RECGPT_RETURN_IF_ERROR(parse_constraint(*constraint, reader.at("constraint"), step.constraint));
    if (step.constraint.kind == ConstraintKind::kItemsOf && earlier.count(step.constraint.items_of) == 0) {
      return invalid_argument(reader.at("constraint.items_of") + " names no earlier step: '" +
                              step.constraint.items_of + "'");
    }
  }
  std::string output = "text";
  RECGPT_RETURN_IF_ERROR(reader.string("output", output, false));
  if (output == "text") {
    step.output = OutputKind::kText;
  } else if (output == "lines") {
    step.output = OutputKind::kLines;
  } else if (output == "choice_list") {
    step.output = OutputKind::kChoiceList;
  } else if (output == "json") {
    step.output = OutputKind::kJson;
    if (step.constraint.kind != ConstraintKind::kJson) {
      return invalid_argument(reader.at("output") + " is json, which needs a constraint of kind json");
    }
  } else {
    return invalid_argument(reader.at("output") + " must be text, lines, choice_list or json, not '" + output + "'");
  }
  step.line_prefix = step.constraint.line_prefix;
  RECGPT_RETURN_IF_ERROR(reader.string("line_prefix", step.line_prefix, false));
  RECGPT_RETURN_IF_ERROR(reader.integer("max_tokens", step.max_tokens, 1, 4096));
  if (const json* temperature = reader.find("temperature")) {
    if (!temperature->is_number() || temperature->get<double>() < 0 || temperature->get<double>() > 2) {
      return invalid_argument(reader.at("temperature") + " must be a number from 0 to 2");
    }
    step.temperature = temperature->get<float>();
  }
  int32_t deadline_ms = static_cast<int32_t>(step.deadline.count());
  RECGPT_RETURN_IF_ERROR(reader.integer("deadline_ms", deadline_ms, 1, 3600000));
  step.deadline = std::chrono::milliseconds(deadline_ms);
  RECGPT_RETURN_IF_ERROR(reader.integer("retries", step.retries, 0, 3));
  return check_variables(step, earlier, reader.at("prompt"));
}

}  // namespace

Result<std::vector<std::string>> template_variables(std::string_view text) {
  std::vector<std::string> variables;
  for (size_t at = 0; (at = text.find("{{", at)) != std::string_view::npos;) {
    const size_t end = text.find("}}", at + 2);
    if (end == std::string_view::npos) return invalid_argument("an unclosed '{{' at offset " + std::to_string(at));
    variables.emplace_back(text.substr(at + 2, end - at - 2));
    at = end + 2;
  }
  return variables;
}

std::string render_template(std::string_view text, const std::map<std::string, std::string>& values) {
  std::string out;
  size_t at = 0;
  for (size_t open; (open = text.find("{{", at)) != std::string_view::npos;) {
    const size_t end = text.find("}}", open + 2);
    if (end == std::string_view::npos) break;
    out.append(text.substr(at, open - at));
    auto value = values.find(std::string(text.substr(open + 2, end - open - 2)));
    if (value != values.end()) {
      out += value->second;
    } else {
      out.append(text.substr(open, end + 2 - open));
    }
    at = end + 2;
  }
  out.append(text.substr(at));
  return out;
}

Result<WorkflowDefinition> parse_workflow(std::string_view json_text, const std::string& source) {
  constexpr size_t kMaxNesting = 128;
  if (json_text_depth(json_text, kMaxNesting) > kMaxNesting) {
    return invalid_argument(source + ": nests deeper than " + std::to_string(kMaxNesting) + " levels");
  }
  const json document = json::parse(json_text, nullptr, false);
  auto fail = [&](const Status& status) { return invalid_argument(source + ": " + status.message()); };
  if (document.is_discarded() || !document.is_object()) return fail(invalid_argument("not a JSON object"));
  Reader reader(document, "");
  WorkflowDefinition definition;
  Status status = reader.only({"name", "description", "system", "steps"});
  if (status.is_ok()) status = reader.string("name", definition.name, true);
  if (status.is_ok()) status = reader.string("description", definition.description, false);
  if (status.is_ok()) status = reader.string("system", definition.system, false);
  if (!status.is_ok()) return fail(status);
  if (definition.name.empty() ||
      definition.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos) {
    return fail(invalid_argument("name must be lowercase letters, digits, '_' or '-'"));
  }
  const json* steps = reader.find("steps");
  if (steps == nullptr || !steps->is_array() || steps->empty()) {
    return fail(invalid_argument("steps must be a non-empty array"));
  }
  std::set<std::string> earlier;
  for (size_t i = 0; i < steps->size(); ++i) {
    WorkflowStep step;
    Status parsed = parse_step((*steps)[i], "steps[" + std::to_string(i) + "]", earlier, step);
    if (!parsed.is_ok()) return fail(parsed);
    earlier.insert(step.name);
    definition.steps.push_back(std::move(step));
  }
  return definition;
}

Result<std::map<std::string, WorkflowDefinition>> load_workflows(const std::string& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) return not_found("workflow folder '" + dir + "' does not exist");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  std::map<std::string, WorkflowDefinition> workflows;
  for (const std::filesystem::path& file : files) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) return io_error("cannot read " + file.string());
    RECGPT_ASSIGN_OR_RETURN(WorkflowDefinition definition, parse_workflow(text.str(), file.filename().string()));
    const std::string name = definition.name;
    if (!workflows.emplace(name, std::move(definition)).second) {
      return invalid_argument(file.filename().string() + ": a second workflow named '" + name + "'");
    }
  }
  return workflows;
}

Result<std::map<std::string, WorkflowDefinition>> builtin_workflows() {
  std::map<std::string, WorkflowDefinition> workflows;
  for (const auto& [file, text] :
       {std::pair{"intent.json", builtin_workflow_intent()}, std::pair{"explain.json", builtin_workflow_explain()},
        std::pair{"judge.json", builtin_workflow_judge()}}) {
    RECGPT_ASSIGN_OR_RETURN(WorkflowDefinition definition, parse_workflow(text, file));
    workflows.emplace(definition.name, std::move(definition));
  }
  return workflows;
}

}  // namespace recgpt::router
