// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/io/safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "dynasparse/core/dtype.hpp"

namespace {

namespace ds = dynasparse;
namespace io = dynasparse::io;
using Bytes = std::vector<std::uint8_t>;

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

void append_u64(Bytes& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

/// A file with the given header (padded with spaces to a multiple of 8 when `pad`) and
/// `data` as the data section.
Bytes make_file(std::string header, const Bytes& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  Bytes out;
  append_u64(out, header.size());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// A file with the given header and `n` patterned data bytes.
Bytes make_file(const std::string& header, std::size_t n) {
  Bytes data(n);
  for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 1);
  return make_file(header, data);
}

std::string safetensors_temp_path(const std::string& name) {
  return ::testing::TempDir() + "dynasparse_io_safetensors_" + name;
}

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

/// The message of the FormatError that parsing `bytes` raises ("" and a test failure if none).
std::string parse_error(const Bytes& bytes, const io::SafetensorsLimits& limits = {}) {
  try {
    io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "t.safetensors", limits);
  } catch (const ds::FormatError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no FormatError";
  return {};
}

/// The bytes `safetensors.torch.save_file({"a": torch.zeros(2, 2)}, path)` writes: header
/// length 64, the header JSON padded with spaces to 64 bytes, 16 zero bytes.
Bytes pytorch_zeros_2x2() {
  const std::string json = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  Bytes out;
  append_u64(out, 64);
  for (char c : json) out.push_back(static_cast<std::uint8_t>(c));
  out.resize(8 + 64, ' ');
  out.resize(8 + 64 + 16, 0);
  return out;
}

// ---------------------------------------------------------------------------------------
// DType and half-precision conversion

TEST(DType, NamesSizesAndParsingAgree) {
  const std::size_t sizes[] = {4, 2, 2, 8, 1, 1, 2, 4, 8, 1};
  const char* names[] = {"F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "I64", "BOOL"};
  std::size_t i = 0;
  for (ds::DType t : ds::all_dtypes) {
    EXPECT_EQ(ds::size_of(t), sizes[i]);
    EXPECT_EQ(ds::dtype_name(t), names[i]);
    EXPECT_EQ(ds::parse_dtype(names[i]), t);
    ++i;
  }
  EXPECT_EQ(i, 10u);
  for (const char* bad : {"", "f32", "F8_E4M3", "U16", "float32", "F32 "}) {
    EXPECT_FALSE(ds::parse_dtype(bad).has_value()) << bad;
  }
  static_assert(ds::dtype_of<float> == ds::DType::F32 &&
                ds::dtype_of<const double> == ds::DType::F64);
  static_assert(ds::dtype_of<std::int8_t> == ds::DType::I8 &&
                ds::dtype_of<bool> == ds::DType::BOOL);
  static_assert(ds::has_dtype_v<std::int64_t> && !ds::has_dtype_v<std::uint16_t> &&
                !ds::has_dtype_v<char>);
}

TEST(HalfFloat, F16KnownBitPatterns) {
  EXPECT_EQ(ds::f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(ds::f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(ds::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(ds::f16_to_f32(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(ds::f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(ds::f16_to_f32(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(ds::f16_to_f32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(bits_of(ds::f16_to_f32(0x0000)), 0x00000000u);
  EXPECT_EQ(bits_of(ds::f16_to_f32(0x8000)), 0x80000000u);  // -0 keeps its sign
  EXPECT_EQ(ds::f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(ds::f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(ds::f16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(ds::f16_to_f32(0x7C01)));          // signalling NaN stays NaN, not inf
  EXPECT_EQ(bits_of(ds::f16_to_f32(0x7E01)), 0x7FC02000u);  // payload kept
  EXPECT_EQ(bits_of(ds::f16_to_f32(0xFE00)), 0xFFC00000u);
}

TEST(HalfFloat, F16MatchesIndependentFormulaForEveryPattern) {
  for (std::uint32_t h = 0; h <= 0xFFFF; ++h) {
    const bool negative = (h & 0x8000) != 0;
    const int exponent = static_cast<int>((h >> 10) & 0x1F);
    const int mantissa = static_cast<int>(h & 0x3FF);
    const float got = ds::f16_to_f32(static_cast<std::uint16_t>(h));
    if (exponent == 31 && mantissa != 0) {
      EXPECT_TRUE(std::isnan(got)) << h;
      continue;
    }
    float magnitude;
    if (exponent == 31) {
      magnitude = std::numeric_limits<float>::infinity();
    } else if (exponent == 0) {
      magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    } else {
      magnitude = std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
    }
    const float want = negative ? -magnitude : magnitude;
    ASSERT_EQ(bits_of(got), bits_of(want)) << "f16 bits " << h;
  }
}

TEST(HalfFloat, Bf16KnownBitPatterns) {
  EXPECT_EQ(ds::bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(ds::bf16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(ds::bf16_to_f32(0x477F), 65280.0f);
  EXPECT_EQ(ds::bf16_to_f32(0x0080), std::ldexp(1.0f, -126));  // smallest normal
  EXPECT_EQ(ds::bf16_to_f32(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
  EXPECT_EQ(bits_of(ds::bf16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(ds::bf16_to_f32(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(ds::bf16_to_f32(0xFF80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(ds::bf16_to_f32(0x7FC0)));
  EXPECT_EQ(bits_of(ds::bf16_to_f32(0x7F81)), 0x7F810000u);
}

// ---------------------------------------------------------------------------------------
// Reading and writing valid files

TEST(SafetensorsWriter, MatchesPyTorchSaveFileBytes) {
  const float zeros[4] = {};
  io::SafetensorsWriter w;
  w.add("a", {2, 2}, zeros);
  EXPECT_EQ(w.to_bytes(), pytorch_zeros_2x2());
}

TEST(SafetensorsWriter, MatchesReferenceBytesForEmptyFiles) {
  // The reference implementation's own expected outputs (safetensors tensor.rs test_empty).
  const Bytes empty = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
  EXPECT_EQ(io::SafetensorsWriter().to_bytes(), empty);
  io::SafetensorsWriter w;
  w.set_metadata("framework", "pt");
  const std::string header = R"({"__metadata__":{"framework":"pt"}})";
  EXPECT_EQ(w.to_bytes(), make_file(header, Bytes{}));
  EXPECT_EQ(w.to_bytes().size(), 8u + 40u);
}

TEST(SafetensorsFile, ReadsPyTorchSaveFileBytes) {
  const std::string path = safetensors_temp_path("pytorch.safetensors");
  write_file(path, pytorch_zeros_2x2());
  const io::SafetensorsFile f(path);
  EXPECT_EQ(f.name(), path);
  EXPECT_EQ(f.names(), std::vector<std::string>{"a"});
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.data_offset(), 72u);
  const io::TensorInfo& a = f.info("a");
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dtype, ds::DType::F32);
  EXPECT_EQ(a.shape, (std::vector<std::size_t>{2, 2}));
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.bytes, 16u);
  EXPECT_EQ(a.elements(), 4u);
  const io::TensorData<float> t = f.load<float>("a");
  ASSERT_EQ(t.rows(), 2u);
  ASSERT_EQ(t.cols(), 2u);
  for (std::size_t r = 0; r < 2; ++r) {
    for (std::size_t c = 0; c < 2; ++c) EXPECT_EQ(t.view()(r, c), 0.0f);
  }
}

/// One tensor of every dtype with patterned contents (0/1 for BOOL).
io::SafetensorsWriter every_dtype_writer(std::vector<Bytes>& contents) {
  io::SafetensorsWriter w;
  const std::vector<std::size_t> shapes[] = {{2, 3}, {5},    {},     {1, 4}, {3, 1},
                                             {7},    {2, 2}, {0, 3}, {3},    {4, 1}};
  std::size_t i = 0;
  for (ds::DType t : ds::all_dtypes) {
    std::size_t n = ds::size_of(t);
    for (std::size_t d : shapes[i]) n *= d;
    Bytes b(n);
    for (std::size_t k = 0; k < n; ++k) {
      b[k] = t == ds::DType::BOOL ? static_cast<std::uint8_t>(k % 2)
                                  : static_cast<std::uint8_t>(31 * k + i + 1);
    }
    w.add("t." + std::string(ds::dtype_name(t)), t, shapes[i], b.data(), b.size());
    contents.push_back(b);
    ++i;
  }
  w.set_metadata("format", "pt");
  w.set_metadata("config", R"({"hidden": 64, "heads": 8})");
  return w;
}

void expect_every_dtype(const io::SafetensorsFile& f, const std::vector<Bytes>& contents) {
  ASSERT_EQ(f.size(), 10u);
  std::vector<std::string> sorted = f.names();
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(f.names(), sorted);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("config"), R"({"hidden": 64, "heads": 8})");
  EXPECT_EQ(f.data_offset() % 8, 0u);
  std::size_t i = 0;
  for (ds::DType t : ds::all_dtypes) {
    const std::string name = "t." + std::string(ds::dtype_name(t));
    ASSERT_TRUE(f.contains(name)) << name;
    const io::TensorInfo& info = f.info(name);
    EXPECT_EQ(info.dtype, t);
    EXPECT_EQ(info.bytes, contents[i].size());
    EXPECT_EQ(info.offset % ds::size_of(t), 0u) << name;
    const io::ByteSpan b = f.bytes(name);
    ASSERT_EQ(b.size, contents[i].size());
    EXPECT_TRUE(b.size == 0 || std::memcmp(b.data, contents[i].data(), b.size) == 0) << name;
    ++i;
  }
  EXPECT_FALSE(f.contains("t.U16"));
}

TEST(SafetensorsFile, RoundTripsEveryDTypeInMemoryAndOnDisk) {
  std::vector<Bytes> contents;
  const io::SafetensorsWriter w = every_dtype_writer(contents);
  const Bytes bytes = w.to_bytes();
  expect_every_dtype(io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem"), contents);

  const std::string path = safetensors_temp_path("every_dtype.safetensors");
  w.write(path);
  const io::SafetensorsFile mapped(path);
  EXPECT_TRUE(mapped.mapped());
  expect_every_dtype(mapped, contents);
  ASSERT_EQ(mapped.file_bytes().size, bytes.size());
  EXPECT_EQ(std::memcmp(mapped.file_bytes().data, bytes.data(), bytes.size()), 0);

  const io::SafetensorsFile read(path, {}, io::FileAccess::Read);
  EXPECT_FALSE(read.mapped());
  expect_every_dtype(read, contents);
}

TEST(SafetensorsFile, TypedLoadsReturnTheStoredValues) {
  const float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 1e30f};
  const double f64[2] = {1e-300, -7.0};
  const std::int8_t i8[3] = {-128, 0, 127};
  const std::uint8_t u8[2] = {0, 255};
  const std::int16_t i16[2] = {-32768, 12345};
  const std::int32_t i32[2] = {std::numeric_limits<std::int32_t>::min(), 42};
  const std::int64_t i64[2] = {std::numeric_limits<std::int64_t>::max(), -1};
  const bool b[3] = {true, false, true};
  io::SafetensorsWriter w;
  w.add("f32", {2, 3}, f32).add("f64", {2}, f64).add("i8", {3}, i8).add("u8", {1, 2}, u8);
  w.add("i16", {2}, i16).add("i32", {2, 1}, i32).add("i64", {}, i64).add("b", {3}, b);
  w.add("i64x2", {2}, i64);
  const Bytes bytes = w.to_bytes();
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");

  const auto m = f.load<float>("f32");
  ASSERT_EQ(m.rows(), 2u);
  ASSERT_EQ(m.cols(), 3u);
  EXPECT_EQ(m.view()(1, 2), 1e30f);
  EXPECT_EQ(m.view()(0, 1), -2.0f);
  EXPECT_EQ(f.load<double>("f64").view()(0, 0), 1e-300);
  EXPECT_EQ(f.load<std::int8_t>("i8").view()(0, 0), -128);
  EXPECT_EQ(f.load<std::uint8_t>("u8").view()(0, 1), 255);
  EXPECT_EQ(f.load<std::int16_t>("i16").view()(0, 0), -32768);
  const auto v32 = f.load<std::int32_t>("i32");
  EXPECT_EQ(v32.rows(), 2u);
  EXPECT_EQ(v32.cols(), 1u);
  EXPECT_EQ(v32.view()(0, 0), std::numeric_limits<std::int32_t>::min());
  const auto scalar = f.load<std::int64_t>("i64");  // shape [] -> 1 x 1
  EXPECT_EQ(scalar.rows(), 1u);
  EXPECT_EQ(scalar.cols(), 1u);
  EXPECT_EQ(scalar.view()(0, 0), std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(f.load<std::int64_t>("i64x2").view()(0, 1), -1);
  const auto vb = f.load<bool>("b");
  EXPECT_TRUE(vb.view()(0, 0));
  EXPECT_FALSE(vb.view()(0, 1));

  try {
    f.load<std::int32_t>("f32");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.io: tensor dtype differs from the requested type; expected I32, "
                 "got F32 [mem: f32]");
  }
}

TEST(SafetensorsFile, LoadIsZeroCopyIntoTheMappingForAlignedF32) {
  std::vector<float> w(12);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f;
  const std::uint8_t odd[3] = {1, 2, 3};
  io::SafetensorsWriter writer;
  writer.add("w", {3, 4}, w.data()).add("row", {4}, w.data()).add("odd", {3}, odd);
  const std::string path = safetensors_temp_path("zero_copy.safetensors");
  writer.write(path);

  const io::SafetensorsFile f(path);
  ASSERT_TRUE(f.mapped());
  const io::ByteSpan file = f.file_bytes();
  for (const char* name : {"w", "row"}) {
    const io::TensorData<float> t = f.load<float>(name);
    EXPECT_TRUE(t.borrowed()) << name;
    const auto* p = reinterpret_cast<const std::uint8_t*>(t.data());
    EXPECT_GE(p, file.data);
    EXPECT_LE(p + t.size() * sizeof(float), file.data + file.size);
    EXPECT_EQ(p, f.bytes(name).data);
  }
  const io::TensorData<float> row = f.load<float>("row");
  EXPECT_EQ(row.rows(), 1u);
  EXPECT_EQ(row.cols(), 4u);
  EXPECT_EQ(f.load<float>("w").view()(2, 3), 5.5f);
}

TEST(SafetensorsFile, UnalignedTensorIsReadThroughACopy) {
  // "b" starts 3 bytes into the (8-aligned) data section: not 4-byte aligned.
  const std::string header = R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  Bytes data = {9, 8, 7};
  for (float v : {1.5f, -2.25f}) {
    const std::uint32_t u = bits_of(v);
    for (int i = 0; i < 4; ++i) data.push_back(static_cast<std::uint8_t>(u >> (8 * i)));
  }
  const Bytes bytes = make_file(header, data);
  const std::string path = safetensors_temp_path("unaligned.safetensors");
  write_file(path, bytes);
  const auto check = [](const io::SafetensorsFile& f) {
    EXPECT_NE(reinterpret_cast<std::uintptr_t>(f.bytes("b").data) % alignof(float), 0u);
    const io::TensorData<float> b = f.load<float>("b");
    EXPECT_FALSE(b.borrowed());
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % alignof(float), 0u);
    ASSERT_EQ(b.cols(), 2u);
    EXPECT_EQ(b.view()(0, 0), 1.5f);
    EXPECT_EQ(b.view()(0, 1), -2.25f);
    const ds::AlignedBuffer<float> conv = f.to_f32("b");
    ASSERT_EQ(conv.size(), 2u);
    EXPECT_EQ(conv[1], -2.25f);
    EXPECT_EQ(f.load<std::uint8_t>("a").view()(0, 2), 7);
  };
  check(io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem"));
  check(io::SafetensorsFile(path));
}

TEST(SafetensorsFile, ToF32ConvertsHalfTypesBitExactly) {
  const std::uint16_t f16[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x7E00};
  const std::uint16_t bf16[] = {0x3F80, 0xC000, 0x7F80, 0x0001};
  const std::int8_t i8[] = {1};
  io::SafetensorsWriter w;
  w.add("h", ds::DType::F16, {2, 3}, f16, sizeof f16);
  w.add("b", ds::DType::BF16, {4}, bf16, sizeof bf16);
  w.add("i", ds::DType::I8, {1}, i8, 1);
  const Bytes bytes = w.to_bytes();
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  const ds::AlignedBuffer<float> h = f.to_f32("h");
  ASSERT_EQ(h.size(), 6u);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[4], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(h[5]));
  const ds::AlignedBuffer<float> b = f.to_f32("b");
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.0f);
  EXPECT_EQ(b[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(bits_of(b[3]), 0x00010000u);
  // load<float> widens half-precision tensors the same way, keeping the shape.
  const io::TensorData<float> hl = f.load<float>("h");
  ASSERT_EQ(hl.rows(), 2u);
  ASSERT_EQ(hl.cols(), 3u);
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(hl.data()[i], h[i]) << i;
  EXPECT_TRUE(std::isnan(hl.data()[5]));
  EXPECT_EQ(bits_of(f.load<float>("b").data()[3]), 0x00010000u);
  EXPECT_THROW(f.load<double>("h"), ds::FormatError);
  try {
    f.to_f32("i");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.io: tensor dtype not convertible to F32; expected F32, F16 or BF16, "
                 "got I8 [mem: i]");
  }
}

TEST(SafetensorsFile, LoadRejectsRankAboveTwoAndNonBooleanBytes) {
  const float x[8] = {};
  const std::uint8_t flags[3] = {0, 2, 1};
  io::SafetensorsWriter w;
  w.add("cube", {2, 2, 2}, x);
  w.add("flags", ds::DType::BOOL, {3}, flags, 3);
  const Bytes bytes = w.to_bytes();
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  EXPECT_THROW(f.load<float>("cube"), ds::ShapeError);
  EXPECT_EQ(f.to_f32("cube").size(), 8u);  // any rank converts
  try {
    f.load<bool>("flags");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("got 2 at element 1 [mem: flags]"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(f.load<std::uint8_t>("flags"), ds::FormatError);  // BOOL is not U8
}

TEST(SafetensorsFile, MovingKeepsTensorsAndViewsValid) {
  static_assert(!std::is_copy_constructible_v<io::SafetensorsFile>);
  static_assert(std::is_nothrow_move_constructible_v<io::SafetensorsFile>);
  static_assert(std::is_nothrow_move_assignable_v<io::SafetensorsFile>);
  static_assert(!std::is_copy_constructible_v<io::TensorData<float>>);
  const float v[3] = {1.0f, 2.0f, 3.0f};
  io::SafetensorsWriter w;
  w.add("v", {3}, v);
  const std::string path = safetensors_temp_path("move.safetensors");
  w.write(path);
  io::SafetensorsFile a(path);
  const io::TensorData<float> t = a.load<float>("v");
  io::SafetensorsFile b(std::move(a));
  io::SafetensorsFile c;
  c = std::move(b);
  EXPECT_EQ(c.names(), std::vector<std::string>{"v"});
  EXPECT_EQ(t.view()(0, 2), 3.0f);
  EXPECT_EQ(c.load<float>("v").data(), t.data());
}

TEST(SafetensorsFile, ToleratesWhitespaceGapsAndTrailingBytes) {
  // Leading/trailing whitespace in the header, a gap between tensors, bytes after the last
  // one, and zero-sized tensors anywhere: accepted, since nothing reads those bytes.
  const std::string header =
      "  \n{\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]},"
      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[1,1]},"
      "\"b\":{\"shape\":[1],\"data_offsets\":[4,5],\"dtype\":\"U8\"}}\t ";
  const Bytes bytes = make_file(header, 9);
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "e"}));
  EXPECT_EQ(f.info("b").offset, 4u);
  EXPECT_EQ(f.info("e").bytes, 0u);
  EXPECT_EQ(f.load<float>("e").rows(), 0u);
}

TEST(SafetensorsWriter, LaysTensorsOutBackToBackLargestElementFirst) {
  const std::uint8_t buf[64] = {};
  io::SafetensorsWriter w;
  w.add("a", ds::DType::U8, {3}, buf, 3);
  w.add("b", ds::DType::F32, {2}, buf, 8);
  w.add("c", ds::DType::F64, {1}, buf, 8);
  w.add("d", ds::DType::I16, {1}, buf, 2);
  w.add("e", ds::DType::BOOL, {1}, buf, 1);
  w.add("f", ds::DType::I64, {1}, buf, 8);
  w.add("g", ds::DType::F32, {1}, buf, 4);
  EXPECT_EQ(w.size(), 7u);
  const Bytes bytes = w.to_bytes();
  const auto file = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  const std::pair<const char*, std::size_t> want[] = {{"f", 0},  {"c", 8},  {"b", 16}, {"g", 24},
                                                      {"d", 28}, {"a", 30}, {"e", 33}};
  for (const auto& [name, offset] : want) {
    EXPECT_EQ(file.info(name).offset, offset) << name;
    EXPECT_EQ(offset % ds::size_of(file.info(name).dtype), 0u);
  }
  EXPECT_EQ(file.data_offset() % 8, 0u);
  EXPECT_EQ(bytes.size(), file.data_offset() + 34);  // no gaps, nothing trailing
  // The header lists tensors in the same order.
  const std::string header(bytes.begin() + 8,
                           bytes.begin() + static_cast<std::ptrdiff_t>(file.data_offset()));
  EXPECT_LT(header.find("\"f\""), header.find("\"c\""));
  EXPECT_LT(header.find("\"c\""), header.find("\"b\""));
}

TEST(SafetensorsWriter, CopiesOrBorrowsAsAsked) {
  std::vector<float> copied = {1.0f, 2.0f};
  std::vector<float> borrowed = {3.0f, 4.0f};
  io::SafetensorsWriter w;
  w.add("c", ds::DType::F32, {2}, copied.data(), 8);
  w.add_borrowed("r", ds::DType::F32, {2}, borrowed.data(), 8);
  copied[0] = -1.0f;
  borrowed[0] = -3.0f;
  const Bytes bytes = w.to_bytes();
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(f.load<float>("c").view()(0, 0), 1.0f);
  EXPECT_EQ(f.load<float>("r").view()(0, 0), -3.0f);
}

TEST(SafetensorsWriter, PacksStridedViews) {
  float m[12];
  for (int i = 0; i < 12; ++i) m[i] = static_cast<float>(i);
  const ds::TensorView<const float> full(m, 3, 4);
  io::SafetensorsWriter w;
  w.add("cols", full.col_range(1, 2));
  const Bytes bytes = w.to_bytes();
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(f.info("cols").shape, (std::vector<std::size_t>{3, 2}));
  const auto t = f.load<float>("cols");
  EXPECT_EQ(t.view()(0, 0), 1.0f);
  EXPECT_EQ(t.view()(2, 1), 10.0f);
}

TEST(SafetensorsWriter, EscapesNamesAndMetadata) {
  const std::string odd = "we\"ird\\name\n\x01 \xcf\x80";
  const float v[1] = {7.0f};
  io::SafetensorsWriter w;
  w.add(odd, {1}, v);
  w.set_metadata("note", "pi \xe2\x89\x88 3.14\t\"quoted\"");
  const Bytes bytes = w.to_bytes();
  const std::string text(bytes.begin(), bytes.end());
  EXPECT_NE(text.find(R"("we\"ird\\name\n\u0001 )"), std::string::npos);
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(f.names(), std::vector<std::string>{odd});
  EXPECT_EQ(f.load<float>(odd).view()(0, 0), 7.0f);
  EXPECT_EQ(f.metadata().at("note"), "pi \xe2\x89\x88 3.14\t\"quoted\"");
}

TEST(SafetensorsWriter, RejectsInvalidTensors) {
  const float v[4] = {};
  io::SafetensorsWriter w;
  w.add("w", {4}, v);
  EXPECT_THROW(w.add("w", {4}, v), ds::ConfigError);
  EXPECT_THROW(w.add("__metadata__", {4}, v), ds::ConfigError);
  EXPECT_THROW(w.add("bad\xff", {4}, v), ds::ConfigError);
  EXPECT_THROW(w.add("null", ds::DType::F32, {4}, nullptr, 16), ds::ConfigError);
  EXPECT_THROW(w.add("huge", ds::DType::F32, {std::size_t{1} << 40, std::size_t{1} << 40}, v, 16),
               ds::ShapeError);
  EXPECT_THROW(w.set_metadata("k", "\xc0\x80"), ds::ConfigError);      // overlong NUL
  EXPECT_THROW(w.set_metadata("\xed\xa0\x80", "v"), ds::ConfigError);  // surrogate
  try {
    w.add("x", ds::DType::F32, {2, 2}, v, 12);
    FAIL() << "no throw";
  } catch (const ds::ShapeError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.io: tensor bytes do not match shape; expected 16, got 12 "
                 "[SafetensorsWriter: x]");
  }
  EXPECT_EQ(w.size(), 1u);
}

TEST(SafetensorsWriter, UnwritablePathIsAFormatError) {
  io::SafetensorsWriter w;
  try {
    w.write(::testing::TempDir() + "no-such-dir/x.safetensors");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open file for writing"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------
// Hostile input: every malformed file is a FormatError naming the file, never a crash.

TEST(SafetensorsHostile, EveryTruncationIsAFormatError) {
  const float v[6] = {1, 2, 3, 4, 5, 6};
  io::SafetensorsWriter w;
  w.add("x", {2, 3}, v).add("y", {1}, v);
  w.set_metadata("k", "v");
  const Bytes full = w.to_bytes();
  for (std::size_t n = 0; n < full.size(); ++n) {
    // An exactly sized copy, so the sanitizers see any read past the end.
    const Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(io::SafetensorsFile::from_bytes(prefix.data(), prefix.size(), "cut"),
                 ds::FormatError)
        << "prefix of " << n << " bytes";
  }
  EXPECT_NO_THROW(io::SafetensorsFile::from_bytes(full.data(), full.size(), "whole"));
}

TEST(SafetensorsHostile, ShortFilesAndBadHeaderLengths) {
  EXPECT_EQ(parse_error(Bytes{1, 0, 0, 0, 0}),
            "dynasparse.io: file shorter than the header length field; expected at least 8 "
            "bytes, got 5 bytes [t.safetensors]");
  Bytes beyond = make_file("{}", 8);
  beyond[0] = 0xE8;  // 1000
  beyond[1] = 0x03;
  EXPECT_EQ(parse_error(beyond),
            "dynasparse.io: header length beyond end of file; expected at most 16, got 1000 "
            "[t.safetensors]");
  Bytes max = make_file("{}", 0);
  for (int i = 0; i < 8; ++i) max[static_cast<std::size_t>(i)] = 0xFF;  // 2^64 - 1
  EXPECT_NE(parse_error(max).find("header length beyond end of file"), std::string::npos);

  const Bytes ok = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  io::SafetensorsLimits small;
  small.max_header_bytes = 16;
  EXPECT_EQ(parse_error(ok, small),
            "dynasparse.io: header length above limit; expected at most 16, got 56 "
            "[t.safetensors]");
}

TEST(SafetensorsHostile, InvalidJsonAndNonObjects) {
  for (const std::string& header :
       {std::string(R"({"a":)"), std::string(R"({} x)"), std::string(""),
        std::string("{\"a\xff\":{}}"), std::string(R"({'a':{}})")}) {
    const std::string msg = parse_error(make_file(header, Bytes{}, /*pad=*/false));
    EXPECT_EQ(msg.rfind("dynasparse.io: header is not valid JSON; expected a JSON object, got a "
                        "syntax error near header byte ",
                        0),
              0u)
        << msg;
  }
  // The JSON lexer would stop at a NUL as if the input ended; the reader does not.
  EXPECT_EQ(parse_error(make_file(std::string("{}\0{\"a\":1}", 10), Bytes{}, /*pad=*/false)),
            "dynasparse.io: header is not valid JSON; expected a JSON object, got a NUL byte at "
            "header byte 2 [t.safetensors]");
  EXPECT_EQ(parse_error(make_file("[1,2]", 0)),
            "dynasparse.io: header is not a JSON object; expected an object, got an array "
            "[t.safetensors]");
  EXPECT_NE(parse_error(make_file(R"("str")", 0)).find("got \"str\""), std::string::npos);
  EXPECT_NE(parse_error(make_file("42", 0)).find("not a JSON object"), std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"a":[1,2]})", 0))
                .find("tensor entry is not an object; expected an object, got an array "
                      "[t.safetensors: a]"),
            std::string::npos);
}

TEST(SafetensorsHostile, UnknownDTypes) {
  for (const char* dtype : {"F8_E4M3", "U16", "float32", "f32", ""}) {
    const std::string h =
        std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[1],"data_offsets":[0,1]}})";
    EXPECT_NE(parse_error(make_file(h, 1))
                  .find("unknown dtype; expected one of F32, F16, BF16, "
                        "F64, I8, U8, I16, I32, I64, BOOL, got \""),
              std::string::npos)
        << dtype;
  }
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4))
                .find("dtype is not a string; expected a string, got 4 [t.safetensors: a]"),
            std::string::npos);
}

TEST(SafetensorsHostile, ShapeAndBytesMustAgree) {
  const Bytes bytes =
      make_file(R"({"layers.0.w":{"dtype":"F32","shape":[3,4],"data_offsets":[0,40]}})", 40);
  try {
    io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "model.safetensors");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.io: tensor bytes do not match shape; expected 48, got 40 "
                 "[model.safetensors: layers.0.w]");
  }
}

TEST(SafetensorsHostile, OverlappingRanges) {
  EXPECT_EQ(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                                  24)),
            "dynasparse.io: tensor data overlaps another tensor; expected offset >= 16 (end of "
            "\"a\"), got 8 [t.safetensors: b]");
  // Same range twice, and one range nested inside another.
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                  R"("b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
                                  4))
                .find("overlaps"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"z":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                                  R"("a":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
                                  8))
                .find("[t.safetensors: a]"),
            std::string::npos);
}

TEST(SafetensorsHostile, OffsetsOutsideTheDataSection) {
  EXPECT_EQ(
      parse_error(make_file(R"({"a":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}})", 16)),
      "dynasparse.io: tensor data beyond end of data section; expected end <= 16, got 20 "
      "[t.safetensors: a]");
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":"U8","shape":[15],)"
                                  R"("data_offsets":[18446744073709551600,18446744073709551615]}})",
                                  16))
                .find("beyond end of data section"),
            std::string::npos);
  EXPECT_EQ(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 16)),
            "dynasparse.io: data_offsets begin after end; expected begin <= 4, got 8 "
            "[t.safetensors: a]");
  for (const char* offsets : {"[0]", "[0,4,8]", "[]"}) {
    const std::string h =
        std::string(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)") + offsets + "}}";
    EXPECT_NE(parse_error(make_file(h, 16)).find("data_offsets does not hold two entries"),
              std::string::npos)
        << offsets;
  }
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", 16))
                .find("data_offsets entry is not a non-negative integer"),
            std::string::npos);
}

