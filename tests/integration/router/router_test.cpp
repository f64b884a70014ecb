// `recgpt router` in front of a real prefill and decode process, driven by real clients: the official `openai`
// npm package (completions and chat, streaming and not) and curl. Greedy output must equal the colocated engine
// on the same prompt, usage must count the tokens, bad input must be a 4xx in OpenAI's shape naming the field,
// and a client that hangs up must get its blocks freed on the decode node.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tests/integration/router/router_fixtures.h"

namespace recgpt::testing {
namespace {

using nlohmann::json;

TEST_CASE("the openai client gets the colocated greedy output through the router, with right usage",
          "[router][openai_client]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  RouterProcess router(tiny, {prefill_node.port}, {decode_node.port});
  const std::string prompt = "The quick brown fox jumps over the lazy dog near the river bank";
  constexpr int kMaxTokens = 12;
  int64_t completion_prompt_tokens = 0;
  int64_t chat_prompt_tokens = 0;
  const std::string completion_expected = expected_text(tiny, prompt, kMaxTokens, &completion_prompt_tokens);
  const std::string chat_expected = expected_text(tiny, chatml_user(prompt), kMaxTokens, &chat_prompt_tokens);

  auto node_process = Subprocess::spawn({"/usr/bin/env", "node", std::string(JS_TESTS_DIR) + "/openai_client.mjs",
                                         router.url("/v1"), "recgpt", prompt, std::to_string(kMaxTokens)});
  REQUIRE(node_process.is_ok());
  auto line = node_process->read_line(Clock::now() + seconds(120));
  auto exit_code = node_process->wait(Clock::now() + seconds(30));
  REQUIRE(exit_code.is_ok());
  if (*exit_code == 77) {
    WARN("SKIPPED: the openai npm package is not installed (npm ci in tests/js)");
    return;
  }
  REQUIRE(*exit_code == 0);
  REQUIRE(line.is_ok());
  const json results = json::parse(*line);
  INFO(results.dump(2));
  for (const char* call : {"completion", "completion_stream"}) {
    CHECK(results[call]["text"] == completion_expected);
    CHECK(results[call]["finish"] == "length");
    CHECK(results[call]["usage"]["prompt_tokens"] == completion_prompt_tokens);
    CHECK(results[call]["usage"]["completion_tokens"] == kMaxTokens);
    CHECK(results[call]["usage"]["total_tokens"] == completion_prompt_tokens + kMaxTokens);
  }
  for (const char* call : {"chat", "chat_stream"}) {
    CHECK(results[call]["text"] == chat_expected);
    CHECK(results[call]["usage"]["prompt_tokens"] == chat_prompt_tokens);
  }
  CHECK(results["completion_stream"]["chunks"].get<int>() >= 2);
  // Logprobs, through the client's own types: one entry per generated token, greedy (no penalty) takes the most
  // likely, the alternatives are sorted, and the tokens' bytes spell the text (then an end token, if any).
  const json& logprobs = results["chat_logprobs"]["logprobs"];
  REQUIRE(logprobs.is_array());
  CHECK(logprobs.size() == results["chat_logprobs"]["usage"]["completion_tokens"].get<size_t>());
  std::string spelled;
  for (const json& entry : logprobs) {
    REQUIRE(entry["top_logprobs"].size() == 2);
    CHECK(entry["logprob"].get<double>() <= 0);
    CHECK(entry["token"] == entry["top_logprobs"][0]["token"]);
    CHECK(entry["logprob"] == entry["top_logprobs"][0]["logprob"]);
    CHECK(entry["top_logprobs"][0]["logprob"].get<double>() >= entry["top_logprobs"][1]["logprob"].get<double>());
    for (const json& byte : entry["bytes"]) spelled += static_cast<char>(byte.get<int>());
  }
  CHECK(spelled.rfind(results["chat_logprobs"]["text"].get<std::string>(), 0) == 0);
  CHECK(results["chat_logprobs_stream"]["logprobs"] == logprobs);
  CHECK(results["chat_logprobs_stream"]["text"] == results["chat_logprobs"]["text"]);
  // Structured output: the content parses in JavaScript and has the schema's shape, keys in its order.
  const json& structured = results["json_schema"]["value"];
  CHECK(results["json_schema"]["finish"] == "stop");
  REQUIRE(structured.is_object());
  CHECK((structured["intent"] == "buy" || structured["intent"] == "browse"));
  CHECK(structured["urgent"].is_boolean());
  CHECK(structured["count"].is_number_integer());
  CHECK(structured.size() == 3);
  CHECK(results["not_found"]["status"] == 404);
  CHECK(results["not_found"]["code"] == "model_not_found");
  // The same prompt again: its whole blocks are cached now (on this prefill node's prefix cache).
  const CurlReply again =
      router.post("/v1/completions", json{{"model", "recgpt"}, {"prompt", prompt}, {"max_tokens", 2}}.dump());
  REQUIRE(again.status == 200);
  CHECK(json::parse(again.body)["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>() ==
        (completion_prompt_tokens - 1) / 16 * 16);
}

TEST_CASE("n choices each answer as the one call with seed + i would, streamed or not", "[router][choices]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  RouterProcess router(tiny, {prefill_node.port}, {decode_node.port});
  constexpr int kChoices = 8;
  // A choice among a few strings at temperature 2: random models are too sure of their free text for seeds to
  // show, but not of these.
  json body = {{"model", "recgpt"},
               {"prompt", "A shopper who likes hiking and camping in the mountains wants"},
               {"max_tokens", 12},
               {"temperature", 2},
               {"seed", 7},
               {"allowed", {"red dress", "tent", "summer sale", "running shoes", "hat", "boots", "sleeping bag"}},
               {"max_items", 2}};
  std::vector<std::string> single_texts;
  int64_t single_tokens = 0;
  for (int i = 0; i < kChoices; ++i) {
    json one = body;
    one["seed"] = 7 + i;
    const CurlReply reply = router.post("/v1/completions", one.dump());
    REQUIRE(reply.status == 200);
    const json answer = json::parse(reply.body);
    single_texts.push_back(answer["choices"][0]["text"]);
    single_tokens += answer["usage"]["completion_tokens"].get<int64_t>();
  }
  // The seeds matter, or this test would pass with every choice drawn the same.
  CHECK(std::set<std::string>(single_texts.begin(), single_texts.end()).size() > 1);
  body["n"] = kChoices;
  const CurlReply whole = router.post("/v1/completions", body.dump());
  REQUIRE(whole.status == 200);
  const json answer = json::parse(whole.body);
  INFO(answer.dump(2));
  REQUIRE(answer["choices"].size() == kChoices);
  for (int i = 0; i < kChoices; ++i) {
    CHECK(answer["choices"][i]["index"] == i);
    CHECK(answer["choices"][i]["text"] == single_texts[i]);
  }
  CHECK(answer["usage"]["completion_tokens"] == single_tokens);
  // Streamed: each choice's chunks carry its index, and its last one its finish reason; then usage, then [DONE].
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const CurlReply streamed = router.post("/v1/completions", body.dump());
  REQUIRE(streamed.status == 200);
  std::vector<std::string> texts(kChoices);
  std::vector<int> finishes(kChoices, 0);
  std::vector<std::string> data;
  std::istringstream lines(streamed.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) == 0) data.push_back(line.substr(6));
  }
  REQUIRE(data.size() >= 3);
  CHECK(data.back() == "[DONE]");
  const json usage = json::parse(data[data.size() - 2]);
  CHECK(usage["usage"]["completion_tokens"] == single_tokens);
  for (size_t e = 0; e + 2 < data.size(); ++e) {
    const json event = json::parse(data[e]);
    REQUIRE(event["choices"].size() == 1);
    const int index = event["choices"][0]["index"];
    REQUIRE(index >= 0);
    REQUIRE(index < kChoices);
    CHECK(finishes[index] == 0);  // nothing of a choice after its last chunk
    texts[index] += event["choices"][0]["text"].get<std::string>();
    if (!event["choices"][0]["finish_reason"].is_null()) ++finishes[index];
  }
  CHECK(texts == single_texts);
  CHECK(finishes == std::vector<int>(kChoices, 1));
}

TEST_CASE("bad requests get a 4xx in OpenAI's shape naming the field, and the router keeps serving",
          "[router][bad_input]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  RouterProcess router(tiny, {prefill_node.port}, {decode_node.port}, {"--api-key", "sesame"});
  const std::vector<std::string> auth = {"-H", "Authorization: Bearer sesame"};
  struct Case {
    std::string path;
    std::string body;
    int status;
    std::string param;  // "" : none expected
  };
  std::string long_prompt;
  for (int i = 0; i < 4000; ++i) long_prompt += "hello world ";
  const std::vector<Case> cases = {
      {"/v1/completions", "{\"model\": \"recgpt\", ", 400, ""},
      {"/v1/completions", R"({"model": "recgpt"})", 400, "prompt"},
      {"/v1/completions", R"({"model": "recgpt", "prompt": "x", "max_tokens": "many"})", 400, "max_tokens"},
      {"/v1/completions", R"({"model": "gpt-9", "prompt": "x"})", 404, "model"},
      {"/v1/chat/completions", R"({"model": "recgpt", "messages": [{"role": "user"}]})", 400, "messages[0].content"},
      {"/v1/completions", json{{"model", "recgpt"}, {"prompt", long_prompt}, {"max_tokens", 10}}.dump(), 400, "prompt"},
      {"/v1/completions", R"({"model": "recgpt", "prompt": "x <|entity|>", "entities": ["no-such-item"]})", 400,
       "entities"},
      {"/v1/completions", R"({"model": "recgpt", "prompt": "x <|entity|>"})", 400, "entities"},
      {"/v1/completions", R"({"model": "recgpt", "prompt": "x", "logit_bias": {"99999999": 5}})", 400, "logit_bias"},
      {"/v1/chat/completions",
       R"({"model": "recgpt", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema",
           "json_schema": {"name": "a", "schema": {"type": "object", "properties": {"a": {"minLength": 2}}}}}})",
       400, "response_format.json_schema.schema"},
      {"/v1/nothing", "{}", 404, ""},
  };
  for (const Case& c : cases) {
    INFO(c.path << " " << c.body.substr(0, 120));
    const CurlReply reply = router.post(c.path, c.body, auth);
    CHECK(reply.status == c.status);
    const json body = json::parse(reply.body, nullptr, false);
    REQUIRE(body.is_object());
    CHECK(body["error"]["message"].is_string());
    CHECK(body["error"]["type"].is_string());
    CHECK(body["error"]["param"] == (c.param.empty() ? json(nullptr) : json(c.param)));
  }
  const CurlReply unauthenticated = router.post("/v1/completions", R"({"model": "recgpt", "prompt": "x"})");
  CHECK(unauthenticated.status == 401);
  CHECK(json::parse(unauthenticated.body)["error"]["type"] == "authentication_error");
  const std::string big_body = (tiny.dir / "big_body.json").string();
  std::ofstream(big_body) << std::string(9 << 20, ' ');
  std::vector<std::string> big = auth;
  big.insert(big.end(), {"-H", "Content-Type: application/json", "--data-binary", "@" + big_body});
  CHECK(curl(router.url("/v1/completions"), big).status == 413);
  // Nested 200K deep in two fields (a parser keeping keys in order copied the first whole, recursively, when the
  // second came: the router crashed).
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  const std::string deep_body = (tiny.dir / "deep_body.json").string();
  std::ofstream(deep_body) << R"({"model": "recgpt", "messages": [{"role": "user", "content": )" << deep
                           << R"(}], "stop": )" << deep << "}";
  for (const char* path : {"/v1/chat/completions", "/v1/workflows/intent"}) {
    std::vector<std::string> nested = auth;
    nested.insert(nested.end(), {"-H", "Content-Type: application/json", "--data-binary", "@" + deep_body});
    const CurlReply refused = curl(router.url(path), nested);
    CHECK(refused.status == 400);
    CHECK_THAT(refused.body, Catch::Contains("nests deeper than 128 levels"));
  }
  // An object of 200K keys, in a field the router ignores (its parser keeping keys in order took 24 s on it).
  std::ofstream wide(deep_body);
  wide << R"({"model": "recgpt", "prompt": "x", "junk": {)";
  for (int i = 0; i < 200000; ++i) wide << (i == 0 ? "" : ",") << "\"k" << i << "\": 0";
  wide << "}}";
  wide.close();
  std::vector<std::string> wide_request = auth;
  wide_request.insert(wide_request.end(), {"-H", "Content-Type: application/json", "--data-binary", "@" + deep_body});
  const CurlReply wide_refused = curl(router.url("/v1/completions"), wide_request);
  CHECK(wide_refused.status == 400);
  CHECK_THAT(wide_refused.body, Catch::Contains("more than 4096 members"));
  CHECK(curl(router.url("/healthz")).status == 200);  // no auth outside /v1
  // The tokenizer's endpoints, behind the key; what they answer is the model's tokenizer's.
  CHECK(router.post("/tokenize", R"({"model": "recgpt", "prompt": "x"})").status == 401);
  const CurlReply tokenized = router.post("/tokenize", R"({"model": "recgpt", "prompt": "héllo wörld"})", auth);
  REQUIRE(tokenized.status == 200);
  const Tokenizer tokenizer = Tokenizer::load(tiny.model->tokenizer_path()).value();
  const json tokens = json::parse(tokenized.body)["tokens"];
  CHECK(tokens == tokenizer.encode("héllo wörld"));
  const CurlReply detokenized = router.post("/detokenize", json{{"model", "recgpt"}, {"tokens", tokens}}.dump(), auth);
  REQUIRE(detokenized.status == 200);
  CHECK(json::parse(detokenized.body)["prompt"] == "héllo wörld");
  CHECK(curl(router.url("/tokenize"), auth).status == 405);
  const CurlReply fine =
      router.post("/v1/completions", R"({"model": "recgpt", "prompt": "still here", "max_tokens": 3})", auth);
  CHECK(fine.status == 200);
}

