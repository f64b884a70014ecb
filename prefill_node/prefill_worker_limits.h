// How much one prefill step takes on (kept apart so the server's face does not pull in the worker).
#pragma once

#include <cstdint>

namespace recgpt::prefill {

struct PrefillWorkerLimits {
  int64_t max_batch_tokens = 4096;  // prompt tokens per forward (a longer prompt is computed in chunks)
  int max_batch_requests = 16;      // requests in progress at once
};

}  // namespace recgpt::prefill
