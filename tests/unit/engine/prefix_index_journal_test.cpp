// The journal behind the nodes' prefix-index LoadReports: net changes between takes, a snapshot of the whole
// index, and the block manager recording exactly what it indexes and evicts.
#include "engine/prefix_index_journal.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include "engine/block_manager.h"

namespace recgpt {
namespace {

std::vector<uint64_t> sorted(std::vector<uint64_t> values) {
  std::sort(values.begin(), values.end());
  return values;
}

TEST_CASE("the journal gives net changes between takes and the whole index on demand", "[prefix_journal]") {
  PrefixIndexJournal journal;
  journal.record_added(1);
  journal.record_added(2);
  journal.record_added(3);
  journal.record_evicted(2);  // added and evicted between takes: neither
  PrefixIndexJournal::Changes first = journal.take();
  CHECK(sorted(first.added) == std::vector<uint64_t>{1, 3});
  CHECK(first.evicted.empty());

  journal.record_evicted(1);
  journal.record_added(1);  // evicted and indexed again: no net change
  journal.record_evicted(3);
  journal.record_added(4);
  PrefixIndexJournal::Changes second = journal.take();
  CHECK(second.added == std::vector<uint64_t>{4});
  CHECK(second.evicted == std::vector<uint64_t>{3});
  CHECK(sorted(journal.snapshot()) == std::vector<uint64_t>{1, 4});

  PrefixIndexJournal::Changes none = journal.take();
  CHECK(none.added.empty());
  CHECK(none.evicted.empty());
}

TEST_CASE("the block manager journals what it indexes and what eviction drops", "[prefix_journal]") {
  PrefixIndexJournal journal;
  BlockManager blocks(2);
  blocks.set_journal(&journal);
  auto first = blocks.allocate(2);
  REQUIRE(first.is_ok());
  CHECK(blocks.register_block(100, (*first)[0]));
  CHECK(blocks.register_block(200, (*first)[1]));
  blocks.release(*first);  // both cached, still indexed
  CHECK(sorted(journal.take().added) == std::vector<uint64_t>{100, 200});

  auto second = blocks.allocate(1);  // evicts the least recently released cached block
  REQUIRE(second.is_ok());
  PrefixIndexJournal::Changes changes = journal.take();
  CHECK(changes.added.empty());
  REQUIRE(changes.evicted.size() == 1);
  CHECK(journal.snapshot() == std::vector<uint64_t>{changes.evicted[0] == 100 ? uint64_t{200} : uint64_t{100}});

  // A hash already indexed by another block is not indexed again, and not journaled.
  CHECK_FALSE(blocks.register_block(journal.snapshot()[0], (*second)[0]));
  CHECK(journal.take().added.empty());
  blocks.release(*second);
  blocks.set_journal(nullptr);
}

}  // namespace
}  // namespace recgpt