TEST_CASE("a stop string ends the completion before it, a client that hangs up frees its blocks",
          "[router][stop][disconnect]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  Node prefill_node("prefill", tiny, "tcp");
  RouterProcess router(tiny, {prefill_node.port}, {decode_node.port});
  const std::string prompt = "Once upon a time in a land far away there lived";
  int64_t prompt_tokens = 0;
  const std::string full = expected_text(tiny, prompt, 24, &prompt_tokens);
  REQUIRE(full.size() >= 8);
  const std::string stop = full.substr(full.size() / 2, 3);
  const size_t cut = full.find(stop);
  const CurlReply stopped = router.post("/v1/completions", json{{"model", "recgpt"},
                                                                {"prompt", prompt},
                                                                {"max_tokens", 24},
                                                                {"temperature", 0},
                                                                {"repetition_penalty", 1.8},
                                                                {"stop", {stop}}}
                                                               .dump());
  REQUIRE(stopped.status == 200);
  const json body = json::parse(stopped.body);
  CHECK(body["choices"][0]["text"] == full.substr(0, cut));
  CHECK(body["choices"][0]["finish_reason"] == "stop");

  // Sequences the decode node ended, by reason (the stopped one may have ended either way: the router cancels it
  // once it saw the stop string, unless it reached its length first).
  auto finished = [&decode_node](const std::string& reason) {
    return std::max(0.0, decode_node.metric("recgpt_decode_sequences_total\\{.*reason=\"" + reason + "\".*\\}"));
  };
  REQUIRE(decode_node.shows_used(0));  // the stopped sequence is over
  const double cancelled_before = finished("cancelled"), length_before = finished("length");

  // A long generation the client abandons as soon as its stream starts: `head` takes the first bytes and exits,
  // and curl, writing the next event into the closed pipe, dies and drops the connection. (A fixed client timeout
  // raced the tiny model, which can decode all 3000 tokens in a fraction of a second.)
  const std::filesystem::path body_file = tiny.dir / "abandoned.json";
  std::ofstream(body_file) << json{{"model", "recgpt"}, {"prompt", prompt}, {"max_tokens", 3000}, {"stream", true}};
  auto hangs_up =
      Subprocess::spawn({"/bin/sh", "-c",
                         "/usr/bin/curl -sN --max-time 30 -H 'Content-Type: application/json' --data-binary @" +
                             body_file.string() + " " + router.url("/v1/completions") + " | head -c 16; echo"});
  REQUIRE(hangs_up.is_ok());
  std::string first_bytes;
  for (auto line = hangs_up->read_line(Clock::now() + seconds(30)); line.is_ok();
       line = hangs_up->read_line(Clock::now() + seconds(30))) {
    first_bytes += *line;
  }
  (void)hangs_up->wait(Clock::now() + seconds(30));
  CHECK(first_bytes.rfind("data: ", 0) == 0);  // the stream had started
  // The decode node ends the sequence as cancelled (not by length) and its blocks come back.
  double cancelled = cancelled_before;
  for (int i = 0; i < 200 && cancelled < cancelled_before + 1; ++i) {
    cancelled = finished("cancelled");
    if (cancelled < cancelled_before + 1) std::this_thread::sleep_for(milliseconds(50));
  }
  CHECK(cancelled == cancelled_before + 1);
  CHECK(finished("length") == length_before);
  CHECK(decode_node.shows_used(0));
  CHECK(prefill_node.shows_used(0));
}

