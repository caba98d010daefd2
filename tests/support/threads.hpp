// SPDX-License-Identifier: Apache-2.0
// Running a layer on a chosen thread count.
#pragma once

#include <cstddef>
#include <vector>

#include "dynasparse/core/tensor.hpp"
#include "dynasparse/core/threading.hpp"
#include "dynasparse/core/workspace.hpp"

namespace dynasparse_test {

// y [m, out] = layer.forward(x [m, in]) with num_threads() = threads (restored to the default
// after); y starts as -7 so that an output the layer fails to write shows.
template <class Layer>
std::vector<float> forward_on_threads(const Layer& layer, const std::vector<float>& x, std::size_t m, std::size_t in,
                                      std::size_t out, int threads) {
  std::vector<float> y(m * out, -7.0f);
  dynasparse::Workspace ws;
  dynasparse::set_num_threads(threads);
  layer.forward(dynasparse::ConstMatrixView(x.data(), m, in), dynasparse::MatrixView(y.data(), m, out), ws);
  dynasparse::set_num_threads(0);
  return y;
}

}  // namespace dynasparse_test
