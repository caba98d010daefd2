// SPDX-License-Identifier: Apache-2.0
// NumPy .npy files (format versions 1.0 and 2.0): a validating reader and a writer whose
// output matches numpy.save.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/dtype.hpp"
#include "dynasparse/core/tensor.hpp"
#include "dynasparse/error.hpp"
#include "dynasparse/io/detail/file.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace io {

/// Bounds the .npy reader checks before trusting a header.
struct NpyLimits {
  /// Longest header accepted, in bytes (every version 1.0 header fits).
  std::size_t max_header_bytes = std::size_t{1} << 16;
  /// Highest array rank (NumPy's own limit is 32, 64 from NumPy 2).
  std::size_t max_rank = 32;
};

/// An array read from (or to be written to) a .npy file: C-order (row-major) elements of
/// `dtype`, little-endian, in a 64-byte-aligned buffer of exactly
/// `product(shape) * size_of(dtype)` bytes. The reader guarantees that invariant (and, for
/// BOOL, that every byte is 0 or 1); the typed accessors check the dtype.
struct NpyArray {
  DType dtype = DType::F32;
  /// Dimensions; empty for a 0-d array (one element).
  std::vector<std::size_t> shape;
  AlignedBuffer<std::uint8_t> data;

  /// Number of elements.
  std::size_t elements() const noexcept { return data.size() / size_of(dtype); }

  /// The elements as T. @throws FormatError if T's dtype is not `dtype`.
  template <class T>
  const T* data_as() const {
    check_type<T>();
    return reinterpret_cast<const T*>(data.data());
  }
  /// Mutable elements as T. @throws FormatError if T's dtype is not `dtype`.
  template <class T>
  T* data_as() {
    check_type<T>();
    return reinterpret_cast<T*>(data.data());
  }

  /// The array as a `[rows, cols]` matrix: shape `(r, c)` gives r x c, `(n,)` gives 1 x n,
  /// `()` gives 1 x 1. @throws FormatError if T's dtype is not `dtype`; ShapeError if the
  /// rank is above 2 or the shape does not match the buffer.
  template <class T>
  TensorView<const T> view() const {
    const std::pair<std::size_t, std::size_t> rc = matrix_shape();
    return TensorView<const T>(data_as<T>(), rc.first, rc.second);
  }
  /// Mutable matrix view. @throws as the const overload.
  template <class T>
  TensorView<T> view() {
    const std::pair<std::size_t, std::size_t> rc = matrix_shape();
    return TensorView<T>(data_as<T>(), rc.first, rc.second);
  }

  /// The elements converted to float: F32 copied, F16 and BF16 converted exactly.
  /// @throws FormatError for other dtypes.
  AlignedBuffer<float> to_f32() const {
    if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16) {
      detail::fail_format("array dtype not convertible to F32", "F32, F16 or BF16",
                          dtype_name(dtype), "NpyArray");
    }
    AlignedBuffer<float> out(elements());
    detail::convert_to_f32(dtype, data.data(), out.size(), out.data());
    return out;
  }

 private:
  template <class T>
  void check_type() const {
    static_assert(has_dtype_v<T>, "NpyArray: T must be a type with a DType");
    if (dtype_of<T> != dtype) {
      detail::fail_format("array dtype differs from the requested type", dtype_name(dtype_of<T>),
                          dtype_name(dtype), "NpyArray");
    }
  }

  std::pair<std::size_t, std::size_t> matrix_shape() const {
    std::pair<std::size_t, std::size_t> rc{1, 1};
    if (shape.size() == 1) {
      rc.second = shape[0];
    } else if (shape.size() == 2) {
      rc = {shape[0], shape[1]};
    } else if (shape.size() > 2) {
      ::dynasparse::detail::fail<ShapeError>("io", "array rank not viewable as a matrix",
                                             "0, 1 or 2", shape.size(), "NpyArray");
    }
    // Division first: a hostile shape must not overflow the product.
    if ((rc.second != 0 && rc.first > elements() / rc.second) ||
        rc.first * rc.second != elements()) {
      ::dynasparse::detail::fail<ShapeError>("io", "array shape does not match its data",
                                             std::to_string(elements()) + " elements",
                                             shape_string(rc.first, rc.second), "NpyArray");
    }
    return rc;
  }
};

