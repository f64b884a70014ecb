// Which UCX transport lists give endpoints peer failure detection: decided from the configuration alone.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <optional>
#include <string>

#include "kv_transfer/ucx_worker.h"

namespace recgpt::kv {
namespace {

// Sets UCX_TLS (or unsets it, for nullopt) for the scope, then restores it.
class TlsEnvironment {
 public:
  explicit TlsEnvironment(const std::optional<std::string>& value) {
    if (const char* old = std::getenv("UCX_TLS")) old_ = old;
    if (value) {
      ::setenv("UCX_TLS", value->c_str(), 1);
    } else {
      ::unsetenv("UCX_TLS");
    }
  }
  ~TlsEnvironment() {
    if (old_) {
      ::setenv("UCX_TLS", old_->c_str(), 1);
    } else {
      ::unsetenv("UCX_TLS");
    }
  }

 private:
  std::optional<std::string> old_;
};

TEST_CASE("transports with a network one detect dead peers, shared memory and copies alone do not",
          "[kv_transfer][ucx]") {
  for (const char* tls : {"tcp", "tcp,sm", "posix,tcp,self", "rc", "rc_x,cuda_copy", "^sm", "^tcp", " sm , ud "}) {
    INFO(tls);
    CHECK(detects_peer_failure(tls));
  }
  for (const char* tls : {"sm", "shm", "posix,cma,self", "posix , sysv,cma", "cuda_copy,cuda_ipc,posix", "self"}) {
    INFO(tls);
    CHECK_FALSE(detects_peer_failure(tls));
  }
}

TEST_CASE("with no tls setting the environment's UCX_TLS decides, and without it all transports count",
          "[kv_transfer][ucx]") {
  {
    TlsEnvironment environment(std::nullopt);
    CHECK(detects_peer_failure(""));
  }
  {
    TlsEnvironment environment("posix,cma,self");
    CHECK_FALSE(detects_peer_failure(""));
    CHECK(detects_peer_failure("tcp"));  // the setting wins
  }
  {
    TlsEnvironment environment("tcp");
    CHECK(detects_peer_failure(""));
  }
}

}  // namespace
}  // namespace recgpt::kv
