#!/usr/bin/python3
"""Checks structured output (response_format json_object and json_schema) through a real cluster.

Starts `recgpt up` (a prefill and a decode process and the router, on 127.0.0.1) on the tiny random model, whose
free text is noise: only the constraint makes its output JSON. Then:

1. json_object, chat and completions, several sampled choices: every choice that ends with finish_reason "stop"
   is a JSON object to Python's json module; a choice cut by max_tokens is a prefix only.
2. json_schema with enums, numbers, a nullable field, a bounded array, required keys and additionalProperties
   false; and a recursive schema ($defs, $ref): every finished choice validates under the `jsonschema` package
   (Debian's python3-jsonschema, an implementation independent of ours), with its keys in the schema's order.
3. The same streamed: the deltas concatenate to a valid instance.
4. A schema with a keyword the server cannot enforce is refused with 400 naming response_format.json_schema.schema.

  /usr/bin/python3 check_structured_output.py RECGPT MODEL_DIR WORK_DIR

Exits 0 when everything holds, 1 when something does not, 77 without jsonschema. Every wait has a deadline and
the cluster is stopped whatever happens.
"""

import json
import os
import sys
import urllib.error
import urllib.request

try:
    import jsonschema
except ImportError:
    print("SKIP: jsonschema is not available to", sys.executable)
    sys.exit(77)

REQUEST_SECONDS = 120
CHOICES = 8
MAX_TOKENS = 400

INTENT_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["buy", "browse", "compare"]},
        "score": {"type": "number"},
        "confidence": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "score", "urgent"],
    "additionalProperties": False,
}
TREE_SCHEMA = {
    "$defs": {"node": {"type": "object",
                       "properties": {"v": {"type": "integer"},
                                      "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                       "required": ["v"]}},
    "$ref": "#/$defs/node",
}


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from recgpt_up import ClusterError, start_cluster, stop_cluster  # noqa: E402


class Failed(Exception):
    pass



def post(base, path, body):
    """(status, parsed body or the raw text of a stream)."""
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as answer:
            text = answer.read().decode()
            return answer.status, text if body.get("stream") else json.loads(text)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


def texts(answer, chat):
    return [(choice["message"]["content"] if chat else choice["text"], choice["finish_reason"])
            for choice in answer["choices"]]


def check_finished(outputs, validate, what):
    """Validates every finished output; returns how many finished."""
    finished = 0
    for text, reason in outputs:
        if reason != "stop":
            if reason != "length":
                raise Failed(f"{what}: finish_reason {reason!r}")
            continue
        finished += 1
        try:
            value = json.loads(text)
        except ValueError as error:
            raise Failed(f"{what}: a finished output is not JSON ({error}): {text!r}")
        validate(value, text)
    return finished


def object_validator(what):
    def validate(value, text):
        if not isinstance(value, dict):
            raise Failed(f"{what}: {text!r} is not an object")
    return validate


def schema_validator(schema, what):
    def validate(value, text):
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as error:
            raise Failed(f"{what}: {text!r} does not validate: {error.message}")
        listed = list(schema.get("properties", {}))
        order = [listed.index(key) for key in value if key in listed]
        if order != sorted(order):
            raise Failed(f"{what}: keys out of the schema's order in {text!r}")
    return validate


def run(recgpt, model_dir, work_dir):
    process, base = start_cluster(recgpt, model_dir, os.path.join(work_dir, "cluster.log"))
    report = []
    try:
        messages = [{"role": "user", "content": "Describe the user's intent as JSON."}]
        json_object = {"type": "json_object"}
        finished = 0
        for seed in (1, 2):
            for path, chat in (("/chat/completions", True), ("/completions", False)):
                # The random model repeats itself inside strings; the penalty makes more of its objects end.
                body = {"model": "recgpt", "max_tokens": 2 * MAX_TOKENS, "temperature": 1.0, "n": 16, "seed": seed,
                        "frequency_penalty": 2.0, "response_format": json_object}
                body.update({"messages": messages} if chat else {"prompt": "User intent as JSON:"})
                status, answer = post(base, path, body)
                if status != 200:
                    raise Failed(f"json_object on {path}: HTTP {status}: {answer}")
                finished += check_finished(texts(answer, chat), object_validator("json_object"), "json_object")
        if finished == 0:
            raise Failed("no json_object choice finished within max_tokens: nothing was checked")
        report.append(f"json_object {finished}/64 finished")

        for name, schema in (("intent", INTENT_SCHEMA), ("tree", TREE_SCHEMA)):
            body = {"model": "recgpt", "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 1.0,
                    "n": CHOICES, "seed": 7,
                    "response_format": {"type": "json_schema",
                                        "json_schema": {"name": name, "strict": True, "schema": schema}}}
            status, answer = post(base, "/chat/completions", body)
            if status != 200:
                raise Failed(f"json_schema {name}: HTTP {status}: {answer}")
            done = check_finished(texts(answer, True), schema_validator(schema, name), name)
            if done == 0:
                raise Failed(f"no {name} choice finished within max_tokens: nothing was checked")
            report.append(f"{name} {done}/{CHOICES} valid")

        # Streamed: the deltas of each choice concatenate to an instance.
        body = {"model": "recgpt", "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 1.0, "n": 4,
                "seed": 11, "stream": True,
                "response_format": {"type": "json_schema", "json_schema": {"name": "intent", "schema": INTENT_SCHEMA}}}
        status, stream = post(base, "/chat/completions", body)
        if status != 200:
            raise Failed(f"streamed json_schema: HTTP {status}: {stream}")
        pieces, reasons = {}, {}
        for line in stream.splitlines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            for choice in chunk["choices"]:
                pieces.setdefault(choice["index"], []).append(choice["delta"].get("content") or "")
                if choice.get("finish_reason"):
                    reasons[choice["index"]] = choice["finish_reason"]
        outputs = [("".join(pieces[index]), reasons.get(index)) for index in sorted(pieces)]
        if len(outputs) != 4:
            raise Failed(f"the stream carried {len(outputs)} choices, not 4")
        streamed = check_finished(outputs, schema_validator(INTENT_SCHEMA, "streamed"), "streamed")
        report.append(f"streamed {streamed}/4 valid")

        body = {"model": "recgpt", "messages": messages,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "bad", "schema": {"type": "string", "pattern": "^[a-z]+$"}}}}
        status, answer = post(base, "/chat/completions", body)
        if status != 400 or answer["error"]["param"] != "response_format.json_schema.schema":
            raise Failed(f"an unenforceable schema answered {status}: {answer}")
        if "pattern" not in answer["error"]["message"]:
            raise Failed(f"the refusal does not name the keyword: {answer['error']['message']}")
        report.append("unenforceable schema refused")
        return report
    finally:
        stop_cluster(process)


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    recgpt, model_dir, work_dir = sys.argv[1:]
    os.makedirs(work_dir, exist_ok=True)
    try:
        report = run(recgpt, model_dir, work_dir)
    except (Failed, ClusterError) as failure:
        print("FAIL:", failure)
        return 1
    print("PASS: structured output:", "; ".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
