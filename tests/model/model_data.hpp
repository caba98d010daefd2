// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the model tests: where the golden files live and how logits are compared.
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace dynasparse_test {

/// Path of a file under tests/data/model/.
inline std::string model_data(const std::string& name) {
  return std::string(DYNASPARSE_TEST_DATA_DIR) + "/model/" + name;
}

/// ||a - b|| / ||a|| over the common length (Euclidean norms, in double).
inline double l2_relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

}  // namespace dynasparse_test