TEST_CASE("a client that hangs up while its prompt waits on the prefill node: the prompt is dropped, blocks freed",
          "[router][disconnect][cancel]") {
  TinyModel tiny;
  Node decode_node("decode", tiny, "tcp");
  // One request at a time, 2 prompt tokens a step: a long prompt keeps the node busy while the next one waits.
  Node prefill_node("prefill", tiny, "tcp", 8, {"--max-batch-requests", "1", "--max-batch-tokens", "2"});
  RouterProcess router(tiny, {prefill_node.port}, {decode_node.port}, {"--request-timeout-seconds", "120"});
  // Stopped, the prefill node takes frames into its socket and computes nothing until it resumes.
  Paused paused(prefill_node);
  std::vector<int> long_prompt;
  for (int i = 0; i < 4000; ++i) long_prompt.push_back(4 + (i * 31) % 170);
  Subprocess ahead = start_curl(router.url("/v1/completions"),
                                {"--max-time", "60", "-H", "Content-Type: application/json", "--data-binary",
                                 json{{"model", "recgpt"}, {"prompt", long_prompt}, {"max_tokens", 1}}.dump()});
  int used_ahead = 0;
  const bool reserved_ahead = eventually([&] { return (used_ahead = decode_node.used_blocks()) > 0; });
  const std::string body = json{
      {"model", "recgpt"},
      {"prompt", "Once upon a time in a land far away there lived a king who"},
      {"max_tokens", 16},
      {"stream", true}}.dump();
  Subprocess client =
      start_curl(router.url("/v1/completions"),
                 {"-N", "--max-time", "60", "-H", "Content-Type: application/json", "--data-binary", body});
  // Its reservation is made, so the router has sent its prompt to the prefill node; then the client goes.
  const bool reserved = eventually([&] { return decode_node.used_blocks() > used_ahead; });
  client.kill(SIGKILL);
  (void)client.wait(Clock::now() + seconds(10));
  // The router cancelled the reservation: the decode node keeps its prompt blocks fenced while the prefill
  // attempt may still write them.
  const bool fenced = eventually([&] { return decode_node.metric("recgpt_decode_kv_blocks_fenced\\{.*\\}") > 0; });
  paused.resume();
  REQUIRE(reserved_ahead);
  REQUIRE(reserved);
  REQUIRE(fenced);
  // The router's Cancel reached the prefill node while the prompt waited behind the long one: the prompt is
  // dropped, never computed, and its KV stream ends on the decode node, which frees its blocks now rather than
  // at the call's deadline.
  CHECK(finish_curl(ahead).status == 200);
  CHECK(prefill_node.shows("recgpt_prefill_requests_dropped_total\\{.*\\}", 1));
  CHECK(prefill_node.metric("recgpt_prefill_tokens_total\\{.*kind=\"computed\".*\\}") == 4000);
  CHECK(decode_node.shows_used(0));
  CHECK(decode_node.metric("recgpt_decode_kv_blocks_fenced\\{.*\\}") == 0);
  CHECK(decode_node.metric("recgpt_decode_kv_fences_lapsed_total\\{.*\\}") == 0);
  CHECK(prefill_node.shows_used(0));
  CHECK(eventually([&] {
    return router.metric("recgpt_router_requests_total\\{.*code=\"499\".*path=\"/v1/completions\".*\\}") == 1;
  }));
}

