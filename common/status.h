// The one error model of the project.
//
// Expected failures (bad input, missing files, exhausted pools, dead peers) are values: `Status` or
// `Result<T>`, both [[nodiscard]]. Broken invariants abort with file and line through RECGPT_CHECK.
// Exceptions never cross a component boundary or a thread.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace recgpt {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller's input is malformed (flag, request body, config value)
  kNotFound,            // a named file, tensor, token or entity does not exist
  kDataLoss,            // a file exists but is corrupt or truncated
  kUnimplemented,       // a valid but unsupported feature (architecture, dtype, scaling type)
  kResourceExhausted,   // a pool (KV blocks, queue) is full
  kFailedPrecondition,  // the system is not in a state to do this
  kIoError,             // the operating system refused (open, mmap, read, write)
  kDeadlineExceeded,    // a wait on a peer ran past its deadline
  kUnavailable,         // a peer is down or unreachable
  kInternal,            // a bug surfaced as a value (should not happen)
};

// Stable, human-readable name of a code ("invalid_argument", ...); used in CLI and HTTP errors.
std::string_view status_code_name(StatusCode code);

// Process exit code of a CLI that failed with `code`: distinct per code, 0 only for kOk.
int status_code_exit_code(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "<code name>: <message>", e.g. "not_found: tensor 'model.norm.weight' missing in /m".
  std::string to_string() const;

  // Returns a copy whose message is "<context>: <message>"; the code is kept.
  Status with_context(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string message) { return {StatusCode::kInvalidArgument, std::move(message)}; }
inline Status not_found(std::string message) { return {StatusCode::kNotFound, std::move(message)}; }
inline Status data_loss(std::string message) { return {StatusCode::kDataLoss, std::move(message)}; }
inline Status unimplemented(std::string message) { return {StatusCode::kUnimplemented, std::move(message)}; }
inline Status resource_exhausted(std::string message) { return {StatusCode::kResourceExhausted, std::move(message)}; }
inline Status failed_precondition(std::string message) { return {StatusCode::kFailedPrecondition, std::move(message)}; }
inline Status io_error(std::string message) { return {StatusCode::kIoError, std::move(message)}; }
inline Status deadline_exceeded(std::string message) { return {StatusCode::kDeadlineExceeded, std::move(message)}; }
inline Status unavailable(std::string message) { return {StatusCode::kUnavailable, std::move(message)}; }
inline Status internal_error(std::string message) { return {StatusCode::kInternal, std::move(message)}; }

// Either a value or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : storage_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : storage_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(storage_).is_ok()) {
      std::fprintf(stderr, "%s:%d: Result constructed from an ok Status\n", __FILE__, __LINE__);
      std::abort();
    }
  }

  bool is_ok() const { return std::holds_alternative<T>(storage_); }
  const Status& status() const {
    static const Status kOkStatus;
    return is_ok() ? kOkStatus : std::get<Status>(storage_);
  }

  T& value() & { return checked_value(); }
  const T& value() const& { return const_cast<Result*>(this)->checked_value(); }
  T&& value() && { return std::move(checked_value()); }
  T* operator->() { return &checked_value(); }
  const T* operator->() const { return &const_cast<Result*>(this)->checked_value(); }
  T& operator*() & { return checked_value(); }

 private:
  T& checked_value() {
    if (!is_ok()) {
      std::fprintf(stderr, "value() of a failed Result: %s\n", std::get<Status>(storage_).to_string().c_str());
      std::abort();
    }
    return std::get<T>(storage_);
  }

  std::variant<T, Status> storage_;
};

[[noreturn]] void check_failed(const char* file, int line, const char* condition, std::string_view detail);

}  // namespace recgpt

// Aborts with file, line and condition when an invariant does not hold. Not for input validation.
#define RECGPT_CHECK(condition)                                                   \
  do {                                                                            \
    if (!(condition)) ::recgpt::check_failed(__FILE__, __LINE__, #condition, {}); \
  } while (false)

#define RECGPT_CHECK_MSG(condition, detail)                                           \
  do {                                                                                \
    if (!(condition)) ::recgpt::check_failed(__FILE__, __LINE__, #condition, detail); \
  } while (false)

#define RECGPT_CONCAT_INNER(a, b) a##b
#define RECGPT_CONCAT(a, b) RECGPT_CONCAT_INNER(a, b)

// Returns the Status of `expression` from the enclosing function when it is not ok.
#define RECGPT_RETURN_IF_ERROR(expression)              \
  do {                                                  \
    ::recgpt::Status recgpt_status_ = (expression);     \
    if (!recgpt_status_.is_ok()) return recgpt_status_; \
  } while (false)

// RECGPT_RETURN_IF_ERROR for coroutines (co_return).
#define RECGPT_CO_RETURN_IF_ERROR(expression)              \
  do {                                                     \
    ::recgpt::Status recgpt_status_ = (expression);        \
    if (!recgpt_status_.is_ok()) co_return recgpt_status_; \
  } while (false)

// `RECGPT_ASSIGN_OR_RETURN(auto x, f());` declares x from a Result or returns its Status.
#define RECGPT_ASSIGN_OR_RETURN(declaration, expression) \
  RECGPT_ASSIGN_OR_RETURN_IMPL(RECGPT_CONCAT(recgpt_result_, __LINE__), declaration, expression)
#define RECGPT_ASSIGN_OR_RETURN_IMPL(result, declaration, expression) \
  auto result = (expression);                                         \
  if (!result.is_ok()) return result.status();                        \
  declaration = std::move(result).value()
