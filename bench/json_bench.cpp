// What structured output costs a decoding step, on a real vocabulary: building the token byte trie and a string
// state's split, one mask computed uncached in typical states, and the per-token cost of JsonProcessor::process (cache
// included) over whole generated documents, each against the time to read the logit row once at the bandwidth measured
// in the same run (the sampler's own unit, docs/benchmarks.md). Not run by CI.
//
// No tokenizer of Qwen3's size can be downloaded here, so the tokenizer's vocabulary is grown to `vocab` tokens
// as BPE grows one: each new token joins two existing ones (up to 16 bytes), drawn at random.
// Usage: recgpt_json_bench TOKENIZER_JSON [vocab (151643)] [threads]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>

#include "bench/machine_limits.h"
#include "engine/cpu/thread_pool.h"
#include "engine/json_processor.h"
#include "engine/tokenizer.h"

namespace recgpt {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The matcher after `text` under `schema`.
JsonMatcher after(const std::shared_ptr<const JsonSchema>& schema, std::string_view text) {
  JsonMatcher matcher(schema);
  if (!matcher.feed(text)) {
    std::fprintf(stderr, "json_bench: '%.*s' is refused\n", static_cast<int>(text.size()), text.data());
    std::exit(1);
  }
  return matcher;
}

int run(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: recgpt_json_bench TOKENIZER_JSON [threads]\n");
    return 2;
  }
  auto tokenizer = Tokenizer::load(argv[1]);
  if (!tokenizer.is_ok()) {
    std::fprintf(stderr, "json_bench: %s\n", tokenizer.status().to_string().c_str());
    return 1;
  }
  const size_t wanted_vocab = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 151643;
  const int threads = argc > 3 ? std::atoi(argv[3]) : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(threads);
  const double bandwidth = measure_read_bandwidth_bytes_per_second(pool);
  std::vector<std::string> tokens;
  for (int32_t id = 0; id < tokenizer.value().vocab_size(); ++id) {
    tokens.emplace_back(tokenizer.value().is_special(id) ? "" : tokenizer.value().token_bytes(id));
  }
  const size_t own = tokens.size();
  std::set<std::string> known(tokens.begin(), tokens.end());
  std::mt19937 grow(1);
  while (tokens.size() < wanted_vocab) {
    std::string joined = tokens[grow() % tokens.size()] + tokens[grow() % tokens.size()];
    if (joined.size() <= 16 && known.insert(joined).second) tokens.push_back(std::move(joined));
  }
  size_t bytes = 0;
  for (const std::string& token : tokens) bytes += token.size();
  const auto vocab = static_cast<int32_t>(tokens.size());
  const double row_read = static_cast<double>(vocab) * sizeof(float) / bandwidth;
  std::printf(
      "vocabulary %d tokens (%zu of the tokenizer's), %.1f bytes a token; read bandwidth %.1f GB/s; a logit "
      "row reads in %.1f us\n",
      vocab, own, static_cast<double>(bytes) / static_cast<double>(vocab), bandwidth / 1e9, row_read * 1e6);

  auto start = Clock::now();
  const auto vocabulary = std::make_shared<const JsonVocabulary>(tokens);
  std::printf("byte trie: %zu nodes, built in %.1f ms\n", vocabulary->trie().num_nodes(), seconds_since(start) * 1e3);
  start = Clock::now();
  (void)vocabulary->string_split(JsonMatcher::string_start());
  std::printf("string split (once per string state, per vocabulary): %.1f ms\n", seconds_since(start) * 1e3);

  const auto any = JsonSchema::any_object();
  auto schema = JsonSchema::compile(R"({"type": "object", "properties": {"intent": {"enum": ["buy", "browse",
      "compare"]}, "reason": {"type": "string"}, "score": {"type": "number"}, "items": {"type": "array",
      "items": {"type": "string"}, "maxItems": 8}}, "required": ["intent", "reason", "score", "items"]})");
  if (!schema.is_ok()) return 1;
  const JsonGrammar grammar(any, vocabulary);
  const struct {
    const char* name;
    const char* text;
  } states[] = {{"before the object", ""},
                {"after '{'", "{"},
                {"inside a string", R"({"reason": "the user comp)"},
                {"after a key's colon", R"({"a":)"},
                {"inside a number", R"({"a": 12.5)"},
                {"after a value", R"({"a": true)"}};
  for (const auto& state : states) {
    const JsonMatcher matcher = after(any, state.text);
    size_t allowed = 0;
    std::vector<double> times;
    for (int i = 0; i < 7; ++i) {
      start = Clock::now();
      const TokenMask mask = grammar.compute_next_tokens(matcher);
      times.push_back(seconds_since(start));
      allowed = 0;
      for (uint64_t word : mask.words) allowed += static_cast<size_t>(__builtin_popcountll(word));
    }
    std::sort(times.begin(), times.end());
    std::printf("mask %-22s %7zu tokens allowed, %8.1f us (%5.1f x the row's read time)\n", state.name, allowed,
                times[3] * 1e6, times[3] / row_read);
  }

  // Whole documents drawn from random logits: the processor's cost per token, cache included.
  const int32_t end = tokenizer.value().token_to_id("<|im_end|>").value_or(0);
  for (const auto& [name, compiled] : {std::pair{"json_object", any}, std::pair{"json_schema", schema.value()}}) {
    const auto shared = std::make_shared<const JsonGrammar>(compiled, vocabulary);
    std::mt19937 random(3);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(static_cast<size_t>(vocab)), noise(static_cast<size_t>(vocab));
    for (float& value : noise) value = normal(random);
    double process_seconds = 0;
    int64_t steps = 0, documents = 0;
    while (steps < 4000) {
      std::vector<int32_t> tokens = {0};
      JsonProcessor processor(shared, end, tokens.size());
      for (int step = 0; step < 400 && tokens.back() != end; ++step) {
        const size_t shift = random() % logits.size();
        std::rotate_copy(noise.begin(), noise.begin() + static_cast<long>(shift), noise.end(), logits.begin());
        start = Clock::now();
        processor.process(logits, tokens);
        process_seconds += seconds_since(start);
        ++steps;
        tokens.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
      }
      ++documents;
    }
    const auto stats = shared->cache().stats();
    std::printf(
        "%-12s %ld documents, %ld tokens: %.1f us a token (%.1f x the row's read time), mask cache hits %.0f%%\n", name,
        static_cast<long>(documents), static_cast<long>(steps), process_seconds / steps * 1e6,
        process_seconds / steps / row_read,
        100.0 * static_cast<double>(stats.hits) / static_cast<double>(stats.hits + stats.misses));
  }
  return 0;
}

}  // namespace
}  // namespace recgpt

int main(int argc, char** argv) { return recgpt::run(argc, argv); }