TEST_CASE("recgpt up starts a local cluster that answers, and Ctrl-C stops all of it", "[router][up]") {
  const bool colocated = GENERATE(false, true);
  INFO("colocated=" << colocated);
  TinyModel tiny;
  std::vector<std::string> argv = {
      recgpt_program(), "up", "--model", tiny.dir.string(), "--port", "0", "--kv-cache-mib", "8", "--threads", "1"};
  if (colocated) argv.push_back("--colocated");
  auto up = Subprocess::spawn(argv);
  REQUIRE(up.is_ok());
  auto line = up->read_line(Clock::now() + seconds(60));
  REQUIRE(line.is_ok());
  std::smatch match;
  REQUIRE(std::regex_search(*line, match, std::regex("serving (http://127.0.0.1:\\d+)/v1")));
  const std::string base = match[1];
  // Next, every node's metrics address: each answers with its KV pool.
  auto metrics_line = up->read_line(Clock::now() + seconds(10));
  REQUIRE(metrics_line.is_ok());
  INFO(*metrics_line);
  int nodes_with_metrics = 0;
  const std::regex metrics_url("http://127.0.0.1:\\d+/metrics");
  for (auto it = std::sregex_iterator(metrics_line->begin(), metrics_line->end(), metrics_url);
       it != std::sregex_iterator(); ++it) {
    const CurlReply metrics = curl(it->str());
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find("recgpt_kv_blocks{") != std::string::npos);
    ++nodes_with_metrics;
  }
  CHECK(nodes_with_metrics == 2);
  bool ready = false;
  for (int i = 0; i < 100 && !ready; ++i) {
    ready = curl(base + "/readyz").status == 200;
    if (!ready) std::this_thread::sleep_for(milliseconds(100));
  }
  REQUIRE(ready);
  const CurlReply answer = curl(base + "/v1/completions", {"-H", "Content-Type: application/json", "--data-binary",
                                                           R"({"model": "recgpt", "prompt": "hi", "max_tokens": 4})"});
  REQUIRE(answer.status == 200);
  CHECK(json::parse(answer.body)["usage"]["completion_tokens"] == 4);
  const json cluster = json::parse(curl(base + "/v1/cluster").body);
  CHECK(cluster["nodes"].size() == 2);
  up->kill(SIGINT);
  auto exit_code = up->wait(Clock::now() + seconds(60));
  REQUIRE(exit_code.is_ok());
  CHECK(*exit_code == 0);
  CHECK(curl(base + "/healthz").status == 0);  // the router is gone
}

}  // namespace
}  // namespace recgpt::testing
