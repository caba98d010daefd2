// SPDX-License-Identifier: Apache-2.0
// The smallest program a user would write against dynasparse: it must compile, link and
// compute the right answer through every way of bringing the library in.
#include <dynasparse/dynasparse.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  std::vector<std::int8_t> a(100, 3), b(100, -2);
  const std::int32_t dot = dynasparse::simd::dot_s8s8_s32(a.data(), b.data(), a.size());
  std::vector<float> row = {1.0f, 1.0f, 1.0f, 1.0f};
  dynasparse::simd::softmax_f32(row.data(), row.data(), row.size());
  std::printf("%s\n", dynasparse::build_info().c_str());
  if (dot != -600 || row[0] != 0.25f) {
    std::printf("wrong result: dot=%d softmax[0]=%f\n", dot, static_cast<double>(row[0]));
    return 1;
  }
  return 0;
}