namespace detail {

struct NpyType {
  std::string_view code;  // after the byte-order character
  DType dtype;
};

inline constexpr NpyType npy_types[] = {
    {"f2", DType::F16}, {"f4", DType::F32}, {"f8", DType::F64},
    {"i1", DType::I8},  {"u1", DType::U8},  {"i2", DType::I16},
    {"i4", DType::I32}, {"i8", DType::I64}, {"b1", DType::BOOL},
};

/// The numpy `descr` string written for `t` ('<f4', '|i1', ...).
/// @throws UnsupportedError for BF16, which NumPy lacks.
inline std::string npy_descr(DType t) {
  for (const NpyType& n : npy_types) {
    if (n.dtype == t) return (size_of(t) == 1 ? "|" : "<") + std::string(n.code);
  }
  ::dynasparse::detail::fail<UnsupportedError>("io", "dtype has no NumPy equivalent",
                                               "F16, F32, F64, I8, U8, I16, I32, I64 or BOOL",
                                               dtype_name(t), "npy");
}

/// Parses the header dict, a Python literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`: exactly the three keys,
/// any order, either quote style, optional trailing comma, whitespace anywhere between
/// tokens, Python 2 `L` suffixes on shape entries. Nothing is evaluated.
class NpyHeaderParser {
 public:
  NpyHeaderParser(std::string_view text, std::string_view file, std::size_t max_rank)
      : text_(text), file_(file), max_rank_(max_rank) {}

