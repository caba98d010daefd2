// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: any byte string handed to the safetensors reader either parses into a
// file whose every tensor can be read in bounds, or is rejected with a dynasparse::Error.
// Anything else (a crash, a sanitizer report, another exception type) is a finding.
#include <cstddef>
#include <cstdint>

#include "dynasparse/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace io = dynasparse::io;
  try {
    const io::SafetensorsFile f = io::SafetensorsFile::from_bytes(data, size, "fuzz.safetensors");
    volatile float sink = 0.0f;
    for (const std::string& name : f.names()) {
      const io::TensorInfo& t = f.info(name);
      const io::ByteSpan b = f.bytes(name);
      // Touch the first and last byte of each tensor: ASan flags any range outside the input.
      if (b.size > 0) sink = sink + static_cast<float>(b.data[0] ^ b.data[b.size - 1]);
      if (t.dtype == dynasparse::DType::F32 || t.dtype == dynasparse::DType::F16 ||
          t.dtype == dynasparse::DType::BF16) {
        const auto values = f.to_f32(name);
        if (!values.empty()) sink = sink + values[values.size() - 1];
      }
      if (t.dtype == dynasparse::DType::F32 && t.shape.size() <= 2) {
        const auto view = f.load<float>(name);
        if (view.size() > 0) sink = sink + view.data()[view.size() - 1];
      }
    }
    (void)sink;
  } catch (const dynasparse::Error&) {
    // Rejected with a typed error: the expected outcome for hostile input.
  }
  return 0;
}
