#!/usr/bin/env python3
"""On the GPU machine: Hugging Face transformers' decode speed on a `recgpt make-model` folder, the peer figure
for recgpt_cuda_bench's decode (issue 7: ours / transformers >= 4 at batch 1).

For each batch size, `generate` with greedy decoding runs twice from the same random prompts, once for 1 new token
and once for 1 + STEPS; the difference is STEPS decode steps (the prompt's prefill cancels). Prints JSON.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def generate_seconds(model, prompts, new_tokens):
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batches", default="1,32,128")
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to("cuda").eval()
    figures = []
    for batch in map(int, args.batches.split(",")):
        generator = torch.Generator().manual_seed(batch)
        prompts = torch.randint(0, 4000, (batch, args.context), generator=generator).to("cuda")
        generate_seconds(model, prompts, 2)  # warm-up
        seconds = min(generate_seconds(model, prompts, 1 + args.steps) - generate_seconds(model, prompts, 1)
                      for _ in range(2))
        figures.append({"batch": batch, "context": args.context, "tokens_per_second": batch * args.steps / seconds})
        print(json.dumps(figures[-1]), flush=True)
    print(json.dumps({"transformers_decode": figures}))


if __name__ == "__main__":
    main()
