// Structured logs: one logfmt line per event on stderr, e.g.
//   time=2026-12-03T03:46:01.123Z level=warning component=decode node=decode-0 request_id=42 msg="no room" needed=12
// Fields are key=value; values with spaces, quotes, '=' or control characters are quoted and escaped, so a line
// always parses back into its fields. Thread-safe: a line is written whole. The level threshold comes from
// RECGPT_LOG_LEVEL (debug, info, warning, error; default info).
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>

namespace recgpt {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

struct LogField {
  std::string_view key;
  std::string value;
  LogField(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
  LogField(std::string_view k, const char* v) : key(k), value(v) {}
  template <typename Number, typename = std::enable_if_t<std::is_arithmetic_v<Number>>>
  LogField(std::string_view k, Number v) : key(k), value(std::to_string(v)) {}
};

// The line, without its newline (exposed for tests).
std::string format_log_line(LogLevel level, std::string_view component, std::string_view message,
                            std::initializer_list<LogField> fields);

// Writes the line when `level` is at or above the threshold.
void log_event(LogLevel level, std::string_view component, std::string_view message,
               std::initializer_list<LogField> fields = {});

}  // namespace recgpt
