// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/io/npy.hpp"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace {

namespace ds = dynasparse;
namespace io = dynasparse::io;
using Bytes = std::vector<std::uint8_t>;

std::string npy_temp_path(const std::string& name) {
  return ::testing::TempDir() + "dynasparse_io_npy_" + name;
}

/// A version `major`.0 file with header dict `dict` (padded as numpy pads: spaces and a
/// newline up to a multiple of 64 bytes) and `data` after it.
Bytes make_npy(const std::string& dict, const Bytes& data, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  header.append(64 - (prefix + header.size() + 1) % 64, ' ');
  header += '\n';
  Bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(major), 0};
  for (std::size_t i = 0; i < prefix - 8; ++i) {
    out.push_back(static_cast<std::uint8_t>(header.size() >> (8 * i)));
  }
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

Bytes patterned(std::size_t n) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(i * 13 + 5);
  return b;
}

/// The message of the FormatError that reading `bytes` raises ("" and a failure if none).
std::string read_error(const Bytes& bytes, const io::NpyLimits& limits = {}) {
  try {
    io::read_npy_bytes(bytes.data(), bytes.size(), "x.npy", limits);
  } catch (const ds::FormatError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no FormatError";
  return {};
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(Npy, WritesWhatNumpySaveWrites) {
  // np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4)): version 1.0, header
  // length 118, the dict padded with spaces to 127 bytes of preamble, then '\n'.
  float values[12];
  for (int i = 0; i < 12; ++i) values[i] = static_cast<float>(i);
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
  Bytes want = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 118, 0};
  want.insert(want.end(), dict.begin(), dict.end());
  want.insert(want.end(), 127 - want.size(), ' ');
  want.push_back('\n');
  const auto* raw = reinterpret_cast<const std::uint8_t*>(values);
  want.insert(want.end(), raw, raw + sizeof values);
  EXPECT_EQ(io::npy_bytes(ds::DType::F32, {3, 4}, values, sizeof values), want);

  // 1-D and 0-d shapes are written as Python tuples: (5,) and ().
  const std::int64_t five[5] = {1, 2, 3, 4, 5};
  const Bytes one_d = io::npy_bytes(ds::DType::I64, {5}, five, sizeof five);
  EXPECT_TRUE(contains(std::string(one_d.begin(), one_d.begin() + 128),
                       "{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }"));
  EXPECT_EQ(one_d[127], '\n');
  const double pi = 3.14159;
  const Bytes zero_d = io::npy_bytes(ds::DType::F64, {}, &pi, sizeof pi);
  EXPECT_TRUE(contains(std::string(zero_d.begin(), zero_d.begin() + 128),
                       "{'descr': '<f8', 'fortran_order': False, 'shape': (), }"));
  EXPECT_EQ(zero_d.size(), 128u + 8u);
  const std::int8_t i8[2] = {-1, 1};
  const Bytes bytes_i8 = io::npy_bytes(ds::DType::I8, {2}, i8, 2);
  EXPECT_TRUE(contains(std::string(bytes_i8.begin(), bytes_i8.end()), "'descr': '|i1'"));
}

TEST(Npy, RoundTripsEveryDTypeThroughFiles) {
  const std::vector<std::size_t> shapes[] = {{}, {5}, {3, 4}, {2, 3, 4}, {0, 7}};
  for (ds::DType t : ds::all_dtypes) {
    if (t == ds::DType::BF16) continue;
    for (const auto& shape : shapes) {
      std::size_t n = ds::size_of(t);
      for (std::size_t d : shape) n *= d;
      Bytes data = patterned(n);
      if (t == ds::DType::BOOL) {
        for (auto& b : data) b &= 1;
      }
      const std::string path = npy_temp_path("roundtrip.npy");
      io::write_npy(path, t, shape, data.data(), data.size());
      const io::NpyArray a = io::read_npy(path);
      EXPECT_EQ(a.dtype, t);
      EXPECT_EQ(a.shape, shape);
      ASSERT_EQ(a.data.size(), n);
      EXPECT_TRUE(n == 0 || std::memcmp(a.data.data(), data.data(), n) == 0);
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.data.data()) % ds::buffer_alignment, 0u);
      // Writing the array back reproduces the file byte for byte.
      const Bytes again = io::npy_bytes(a.dtype, a.shape, a.data.data(), a.data.size());
      EXPECT_EQ(again, io::npy_bytes(t, shape, data.data(), data.size()));
    }
  }
  const std::uint16_t h[1] = {0x3F80};
  EXPECT_THROW(io::npy_bytes(ds::DType::BF16, {1}, h, 2), ds::UnsupportedError);
}