TEST(SafetensorsHostile, ShapeEntriesMustBeNonNegativeIntegers) {
  const std::pair<const char*, const char*> cases[] = {
      {"-1", "got -1 "},       {"2.5", "got 2.5 "},     {"1e3", "got 1e3 "},
      {"\"2\"", "got \"2\" "}, {"null", "got null "},   {"true", "got a boolean "},
      {"[2]", "got an array"}, {"{}", "got an object"}, {"18446744073709551616", "got 1844"}};
  for (const auto& [entry, got] : cases) {
    const std::string h =
        std::string(R"({"a":{"dtype":"U8","shape":[1,)") + entry + R"(],"data_offsets":[0,1]}})";
    const std::string msg = parse_error(make_file(h, 1));
    EXPECT_NE(msg.find("shape entry is not a non-negative integer; expected a non-negative "
                       "integer, "),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find(got), std::string::npos) << msg;
  }
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":"U8","shape":5,"data_offsets":[0,1]}})", 1))
                .find("shape is not an array"),
            std::string::npos);
}

TEST(SafetensorsHostile, ShapeProductsThatOverflowSizeT) {
  static_assert(sizeof(std::size_t) == 8, "the shapes below are chosen for a 64-bit size_t");
  EXPECT_EQ(parse_error(make_file(R"({"a":{"dtype":"F32",)"
                                  R"("shape":[1099511627776,1099511627776,1099511627776],)"
                                  R"("data_offsets":[0,0]}})",
                                  0)),
            "dynasparse.io: tensor size overflows size_t; expected at most "
            "18446744073709551615 bytes, got [1099511627776, 1099511627776, 1099511627776] x 4 "
            "bytes [t.safetensors: a]");
  // The element count fits; the byte count does not.
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":"F64","shape":[4611686018427387904],)"
                                  R"("data_offsets":[0,0]}})",
                                  0))
                .find("tensor size overflows size_t"),
            std::string::npos);
  // A zero anywhere makes the product zero, not an overflow.
  const Bytes zero = make_file(
      R"({"a":{"dtype":"F32","shape":[1099511627776,0,1099511627776],"data_offsets":[0,0]}})", 0);
  EXPECT_NO_THROW(io::SafetensorsFile::from_bytes(zero.data(), zero.size(), "zero"));
}

