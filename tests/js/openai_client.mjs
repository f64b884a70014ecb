// The official `openai` npm client against the router: completions and chat completions, streaming and not.
// Usage: node openai_client.mjs BASE_URL MODEL PROMPT MAX_TOKENS [API_KEY]
// Prints one JSON object: each call's text, finish reason and usage (the last stream chunk's usage).
// Exit code 77: the openai package is not installed (npm ci in tests/js).
let OpenAI;
try {
  ({ default: OpenAI } = await import("openai"));
} catch {
  console.error("the openai package is not installed (npm ci in tests/js)");
  process.exit(77);
}

const [baseURL, model, prompt, maxTokensText, apiKey] = process.argv.slice(2);
const max_tokens = Number(maxTokensText);
const client = new OpenAI({ baseURL, apiKey: apiKey ?? "none", maxRetries: 0, timeout: 60000 });
// Greedy with the router's repetition_penalty extension, so outputs depend on the whole context.
const sampling = { model, max_tokens, temperature: 0, repetition_penalty: 1.8 };
const messages = [{ role: "user", content: prompt }];

const completion = await client.completions.create({ ...sampling, prompt });
const chat = await client.chat.completions.create({ ...sampling, messages });

async function collect(stream, piece) {
  let text = "";
  let finish = null;
  let usage = null;
  let chunks = 0;
  const logprobs = [];
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += piece(choice) ?? "";
      if (choice.finish_reason) finish = choice.finish_reason;
      logprobs.push(...(choice.logprobs?.content ?? []));
    }
  }
  return { text, finish, usage, chunks, logprobs };
}

const completionStream = await collect(
  await client.completions.create({ ...sampling, prompt, stream: true, stream_options: { include_usage: true } }),
  (choice) => choice.text,
);
const chatStream = await collect(
  await client.chat.completions.create({ ...sampling, messages, stream: true, stream_options: { include_usage: true } }),
  (choice) => choice.delta?.content,
);

// Logprobs of the raw model (no penalty), each token's and its two most likely alternatives'.
const withLogprobs = { model, max_tokens, temperature: 0, logprobs: true, top_logprobs: 2 };
const chatLogprobs = await client.chat.completions.create({ ...withLogprobs, messages });
const chatLogprobsStream = await collect(
  await client.chat.completions.create({ ...withLogprobs, messages, stream: true, stream_options: { include_usage: true } }),
  (choice) => choice.delta?.content,
);

// Structured output under a schema with bounded values (enum, boolean, integer), so it finishes; JSON.parse reads
// the content.
const intentSchema = {
  type: "object",
  properties: { intent: { enum: ["buy", "browse"] }, urgent: { type: "boolean" }, count: { type: "integer" } },
  required: ["intent", "urgent", "count"],
  additionalProperties: false,
};
const structured = await client.chat.completions.create({
  model,
  max_tokens: 400,
  temperature: 0,
  messages,
  response_format: { type: "json_schema", json_schema: { name: "intent", strict: true, schema: intentSchema } },
});
let structuredValue = null;
try {
  structuredValue = JSON.parse(structured.choices[0].message.content);
} catch (error) {
  structuredValue = { parse_error: String(error) };
}

let notFound = null;
try {
  await client.completions.create({ ...sampling, model: "no-such-model", prompt });
} catch (error) {
  notFound = { status: error.status, code: error.code ?? null, type: error.type ?? null };
}

console.log(
  JSON.stringify({
    completion: { text: completion.choices[0].text, finish: completion.choices[0].finish_reason, usage: completion.usage },
    chat: { text: chat.choices[0].message.content, finish: chat.choices[0].finish_reason, usage: chat.usage },
    completion_stream: completionStream,
    chat_stream: chatStream,
    chat_logprobs: {
      text: chatLogprobs.choices[0].message.content,
      usage: chatLogprobs.usage,
      logprobs: chatLogprobs.choices[0].logprobs?.content ?? null,
    },
    chat_logprobs_stream: chatLogprobsStream,
    json_schema: { finish: structured.choices[0].finish_reason, value: structuredValue },
    not_found: notFound,
  }),
);
