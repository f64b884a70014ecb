#include "common/status.h"

#include <catch2/catch.hpp>

namespace recgpt {
namespace {

Result<int> parse_positive(int value) {
  if (value <= 0) return invalid_argument("expected a positive number, got " + std::to_string(value));
  return value;
}

Result<int> doubled_positive(int value) {
  RECGPT_ASSIGN_OR_RETURN(int parsed, parse_positive(value));
  return parsed * 2;
}

TEST_CASE("a failed Result carries its code and message through ASSIGN_OR_RETURN") {
  auto good = doubled_positive(4);
  REQUIRE(good.is_ok());
  CHECK(good.value() == 8);

  auto bad = doubled_positive(-1);
  REQUIRE_FALSE(bad.is_ok());
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().to_string() == "invalid_argument: expected a positive number, got -1");
}

TEST_CASE("every status code has a distinct name and exit code") {
  CHECK(status_code_exit_code(StatusCode::kOk) == 0);
  CHECK(status_code_exit_code(StatusCode::kNotFound) != status_code_exit_code(StatusCode::kDataLoss));
  CHECK(status_code_name(StatusCode::kDataLoss) == "data_loss");
  CHECK(not_found("x").with_context("loading /m").to_string() == "not_found: loading /m: x");
}

}  // namespace
}  // namespace recgpt
