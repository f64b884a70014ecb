// The benchmark's HTTP client: one streaming completion (`"stream": true`) over its own HTTP/1.1 connection,
// each Server-Sent Event timed as it arrives, and a plain GET. Beast stays inside the .cpp.
//
// Threading: the caller's io_context; many calls run at once as coroutines on it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace recgpt::bench {

using Clock = std::chrono::steady_clock;

struct HttpTarget {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string api_key;  // empty: no Authorization header
};

struct StreamedCompletion {
  Status status;  // transport failure, a non-200 answer, or an error event
  int http_status = 0;
  Clock::time_point sent;                      // the request was written
  std::vector<Clock::time_point> text_events;  // arrival of each event that carried text (or the first event)
  Clock::time_point done;                      // `data: [DONE]` (or the end of the answer)
  int64_t prompt_tokens = 0;                   // from the usage chunk
  int64_t completion_tokens = 0;
};

// POSTs `body` (which must ask for "stream": true and stream_options.include_usage) to `path`; every wait ends
// by `deadline`. Arguments are taken by value: the coroutine may start after the caller's temporaries are gone.
boost::asio::awaitable<StreamedCompletion> stream_completion(HttpTarget target, std::string path, std::string body,
                                                             Clock::time_point deadline);

struct HttpReply {
  int status = 0;  // 0: no answer (the connection failed or the deadline passed)
  std::string body;
  Clock::time_point sent;
  Clock::time_point done;
};

// POSTs a JSON `body` to `path` and reads the whole answer, by `deadline`.
boost::asio::awaitable<HttpReply> post_json(HttpTarget target, std::string path, std::string body,
                                            Clock::time_point deadline);

// The status code of GET `path`, or 0 when no answer came by the deadline.
boost::asio::awaitable<int> http_get_status(HttpTarget target, std::string path, Clock::time_point deadline);

}  // namespace recgpt::bench
