// SPDX-License-Identifier: Apache-2.0
// Writes the fuzzers' seed corpora: small valid safetensors and .npy files of every dtype,
// so mutations start from inputs that reach deep into the parsers.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "dynasparse/io/npy.hpp"
#include "dynasparse/io/safetensors.hpp"

namespace {

void write(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_corpus OUTDIR [TEST_DATA_DIR] (writes OUTDIR/{safetensors,npy,model,config})\n");
    return 2;
  }
  namespace io = dynasparse::io;
  const std::string out = argv[1];
  const std::vector<float> f = {1.0f, -2.0f, 0.5f, 3.25f, -0.0f, 7.0f};
  const std::vector<std::uint16_t> h = {0x3c00, 0xc000, 0x7bff, 0x0001};
  const std::vector<std::int8_t> q = {-127, 0, 5, 127};
  const std::vector<std::int64_t> l = {1, -1, 1LL << 40};
  {
    io::SafetensorsWriter w;
    w.add("a", dynasparse::DType::F32, {2, 3}, f.data(), f.size() * sizeof(float));
    write(out + "/safetensors/f32_2x3.safetensors", w.to_bytes());
  }
  {
    io::SafetensorsWriter w;
    w.add("layers.0.w", dynasparse::DType::F16, {4}, h.data(), h.size() * 2);
    w.add("layers.0.b", dynasparse::DType::BF16, {2, 2}, h.data(), h.size() * 2);
    w.add("q", dynasparse::DType::I8, {2, 2}, q.data(), q.size());
    w.add("ids", dynasparse::DType::I64, {3}, l.data(), l.size() * 8);
    w.set_metadata("config", "{\"hidden\": 4, \"layers\": 1}");
    w.set_metadata("format", "pt");
    write(out + "/safetensors/mixed.safetensors", w.to_bytes());
  }
  {
    io::SafetensorsWriter w;
    write(out + "/safetensors/empty.safetensors", w.to_bytes());
  }
  write(out + "/npy/f32_2x3.npy", io::npy_bytes(dynasparse::DType::F32, {2, 3}, f.data(), f.size() * 4));
  write(out + "/npy/i64_3.npy", io::npy_bytes(dynasparse::DType::I64, {3}, l.data(), l.size() * 8));
  write(out + "/npy/i8_2x2.npy", io::npy_bytes(dynasparse::DType::I8, {2, 2}, q.data(), q.size()));
  write(out + "/npy/f16_4.npy", io::npy_bytes(dynasparse::DType::F16, {4}, h.data(), h.size() * 2));
  // Model seeds: the tiny golden models, and their configs alone.
  for (const char* name : {"tiny_head_gate", "tiny_output_gate"}) {
    const std::string src = std::string(argc > 2 ? argv[2] : "tests/data") + "/model/" + name + ".safetensors";
    std::ifstream in(src, std::ios::binary);
    if (!in) continue;
    std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write(out + "/model/" + name + ".safetensors", bytes);
    const auto model = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), src);
    const std::string cfg = model.metadata().at("dynasparse.config");
    write(out + "/config/" + name + ".json", std::vector<std::uint8_t>(cfg.begin(), cfg.end()));
  }
  return 0;
}