  void parse(DType& dtype, std::vector<std::size_t>& shape) {
    std::optional<std::string_view> descr;
    std::optional<bool> fortran;
    bool has_shape = false;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') break;
      const std::string_view key = parse_string();
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr" && !descr) {
        descr = parse_string();
      } else if (key == "fortran_order" && !fortran) {
        fortran = parse_bool();
      } else if (key == "shape" && !has_shape) {
        shape = parse_shape();
        has_shape = true;
      } else if (key == "descr" || key == "fortran_order" || key == "shape") {
        fail("duplicate key in npy header", "each key once", quote_text(key) + " twice");
      } else {
        fail("unknown key in npy header", "descr, fortran_order or shape", quote_text(key));
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') malformed("',' or '}'");
    }
    ++pos_;  // '}'
    skip_ws();
    if (pos_ != text_.size()) malformed("the end of the header");
    if (!descr) fail("npy header lacks a key", "'descr'", "no such key");
    if (!fortran) fail("npy header lacks a key", "'fortran_order'", "no such key");
    if (!has_shape) fail("npy header lacks a key", "'shape'", "no such key");
    if (*fortran) {
      fail("Fortran-order npy arrays are not supported", "fortran_order False", "True");
    }
    dtype = parse_descr(*descr);
  }

 private:
  template <class X, class Y>
  [[noreturn]] void fail(std::string_view what, const X& expected, const Y& got) const {
    fail_format(what, expected, got, location(file_));
  }

  [[noreturn]] void malformed(std::string_view expected) const {
    std::string got;
    if (pos_ >= text_.size()) {
      got = "the end of the header";
    } else {
      got = quote_text(text_.substr(pos_, 1)) + " at header byte " + std::to_string(pos_);
    }
    fail("malformed npy header", expected, got);
  }

  char peek() const noexcept { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool at_end() const noexcept { return pos_ >= text_.size(); }

  void skip_ws() noexcept {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++pos_;
    }
  }

  void expect(char c) {
    if (at_end() || peek() != c) malformed(std::string("'") + c + "'");
    ++pos_;
  }

  std::string_view parse_string() {
    const char q = peek();
    if (at_end() || (q != '\'' && q != '"')) malformed("a quoted string");
    const std::size_t start = pos_ + 1;
    std::size_t end = start;
    while (end < text_.size() && text_[end] != q) {
      if (text_[end] == '\\' || text_[end] == '\n') {
        pos_ = end;
        malformed("a plain string (no escapes or line breaks)");
      }
      ++end;
    }
    if (end >= text_.size()) {
      pos_ = end;
      malformed("a closing quote");
    }
    pos_ = end + 1;
    return text_.substr(start, end - start);
  }

  bool parse_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    malformed("True or False");
  }

  std::size_t parse_uint() {
    if (at_end() || peek() < '0' || peek() > '9') {
      if (peek() == '-') {
        fail("npy shape entry is not a non-negative integer", "a non-negative integer",
             "a negative number at header byte " + std::to_string(pos_));
      }
      malformed("a non-negative integer");
    }
    const std::size_t start = pos_;
    std::size_t v = 0;
    bool overflow = false;
    while (!at_end() && peek() >= '0' && peek() <= '9') {
      const auto d = static_cast<std::size_t>(peek() - '0');
      if (v > (std::numeric_limits<std::size_t>::max() - d) / 10) overflow = true;
      v = v * 10 + d;
      ++pos_;
    }
    if (overflow) {
      fail("npy shape entry exceeds size_t",
           "at most " + std::to_string(std::numeric_limits<std::size_t>::max()),
           clip(text_.substr(start, pos_ - start), 40));
    }
    return v;
  }

  std::vector<std::size_t> parse_shape() {
    std::vector<std::size_t> dims;
    expect('(');
    skip_ws();
    std::size_t count = 0;
    bool trailing_comma = false;
    if (peek() != ')') {
      for (;;) {
        const std::size_t d = parse_uint();
        // Entries past the limit are counted, not stored, so the error can say how many.
        if (++count <= max_rank_) dims.push_back(d);
        skip_ws();
        if (peek() == 'L') {  // Python 2 long
          ++pos_;
          skip_ws();
        }
        if (peek() == ',') {
          ++pos_;
          skip_ws();
          if (peek() == ')') {
            trailing_comma = true;
            break;
          }
          continue;
        }
        if (peek() == ')') break;
        malformed("',' or ')'");
      }
    }
    ++pos_;  // ')'
    if (count > max_rank_) {
      fail("npy rank above limit", "at most " + std::to_string(max_rank_), count);
    }
    if (count == 1 && !trailing_comma) {
      // `(3)` is the integer 3 in Python, not a tuple; numpy.load rejects it too.
      fail("npy shape is not a tuple", "a tuple such as (" + std::to_string(dims[0]) + ",)",
           "(" + std::to_string(dims[0]) + ")");
    }
    return dims;
  }

  DType parse_descr(std::string_view descr) const {
    const std::string_view code = descr.empty() ? descr : descr.substr(1);
    for (const NpyType& n : npy_types) {
      if (code != n.code) continue;
      const char order = descr[0];
      if (size_of(n.dtype) == 1 && (order == '<' || order == '>' || order == '|')) {
        return n.dtype;
      }
      if (order == '<') return n.dtype;
      if (order == '>') {
        fail("big-endian npy data is not supported", "'<' byte order", quote_text(descr));
      }
      break;
    }
    fail("unsupported npy dtype", "one of <f2, <f4, <f8, |i1, |u1, <i2, <i4, <i8, |b1",
         quote_text(descr));
  }

  std::string_view text_;
  std::string_view file_;
  std::size_t max_rank_;
  std::size_t pos_ = 0;
};

