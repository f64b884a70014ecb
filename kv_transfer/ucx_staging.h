// Internal to kv_transfer's ucx backend: the receiving side of device regions that UCX cannot reach (a build
// without cuda_copy/cuda_ipc), staged through host memory with a DeviceCopier. An active-message write into such a
// region lands on the device before the progress thread handles anything after it, so a notification that follows
// the write still finds its bytes in place. A copy that fails cannot be reported to the writer; it is kept as the
// engine's failure, which every later notification wait returns.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>

#include "common/status.h"
#include "kv_transfer/device_copy.h"

namespace recgpt::kv {

class StagedReceiver {
 public:
  // `copier` may be null (then no region is staged and receive() is never called). `on_failure` runs once, on the
  // first lost copy (the engine wakes its notification waiters with it).
  StagedReceiver(std::shared_ptr<DeviceCopier> copier, std::function<void()> on_failure)
      : copier_(std::move(copier)), on_failure_(std::move(on_failure)) {}

  DeviceCopier* copier() const { return copier_.get(); }

  // The data of an active message for `bytes` at `destination` on CUDA device `device`: copied there now (eager),
  // or received into a host buffer and copied when it completes (rendezvous). From a UCX active-message handler,
  // on the progress thread; `worker` is its worker. True when a rendezvous receive took the data (the handler
  // returns UCS_INPROGRESS, as after any ucp_am_recv_data_nbx); false for eager data and for a receive that could
  // not start (recorded as lost; the handler returns UCS_OK so UCX releases the data and the writer completes).
  bool receive(ucp_worker_h worker, int device, std::byte* destination, void* data, size_t bytes, bool rendezvous);

  // ok, or the first copy into a staged region that was lost.
  Status failure() const;

 private:
  struct Pending;
  void land(const Pending& received);
  void record(Status copied);

  const std::shared_ptr<DeviceCopier> copier_;
  const std::function<void()> on_failure_;
  mutable std::mutex mutex_;
  Status failure_;
};

}  // namespace recgpt::kv
