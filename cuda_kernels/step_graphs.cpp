#include "cuda_kernels/step_graphs.h"

#include "common/cuda_status.h"

namespace recgpt::cuda {

Status StepGraphs::run(const StepGraphKey& key, cudaStream_t stream, const std::function<Status()>& enqueue) {
  auto found = graphs_.find(key);
  if (found == graphs_.end()) {
    if (graphs_.size() >= kMaxGraphs) clear();
    RECGPT_RETURN_IF_ERROR(
        cuda_status(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin a step graph"));
    const Status enqueued = enqueue();
    cudaGraph_t graph = nullptr;
    const Status captured = cuda_status(cudaStreamEndCapture(stream, &graph), "capture a step graph");
    if (!enqueued.is_ok() || !captured.is_ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return enqueued.is_ok() ? captured : enqueued;
    }
    cudaGraphExec_t executable = nullptr;
    const Status instantiated = cuda_status(cudaGraphInstantiate(&executable, graph, 0), "instantiate a step graph");
    cudaGraphDestroy(graph);
    RECGPT_RETURN_IF_ERROR(instantiated);
    found = graphs_.emplace(key, executable).first;
  }
  return cuda_status(cudaGraphLaunch(found->second, stream), "launch a step graph");
}

void StepGraphs::clear() {
  for (auto& [key, executable] : graphs_) cudaGraphExecDestroy(executable);
  graphs_.clear();
}

}  // namespace recgpt::cuda