TEST(Npy, ReadsVersionTwoAndHeaderVariants) {
  const Bytes data = patterned(24);
  for (const std::string& dict :
       {std::string("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }"),
        std::string("{\"shape\": (2, 3), \"descr\": \"<i4\", \"fortran_order\": False}"),
        std::string("{ 'fortran_order' : False , 'shape' : ( 2 , 3 ) , 'descr' : '<i4' , }"),
        std::string("{'descr': '<i4', 'fortran_order': False, 'shape': (2L, 3L), }")}) {
    for (int major : {1, 2}) {
      const Bytes bytes = make_npy(dict, data, major);
      const io::NpyArray a = io::read_npy_bytes(bytes.data(), bytes.size(), "v.npy");
      EXPECT_EQ(a.dtype, ds::DType::I32) << dict;
      EXPECT_EQ(a.shape, (std::vector<std::size_t>{2, 3})) << dict;
      EXPECT_EQ(std::memcmp(a.data.data(), data.data(), 24), 0);
    }
  }
  // One-byte types accept any byte-order mark numpy might have written.
  for (const char* descr : {"|i1", "<i1", "|u1", "|b1"}) {
    const Bytes bytes =
        make_npy(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (2,), }",
                 Bytes{0, 1});
    EXPECT_NO_THROW(io::read_npy_bytes(bytes.data(), bytes.size(), "b.npy")) << descr;
  }
}

TEST(Npy, TypedAccessorsCheckTheDType) {
  float values[6] = {1, 2, 3, 4, 5, 6};
  const Bytes bytes = io::npy_bytes(ds::DType::F32, {2, 3}, values, sizeof values);
  io::NpyArray a = io::read_npy_bytes(bytes.data(), bytes.size(), "a.npy");
  EXPECT_EQ(a.elements(), 6u);
  EXPECT_EQ(a.data_as<float>()[4], 5.0f);
  const ds::TensorView<const float> v = std::as_const(a).view<float>();
  EXPECT_EQ(v.rows(), 2u);
  EXPECT_EQ(v.cols(), 3u);
  EXPECT_EQ(v(1, 2), 6.0f);
  a.view<float>()(0, 0) = -1.0f;
  EXPECT_EQ(a.data_as<float>()[0], -1.0f);
  EXPECT_EQ(a.to_f32()[5], 6.0f);
  try {
    a.data_as<std::int32_t>();
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_STREQ(e.what(),
                 "dynasparse.io: array dtype differs from the requested type; expected I32, got "
                 "F32 [NpyArray]");
  }
  a.shape = {1, 2, 3};
  EXPECT_THROW(a.view<float>(), ds::ShapeError);
  a.shape = {4, 2};  // inconsistent with the 6 elements held
  EXPECT_THROW(a.view<float>(), ds::ShapeError);
  a.shape = {std::size_t{1} << 62, 4};  // the product overflows; still a ShapeError
  EXPECT_THROW(a.view<float>(), ds::ShapeError);

  const std::uint16_t h[3] = {0x3C00, 0x0001, 0xFC00};
  const Bytes hb = io::npy_bytes(ds::DType::F16, {3}, h, sizeof h);
  const ds::AlignedBuffer<float> f = io::read_npy_bytes(hb.data(), hb.size(), "h.npy").to_f32();
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], std::ldexp(1.0f, -24));
  EXPECT_EQ(f[2], -std::numeric_limits<float>::infinity());
  const std::int32_t i[1] = {1};
  const Bytes ib = io::npy_bytes(ds::DType::I32, {1}, i, 4);
  EXPECT_THROW(io::read_npy_bytes(ib.data(), ib.size(), "i.npy").to_f32(), ds::FormatError);
}

TEST(Npy, WritesViewsAndArrays) {
  float m[12];
  for (int i = 0; i < 12; ++i) m[i] = static_cast<float>(i);
  const std::string path = npy_temp_path("view.npy");
  io::write_npy(path, ds::TensorView<const float>(m, 3, 4).col_range(2, 2));
  const io::NpyArray a = io::read_npy(path);
  EXPECT_EQ(a.shape, (std::vector<std::size_t>{3, 2}));
  EXPECT_EQ(a.view<float>()(1, 0), 6.0f);
  EXPECT_EQ(a.view<float>()(2, 1), 11.0f);
  const std::string copy = npy_temp_path("copy.npy");
  io::write_npy(copy, a);
  EXPECT_EQ(io::read_npy(copy).view<float>()(2, 1), 11.0f);
  EXPECT_THROW(io::write_npy(path, ds::DType::F32, {3}, m, 8), ds::ShapeError);
  EXPECT_THROW(io::write_npy(::testing::TempDir() + "no-such-dir/x.npy", a), ds::FormatError);
}

// ---------------------------------------------------------------------------------------
// Hostile input

