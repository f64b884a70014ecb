// Write fences over a real BlockManager: a fenced block stays used after its owner released it, until the fence
// is released or lapses; nothing else is touched.
#include "decode_node/write_fences.h"

#include <catch2/catch.hpp>

namespace recgpt::decode {
namespace {

using std::chrono::seconds;

TEST_CASE("a fence keeps blocks used after their owner released them, until released or lapsed", "[decode][fence]") {
  BlockManager blocks(8);
  const std::vector<int32_t> owned = blocks.allocate(5).value();
  const auto now = Clock::now();
  {
    WriteFences fences(blocks);
    CHECK(fences.next_lapse() == Clock::time_point::max());
    fences.hold(1, std::span(owned).first(3), now + seconds(10));
    fences.hold(2, std::span(owned).subspan(3), now + seconds(20));
    CHECK(fences.held_blocks() == 5);
    CHECK(fences.next_lapse() == now + seconds(10));
    blocks.release(owned);  // the reservation or sequence ends
    CHECK(blocks.num_used_blocks() == 5);

    CHECK(fences.release_lapsed(now + seconds(9)) == 0);
    CHECK(fences.release_lapsed(now + seconds(10)) == 1);  // fence 1 lapses
    CHECK(blocks.num_used_blocks() == 2);
    CHECK_FALSE(fences.release(1));
    CHECK(fences.next_lapse() == now + seconds(20));

    fences.hold(3, std::span(owned).subspan(3, 1), now + seconds(30));  // a block under two fences
    CHECK(fences.release(2));
    CHECK(blocks.num_used_blocks() == 1);
    CHECK(fences.held_blocks() == 1);
  }  // destruction releases fence 3
  CHECK(blocks.num_used_blocks() == 0);
}

}  // namespace
}  // namespace recgpt::decode