TEST(SafetensorsHostile, LimitsOnTensorsRankAndMetadata) {
  const std::string three = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                            R"("b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
                            R"("c":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})";
  io::SafetensorsLimits two;
  two.max_tensors = 2;
  EXPECT_EQ(parse_error(make_file(three, 3), two),
            "dynasparse.io: too many tensors in header; expected at most 2, got at least 3 "
            "[t.safetensors]");
  const Bytes ok = make_file(three, 3);
  EXPECT_NO_THROW(io::SafetensorsFile::from_bytes(ok.data(), ok.size(), "three"));
  // The total-elements bound counts every tensor before any is read.
  io::SafetensorsLimits elements;
  elements.max_total_elements = 2;
  const std::string total = parse_error(make_file(three, 3), elements);
  EXPECT_NE(total.find("tensor elements above limit; expected at most 2 in all tensors, got "), std::string::npos)
      << total;
  elements.max_total_elements = 3;
  EXPECT_NO_THROW(io::SafetensorsFile::from_bytes(ok.data(), ok.size(), "three", elements));

  EXPECT_NE(
      parse_error(
          make_file(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1))
          .find("tensor rank above limit; expected at most 8, got 9 [t.safetensors: a]"),
      std::string::npos);
  // A huge shape array is counted, not stored.
  std::string long_shape = R"({"a":{"dtype":"U8","shape":[1)";
  for (int i = 1; i < 1000000; ++i) long_shape += ",1";
  long_shape += R"(],"data_offsets":[0,1]}})";
  EXPECT_NE(parse_error(make_file(long_shape, 1)).find("got 1000000 "), std::string::npos);

  io::SafetensorsLimits meta;
  meta.max_metadata_entries = 1;
  EXPECT_NE(parse_error(make_file(R"({"__metadata__":{"a":"1","b":"2"}})", 0), meta)
                .find("too many metadata entries; expected at most 1, got at least 2"),
            std::string::npos);
}