TEST(NpyHostile, BadMagicAndVersions) {
  Bytes bytes = io::npy_bytes(ds::DType::U8, {1}, "x", 1);
  Bytes bad = bytes;
  bad[1] = 'n';
  EXPECT_EQ(read_error(bad),
            "dynasparse.io: not an npy file; expected magic \"\\x93NUMPY\", got "
            "\"\\x93nUMPY\" [x.npy]");
  const std::string text = "PK\x03\x04 a zip file";
  EXPECT_TRUE(contains(read_error(Bytes(text.begin(), text.end())), "not an npy file"));
  bad = bytes;
  bad[6] = 3;
  EXPECT_TRUE(contains(read_error(bad), "unsupported npy version; expected 1.0 or 2.0, got 3.0"));
  bad[6] = 1;
  bad[7] = 1;
  EXPECT_TRUE(contains(read_error(bad), "got 1.1"));
}

TEST(NpyHostile, EveryTruncationIsAFormatError) {
  const std::int32_t v[6] = {1, 2, 3, 4, 5, 6};
  for (int major : {1, 2}) {
    const Bytes full = major == 1 ? io::npy_bytes(ds::DType::I32, {2, 3}, v, sizeof v)
                                  : make_npy(
                                        "{'descr': '<i4', 'fortran_order': False, "
                                        "'shape': (2, 3), }",
                                        Bytes(reinterpret_cast<const std::uint8_t*>(v),
                                              reinterpret_cast<const std::uint8_t*>(v) + 24),
                                        2);
    for (std::size_t n = 0; n < full.size(); ++n) {
      const Bytes prefix(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
      EXPECT_THROW(io::read_npy_bytes(prefix.data(), prefix.size(), "cut.npy"), ds::FormatError)
          << "version " << major << ", prefix of " << n << " bytes";
    }
    EXPECT_NO_THROW(io::read_npy_bytes(full.data(), full.size(), "whole.npy"));
  }
}

TEST(NpyHostile, FortranOrderAndByteOrder) {
  EXPECT_EQ(read_error(
                make_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", patterned(8))),
            "dynasparse.io: Fortran-order npy arrays are not supported; expected fortran_order "
            "False, got True [x.npy]");
  EXPECT_EQ(read_error(make_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
                                patterned(8))),
            "dynasparse.io: big-endian npy data is not supported; expected '<' byte order, got "
            "\">f4\" [x.npy]");
  EXPECT_TRUE(
      contains(read_error(make_npy("{'descr': '=f4', 'fortran_order': False, 'shape': (2,), }",
                                   patterned(8))),
               "unsupported npy dtype"));
}

TEST(NpyHostile, UnsupportedDTypes) {
  for (const char* descr : {"<u4", "<c8", "|O", "<f16", "", "<U5", "|S3", "f4", "<M8[ns]"}) {
    const std::string msg = read_error(
        make_npy(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (1,), }",
                 patterned(4)));
    EXPECT_TRUE(contains(msg,
                         "unsupported npy dtype; expected one of <f2, <f4, <f8, |i1, |u1, "
                         "<i2, <i4, <i8, |b1, got \""))
        << msg;
  }
  // Structured dtypes are lists of fields: not a string.
  EXPECT_TRUE(contains(read_error(make_npy("{'descr': [('a', '<f4')], 'fortran_order': False, "
                                           "'shape': (1,), }",
                                           patterned(4))),
                       "malformed npy header; expected a quoted string, got \"[\""));
}

TEST(NpyHostile, DataMustMatchShape) {
  EXPECT_EQ(read_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
                                patterned(40))),
            "dynasparse.io: npy data size does not match shape; expected 48, got 40 [x.npy]");
  EXPECT_TRUE(
      contains(read_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }",
                                   patterned(52))),
               "expected 48, got 52"));
  static_assert(sizeof(std::size_t) == 8, "the shape below is chosen for a 64-bit size_t");
  EXPECT_EQ(read_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                "(1099511627776, 1099511627776, 1099511627776), }",
                                patterned(4))),
            "dynasparse.io: npy array size overflows size_t; expected at most "
            "18446744073709551615 bytes, got [1099511627776, 1099511627776, 1099511627776] x 4 "
            "bytes [x.npy]");
  EXPECT_TRUE(contains(read_error(make_npy("{'descr': '<i8', 'fortran_order': False, 'shape': "
                                           "(2305843009213693952,), }",
                                           patterned(8))),
                       "npy array size overflows size_t"));
  EXPECT_TRUE(contains(read_error(make_npy("{'descr': '<f4', 'fortran_order': False, 'shape': "
                                           "(99999999999999999999999,), }",
                                           patterned(4))),
                       "npy shape entry exceeds size_t; expected at most 18446744073709551615, "
                       "got 99999999999999999999999"));
  EXPECT_TRUE(contains(read_error(make_npy("{'descr': '|b1', 'fortran_order': False, "
                                           "'shape': (3,), }",
                                           Bytes{1, 0, 7})),
                       "bool array holds a byte other than 0 or 1; expected 0 or 1, got 7 at "
                       "element 2"));
}

