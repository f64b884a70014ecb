#include "common/subprocess.h"

#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>

namespace recgpt {
namespace {

using std::chrono::milliseconds;

Subprocess::Deadline after(milliseconds timeout) { return std::chrono::steady_clock::now() + timeout; }

TEST_CASE("a child echoes lines back and its exit code is reported", "[common][subprocess]") {
  auto child = Subprocess::spawn({"/bin/cat"});
  REQUIRE(child.is_ok());
  REQUIRE(child->write_line("first line").is_ok());
  REQUIRE(child->write_line("second").is_ok());
  CHECK(child->read_line(after(milliseconds(5000))).value() == "first line");
  CHECK(child->read_line(after(milliseconds(5000))).value() == "second");
  child->close_stdin();
  auto end = child->read_line(after(milliseconds(5000)));
  CHECK(end.status().code() == StatusCode::kUnavailable);
  CHECK(child->wait(after(milliseconds(5000))).value() == 0);
  CHECK(child->wait(after(milliseconds(0))).value() == 0);  // reaped once, the same answer
}

TEST_CASE("reading from a silent child stops at the deadline, and a killed child reports its signal",
          "[common][subprocess]") {
  auto child = Subprocess::spawn({"/bin/sleep", "30"});
  REQUIRE(child.is_ok());
  auto start = std::chrono::steady_clock::now();
  auto line = child->read_line(after(milliseconds(200)));
  CHECK(line.status().code() == StatusCode::kDeadlineExceeded);
  CHECK(std::chrono::steady_clock::now() - start < milliseconds(5000));
  CHECK(child->wait(after(milliseconds(50))).status().code() == StatusCode::kDeadlineExceeded);
  child->kill(SIGKILL);
  CHECK(child->wait(after(milliseconds(5000))).value() == -SIGKILL);
}

TEST_CASE("writing to a child that exited is an error, not a SIGPIPE", "[common][subprocess]") {
  auto child = Subprocess::spawn({"/bin/true"});
  REQUIRE(child.is_ok());
  REQUIRE(child->wait(after(milliseconds(5000))).value() == 0);
  Status written = Status::ok();
  for (int i = 0; i < 100 && written.is_ok(); ++i) written = child->write_line(std::string(4096, 'x'));
  CHECK(written.code() == StatusCode::kUnavailable);
}

TEST_CASE("a program that cannot run exits with 127, an empty command line is refused", "[common][subprocess]") {
  auto missing = Subprocess::spawn({"/nonexistent/program"});
  REQUIRE(missing.is_ok());
  CHECK(missing->wait(after(milliseconds(5000))).value() == 127);
  CHECK(Subprocess::spawn({}).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("destroying a running child kills and reaps it", "[common][subprocess]") {
  pid_t pid = 0;
  {
    auto child = Subprocess::spawn({"/bin/sleep", "30"});
    REQUIRE(child.is_ok());
    pid = child->pid();
  }
  CHECK(::kill(pid, 0) != 0);  // no such process any more (reaped, so not even a zombie)
}

}  // namespace
}  // namespace recgpt