TEST(SafetensorsHostile, MetadataMustMapStringsToStrings) {
  EXPECT_EQ(parse_error(make_file(R"({"__metadata__":{"format":"pt","k":1}})", 0)),
            "dynasparse.io: metadata value is not a string; expected a string, got 1 "
            "[t.safetensors: __metadata__.k]");
  EXPECT_NE(parse_error(make_file(R"({"__metadata__":{"k":{"x":"y"}}})", 0)).find("got an object"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"__metadata__":["k"]})", 0))
                .find("metadata is not an object; expected an object, got an array"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"__metadata__":{"k":"1","k":"2"}})", 0))
                .find("duplicate metadata key"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"__metadata__":{},"__metadata__":{}})", 0))
                .find("duplicate key in header"),
            std::string::npos);
}

TEST(SafetensorsHostile, EntriesHoldExactlyTheThreeKeysOnce) {
  EXPECT_EQ(
      parse_error(
          make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":0}})", 1)),
      "dynasparse.io: unknown key in tensor entry; expected dtype, shape or data_offsets, got "
      "\"extra\" [t.safetensors: a]");
  EXPECT_EQ(parse_error(make_file(R"({"a":{"dtype":"U8","data_offsets":[0,1]}})", 1)),
            "dynasparse.io: tensor entry lacks a key; expected \"shape\", got no such key "
            "[t.safetensors: a]");
  EXPECT_NE(
      parse_error(
          make_file(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1))
          .find("duplicate key in tensor entry"),
      std::string::npos);
  EXPECT_NE(parse_error(make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                                  R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                                  2))
                .find("duplicate tensor name in header; expected each name once, got \"a\" twice"),
            std::string::npos);
}

