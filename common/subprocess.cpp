#include "common/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

namespace recgpt {
namespace {

int milliseconds_until(Subprocess::Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1000));  // re-checked at least every second
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

Result<Subprocess> Subprocess::spawn(const std::vector<std::string>& argv) {
  if (argv.empty()) return invalid_argument("cannot spawn an empty command line");
  // stdin is a socket so that writes to a child that exited fail with EPIPE instead of raising SIGPIPE.
  int to_child[2], from_child[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, to_child) != 0) {
    return io_error(std::string("socketpair: ") + std::strerror(errno));
  }
  if (::pipe2(from_child, O_CLOEXEC) != 0) {
    ::close(to_child[0]);
    ::close(to_child[1]);
    return io_error(std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<char*> arguments;
  for (const std::string& argument : argv) arguments.push_back(const_cast<char*>(argument.c_str()));
  arguments.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {  // the child: only async-signal-safe calls until exec
    ::dup2(to_child[0], STDIN_FILENO);
    ::dup2(from_child[1], STDOUT_FILENO);
    // Nothing else of ours goes with it: an inherited listening socket would keep accepting after we close it,
    // and an inherited pipe end would hold back another child's end of file.
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    // A child outlives no test or launcher that dies without stopping it.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    ::execv(arguments[0], arguments.data());
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  if (pid < 0) {
    ::close(to_child[1]);
    ::close(from_child[0]);
    return io_error(std::string("fork: ") + std::strerror(errno));
  }
  Subprocess process;
  process.pid_ = pid;
  process.stdin_fd_ = to_child[1];
  process.stdout_fd_ = from_child[0];
  return process;
}

Subprocess::Subprocess(Subprocess&& other) noexcept { *this = std::move(other); }

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    release();
    pid_ = std::exchange(other.pid_, -1);
    stdin_fd_ = std::exchange(other.stdin_fd_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    buffered_ = std::move(other.buffered_);
    reaped_ = std::exchange(other.reaped_, false);
    exit_status_ = other.exit_status_;
  }
  return *this;
}

Subprocess::~Subprocess() { release(); }

void Subprocess::release() {
  close_fd(stdin_fd_);
  close_fd(stdout_fd_);
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
  reaped_ = false;
}

Status Subprocess::write_line(std::string_view line) {
  if (stdin_fd_ < 0) return unavailable("the child's stdin is closed");
  std::string text(line);
  text += '\n';
  size_t written = 0;
  while (written < text.size()) {
    ssize_t count = ::send(stdin_fd_, text.data() + written, text.size() - written, MSG_NOSIGNAL);
    if (count < 0 && errno == EINTR) continue;
    if (count < 0) return unavailable(std::string("cannot write to the child: ") + std::strerror(errno));
    written += static_cast<size_t>(count);
  }
  return Status::ok();
}

Result<std::string> Subprocess::read_line(Deadline deadline) {
  for (;;) {
    size_t newline = buffered_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffered_.substr(0, newline);
      buffered_.erase(0, newline + 1);
      return line;
    }
    if (stdout_fd_ < 0) return unavailable("the child closed its stdout");
    pollfd readable{stdout_fd_, POLLIN, 0};
    int ready = ::poll(&readable, 1, milliseconds_until(deadline));
    if (ready < 0 && errno != EINTR) return io_error(std::string("poll: ") + std::strerror(errno));
    if (ready <= 0) {
      if (std::chrono::steady_clock::now() >= deadline) return deadline_exceeded("no line from the child in time");
      continue;
    }
    char chunk[4096];
    ssize_t count = ::read(stdout_fd_, chunk, sizeof(chunk));
    if (count < 0 && errno == EINTR) continue;
    if (count <= 0) {
      close_fd(stdout_fd_);
      continue;  // returns what is buffered up to a newline, then kUnavailable
    }
    buffered_.append(chunk, static_cast<size_t>(count));
  }
}

void Subprocess::close_stdin() { close_fd(stdin_fd_); }  // the child reads end of file

void Subprocess::kill(int signal) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, signal);
}

Result<int> Subprocess::wait(Deadline deadline) {
  if (pid_ <= 0) return failed_precondition("no child process");
  while (!reaped_) {
    int status = 0;
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      reaped_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      break;
    }
    if (done < 0 && errno != EINTR) return io_error(std::string("waitpid: ") + std::strerror(errno));
    if (std::chrono::steady_clock::now() >= deadline) return deadline_exceeded("the child is still running");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return exit_status_;
}

}  // namespace recgpt
