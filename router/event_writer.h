// A stream's Server-Sent Events written in the order they were sent, one write at a time, for producers that run
// at once (a completion's `n` choices): a send while another is writing queues its event, which that writer
// sends before it returns. Single-threaded: the router's io_context.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <deque>
#include <string>

#include "common/http/http_server.h"

namespace recgpt::router {

class EventWriter {
 public:
  explicit EventWriter(http::Exchange& exchange) : exchange_(exchange) {}

  // Starts the stream on the first event. A write that fails (the client went away) shows in
  // exchange.client_gone(); later writes fail the same way, unnoticed here.
  boost::asio::awaitable<void> send(std::string event) {
    queue_.push_back(std::move(event));
    if (writing_) co_return;
    writing_ = true;
    if (!started_) {
      started_ = true;
      (void)co_await exchange_.start_events();
    }
    while (!queue_.empty()) {
      const std::string next = std::move(queue_.front());
      queue_.pop_front();
      (void)co_await exchange_.event(next);
    }
    writing_ = false;
  }

  bool started() const { return started_; }

 private:
  http::Exchange& exchange_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool started_ = false;
};

}  // namespace recgpt::router
