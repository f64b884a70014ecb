#include "common/crash_report.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>

namespace recgpt {
namespace {

const char* program = "recgpt";

// Only async-signal-safe calls: snprintf into a stack buffer is not on POSIX's list but does not allocate or
// lock for these formats in glibc; backtrace() was called once at install time so that it does not load libgcc
// here.
void report(int signal_number, siginfo_t* info, void*) {
  char line[256];
  int length = std::snprintf(line, sizeof(line), "%s: fatal signal %d (%s) at address %p; backtrace:\n", program,
                             signal_number, strsignal(signal_number), info != nullptr ? info->si_addr : nullptr);
  if (length > 0) (void)!write(STDERR_FILENO, line, static_cast<size_t>(length));
  void* frames[64];
  int count = backtrace(frames, 64);
  backtrace_symbols_fd(frames, count, STDERR_FILENO);
  raise(signal_number);  // SA_RESETHAND restored the default action: a core dump or exit with this signal
}

}  // namespace

void install_crash_report(const char* program_name) {
  program = program_name;
  void* warm_up[1];
  backtrace(warm_up, 1);
  static char alternate_stack[64 * 1024];
  stack_t stack{};
  stack.ss_sp = alternate_stack;
  stack.ss_size = sizeof(alternate_stack);
  sigaltstack(&stack, nullptr);
  struct sigaction action {};
  action.sa_sigaction = report;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (int signal_number : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) sigaction(signal_number, &action, nullptr);
}

}  // namespace recgpt
