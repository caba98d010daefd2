// SPDX-License-Identifier: Apache-2.0
// The smallest program a user would write against dynasparse: it must compile, link and
// compute the right answer through every way of bringing the library in.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <dynasparse/dynasparse.hpp>

int main() {
  std::vector<std::int8_t> a(100, 3), b(100, -2);
  const std::int32_t dot = dynasparse::simd::dot_s8s8_s32(a.data(), b.data(), a.size());
  std::vector<float> row = {1.0f, 1.0f, 1.0f, 1.0f};
  dynasparse::simd::softmax_f32(row.data(), row.data(), row.size());
  std::printf("%s\n", dynasparse::build_info().c_str());
#if defined(DYNASPARSE_COMPILED)
  // Linked against dynasparse::compiled: Model::load comes from that library.
  try {
    (void)dynasparse::Model::load("no-such-model.safetensors");
    std::printf("loading a missing file did not throw\n");
    return 1;
  } catch (const dynasparse::FormatError& e) {
    if (std::string(e.what()).find("no-such-model.safetensors") == std::string::npos) {
      std::printf("error does not name the file: %s\n", e.what());
      return 1;
    }
  }
#endif
  if (dot != -600 || row[0] != 0.25f) {
    std::printf("wrong result: dot=%d softmax[0]=%f\n", dot, static_cast<double>(row[0]));
    return 1;
  }
  return 0;
}
