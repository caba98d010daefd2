// SPDX-License-Identifier: Apache-2.0
// The dynasparse::compiled library, part two: ModelShard's and Executor's members and
// run_forward(), compiled once for the whole program (see DYNASPARSE_COMPILED in config.hpp).
#if !defined(DYNASPARSE_COMPILED)
#error \
    "src/parallel.cpp is built with DYNASPARSE_COMPILED defined (the dynasparse::compiled target)"
#endif

#include "dynasparse/parallel/executor_impl.hpp"
#include "dynasparse/parallel/shard_impl.hpp"
