// A portable stand-in for libFuzzer's main(): runs a target's LLVMFuzzerTestOneInput over every seed of
// a corpus, then over deterministic random mutations of them until a time or run budget is spent.
//
//   fuzz_<name> <corpus dir or file>... [--seconds S] [--runs N] [--seed K]
//
// No coverage feedback: mutations are structure-blind byte edits plus splices of tokens found in the seeds
// (quoted strings, numbers) and of JSON punctuation, which is enough to walk the parsers' error paths. Built
// with AddressSanitizer and UndefinedBehaviorSanitizer, any finding aborts the process; the input that
// caused it is first written to ./fuzz-crash-input so it can be replayed (`fuzz_<name> fuzz-crash-input`).
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define RECGPT_FUZZ_HAS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RECGPT_FUZZ_HAS_ASAN 1
#endif
#endif
#ifdef RECGPT_FUZZ_HAS_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Bytes = std::vector<uint8_t>;

constexpr size_t kMaxInputBytes = 1 << 20;
constexpr const char* kCrashFile = "fuzz-crash-input";

// The input being run, for the crash handlers (which may only use async-signal-safe calls).
const uint8_t* current_data = nullptr;
size_t current_size = 0;

void save_current_input() {
  int fd = ::open(kCrashFile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t written = 0;
  while (written < current_size) {
    ssize_t n = ::write(fd, current_data + written, current_size - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  ::close(fd);
  const char message[] = "fuzz_driver: the crashing input is saved in ./fuzz-crash-input\n";
  [[maybe_unused]] ssize_t ignored = ::write(2, message, sizeof(message) - 1);
}

void on_abort(int signal_number) {
  save_current_input();
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

// Runs the target on an exact-size heap copy, so reading one byte past the input is an ASan finding.
void run_one(const Bytes& input) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[input.size() + (input.empty() ? 1 : 0)]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  current_data = copy.get();
  current_size = input.size();
  LLVMFuzzerTestOneInput(copy.get(), input.size());
  current_data = nullptr;
  current_size = 0;
}

Bytes read_file(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
}

// Quoted strings and digit runs of the seeds, plus JSON punctuation and boundary numbers.
std::vector<Bytes> collect_tokens(const std::vector<Bytes>& seeds) {
  std::set<std::string> tokens = {"{",
                                  "}",
                                  "[",
                                  "]",
                                  ",",
                                  ":",
                                  "\"",
                                  "null",
                                  "true",
                                  "false",
                                  "-1",
                                  "0",
                                  "1e308",
                                  "-0",
                                  "\"\"",
                                  "{}",
                                  "[]",
                                  "4294967296",
                                  "9223372036854775807",
                                  "18446744073709551615",
                                  "\\u0000"};
  for (const Bytes& seed : seeds) {
    for (size_t i = 0; i < seed.size(); ++i) {
      size_t end = i;
      if (seed[i] == '"') {
        end = i + 1;
        while (end < seed.size() && seed[end] != '"' && end - i < 40) ++end;
        if (end < seed.size() && seed[end] == '"') tokens.insert(std::string(seed.begin() + i, seed.begin() + end + 1));
      } else if (seed[i] >= '0' && seed[i] <= '9') {
        while (end < seed.size() && seed[end] >= '0' && seed[end] <= '9') ++end;
        tokens.insert(std::string(seed.begin() + i, seed.begin() + end));
      }
      if (end > i) i = end;
    }
  }
  std::vector<Bytes> result;
  for (const std::string& token : tokens) result.emplace_back(token.begin(), token.end());
  return result;
}

class Mutator {
 public:
  Mutator(uint64_t seed, std::vector<Bytes> seeds)
      : random_(seed), seeds_(std::move(seeds)), tokens_(collect_tokens(seeds_)) {}

  // A seed with one to four stacked edits.
  Bytes next() {
    Bytes input = seeds_[pick(seeds_.size())];
    for (size_t edits = 1 + pick(4); edits > 0; --edits) mutate(input);
    if (input.size() > kMaxInputBytes) input.resize(kMaxInputBytes);
    return input;
  }

 private:
  size_t pick(size_t bound) { return bound == 0 ? 0 : static_cast<size_t>(random_() % bound); }

  void mutate(Bytes& input) {
    static constexpr uint8_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, '0', '9', '"', '{', '}', '[', ']', ',', '-'};
    size_t at = pick(input.size() + 1);
    switch (pick(8)) {
      case 0:
        if (at < input.size()) input[at] ^= static_cast<uint8_t>(1u << pick(8));
        break;
      case 1:
        if (at < input.size()) input[at] = kInteresting[pick(std::size(kInteresting))];
        break;
      case 2:
        input.erase(input.begin() + at, input.begin() + at + pick(std::min<size_t>(input.size() - at, 16) + 1));
        break;
      case 3: {
        const Bytes& token = tokens_[pick(tokens_.size())];
        input.insert(input.begin() + at, token.begin(), token.end());
        break;
      }
      case 4: {  // replace a few bytes with a token
        const Bytes& token = tokens_[pick(tokens_.size())];
        input.erase(input.begin() + at, input.begin() + at + std::min(input.size() - at, pick(8) + 1));
        input.insert(input.begin() + at, token.begin(), token.end());
        break;
      }
      case 5: {  // a little-endian integer, often at 0 (length prefixes)
        size_t offset = pick(2) == 0 ? 0 : at;
        uint64_t value = pick(2) == 0 ? pick(input.size() + 16) : random_();
        for (size_t i = 0; i < 8 && offset + i < input.size(); ++i)
          input[offset + i] = static_cast<uint8_t>(value >> (8 * i));
        break;
      }
      case 6: input.resize(pick(input.size() + 1)); break;
      case 7: {  // splice: this input's prefix, another seed's suffix
        const Bytes& other = seeds_[pick(seeds_.size())];
        size_t from = pick(other.size() + 1);
        input.resize(at);
        input.insert(input.end(), other.begin() + from, other.end());
        break;
      }
    }
  }

  std::mt19937_64 random_;
  std::vector<Bytes> seeds_;
  std::vector<Bytes> tokens_;
};

int usage(const char* program) {
  std::fprintf(stderr, "usage: %s <corpus dir or file>... [--seconds S] [--runs N] [--seed K]\n", program);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double max_seconds = 10;
  uint64_t max_runs = 0;  // 0: no limit
  uint64_t seed = 1;
  std::vector<Bytes> seeds;
  for (int i = 1; i < argc; ++i) {
    std::string argument = argv[i];
    if ((argument == "--seconds" || argument == "--runs" || argument == "--seed") && i + 1 < argc) {
      const char* value = argv[++i];
      if (argument == "--seconds") max_seconds = std::atof(value);
      if (argument == "--runs") max_runs = std::strtoull(value, nullptr, 10);
      if (argument == "--seed") seed = std::strtoull(value, nullptr, 10);
    } else if (argument.rfind("--", 0) == 0) {
      return usage(argv[0]);
    } else if (std::filesystem::is_directory(argument)) {
      std::set<std::filesystem::path> files;  // sorted, so runs are reproducible
      for (const auto& entry : std::filesystem::directory_iterator(argument)) {
        if (entry.is_regular_file()) files.insert(entry.path());
      }
      for (const auto& file : files) seeds.push_back(read_file(file));
    } else if (std::filesystem::is_regular_file(argument)) {
      seeds.push_back(read_file(argument));
    } else {
      std::fprintf(stderr, "fuzz_driver: '%s' is neither a directory nor a file\n", argument.c_str());
      return 2;
    }
  }
  if (seeds.empty()) seeds.emplace_back();

#ifdef RECGPT_FUZZ_HAS_ASAN
  __sanitizer_set_death_callback(save_current_input);
#endif
  std::signal(SIGABRT, on_abort);

  auto start = std::chrono::steady_clock::now();
  auto elapsed_seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  uint64_t runs = 0;
  for (const Bytes& input : seeds) {
    run_one(input);
    ++runs;
  }
  Mutator mutator(seed, seeds);
  while ((max_runs == 0 || runs < max_runs) && (runs % 64 != 0 || elapsed_seconds() < max_seconds)) {
    run_one(mutator.next());
    ++runs;
  }
  std::printf("fuzz_driver: %llu runs (%zu seeds, then mutations) in %.1f s, seed %llu\n",
              static_cast<unsigned long long>(runs), seeds.size(), elapsed_seconds(),
              static_cast<unsigned long long>(seed));
  return 0;
}
