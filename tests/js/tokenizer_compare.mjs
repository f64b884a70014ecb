// Compares `recgpt tokenize` with the pure-JS Hugging Face tokenizer (@huggingface/tokenizers) on a corpus.
//
// Usage: node tokenizer_compare.mjs TOKENIZER_JSON RECGPT_BINARY CORPUS_JSONL
//   (run from tests/js so that node_modules resolves; CORPUS_JSONL holds one JSON string per line)
//
// For every line it checks that recgpt's ids equal the JS tokenizer's ids, and that recgpt's decode of those
// ids gives back the text (NFC-normalized, since the tokenizer normalizes). Exits 1 on any mismatch, 77 (ctest's
// skip code) when the JS package is not installed.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

const [tokenizerPath, recgptBinary, corpusPath] = process.argv.slice(2);
if (!tokenizerPath || !recgptBinary || !corpusPath) {
  console.error("usage: node tokenizer_compare.mjs TOKENIZER_JSON RECGPT_BINARY CORPUS_JSONL");
  process.exit(2);
}

if (!existsSync(tokenizerPath)) {
  console.error(`${tokenizerPath} does not exist (the tiny_model test fixture makes it with recgpt make-model)`);
  process.exit(1);
}

let Tokenizer;
try {
  ({ Tokenizer } = await import("@huggingface/tokenizers"));
} catch (error) {
  console.error(`@huggingface/tokenizers is not installed (run npm ci in tests/js): ${error.message}`);
  process.exit(77);
}

function runRecgpt(args) {
  const result = spawnSync(recgptBinary, ["tokenize", "--model", dirname(tokenizerPath), ...args], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024,
  });
  if (result.status !== 0) {
    console.error(`recgpt ${args.join(" ")} failed (status ${result.status}): ${result.stderr}`);
    process.exit(1);
  }
  return result.stdout.split("\n").filter((line) => line.length > 0).map((line) => JSON.parse(line));
}

function sameIds(a, b) {
  return a.length === b.length && a.every((id, index) => id === b[index]);
}

const reference = new Tokenizer(JSON.parse(readFileSync(tokenizerPath, "utf8")), {
  clean_up_tokenization_spaces: false,
});
const texts = readFileSync(corpusPath, "utf8")
  .split("\n")
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line));

const encoded = runRecgpt(["--jsonl", corpusPath]);
if (encoded.length !== texts.length) {
  console.error(`recgpt printed ${encoded.length} lines for ${texts.length} texts`);
  process.exit(1);
}
const scratch = mkdtempSync(join(tmpdir(), "recgpt-tokenizer-"));
const idsPath = join(scratch, "ids.jsonl");
writeFileSync(idsPath, encoded.map((ids) => JSON.stringify(ids)).join("\n") + "\n");
const decoded = runRecgpt(["--jsonl", idsPath, "--decode"]);
rmSync(scratch, { recursive: true, force: true });

let idMismatches = 0;
let roundTripFailures = 0;
let tokens = 0;
texts.forEach((text, index) => {
  const expected = reference.encode(text).ids;
  const actual = encoded[index];
  tokens += actual.length;
  if (!sameIds(expected, actual)) {
    ++idMismatches;
    console.error(`line ${index + 1}: ids differ for ${JSON.stringify(text)}`);
    console.error(`  huggingface: ${JSON.stringify(expected)}`);
    console.error(`  recgpt:      ${JSON.stringify(actual)}`);
  }
  const normalized = text.normalize("NFC");
  const referenceDecoded = actual.length === 0 ? "" : reference.decode(actual);
  if (decoded[index] !== normalized || referenceDecoded !== normalized) {
    ++roundTripFailures;
    console.error(`line ${index + 1}: decode(encode(x)) != x for ${JSON.stringify(text)}`);
    console.error(`  recgpt decode:      ${JSON.stringify(decoded[index])}`);
    console.error(`  huggingface decode: ${JSON.stringify(referenceDecoded)}`);
  }
});

console.log(
  `tokenizer comparison: ${texts.length} texts, ${tokens} tokens, ` +
    `${idMismatches} id mismatches, ${roundTripFailures} round-trip failures`,
);
process.exit(idMismatches === 0 && roundTripFailures === 0 ? 0 : 1);