/// Magic, version, header length and the padded header numpy.save writes for an array of
/// `dtype` and `shape` (C order): version 1.0 unless the header needs more than 65535 bytes.
inline std::vector<std::uint8_t> npy_preamble(DType dtype, const std::vector<std::size_t>& shape) {
  std::string header = "{'descr': '" + npy_descr(dtype) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) header += ", ";
    header += std::to_string(shape[i]);
  }
  header += shape.size() == 1 ? ",), }" : "), }";
  // numpy.save leaves room to grow the first axis in place: spaces up to 21 digits.
  if (!shape.empty()) header.append(21 - std::to_string(shape[0]).size(), ' ');
  const std::size_t hlen = header.size() + 1;  // + '\n'
  std::size_t prefix = 10;
  std::size_t pad = 64 - (prefix + hlen) % 64;
  if (hlen + pad > 0xFFFF) {
    prefix = 12;
    pad = 64 - (prefix + hlen) % 64;
  }
  std::vector<std::uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  out.push_back(prefix == 10 ? 1 : 2);
  out.push_back(0);
  append_le(out, hlen + pad, prefix - 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), pad, ' ');
  out.push_back('\n');
  return out;
}

inline void npy_checked_bytes(DType dtype, const std::vector<std::size_t>& shape,
                              std::size_t bytes) {
  const std::optional<std::size_t> n = checked_product(shape, size_of(dtype));
  if (!n || *n != bytes) {
    ::dynasparse::detail::fail<ShapeError>(
        "io", "array bytes do not match shape",
        n ? std::to_string(*n) : dims_string(shape) + " overflows size_t", bytes, "npy");
  }
}

}  // namespace detail

/// Parses a whole .npy file held in memory (`size` bytes at `data`; `name` stands for the
/// file in error messages). Accepts versions 1.0 and 2.0, C order, little-endian dtypes
/// <f2 <f4 <f8 |i1 |u1 <i2 <i4 <i8 |b1; the data must be exactly
/// product(shape) * itemsize bytes (computed with overflow checks). Copies the data into
/// the result; never reads outside [data, data + size).
/// @throws FormatError for anything else, naming `name`.
inline NpyArray read_npy_bytes(const std::uint8_t* data, std::size_t size, std::string_view name,
                               const NpyLimits& limits = {}) {
  const std::string where = detail::location(name);
  if (data == nullptr && size != 0) {
    ::dynasparse::detail::fail<ConfigError>("io", "null data with a non-zero size",
                                            "a valid pointer", size, where);
  }
  static constexpr std::uint8_t magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  const std::size_t shown = size < 6 ? size : 6;
  if (shown != 0 && std::memcmp(data, magic, shown) != 0) {
    detail::fail_format(
        "not an npy file", "magic \"\\x93NUMPY\"",
        detail::quote_text(std::string_view(reinterpret_cast<const char*>(data), shown)), where);
  }
  if (size < 10) {
    detail::fail_format("file shorter than the npy preamble", "at least 10 bytes",
                        std::to_string(size) + " bytes", where);
  }
  const unsigned major = data[6];
  const unsigned minor = data[7];
  if ((major != 1 && major != 2) || minor != 0) {
    detail::fail_format("unsupported npy version", "1.0 or 2.0",
                        std::to_string(major) + "." + std::to_string(minor), where);
  }
  const std::size_t prefix = major == 1 ? 10 : 12;
  if (size < prefix) {  // version 2.0 has a 4-byte length
    detail::fail_format("file shorter than the npy preamble",
                        "at least " + std::to_string(prefix) + " bytes",
                        std::to_string(size) + " bytes", where);
  }
  const std::uint64_t header_len = detail::load_le(data + 8, prefix - 8);
  if (header_len > size - prefix) {
    detail::fail_format("npy header length beyond end of file",
                        "at most " + std::to_string(size - prefix), header_len, where);
  }
  if (header_len > limits.max_header_bytes) {
    detail::fail_format("npy header length above limit",
                        "at most " + std::to_string(limits.max_header_bytes), header_len, where);
  }
  const auto hlen = static_cast<std::size_t>(header_len);
  NpyArray out;
  detail::NpyHeaderParser(std::string_view(reinterpret_cast<const char*>(data + prefix), hlen),
                          name, limits.max_rank)
      .parse(out.dtype, out.shape);

  const std::size_t remaining = size - prefix - hlen;
  const std::optional<std::size_t> nbytes = detail::checked_product(out.shape, size_of(out.dtype));
  if (!nbytes) {
    detail::fail_format(
        "npy array size overflows size_t",
        "at most " + std::to_string(std::numeric_limits<std::size_t>::max()) + " bytes",
        detail::dims_string(out.shape) + " x " + std::to_string(size_of(out.dtype)) + " bytes",
        where);
  }
  if (*nbytes != remaining) {
    detail::fail_format("npy data size does not match shape", *nbytes, remaining, where);
  }
  out.data.resize_discard(*nbytes);
  if (*nbytes != 0) std::memcpy(out.data.data(), data + prefix + hlen, *nbytes);
  if (out.dtype == DType::BOOL) {
    for (std::size_t i = 0; i < out.data.size(); ++i) {
      if (out.data[i] > 1) {
        detail::fail_format("bool array holds a byte other than 0 or 1", "0 or 1",
                            std::to_string(out.data[i]) + " at element " + std::to_string(i),
                            where);
      }
    }
  }
  return out;
}

