// A child process driven over its stdin and stdout, one line at a time, with a deadline on every wait: for
// benchmarks and tests that need a second process (a KV transfer peer), and later for `recgpt up`.
//
// Threading: one thread uses a Subprocess. Move-only; the destructor kills (SIGKILL) and reaps a child that
// is still running, so a failed test never leaves a process behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace recgpt {

class Subprocess {
 public:
  using Deadline = std::chrono::steady_clock::time_point;

  // Starts argv[0] (a path; not searched in PATH) with argv, its stdin and stdout piped to this process and its
  // stderr inherited. kInvalidArgument for an empty argv; kIoError when pipes or fork fail; a program that
  // cannot be executed exits with status 127.
  static Result<Subprocess> spawn(const std::vector<std::string>& argv);

  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }

  // Writes `line` and a newline to the child's stdin. kUnavailable when the child closed it (or exited).
  Status write_line(std::string_view line);
  // The next line of the child's stdout, without its newline. kDeadlineExceeded at the deadline (a partial
  // line stays buffered); kUnavailable at end of file (the child closed stdout or exited).
  Result<std::string> read_line(Deadline deadline);
  // Closes the child's stdin (it reads end of file).
  void close_stdin();

  // Sends `signal` to the child if it was not reaped yet.
  void kill(int signal);
  // Waits for the child to exit: its exit code, or minus the signal that ended it. kDeadlineExceeded at the
  // deadline (the child keeps running). Once reaped, the same result again.
  Result<int> wait(Deadline deadline);

 private:
  void release();

  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string buffered_;  // read from stdout, not yet returned
  bool reaped_ = false;
  int exit_status_ = 0;
};

}  // namespace recgpt
