// WorkflowCancel: cancelling a workflow cancels the agent calls attached to it, at once for a call attached
// after, and none that was detached.
#include <catch2/catch.hpp>

#include "router/workflow_runner.h"

namespace recgpt::router {
namespace {

TEST_CASE("cancelling a workflow cancels its attached calls, and every call attached later", "[workflow]") {
  WorkflowCancel workflow;
  CallCancel running, finished;
  int reservations_released = 0;
  running.set_on_cancel([&] { ++reservations_released; });
  workflow.attach(running);
  workflow.attach(finished);
  workflow.detach(finished);
  CHECK_FALSE(workflow.cancelled());
  CHECK_FALSE(running.cancelled());

  workflow.cancel();
  CHECK(workflow.cancelled());
  CHECK(running.cancelled());
  CHECK(reservations_released == 1);
  CHECK_FALSE(finished.cancelled());

  CallCancel late;
  workflow.attach(late);
  CHECK(late.cancelled());
  workflow.cancel();  // again: the calls it reached are not reached twice
  CHECK(reservations_released == 1);
}

}  // namespace
}  // namespace recgpt::router
