// The admin endpoint against a real HTTP client (curl, from Debian): health, readiness with its reason,
// Prometheus text, wrong paths and methods, and oversized requests that are refused while the server keeps
// serving. The io_context runs on its own thread; every curl call has a deadline.
#include "common/admin/admin_server.h"

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/subprocess.h"
#include "tests/support/curl.h"

namespace recgpt::admin {
namespace {

using testing::CurlReply;

using std::chrono::seconds;

CurlReply curl(uint16_t port, const std::string& path, std::vector<std::string> extra = {}) {
  return testing::curl(testing::local_url(port, path), extra);
}

struct RunningServer {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work = boost::asio::make_work_guard(io);
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::atomic<bool> ready = false;
  std::unique_ptr<AdminServer> server;
  std::thread thread;

  RunningServer() {
    AdminOptions options;
    options.registry = registry;
    options.readiness = [this] { return ready ? Status::ok() : unavailable("the model is still loading"); };
    auto started = AdminServer::start(io, options);
    REQUIRE(started.is_ok());
    server = std::move(started).value();
    thread = std::thread([this] { io.run(); });
  }

  ~RunningServer() {
    boost::asio::post(io, [this] {
      server.reset();  // on the io_context's thread, as its contract asks
      io.stop();
    });
    thread.join();
  }
};

TEST_CASE("the admin endpoint answers health, readiness with its reason, and Prometheus text", "[admin]") {
  RunningServer running;
  auto& requests =
      prometheus::BuildCounter().Name("recgpt_test_requests_total").Help("test").Register(*running.registry);
  requests.Add({{"role", "decode"}}).Increment(3);
  const uint16_t port = running.server->port();

  CurlReply health = curl(port, "/healthz");
  CHECK(health.status == 200);
  CurlReply not_ready = curl(port, "/readyz");
  CHECK(not_ready.status == 503);
  CHECK_THAT(not_ready.body, Catch::Contains("the model is still loading"));
  running.ready = true;
  CHECK(curl(port, "/readyz").status == 200);

  CurlReply metrics = curl(port, "/metrics");
  CHECK(metrics.status == 200);
  CHECK_THAT(metrics.body, Catch::Contains("# TYPE recgpt_test_requests_total counter") &&
                               Catch::Contains("recgpt_test_requests_total{role=\"decode\"} 3"));
}

TEST_CASE("the admin endpoint refuses unknown paths, other methods and oversized requests, and keeps serving",
          "[admin]") {
  RunningServer running;
  const uint16_t port = running.server->port();
  CHECK(curl(port, "/nothing-here").status == 404);
  CHECK(curl(port, "/metrics", {"-X", "POST"}).status == 405);
  CHECK(curl(port, "/healthz", {"-H", "X-Padding: " + std::string(16 * 1024, 'a')}).status == 431);
  CHECK(curl(port, "/healthz", {"-X", "GET", "--data-binary", "a body"}).status == 413);
  const CurlReply head = curl(port, "/healthz", {"--head"});
  CHECK(head.status == 200);
  CHECK_THAT(head.body, Catch::Contains("Content-Length: 0"));  // HEAD: the status and headers, no body
  CHECK(curl(port, "/healthz").status == 200);
}

TEST_CASE("an admin endpoint on an address in use says which", "[admin]") {
  RunningServer running;
  boost::asio::io_context other;
  AdminOptions options;
  options.port = running.server->port();
  auto second = AdminServer::start(other, options);
  REQUIRE_FALSE(second.is_ok());
  CHECK(second.status().code() == StatusCode::kUnavailable);
  CHECK_THAT(second.status().message(), Catch::Contains(std::to_string(options.port)));
}

}  // namespace
}  // namespace recgpt::admin