TEST(NpyHostile, MalformedHeaders) {
  const std::pair<const char*, const char*> cases[] = {
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
       "npy shape entry is not a non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1), }",
       "npy shape is not a tuple; expected a tuple such as (1,), got (1)"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1.0,), }",
       "malformed npy header; expected ',' or ')'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [1], }",
       "malformed npy header; expected '('"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1, }",
       "unknown key in npy header; expected descr, fortran_order or shape, got \"extra\""},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
       "duplicate key in npy header"},
      {"{'descr': '<f4', 'shape': (1,), }",
       "npy header lacks a key; expected 'fortran_order', got no such key"},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
       "malformed npy header; expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x",
       "malformed npy header; expected the end of the header, got \"x\""},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)",
       "malformed npy header; expected ',' or '}', got the end of the header"},
      {"{'descr: '<f4'}", "malformed npy header; expected ':'"},
      {"{'descr': 'a\\'b', 'fortran_order': False, 'shape': (1,), }",
       "expected a plain string (no escapes or line breaks)"},
      {"['descr', '<f4']", "malformed npy header; expected '{', got \"[\" at header byte 0"},
      {"", "malformed npy header; expected '{', got the end of the header"},
  };
  for (const auto& [dict, want] : cases) {
    const std::string msg = read_error(make_npy(dict, patterned(4)));
    EXPECT_TRUE(contains(msg, want)) << dict << "\n" << msg;
    EXPECT_TRUE(contains(msg, "[x.npy]")) << msg;
  }
  io::NpyLimits two;
  two.max_rank = 2;
  EXPECT_TRUE(contains(read_error(make_npy("{'descr': '|u1', 'fortran_order': False, "
                                           "'shape': (1, 1, 1, 1), }",
                                           Bytes{7}),
                                  two),
                       "npy rank above limit; expected at most 2, got 4"));
}

TEST(NpyHostile, HeaderLengths) {
  Bytes bytes = io::npy_bytes(ds::DType::U8, {1}, "x", 1);
  bytes[8] = 0xFF;
  bytes[9] = 0xFF;
  EXPECT_EQ(read_error(bytes),
            "dynasparse.io: npy header length beyond end of file; expected at most 119, got "
            "65535 [x.npy]");
  const Bytes ok = io::npy_bytes(ds::DType::U8, {1}, "x", 1);
  io::NpyLimits small;
  small.max_header_bytes = 64;
  EXPECT_EQ(read_error(ok, small),
            "dynasparse.io: npy header length above limit; expected at most 64, got 118 [x.npy]");
  Bytes v2 = make_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", Bytes{1}, 2);
  v2[11] = 0x80;  // 2^31 + ...
  EXPECT_TRUE(contains(read_error(v2), "npy header length beyond end of file"));
}

TEST(NpyHostile, MissingFile) {
  const std::string path = ::testing::TempDir() + "dynasparse-no-such-file.npy";
  try {
    io::read_npy(path);
    FAIL() << "no throw";
  } catch (const ds::FormatError& e) {
    EXPECT_EQ(std::string(e.what()),
              "dynasparse.io: cannot open file; expected a readable file, "
              "got " +
                  std::generic_category().message(ENOENT) + " [" + path + "]");
  }
}

TEST(NpyHostile, MutatedFilesNeverCrash) {
  const float v[6] = {1, 2, 3, 4, 5, 6};
  const Bytes base = io::npy_bytes(ds::DType::F32, {2, 3}, v, sizeof v);
  std::mt19937 rng(99);
  int parsed = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    Bytes b = base;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      // Mostly inside the 128-byte preamble, where the parser lives.
      const std::size_t pos = rng() % 4 == 0 ? rng() % b.size() : rng() % 128;
      b[pos] = rng() % 2 == 0 ? static_cast<std::uint8_t>(rng())
                              : static_cast<std::uint8_t>("0123456789(),' <>|fiub"[rng() % 22]);
    }
    if (rng() % 8 == 0) b.resize(rng() % b.size());
    try {
      const io::NpyArray a = io::read_npy_bytes(b.data(), b.size(), "fuzz.npy");
      ++parsed;
      std::size_t n = ds::size_of(a.dtype);
      for (std::size_t d : a.shape) n *= d;
      EXPECT_EQ(a.data.size(), n);
      EXPECT_LE(a.data.size(), b.size());
    } catch (const ds::FormatError&) {
      // expected for most mutations
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
