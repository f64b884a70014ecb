// What the router tests share: a `recgpt router` child over given nodes, and the text the colocated engine
// generates for a prompt (the reference for greedy outputs through the cluster).
#pragma once

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/tokenizer.h"
#include "tests/integration/nodes/node_fixtures.h"
#include "tests/support/curl.h"

namespace recgpt::testing {

// A `recgpt router` child over the given nodes, ready (/readyz 200) when constructed.
struct RouterProcess {
  Subprocess process;
  uint16_t port = 0;
  RouterProcess(const TinyModel& model, const std::vector<uint16_t>& prefill_ports,
                const std::vector<uint16_t>& decode_ports, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {recgpt_program(), "router", "--model", model.dir.string(), "--port", "0"};
    for (uint16_t p : prefill_ports) argv.insert(argv.end(), {"--prefill", "127.0.0.1:" + std::to_string(p)});
    for (uint16_t p : decode_ports) argv.insert(argv.end(), {"--decode", "127.0.0.1:" + std::to_string(p)});
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::vector<std::string> lines;
    process = start_child(argv, 1, lines);
    port = port_in(lines[0], "port");
    REQUIRE(eventually([&] { return curl(url("/readyz")).status == 200; }));
  }
  ~RouterProcess() {
    process.kill(SIGTERM);
    (void)process.wait(Clock::now() + seconds(10));
  }
  std::string url(const std::string& path) const { return local_url(port, path); }
  double metric(const std::string& sample) const { return metric_at(port, sample); }
  CurlReply post(const std::string& path, const std::string& body, std::vector<std::string> extra = {}) const {
    extra.insert(extra.end(), {"-H", "Content-Type: application/json", "--data-binary", body});
    return curl(url(path), extra);
  }
};

// The repository's sample workflow request (examples/intent_request.json).
inline nlohmann::json sample_request() {
  std::ifstream file(std::string(RECGPT_SOURCE_DIR) + "/examples/intent_request.json");
  std::stringstream text;
  text << file.rdbuf();
  return nlohmann::json::parse(text.str());
}

// A folder for the router's --workflows holding one workflow, `name`, defined by `definition` (JSON).
inline std::filesystem::path workflows_folder(const TinyModel& tiny, const std::string& name,
                                              const std::string& definition) {
  const std::filesystem::path dir = tiny.dir / "workflows";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / (name + ".json")) << definition;
  return dir;
}

// The text the colocated engine generates greedily (repetition penalty 1.8, ChatML stop tokens) for `text`.
inline std::string expected_text(const TinyModel& model, const std::string& text, int max_tokens,
                                 int64_t* prompt_tokens) {
  Tokenizer tokenizer = Tokenizer::load(model.model->tokenizer_path()).value();
  GenerationRequest request;
  request.prompt = tokenizer.encode(text);
  *prompt_tokens = static_cast<int64_t>(request.prompt.size());
  request.max_new_tokens = max_tokens;
  request.sampling.repetition_penalty = 1.8f;
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"}) request.stop_tokens.push_back(*tokenizer.token_to_id(stop));
  StreamingDetokenizer detokenizer(tokenizer, true);
  std::string out;
  for (int32_t token : colocated_tokens(*model.model, request)) out += detokenizer.push(token);
  return out + detokenizer.finish();
}

inline std::string chatml_user(const std::string& content) {
  return "<|im_start|>user\n" + content + "<|im_end|>\n<|im_start|>assistant\n";
}

}  // namespace recgpt::testing
