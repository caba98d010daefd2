// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: any byte string loaded as a model file is either a model that runs a
// short forward pass, or rejected with a dynasparse::Error. Sizes are capped by the
// config's own limits and by the file (weights must be present), so a mutated config cannot
// make the loader allocate more than the input implies.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "dynasparse/model/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto file = dynasparse::io::SafetensorsFile::from_bytes(data, size, "fuzz.safetensors");
    dynasparse::LoadOptions opt;
    opt.allow_extra_tensors = true;
    const dynasparse::Model m = dynasparse::Model::from_file(file, opt);
    const std::int32_t tokens[] = {0, 1, 2};
    const std::size_t n = m.config().max_seq_len < 3 ? m.config().max_seq_len : 3;
    std::vector<float> logits(n * m.vocab());
    dynasparse::Workspace ws;
    m.forward(tokens, n, dynasparse::MatrixView(logits.data(), n, m.vocab()), ws);
  } catch (const dynasparse::Error&) {
  }
  return 0;
}
