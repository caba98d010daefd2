// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: any byte string handed to the .npy reader either parses into an array
// whose data can be read in full, or is rejected with a dynasparse::Error.
#include <cstddef>
#include <cstdint>

#include "dynasparse/io/npy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const dynasparse::io::NpyArray a = dynasparse::io::read_npy_bytes(data, size, "fuzz.npy");
    volatile unsigned sink = 0;
    if (!a.data.empty()) sink = sink + a.data[0] + a.data[a.data.size() - 1];
    if (a.dtype == dynasparse::DType::F32 || a.dtype == dynasparse::DType::F16 ||
        a.dtype == dynasparse::DType::F64) {
      const auto values = a.to_f32();
      if (!values.empty()) sink = sink + static_cast<unsigned>(values.size());
    }
    (void)sink;
  } catch (const dynasparse::Error&) {
  }
  return 0;
}
