#!/usr/bin/python3
"""Checks what the served API reports and samples against the NumPy Qwen3 reference.

Starts `recgpt up` (one prefill and one decode process and the router, on 127.0.0.1) on a random f32 model and
sends greedy completions whose prompts are token ids, with `ignore_eos` (so every call generates max_tokens):

1. `logprobs: 5` with `return_tokens_as_token_ids`: the greedy tokens are the reference's, each token's logprob
   is the reference's log_softmax of the raw logits at its position, and the five listed are the reference's
   five most likely tokens with their logprobs. The first token comes from the prefill node, the rest from the
   decode node.
2. `frequency_penalty` and `presence_penalty`: the tokens are those of a greedy decode over the reference logits
   minus OpenAI's penalties (frequency * count + presence, over generated tokens only); the same prompt without
   them must give other tokens, or the check proves nothing. Then with `logit_bias` too (-100 on the plain run's
   first token, which must then never appear, and +12.5 on another): the reference's greedy tokens under both.
   And `stop_token_ids` (vLLM's) ends the plain run at the first of them, included, with finish_reason stop;
   with `min_tokens` too (vLLM's) the stop token is masked until that many tokens were generated (on the prefill
   node for the first token, on the decode node after): the reference's greedy tokens under that mask.

  /usr/bin/python3 check_served_logprobs.py --recgpt build/recgpt --work /tmp/served_logprobs

Exits 0 when everything holds, 1 when something does not, 77 without NumPy. Every wait has a deadline and the
cluster is stopped whatever happens.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

try:
    import numpy as np
except ImportError:
    print("SKIP: NumPy is not available to", sys.executable)
    sys.exit(77)

from qwen3_reference import Qwen3Reference

REQUEST_SECONDS = 60
PROMPTS = 3
MAX_TOKENS = 8
PENALTY_TOKENS = 16
TOP = 5
# Logits agree with the reference within 1e-4 of the largest (check_logits.py); a logprob is a logit minus the
# row's log-sum-exp, so allow twice that, plus float32 rounding.
RELATIVE_TOLERANCE = 2e-4


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from recgpt_up import ClusterError, start_cluster, stop_cluster  # noqa: E402


class Failed(Exception):
    pass


def log_softmax(row):
    shifted = row - np.max(row)
    return shifted - np.log(np.sum(np.exp(shifted)))



def complete(base, body):
    request = urllib.request.Request(base + "/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        raise Failed(f"POST /v1/completions answered {error.code}: {error.read().decode(errors='replace')}")


def token_id(name):
    if not name.startswith("token_id:"):
        raise Failed(f"a token is named {name!r}, not token_id:N")
    return int(name[len("token_id:"):])


def reference_greedy(reference, prompt, count, frequency=0.0, presence=0.0, bias=None, masked=(), masked_until=0):
    """`count` greedy tokens of the reference with OpenAI's logit bias ({token: bias}) and penalties, `masked`
    tokens never drawn before the `masked_until`-th (vLLM's min_tokens), and the raw logit rows they came from."""
    entity_token = reference.config.entity_token_id
    tokens = list(prompt)
    rows = []
    for _ in range(count):
        row = reference.forward(np.array(tokens))[-1]
        rows.append(row)
        scores = row.copy()
        for token, value in (bias or {}).items():
            scores[token] += value
        if entity_token is not None:
            scores[entity_token] = -np.inf  # the engine never samples an entity token
        generated = tokens[len(prompt):]
        for token in set(generated):
            scores[token] -= frequency * generated.count(token) + presence
        if len(generated) < masked_until:
            for token in masked:
                scores[token] = -np.inf
        tokens.append(int(np.argmax(scores)))
    return tokens[len(prompt):], rows


def check_logprobs(base, reference, prompt, index):
    answer = complete(base, {"model": "recgpt", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
                             "ignore_eos": True, "logprobs": TOP, "return_tokens_as_token_ids": True})
    logprobs = answer["choices"][0]["logprobs"]
    served = [token_id(name) for name in logprobs["tokens"]]
    expected, rows = reference_greedy(reference, prompt, MAX_TOKENS)
    if served != expected:
        raise Failed(f"prompt {index}: served tokens {served}, the reference's greedy tokens {expected}")
    worst = 0.0
    for position, (row, token) in enumerate(zip(rows, served)):
        reference_logprobs = log_softmax(row)
        tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(row))))
        got = logprobs["token_logprobs"][position]
        worst = max(worst, abs(got - reference_logprobs[token]) / tolerance)
        top = logprobs["top_logprobs"][position]
        if len(top) != TOP:
            raise Failed(f"prompt {index} token {position}: {len(top)} top logprobs, not {TOP}")
        listed = sorted(((value, token_id(name)) for name, value in top.items()), reverse=True)
        best = np.argsort(-reference_logprobs, kind="stable")[:TOP]
        for rank, (value, listed_token) in enumerate(listed):
            # The rank-th most likely by the reference, or a token the reference puts within tolerance of it.
            if abs(value - reference_logprobs[best[rank]]) > tolerance:
                raise Failed(f"prompt {index} token {position}: top {rank} logprob {value}, the reference's "
                             f"{reference_logprobs[best[rank]]} (token {best[rank]})")
            if abs(value - reference_logprobs[listed_token]) > tolerance:
                raise Failed(f"prompt {index} token {position}: token {listed_token}'s logprob {value}, the "
                             f"reference's {reference_logprobs[listed_token]}")
            worst = max(worst, abs(value - reference_logprobs[listed_token]) / tolerance)
        if abs(got - reference_logprobs[token]) > tolerance:
            raise Failed(f"prompt {index} token {position}: logprob {got}, the reference's "
                         f"{reference_logprobs[token]}")
    return worst