TEST(SafetensorsHostile, DeepNestingStopsAtOnce) {
  const std::string deep_entry = R"({"a":)" + std::string(1000000, '[');
  EXPECT_NE(parse_error(make_file(deep_entry, 0)).find("tensor entry is not an object"),
            std::string::npos);
  EXPECT_NE(parse_error(make_file(std::string(1000000, '['), 0)).find("not a JSON object"),
            std::string::npos);
  const std::string deep_shape = R"({"a":{"dtype":"U8","shape":)" + std::string(100000, '[');
  EXPECT_NE(parse_error(make_file(deep_shape, 0)).find("got an array"), std::string::npos);
}

TEST(SafetensorsHostile, UnknownTensorNameNamesFileAndTensor) {
  const float v[2] = {};
  io::SafetensorsWriter w;
  w.add("a", {2}, v);
  const Bytes bytes = w.to_bytes();
  const auto f = io::SafetensorsFile::from_bytes(bytes.data(), bytes.size(), "model.safetensors");
  try {
    f.info("missing");
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.io: tensor not in file; expected one of 1 names, got \"missing\" "
                 "[model.safetensors]");
  }
  EXPECT_FALSE(f.contains("missing"));
  EXPECT_THROW(f.bytes("missing"), ds::FormatError);
  EXPECT_THROW(f.load<float>("missing"), ds::FormatError);
  EXPECT_THROW(f.to_f32("missing"), ds::FormatError);
}

