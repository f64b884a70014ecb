// Stop strings on generated tokens: the text is cut at the first stop, no part of a stop ever leaves, text held
// back while it could still become one comes out at the end; with min_tokens, a stop ending in the text of the
// tokens before the min_tokens-th does not count.
#include "router/stop_matcher.h"

#include <catch2/catch.hpp>

#include "tests/unit/engine/tiny_preset.h"

namespace recgpt::router {
namespace {

// Pushes `text`'s tokens one at a time; what the client got and whether a stop matched.
std::pair<std::string, bool> run(const Tokenizer& tokenizer, const std::string& text, std::vector<std::string> stops,
                                 int32_t min_tokens = 0) {
  StopMatcher matcher(tokenizer, std::move(stops), min_tokens);
  std::string seen;
  for (int32_t token : tokenizer.encode(text)) {
    const bool go_on = matcher.push(std::vector<int32_t>{token});
    seen += matcher.take();
    if (!go_on) break;
  }
  matcher.finish();
  seen += matcher.take();
  return {seen, matcher.matched()};
}

TEST_CASE("stop strings cut the text and never leak", "[router][stop]") {
  testing::TinyPreset tiny;
  CHECK(run(tiny.tokenizer, "hello world. more", {"."}) == std::pair<std::string, bool>{"hello world", true});
  CHECK(run(tiny.tokenizer, "hello world", {"xyz"}) == std::pair<std::string, bool>{"hello world", false});
  CHECK(run(tiny.tokenizer, "a b END c END", {"END", "c"}) == std::pair<std::string, bool>{"a b ", true});
  // Held back while it could become a stop, then released at the end.
  StopMatcher matcher(tiny.tokenizer, {"world!"});
  REQUIRE(matcher.push(tiny.tokenizer.encode("hello wor")));
  const std::string early = matcher.take();
  CHECK(early == "hell");  // all but the stop's length minus one
  matcher.finish();
  CHECK(early + matcher.take() == "hello wor");
}

TEST_CASE("with min_tokens a stop counts only when it ends at the min_tokens-th token or later", "[router][stop]") {
  testing::TinyPreset tiny;
  const std::string text = "a. b. c. d. e. f. g. h.";
  const std::vector<int32_t> tokens = tiny.tokenizer.encode(text);
  REQUIRE(tokens.size() >= 8);
  // The first token whose text ends a "." (a stop ending in it).
  size_t first_stop = 0;
  while (tiny.tokenizer.decode(std::span(tokens).first(first_stop + 1)).find('.') == std::string::npos) ++first_stop;
  // min_tokens up to the stop's own token: it counts.
  CHECK(run(tiny.tokenizer, text, {"."}, static_cast<int32_t>(first_stop + 1)).second);
  CHECK(run(tiny.tokenizer, text, {"."}, static_cast<int32_t>(first_stop + 1)).first == "a");
  // One more: the first "." is early; the cut is at the next one, the early text kept.
  const auto [later, matched] = run(tiny.tokenizer, text, {"."}, static_cast<int32_t>(first_stop + 2));
  CHECK(matched);
  CHECK(later.rfind("a.", 0) == 0);
  CHECK(later.size() > 2);
  CHECK(later.back() != '.');
  // Past every token: nothing counts, all the text comes out.
  CHECK(run(tiny.tokenizer, text, {"."}, static_cast<int32_t>(tokens.size() + 1)) ==
        std::pair<std::string, bool>{text, false});
}

}  // namespace
}  // namespace recgpt::router
