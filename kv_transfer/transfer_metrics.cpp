#include "kv_transfer/transfer_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <numeric>

namespace recgpt::kv {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Histogram;

// From 100 µs (one small block over shared memory) to 10 s (a deadline).
const Histogram::BucketBoundaries& duration_buckets() {
  static const Histogram::BucketBoundaries buckets{1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1, 3, 10};
  return buckets;
}

// What became of an operation (outcome_of, and "refused" at submission).
constexpr const char* kOutcomes[] = {"ok", "failed", "cancelled", "dropped", "refused"};

// The metric families of one engine, with its node and backend as labels.
class TransferMetrics {
 public:
  TransferMetrics(prometheus::Registry& registry, const std::string& node, std::string backend)
      : backend_(std::move(backend)),
        operations_(prometheus::BuildCounter()
                        .Name("recgpt_kv_transfer_operations_total")
                        .Help("KV transfer write batches and notifications by outcome")
                        .Labels({{"node", node}})
                        .Register(registry)),
        bytes_(prometheus::BuildCounter()
                   .Name("recgpt_kv_transfer_bytes_total")
                   .Help("Bytes of KV transfer write batches by outcome")
                   .Labels({{"node", node}})
                   .Register(registry)),
        durations_(prometheus::BuildHistogram()
                       .Name("recgpt_kv_transfer_duration_seconds")
                       .Help("KV transfer write batches and notifications, submission to completion")
                       .Labels({{"node", node}})
                       .Register(registry)) {
    // Every series at 0 from the start, so that rates and alerts on failures see a 0 before the first one.
    for (const char* operation : {"writes", "notify"}) {
      for (const char* outcome : kOutcomes) {
        operations_.Add({{"backend", backend_}, {"operation", operation}, {"outcome", outcome}});
      }
      durations_.Add({{"backend", backend_}, {"operation", operation}}, duration_buckets());
    }
    for (const char* outcome : kOutcomes) bytes_.Add({{"backend", backend_}, {"outcome", outcome}});
  }

  void record(const char* operation, const char* outcome, uint64_t bytes, double seconds) {
    operations_.Add({{"backend", backend_}, {"operation", operation}, {"outcome", outcome}}).Increment();
    if (std::string_view(operation) == "writes") {
      bytes_.Add({{"backend", backend_}, {"outcome", outcome}}).Increment(static_cast<double>(bytes));
    }
    if (std::string_view(outcome) == "ok") {
      durations_.Add({{"backend", backend_}, {"operation", operation}}, duration_buckets()).Observe(seconds);
    }
  }

 private:
  const std::string backend_;
  Family<Counter>& operations_;
  Family<Counter>& bytes_;
  Family<Histogram>& durations_;
};

const char* outcome_of(TransferState state) {
  switch (state) {
    case TransferState::kDone: return "ok";
    case TransferState::kFailed: return "failed";
    case TransferState::kCancelled: return "cancelled";
    case TransferState::kPending: return "dropped";
  }
  return "failed";
}

// A handle that records its outcome once, the first time it is seen settled.
class MeteredHandle final : public TransferHandle {
 public:
  MeteredHandle(std::unique_ptr<TransferHandle> inner, std::shared_ptr<TransferMetrics> metrics, const char* operation,
                uint64_t bytes)
      : inner_(std::move(inner)), metrics_(std::move(metrics)), operation_(operation), bytes_(bytes) {}

  ~MeteredHandle() override { record(inner_->poll(), /*final=*/true); }

  TransferState poll() override { return record(inner_->poll()); }
  Status wait(Deadline deadline) override {
    Status status = inner_->wait(deadline);
    record(inner_->poll());
    return status;
  }
  void cancel() override {
    inner_->cancel();
    record(inner_->poll());
  }
  Status status() override {
    Status status = inner_->status();
    record(inner_->poll());
    return status;
  }

 private:
  TransferState record(TransferState state, bool final = false) {
    if ((state != TransferState::kPending || final) && !recorded_.exchange(true)) {
      double seconds = std::chrono::duration<double>(Clock::now() - submitted_).count();
      metrics_->record(operation_, outcome_of(state), bytes_, seconds);
    }
    return state;
  }

  std::unique_ptr<TransferHandle> inner_;
  std::shared_ptr<TransferMetrics> metrics_;
  const char* operation_;
  const uint64_t bytes_;
  const Clock::time_point submitted_ = Clock::now();
  std::atomic<bool> recorded_{false};
};

// Forwards everything to the wrapped engine; wraps the handles of writes and notifications.
class MeteredEngine final : public TransferEngine {
 public:
  MeteredEngine(std::unique_ptr<TransferEngine> inner, prometheus::Registry& registry, const std::string& node)
      : inner_(std::move(inner)),
        metrics_(std::make_shared<TransferMetrics>(registry, node, std::string(inner_->backend_name()))) {}

  std::string_view backend_name() const override { return inner_->backend_name(); }
  Result<LocalRegionId> register_memory(const MemoryRegion& region) override { return inner_->register_memory(region); }
  Result<AllocatedRegion> allocate_memory(size_t bytes) override { return inner_->allocate_memory(bytes); }
  Status deregister_memory(LocalRegionId region) override { return inner_->deregister_memory(region); }
  Result<Bytes> export_region(LocalRegionId region) override { return inner_->export_region(region); }
  Result<Bytes> local_endpoint() override { return inner_->local_endpoint(); }
  Result<PeerId> connect(std::span<const std::byte> endpoint, Deadline deadline) override {
    return inner_->connect(endpoint, deadline);
  }
  Result<PeerId> watch(std::span<const std::byte> endpoint) override { return inner_->watch(endpoint); }
  Result<RemoteRegionId> import_region(PeerId peer, std::span<const std::byte> key) override {
    return inner_->import_region(peer, key);
  }
  void disconnect(PeerId peer) override { inner_->disconnect(peer); }

  Result<std::unique_ptr<TransferHandle>> submit_writes(PeerId peer, std::span<const WriteOp> ops) override {
    const uint64_t bytes = std::accumulate(ops.begin(), ops.end(), uint64_t{0},
                                           [](uint64_t sum, const WriteOp& op) { return sum + op.length; });
    return metered(inner_->submit_writes(peer, ops), "writes", bytes);
  }
  Result<std::unique_ptr<TransferHandle>> notify(PeerId peer, std::span<const std::byte> message) override {
    return metered(inner_->notify(peer, message), "notify", 0);
  }
  Result<std::optional<Notification>> wait_notification(Deadline deadline) override {
    return inner_->wait_notification(deadline);
  }
  Status peer_status(PeerId peer) override { return inner_->peer_status(peer); }

 private:
  Result<std::unique_ptr<TransferHandle>> metered(Result<std::unique_ptr<TransferHandle>> submitted,
                                                  const char* operation, uint64_t bytes) {
    if (!submitted.is_ok()) {
      metrics_->record(operation, "refused", bytes, 0);
      return submitted.status();
    }
    return std::unique_ptr<TransferHandle>(
        std::make_unique<MeteredHandle>(std::move(submitted).value(), metrics_, operation, bytes));
  }

  std::unique_ptr<TransferEngine> inner_;
  std::shared_ptr<TransferMetrics> metrics_;
};

}  // namespace

std::unique_ptr<TransferEngine> with_metrics(std::unique_ptr<TransferEngine> engine, prometheus::Registry& registry,
                                             const std::string& node) {
  return std::make_unique<MeteredEngine>(std::move(engine), registry, node);
}

}  // namespace recgpt::kv