TEST(SafetensorsHostile, MissingFileAndDirectory) {
  const std::string path = ::testing::TempDir() + "dynasparse-no-such-file.safetensors";
  try {
    const io::SafetensorsFile f(path);
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_EQ(std::string(e.what()),
              "dynasparse.io: cannot open file; expected a readable file, "
              "got " +
                  std::generic_category().message(ENOENT) + " [" + path + "]");
  }
  EXPECT_THROW(const io::SafetensorsFile dir(::testing::TempDir()), ds::FormatError);
  const std::string empty = safetensors_temp_path("empty.safetensors");
  write_file(empty, Bytes{});
  EXPECT_THROW(const io::SafetensorsFile f(empty), ds::FormatError);
}

TEST(SafetensorsHostile, MutatedFilesNeverCrash) {
  const float v[6] = {1, 2, 3, 4, 5, 6};
  const std::uint16_t h[3] = {0x3C00, 0x7C00, 0x0001};
  io::SafetensorsWriter w;
  w.add("x", {2, 3}, v).add("y", {1}, v);
  w.add("h", ds::DType::F16, {3}, h, sizeof h);
  w.set_metadata("k", "v");
  const Bytes base = w.to_bytes();
  const std::size_t data_start =
      io::SafetensorsFile::from_bytes(base.data(), base.size(), "base").data_offset();
  // Header positions holding digits: rewriting them keeps the JSON valid more often.
  std::vector<std::size_t> digits;
  for (std::size_t i = 8; i < data_start; ++i) {
    if (base[i] >= '0' && base[i] <= '9') digits.push_back(i);
  }
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    Bytes b = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      if (rng() % 2 == 0) {
        b[digits[rng() % digits.size()]] = static_cast<std::uint8_t>('0' + rng() % 10);
      } else {
        b[rng() % b.size()] = static_cast<std::uint8_t>(rng());
      }
    }
    if (rng() % 8 == 0) b.resize(rng() % b.size());
    try {
      const auto f = io::SafetensorsFile::from_bytes(b.data(), b.size(), "fuzz");
      ++parsed;
      const io::ByteSpan all = f.file_bytes();
      for (const std::string& name : f.names()) {
        const io::ByteSpan t = f.bytes(name);
        ASSERT_GE(t.data, all.data);
        ASSERT_LE(t.data + t.size, all.data + all.size);
        const io::TensorInfo& info = f.info(name);
        if (info.dtype == ds::DType::F32 || info.dtype == ds::DType::F16) {
          EXPECT_EQ(f.to_f32(name).size(), info.elements());
        }
      }
    } catch (const ds::FormatError&) {
      // expected for most mutations
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
