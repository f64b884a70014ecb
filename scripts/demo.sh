#!/usr/bin/env bash
# Sets up and runs the main job: builds recgpt, starts the local cluster on the built-in model (`recgpt up`: a
# prefill node, a decode node and the router), sends the sample requests in examples/ (a chat completion, then the
# `intent` workflow for one user), prints the answers and the timings, and stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci --target recgpt
log=$(mktemp -d)
build/ci/recgpt up --port 0 >"$log/up.out" 2>"$log/up.err" &
up=$!
trap 'kill -INT $up 2>/dev/null; wait $up 2>/dev/null || true; rm -rf "$log"' EXIT
url=""
for _ in $(seq 1 600); do  # the first run writes the built-in model
  url=$(sed -n 's/^recgpt up: serving \(http[^ ]*\) .*/\1/p' "$log/up.out")
  [ -n "$url" ] && break
  kill -0 $up 2>/dev/null || { cat "$log/up.err" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "recgpt up did not start" >&2; cat "$log/up.err" >&2; exit 1; }
for _ in $(seq 1 100); do curl -sf "${url%/v1}/readyz" >/dev/null && break; sleep 0.1; done
echo "cluster: $url"
curl -s "${url%/v1}/v1/cluster" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const n of JSON.parse(s).nodes)console.log(`  ${n.role} ${n.node} at ${n.address}: ${n.healthy?"healthy":"down"}, KV blocks free ${n.kv_blocks_free}`)})'
start=$(date +%s%N)
response=$(curl -s "$url/chat/completions" -H 'Content-Type: application/json' --data-binary @examples/chat_request.json)
end=$(date +%s%N)
echo "$response" | ELAPSED_MS=$(( (end - start) / 1000000 )) node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
  const r = JSON.parse(s);
  if (r.error) { console.error("error:", r.error.message); process.exit(1); }
  console.log("answer:", JSON.stringify(r.choices[0].message.content));
  console.log(`finish: ${r.choices[0].finish_reason}; tokens: prompt ${r.usage.prompt_tokens}, completion ${r.usage.completion_tokens}, cached ${r.usage.prompt_tokens_details.cached_tokens}`);
  const t = r.timings ?? {};
  console.log(`timings: request ${process.env.ELAPSED_MS} ms at the client` + (t.ttft_ms !== undefined ? `; router: first token ${t.ttft_ms.toFixed(1)} ms, total ${t.total_ms.toFixed(1)} ms (prefill ${t.prefill_node}, decode ${t.decode_node})` : ""));
});'
start=$(date +%s%N)
workflow=$(curl -s "$url/workflows/intent" -H 'Content-Type: application/json' --data-binary @examples/intent_request.json)
end=$(date +%s%N)
echo "$workflow" | ELAPSED_MS=$(( (end - start) / 1000000 )) node -e '
let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
  const r = JSON.parse(s);
  if (r.error) { console.error("error:", r.error.message); process.exit(1); }
  console.log(`workflow intent: personas ${JSON.stringify(r.output.personas)}`);
  for (const e of r.output.expert_tags) console.log(`  expert for ${JSON.stringify(e.persona)}: ${JSON.stringify(e.tags)}`);
  console.log(`  final tags: ${JSON.stringify(r.output.final_tags)}`);
  const u = r.usage;
  console.log(`  prompt tokens ${u.prompt_tokens}, computed ${u.computed_prompt_tokens}, cached ${u.cached_tokens}; context ${u.context.text_tokens} text / ${u.context.hybrid_tokens} hybrid tokens`);
  const stages = Object.entries(r.timings.steps).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(", ");
  console.log(`  timings: ${process.env.ELAPSED_MS} ms at the client; ${stages}`);
});'
