// EventWriter: events from producers that run at once are written one at a time, each producer's in its order,
// the stream started once.
#include "router/event_writer.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

namespace recgpt::router {
namespace {

namespace asio = boost::asio;

// An exchange whose every write takes a timer's wait, so a second write could start during it.
class SlowExchange final : public http::Exchange {
 public:
  explicit SlowExchange(asio::io_context& io) : io_(io) {}
  const http::Request& request() const override { return request_; }
  asio::awaitable<Status> respond(http::Response) override { co_return failed_precondition("not a stream"); }
  asio::awaitable<Status> start_events() override {
    ++starts;
    co_return Status::ok();
  }
  asio::awaitable<Status> event(std::string_view data) override {
    if (writing) overlapped = true;
    writing = true;
    std::string copy(data);
    asio::steady_timer timer(io_, std::chrono::milliseconds(1));
    co_await timer.async_wait(asio::use_awaitable);
    written.push_back(std::move(copy));
    writing = false;
    co_return Status::ok();
  }
  bool client_gone() const override { return false; }
  void on_client_gone(std::function<void()>) override {}

  int starts = 0;
  bool writing = false;
  bool overlapped = false;
  std::vector<std::string> written;

 private:
  asio::io_context& io_;
  http::Request request_;
};

TEST_CASE("events sent at once are written one at a time, each producer's in order", "[router][event_writer]") {
  asio::io_context io;
  SlowExchange exchange(io);
  EventWriter events(exchange);
  int finished = 0;
  for (const char* producer : {"a", "b", "c"}) {
    asio::co_spawn(
        io,
        [&, producer]() -> asio::awaitable<void> {
          for (int i = 0; i < 4; ++i) {
            std::string event = std::string(producer) + std::to_string(i);
            co_await events.send(std::move(event));
          }
          ++finished;
        },
        asio::detached);
  }
  io.run();
  CHECK(finished == 3);
  CHECK(exchange.starts == 1);
  CHECK(events.started());
  CHECK_FALSE(exchange.overlapped);
  REQUIRE(exchange.written.size() == 12);
  for (const char* producer : {"a", "b", "c"}) {
    std::vector<std::string> own;
    for (const std::string& event : exchange.written) {
      if (event[0] == producer[0]) own.push_back(event);
    }
    CHECK(own == std::vector<std::string>{std::string(producer) + "0", std::string(producer) + "1",
                                          std::string(producer) + "2", std::string(producer) + "3"});
  }
}

}  // namespace
}  // namespace recgpt::router
