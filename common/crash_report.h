// A last word from a process that crashes: on SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT, the signal, the faulting
// address and a backtrace go to stderr before the default action (core dump or exit) runs. A crash in CI or in a
// pod then leaves a trace in its log even where core dumps are off.
#pragma once

namespace recgpt {

// Installs the handlers (on an alternate stack, so a stack overflow is reported too). Call once, early in main.
void install_crash_report(const char* program_name);

}  // namespace recgpt
