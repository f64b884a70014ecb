#include "kv_transfer/ucx_staging.h"

#include <memory>

#include "kv_transfer/ucx_worker.h"

namespace recgpt::kv {

struct StagedReceiver::Pending {
  StagedReceiver* receiver = nullptr;
  int device = -1;
  std::byte* destination = nullptr;
  size_t bytes = 0;
  std::unique_ptr<std::byte[]> host;  // not zeroed: the receive fills it
};

bool StagedReceiver::receive(ucp_worker_h worker, int device, std::byte* destination, void* data, size_t bytes,
                             bool rendezvous) {
  if (!rendezvous) {
    record(copier_->to_device(destination, data, bytes, device));
    return false;
  }
  auto pending = std::make_unique<Pending>(
      Pending{this, device, destination, bytes, std::unique_ptr<std::byte[]>(new std::byte[bytes])});
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.user_data = pending.get();
  param.cb.recv_am = [](void* request, ucs_status_t status, size_t, void* user_data) {
    std::unique_ptr<Pending> received(static_cast<Pending*>(user_data));
    if (status == UCS_OK) received->receiver->land(*received);  // else the writer failed: its handle says so
    ucp_request_free(request);
  };
  // Immediate completion denied: the callback finishes a receive that started (UCX may run it before this call
  // returns). A null answer would still mean the data is here.
  param.op_attr_mask |= UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  ucs_status_ptr_t request = ucp_am_recv_data_nbx(worker, data, pending->host.get(), bytes, &param);
  if (request == nullptr) {
    land(*pending);
    return true;  // the data was taken, as by any started receive
  }
  if (UCS_PTR_IS_ERR(request)) {
    record(ucx_failure("receiving a write into device memory", UCS_PTR_STATUS(request)));
    return false;
  }
  (void)pending.release();  // the callback owns it now
  return true;
}

void StagedReceiver::land(const Pending& received) {
  record(copier_->to_device(received.destination, received.host.get(), received.bytes, received.device));
}

void StagedReceiver::record(Status copied) {
  if (copied.is_ok()) return;
  {
    std::lock_guard lock(mutex_);
    if (!failure_.is_ok()) return;
    failure_ = internal_error("a write into device memory was lost: " + copied.message());
  }
  if (on_failure_) on_failure_();
}

Status StagedReceiver::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

}  // namespace recgpt::kv
