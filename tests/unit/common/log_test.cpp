// Structured log lines parse back into their fields, whatever the values hold.
#include "common/log.h"

#include <catch2/catch.hpp>
#include <map>
#include <regex>

namespace recgpt {
namespace {

// key -> value of a logfmt line (quoted values unescaped).
std::map<std::string, std::string> parse_logfmt(const std::string& line) {
  std::map<std::string, std::string> fields;
  size_t i = 0;
  while (i < line.size()) {
    const size_t equals = line.find('=', i);
    REQUIRE(equals != std::string::npos);
    const std::string key = line.substr(i, equals - i);
    std::string value;
    i = equals + 1;
    if (i < line.size() && line[i] == '"') {
      for (++i; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
          const char next = line[++i];
          value += next == 'n' ? '\n' : next == 't' ? '\t' : next == 'r' ? '\r' : next;
        } else {
          value += line[i];
        }
      }
      ++i;  // the closing quote
    } else {
      while (i < line.size() && line[i] != ' ') value += line[i++];
    }
    fields[key] = value;
    if (i < line.size()) {
      REQUIRE(line[i] == ' ');
      ++i;
    }
  }
  return fields;
}

TEST_CASE("a structured log line parses back into its fields, quoted values included", "[log]") {
  const std::string line = format_log_line(LogLevel::kWarning, "decode", "peer said \"no\"\nthen left",
                                           {{"node", "decode-0"}, {"request_id", 42}, {"reason", "a = b"}});
  INFO(line);
  CHECK(line.find('\n') == std::string::npos);
  auto fields = parse_logfmt(line);
  CHECK(std::regex_match(fields["time"], std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  CHECK(fields["level"] == "warning");
  CHECK(fields["component"] == "decode");
  CHECK(fields["node"] == "decode-0");
  CHECK(fields["request_id"] == "42");
  CHECK(fields["reason"] == "a = b");
  CHECK(fields["msg"] == "peer said \"no\"\nthen left");
}

}  // namespace
}  // namespace recgpt
