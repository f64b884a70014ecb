// The OpenAI-compatible surface of the router: request bodies of /v1/completions and /v1/chat/completions parsed
// and validated into one CompletionRequest (or an ApiError naming the field), and the JSON of responses, stream
// chunks and errors in OpenAI's shapes. Pure functions over text: unit-tested and fuzzed (fuzz_openai_request).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace recgpt::router {

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}; clients pick their exception from
// `status`.
struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the offending field ("messages[1].content"); empty: null
  std::string code;   // machine-readable ("model_not_found"); empty: null
};
std::string error_json(const ApiError& error);
ApiError invalid_request(std::string message, std::string param = {}, std::string code = {});

// One entity token's input, in prompt order: an id from the entity store, or the adaptor's input vector.
struct EntityInput {
  std::string id;
  std::vector<float> vector;
};

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

enum class Endpoint { kCompletions, kChatCompletions };

// OpenAI's response_format: free text, any JSON object, or JSON under a schema (engine/json_schema.h says which
// schemas).
enum class ResponseFormat { kText, kJsonObject, kJsonSchema };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  std::string prompt;                     // completions: the text (empty when given as token ids)
  std::vector<int32_t> prompt_token_ids;  // completions: a prompt given as token ids
  std::vector<ChatMessage> messages;      // chat
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;  // extension (vLLM's): no end token, stop token or stop string before this many tokens
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;                // extension: 0 = off
  float repetition_penalty = 1.0f;  // extension
  float frequency_penalty = 0.0f;   // [-2, 2]
  float presence_penalty = 0.0f;    // [-2, 2]
  // Each generated token's log-probability and the top_logprobs most likely tokens'. Completions: `logprobs`
  // as an integer (the top count); chat: `logprobs: true` and `top_logprobs`.
  bool logprobs = false;
  int32_t top_logprobs = 0;
  int32_t n = 1;               // choices, each its own call (seed + i when a seed is given)
  bool tokens_as_ids = false;  // extension (vLLM's return_tokens_as_token_ids): logprobs name tokens "token_id:N"
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token, bias in [-100, 100])
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;        // up to 4 strings
  std::vector<int32_t> stop_token_ids;  // extension (vLLM's): generation ends after emitting one of these
  bool stream = false;
  bool include_usage = false;             // stream_options.include_usage
  std::vector<EntityInput> entities;      // extension
  std::optional<double> timeout_seconds;  // extension: the client's own deadline for the whole request
  bool ignore_eos = false;                // extension (vLLM's): generate max_tokens, past end-of-text tokens
  // Extension: constrained output. The completion is up to `max_items` distinct strings of `allowed`, one per
  // line, as the tokenizer writes them (docs/api.md).
  std::vector<std::string> allowed;
  int32_t max_items = 1;
  ResponseFormat response_format = ResponseFormat::kText;
  std::string json_schema;  // kJsonSchema: the schema as compact JSON text, its keys in the request's order
};

struct ApiLimits {
  int32_t max_tokens_limit = 32768;       // max_tokens above it is refused
  int32_t default_chat_max_tokens = 512;  // chat requests without max_tokens
  size_t max_stop_strings = 4;
  size_t max_stop_token_ids = 64;
  size_t max_entities = 4096;
  size_t entity_dim = 0;      // the model's adaptor input size (vectors must have it); 0: no adaptor
  size_t max_allowed = 4096;  // strings in `allowed`
  size_t max_allowed_bytes = 256;
  int32_t max_top_logprobs = 20;
  int32_t max_choices = 16;  // `n`
  size_t max_logit_bias_tokens = 1024;
  size_t max_body_nesting = 128;     // arrays and objects in the body (a response_format's schema: 64)
  size_t max_object_members = 4096;  // members of one object of the body (logit_bias takes 1024)
};

// A body nested deeper than max_body_nesting, or with an object of more than max_object_members members, is refused
// before it is parsed (common/json_depth.h says why); nullopt when it may be parsed.
std::optional<ApiError> check_body_shape(std::string_view body, const ApiLimits& limits);

// Parses a request body for `endpoint`. Unknown fields are ignored (as OpenAI's SDKs send extras); known fields
// with wrong types or values are refused naming the field, and so are OpenAI fields this server does not
// implement when they ask for something (`echo`, `suffix`, `best_of` above 1, tools): an answer that silently
// ignored them would be wrong.
std::variant<CompletionRequest, ApiError> parse_completion_request(std::string_view body, Endpoint endpoint,
                                                                   const ApiLimits& limits);

// Qwen's ChatML: each message as "<|im_start|>{role}\n{content}<|im_end|>\n", then "<|im_start|>assistant\n".
std::string format_chatml(const std::vector<ChatMessage>& messages);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose KV was reused
};

// A token in a logprobs answer: its bytes (maybe part of a UTF-8 character; shown as text with U+FFFD for what is
// not valid) and log-probability.
struct TokenChoice {
  std::string bytes;
  float logprob = 0;
  int32_t id = 0;
};

// One generated token's logprobs: itself, the most likely tokens at its position, and where its text starts in
// the completion's text (in characters; completions' `text_offset`).
struct LogprobEntry {
  TokenChoice token;
  std::vector<TokenChoice> top;
  int64_t text_offset = 0;
};

// One of a response's `n` choices.
struct CompletionChoice {
  std::string text;
  std::string finish_reason;                          // "stop" or "length"
  std::optional<std::vector<LogprobEntry>> logprobs;  // when the request asked for them: one per generated token
};

struct CompletionResult {
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  std::string model;
  std::vector<CompletionChoice> choices;  // `index` is the position
  bool tokens_as_ids = false;             // logprobs name tokens "token_id:N" (the request's choice)
  Usage usage;
  // Extension `timings` of a whole response and of a stream's usage chunk (absent when total_ms is 0): where and
  // how fast the call ran.
  double ttft_ms = 0;
  double total_ms = 0;
  std::string prefill_node = {};
  std::string decode_node = {};
};

// The whole (non-streaming) response body.
std::string completion_json(Endpoint endpoint, const CompletionResult& result);
// One stream chunk of choice `index`: text (chat: a delta; `first` adds role "assistant") and, on the choice's
// last, its finish reason; with `logprobs`, those of the chunk's tokens. `head.choices` is not read.
std::string chunk_json(Endpoint endpoint, const CompletionResult& head, int index, std::string_view text, bool first,
                       std::string_view finish_reason, const std::vector<LogprobEntry>* logprobs = nullptr);
// The usage chunk of stream_options.include_usage: no choices; the `timings` extension when the result has them.
std::string usage_chunk_json(Endpoint endpoint, const CompletionResult& head);

}  // namespace recgpt::router