/// Reads a .npy file (mapped, then copied into the result). @throws FormatError "cannot open
/// file" with the system's reason, or as read_npy_bytes().
inline NpyArray read_npy(const std::string& path, const NpyLimits& limits = {}) {
  const detail::MappedFile file = detail::MappedFile::open(path, /*map=*/true);
  return read_npy_bytes(file.data(), file.size(), path, limits);
}

/// The bytes numpy.save would write for a C-order array of `dtype` and `shape` whose
/// `bytes` little-endian bytes are at `data`.
/// @throws ShapeError if bytes != product(shape) * size_of(dtype); UnsupportedError for BF16.
inline std::vector<std::uint8_t> npy_bytes(DType dtype, const std::vector<std::size_t>& shape,
                                           const void* data, std::size_t bytes) {
  detail::npy_checked_bytes(dtype, shape, bytes);
  std::vector<std::uint8_t> out = detail::npy_preamble(dtype, shape);
  const auto* src = static_cast<const std::uint8_t*>(data);
  if (bytes != 0) out.insert(out.end(), src, src + bytes);
  return out;
}

/// Writes a .npy file (as numpy.save would). @throws as npy_bytes(); FormatError if the
/// file cannot be written (written under a temporary name and renamed into place, so a
/// file already at `path` is replaced whole or kept).
inline void write_npy(const std::string& path, DType dtype, const std::vector<std::size_t>& shape,
                      const void* data, std::size_t bytes) {
  detail::npy_checked_bytes(dtype, shape, bytes);
  const std::vector<std::uint8_t> preamble = detail::npy_preamble(dtype, shape);
  detail::FileWriter file(path);
  file.write(preamble.data(), preamble.size());
  file.write(data, bytes);
  file.commit();
}

/// Writes an NpyArray. @throws as the overload above.
inline void write_npy(const std::string& path, const NpyArray& array) {
  write_npy(path, array.dtype, array.shape, array.data.data(), array.data.size());
}

/// Writes a `[rows, cols]` view as a 2-D array of T's dtype (strided views are packed).
template <class T>
inline void write_npy(const std::string& path, const TensorView<T>& view) {
  using V = std::remove_const_t<T>;
  static_assert(has_dtype_v<V>, "write_npy: T must be a type with a DType");
  std::vector<std::uint8_t> packed(view.size() * sizeof(V));
  for (std::size_t r = 0; r < view.rows() && view.cols() != 0; ++r) {
    std::memcpy(packed.data() + r * view.cols() * sizeof(V), view.row(r), view.cols() * sizeof(V));
  }
  write_npy(path, dtype_of<V>, {view.rows(), view.cols()}, packed.data(), packed.size());
}

}  // namespace io
DYNASPARSE_NAMESPACE_END
