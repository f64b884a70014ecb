#include "bench/sse_client.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace recgpt::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

constexpr uint64_t kBodyLimit = 256ull << 20;

asio::awaitable<Result<beast::tcp_stream>> connect(const HttpTarget& target, Clock::time_point deadline) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  boost::system::error_code error;
  const auto address = asio::ip::make_address(target.host, error);
  if (error) co_return invalid_argument("'" + target.host + "' is not an IP address");
  stream.expires_after(deadline - Clock::now());
  co_await stream.async_connect(tcp::endpoint(address, target.port), asio::redirect_error(asio::use_awaitable, error));
  if (error)
    co_return unavailable("cannot connect to " + target.host + ":" + std::to_string(target.port) + ": " +
                          error.message());
  stream.socket().set_option(tcp::no_delay(true), error);
  co_return stream;
}

// Feeds the body of an SSE answer, event by event.
class EventReader {
 public:
  explicit EventReader(StreamedCompletion& out) : out_(out) {}

  void feed(std::string_view bytes) {
    pending_.append(bytes);
    for (size_t end; (end = pending_.find("\n\n")) != std::string::npos;) {
      on_event(pending_.substr(0, end));
      pending_.erase(0, end + 2);
    }
  }

 private:
  void on_event(const std::string& event) {
    const auto now = Clock::now();
    if (event.rfind("data: ", 0) != 0) return;
    const std::string data = event.substr(6);
    if (data == "[DONE]") {
      out_.done = now;
      return;
    }
    const auto json = nlohmann::json::parse(data, nullptr, false);
    if (json.is_discarded()) {
      out_.status = invalid_argument("an event is not JSON: " + data.substr(0, 200));
      return;
    }
    if (json.contains("error")) {
      out_.status = unavailable("error event: " + json["error"].value("message", std::string()));
      return;
    }
    if (json.contains("usage") && json["usage"].is_object()) {
      out_.prompt_tokens = json["usage"].value("prompt_tokens", int64_t{0});
      out_.completion_tokens = json["usage"].value("completion_tokens", int64_t{0});
    }
    if (!json.contains("choices") || json["choices"].empty()) return;
    const auto& choice = json["choices"][0];
    std::string text;
    if (choice.contains("text") && choice["text"].is_string()) text = choice["text"];
    if (choice.contains("delta") && choice["delta"].contains("content") && choice["delta"]["content"].is_string())
      text = choice["delta"]["content"];
    // The router sends its first event at the first token, even when that token shows no text yet.
    if (!text.empty() || out_.text_events.empty()) out_.text_events.push_back(now);
  }

  StreamedCompletion& out_;
  std::string pending_;
};

http::request<http::string_body> make_request(http::verb verb, const HttpTarget& target, const std::string& path,
                                              std::string body) {
  http::request<http::string_body> request{verb, path, 11};
  request.set(http::field::host, target.host + ":" + std::to_string(target.port));
  request.set(http::field::user_agent, "recgpt-bench");
  if (!target.api_key.empty()) request.set(http::field::authorization, "Bearer " + target.api_key);
  if (verb == http::verb::post) request.set(http::field::content_type, "application/json");
  request.body() = std::move(body);
  request.prepare_payload();
  return request;
}

}  // namespace

asio::awaitable<StreamedCompletion> stream_completion(HttpTarget target, std::string path, std::string body,
                                                      Clock::time_point deadline) {
  StreamedCompletion out;
  auto stream = co_await connect(target, deadline);
  if (!stream.is_ok()) {
    out.status = stream.status();
    co_return out;
  }
  boost::system::error_code error;
  auto request = make_request(http::verb::post, target, path, std::move(body));
  out.sent = Clock::now();
  co_await http::async_write(*stream, request, asio::redirect_error(asio::use_awaitable, error));
  if (error) {
    out.status = unavailable("writing the request: " + error.message());
    co_return out;
  }
  EventReader events(out);
  http::response_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  auto on_chunk = [&](uint64_t, std::string_view piece, boost::system::error_code&) -> size_t {
    events.feed(piece);
    return piece.size();
  };
  parser.on_chunk_body(on_chunk);
  beast::flat_buffer buffer;
  co_await http::async_read(*stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
  if (out.done == Clock::time_point{}) out.done = Clock::now();
  if (error) {
    out.status = unavailable("reading the answer: " + error.message());
    co_return out;
  }
  out.http_status = static_cast<int>(parser.get().result_int());
  if (out.http_status != 200) {
    out.status = unavailable("HTTP " + std::to_string(out.http_status) + ": " + parser.get().body().substr(0, 300));
  } else if (out.status.is_ok() && out.text_events.empty()) {
    out.status = unavailable("the answer carried no token");
  }
  beast::error_code ignored;
  stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
  co_return out;
}

asio::awaitable<HttpReply> post_json(HttpTarget target, std::string path, std::string body,
                                     Clock::time_point deadline) {
  HttpReply reply;
  auto stream = co_await connect(target, deadline);
  if (!stream.is_ok()) co_return reply;
  boost::system::error_code error;
  auto request = make_request(http::verb::post, target, path, std::move(body));
  reply.sent = Clock::now();
  co_await http::async_write(*stream, request, asio::redirect_error(asio::use_awaitable, error));
  if (error) co_return reply;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  co_await http::async_read(*stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
  reply.done = Clock::now();
  if (error) co_return reply;
  reply.status = static_cast<int>(parser.get().result_int());
  reply.body = std::move(parser.get().body());
  co_return reply;
}

asio::awaitable<int> http_get_status(HttpTarget target, std::string path, Clock::time_point deadline) {
  auto stream = co_await connect(target, deadline);
  if (!stream.is_ok()) co_return 0;
  boost::system::error_code error;
  auto request = make_request(http::verb::get, target, path, {});
  co_await http::async_write(*stream, request, asio::redirect_error(asio::use_awaitable, error));
  if (error) co_return 0;
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  co_await http::async_read(*stream, buffer, response, asio::redirect_error(asio::use_awaitable, error));
  if (error) co_return 0;
  co_return static_cast<int>(response.result_int());
}

}  // namespace recgpt::bench