def check_penalties(base, reference, prompt, index):
    # Random models are confident (the top logit often leads by ~15): strong penalties over enough tokens.
    frequency, presence = 2.0, 1.0
    body = {"model": "recgpt", "prompt": prompt, "max_tokens": PENALTY_TOKENS, "temperature": 0, "ignore_eos": True,
            "logprobs": 0, "return_tokens_as_token_ids": True}
    plain = [token_id(name) for name in complete(base, body)["choices"][0]["logprobs"]["tokens"]]
    # vLLM's stop_token_ids end the greedy run at the first of them, which is part of the output.
    stop = plain[2]
    stopped = complete(base, dict(body, stop_token_ids=[stop]))["choices"][0]
    expected_stop = plain[:plain.index(stop) + 1]
    if [token_id(name) for name in stopped["logprobs"]["tokens"]] != expected_stop or stopped["finish_reason"] != "stop":
        raise Failed(f"prompt {index}: stop_token_ids [{stop}] gave {stopped['logprobs']['tokens']} "
                     f"({stopped['finish_reason']}), expected {expected_stop} (stop)")
    # vLLM's min_tokens: the stop token cannot come before that many tokens; the first from the prefill node.
    for stop, minimum in ((plain[2], plain.index(plain[2]) + 2), (plain[0], 2)):
        answer = complete(base, dict(body, stop_token_ids=[stop], min_tokens=minimum))["choices"][0]
        served = [token_id(name) for name in answer["logprobs"]["tokens"]]
        greedy, _ = reference_greedy(reference, prompt, PENALTY_TOKENS, masked=[stop], masked_until=minimum)
        expected = greedy[:greedy.index(stop) + 1] if stop in greedy else greedy
        reason = "stop" if stop in greedy else "length"
        if served != expected or answer["finish_reason"] != reason:
            raise Failed(f"prompt {index}: stop_token_ids [{stop}] with min_tokens {minimum} gave {served} "
                         f"({answer['finish_reason']}), the reference {expected} ({reason})")
    body.update(frequency_penalty=frequency, presence_penalty=presence)
    penalized = [token_id(name) for name in complete(base, body)["choices"][0]["logprobs"]["tokens"]]
    expected, _ = reference_greedy(reference, prompt, PENALTY_TOKENS, frequency, presence)
    if penalized != expected:
        raise Failed(f"prompt {index}: with penalties served {penalized}, the reference {expected}")
    # logit_bias: ban the plain run's favourite token, lift another; the biases and penalties add up.
    bias = {plain[0]: -100.0, (plain[0] + 1) % 64: 12.5}
    body["logit_bias"] = {str(token): value for token, value in bias.items()}
    biased = [token_id(name) for name in complete(base, body)["choices"][0]["logprobs"]["tokens"]]
    expected, _ = reference_greedy(reference, prompt, PENALTY_TOKENS, frequency, presence, bias)
    if biased != expected:
        raise Failed(f"prompt {index}: with logit_bias {bias} served {biased}, the reference {expected}")
    if plain[0] in biased:
        raise Failed(f"prompt {index}: token {plain[0]}, biased by -100, was generated: {biased}")
    return penalized != plain


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recgpt", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    model_dir = os.path.join(args.work, "model")
    made = subprocess.run([args.recgpt, "make-model", "--preset", "tiny", "--seed", "29", "--out", model_dir],
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        print("FAIL: recgpt make-model:", made.stderr.strip())
        return 1
    reference = Qwen3Reference(model_dir)
    rng = np.random.default_rng(3)
    # Plain vocabulary tokens: below the added (special and entity) tokens, which the tokenizer lists last.
    plain_vocabulary = min(reference.config.vocab_size, reference.config.entity_token_id or 1 << 30) - 16
    process = None
    try:
        process, base = start_cluster(args.recgpt, model_dir, os.path.join(args.work, "cluster.log"))
        worst, changed = 0.0, 0
        for index in range(PROMPTS):
            prompt = [int(t) for t in rng.integers(0, plain_vocabulary, 6 + 5 * index)]
            worst = max(worst, check_logprobs(base, reference, prompt, index))
            changed += check_penalties(base, reference, prompt, index)
        if changed == 0:
            raise Failed("the penalties changed no prompt's tokens: the check would pass without them")
        print(f"ok: {PROMPTS} prompts x {MAX_TOKENS} tokens: greedy tokens and top-{TOP} logprobs match the reference "
              f"(worst difference {worst:.2g} of the tolerance); penalties as the reference ({changed} of {PROMPTS} "
              f"prompts changed by them), with logit_bias too; stop_token_ids end the run, not before min_tokens")
        return 0
    except (Failed, ClusterError) as failure:
        print("FAIL:", failure)
        return 1
    finally:
        if process is not None:
            stop_cluster(process)


if __name__ == "__main__":
    sys.exit(main())
