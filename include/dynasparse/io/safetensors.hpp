// SPDX-License-Identifier: Apache-2.0
// safetensors files: a reader that validates the whole header before use and hands out
// tensors without copying (mmap), and a writer that lays files out as the reference does.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
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
#include "dynasparse/io/detail/safetensors_header.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace io {

/// Bounds a reader checks before it trusts or allocates anything a header asks for. The
/// defaults admit real model files; lower them for input from untrusted sources. Parsing
/// memory stays proportional to the header length and these counts.
struct SafetensorsLimits {
  /// Longest JSON header accepted, in bytes (the reference implementation's limit).
  std::size_t max_header_bytes = 100'000'000;
  /// Most tensors in one file.
  std::size_t max_tensors = std::size_t{1} << 20;
  /// Highest tensor rank (length of `shape`).
  std::size_t max_rank = 8;
  /// Most `__metadata__` entries.
  std::size_t max_metadata_entries = std::size_t{1} << 16;
  /// Most elements over all tensors together (2^36: 256 GiB of float32). A small app can
  /// lower it to refuse files larger than it would ever load, before reading any tensor.
  std::size_t max_total_elements = std::size_t{1} << 36;
};

/// How SafetensorsFile gets at a file's bytes.
enum class FileAccess {
  /// Map the file read-only (zero-copy). Where the platform or file system cannot map it,
  /// the file is read instead.
  Map,
  /// Read the whole file into an aligned buffer: costs a copy, but is immune to the file
  /// being truncated by someone else while in use.
  Read,
};

/// A read-only byte range (pointer and length).
struct ByteSpan {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

/// One tensor's header entry, validated: `bytes == product(shape) * size_of(dtype)` and the
/// range lies inside the file's data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  /// Row-major (C order) dimensions; empty for a scalar.
  std::vector<std::size_t> shape;
  /// Start of the data, in bytes from the start of the data section (`data_offsets[0]`).
  std::size_t offset = 0;
  /// Length of the data in bytes.
  std::size_t bytes = 0;

  /// Number of elements, product(shape).
  std::size_t elements() const noexcept { return bytes / size_of(dtype); }
};

/// A tensor as a row-major `[rows, cols]` matrix of T, from SafetensorsFile::load<T>().
/// Either *borrowed* — the view points into the SafetensorsFile's mapping or buffer (zero-copy)
/// and is valid while that file object, or one it was moved into, lives — or, when the data
/// is not aligned for T inside the file, an owned 64-byte-aligned copy. Move-only, because a
/// copy of an owning TensorData would have to re-point its view.
template <class T>
class TensorData {
 public:
  TensorData() noexcept = default;
  TensorData(TensorData&&) noexcept = default;
  TensorData& operator=(TensorData&&) noexcept = default;
  TensorData(const TensorData&) = delete;
  TensorData& operator=(const TensorData&) = delete;
  ~TensorData() = default;

  /// The matrix (dense: stride == cols).
  TensorView<const T> view() const noexcept { return view_; }
  /// First element of the row-major data (null for an empty default-constructed object).
  const T* data() const noexcept { return view_.data(); }
  /// Matrix rows and columns, and their product.
  std::size_t rows() const noexcept { return view_.rows(); }
  std::size_t cols() const noexcept { return view_.cols(); }
  std::size_t size() const noexcept { return view_.size(); }
  /// True if the view points into the file (no copy was made).
  bool borrowed() const noexcept { return borrowed_; }

 private:
  friend class SafetensorsFile;
  TensorView<const T> view_;
  AlignedBuffer<T> copy_;
  bool borrowed_ = true;
};

/// A safetensors file opened for reading: 8-byte little-endian header length N, N bytes of
/// JSON header, then the data section. The constructor validates everything before any use:
/// the length against the file and SafetensorsLimits; the JSON (an object; every entry an
/// object with exactly `dtype` (known), `shape` (non-negative integers, rank within the
/// limit) and `data_offsets` ([begin, end], begin <= end <= data-section size); byte counts
/// computed with overflow checks equal end - begin; no two non-empty ranges overlap;
/// `__metadata__`, if present, maps strings to strings; no key repeats. Gaps between tensors
/// and trailing bytes are tolerated (the reference reader rejects them; nothing here reads
/// them). Accessors never touch bytes outside the file.
///
/// Move-only; the mapping is released by the destructor. Moving keeps every pointer and
/// view handed out valid. All const member functions are safe to call concurrently.
/// Every error is a FormatError whose message names the file (and the tensor), e.g.
/// `dynasparse.io: tensor bytes do not match shape; expected 48, got 40
/// [model.safetensors: layers.0.w]`.
class SafetensorsFile {
 public:
  /// An empty file object (no tensors).
  SafetensorsFile() = default;

  /// Opens and validates `path` (mapped read-only by default).
  /// @throws FormatError "cannot open file" with the system's reason, or for any violation.
  explicit SafetensorsFile(const std::string& path, const SafetensorsLimits& limits = {},
                           FileAccess access = FileAccess::Map)
      : SafetensorsFile(Tag{}, detail::MappedFile::open(path, access == FileAccess::Map), path,
                        limits) {}

  /// Validates a copy of `size` bytes at `data` (copied into an aligned buffer, so `data`
  /// need not outlive the result); `name` stands for the file in error messages. For
  /// embedded files and fuzzing. @throws FormatError as the constructor; ConfigError if
  /// `data` is null and `size` is not 0.
  static SafetensorsFile from_bytes(const std::uint8_t* data, std::size_t size, std::string name,
                                    const SafetensorsLimits& limits = {}) {
    if (data == nullptr && size != 0) {
      ::dynasparse::detail::fail<ConfigError>("io", "null data with a non-zero size",
                                              "a valid pointer", size, name);
    }
    return SafetensorsFile(Tag{}, detail::MappedFile::copy_of(data, size), std::move(name), limits);
  }

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile() = default;

  /// The path (or the name given to from_bytes()).
  const std::string& name() const noexcept { return name_; }
  /// Number of tensors.
  std::size_t size() const noexcept { return tensors_.size(); }
  /// Tensor names in ascending (std::string) order.
  const std::vector<std::string>& names() const noexcept { return names_; }
  /// True if the file has a tensor of that name.
  bool contains(std::string_view tensor) const { return tensors_.find(tensor) != tensors_.end(); }
  /// The `__metadata__` entries (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  /// The tensor's header entry. @throws FormatError if there is no such tensor.
  const TensorInfo& info(std::string_view tensor) const {
    const auto it = tensors_.find(tensor);
    if (it == tensors_.end()) {
      detail::fail_format("tensor not in file",
                          "one of " + std::to_string(tensors_.size()) + " names",
                          detail::quote_text(tensor), detail::location(name_));
    }
    return it->second;
  }

  /// The tensor's raw little-endian bytes, in place (zero-copy; any alignment).
  /// @throws FormatError if there is no such tensor.
  ByteSpan bytes(std::string_view tensor) const {
    const TensorInfo& t = info(tensor);
    return ByteSpan{file_.data() + data_offset_ + t.offset, t.bytes};
  }

  /// The tensor as a `[rows, cols]` matrix of T: shape `[r, c]` gives r x c, `[n]` gives
  /// 1 x n and a scalar `[]` gives 1 x 1. Zero-copy when the data is aligned for T (always
  /// the case for files from SafetensorsWriter and the reference writers), else a copy;
  /// see TensorData. T is a type with a DType (float, double, std::int8_t, ...). load<float>
  /// also reads F16 and BF16 tensors, widened exactly into a copy (half-precision model
  /// files load as float). For bool every byte is checked to be 0 or 1.
  /// @throws FormatError if there is no such tensor, the dtype is not T's (nor F16/BF16 for
  /// float), or a bool byte is neither 0 nor 1; ShapeError if the rank is above 2.
  template <class T>
  TensorData<T> load(std::string_view tensor) const {
    static_assert(has_dtype_v<T> && !std::is_const_v<T>,
                  "load<T>: T must be float, double, std::int8_t, std::uint8_t, std::int16_t, "
                  "std::int32_t, std::int64_t or bool (F16/BF16 load as float)");
    const TensorInfo& t = info(tensor);
    const std::string where = detail::location(name_, t.name);
    const bool widen = std::is_same_v<T, float> && (t.dtype == DType::F16 || t.dtype == DType::BF16);
    if (t.dtype != dtype_of<T> && !widen) {
      detail::fail_format("tensor dtype differs from the requested type", dtype_name(dtype_of<T>),
                          dtype_name(t.dtype), where);
    }
    std::size_t rows = 1;
    std::size_t cols = 1;
    if (t.shape.size() == 1) {
      cols = t.shape[0];
    } else if (t.shape.size() == 2) {
      rows = t.shape[0];
      cols = t.shape[1];
    } else if (t.shape.size() > 2) {
      ::dynasparse::detail::fail<ShapeError>("io", "tensor rank not viewable as a matrix",
                                             "0, 1 or 2", t.shape.size(), where);
    }
    const std::uint8_t* p = file_.data() + data_offset_ + t.offset;
    if constexpr (std::is_same_v<T, bool>) {
      for (std::size_t i = 0; i < t.bytes; ++i) {
        if (p[i] > 1) {
          detail::fail_format("bool tensor holds a byte other than 0 or 1", "0 or 1",
                              std::to_string(p[i]) + " at element " + std::to_string(i), where);
        }
      }
    }
    TensorData<T> out;
    if constexpr (std::is_same_v<T, float>) {
      if (widen) {
        out.copy_ = to_f32(tensor);
        out.view_ = TensorView<const T>(out.copy_.data(), rows, cols);
        out.borrowed_ = false;
        return out;
      }
    }
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) == 0) {
      out.view_ = TensorView<const T>(reinterpret_cast<const T*>(p), rows, cols);
    } else {
      // safetensors does not require aligned offsets: copy rather than read misaligned.
      out.copy_ = AlignedBuffer<T>(t.elements());
      if (t.bytes != 0) std::memcpy(out.copy_.data(), p, t.bytes);
      out.view_ = TensorView<const T>(out.copy_.data(), rows, cols);
      out.borrowed_ = false;
    }
    return out;
  }

  /// The tensor's elements (any rank, row-major) converted to float: F32 copied, F16 and
  /// BF16 converted exactly (subnormals, infinities and NaNs included).
  /// @throws FormatError if there is no such tensor or its dtype is another.
  AlignedBuffer<float> to_f32(std::string_view tensor) const {
    const TensorInfo& t = info(tensor);
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16) {
      detail::fail_format("tensor dtype not convertible to F32", "F32, F16 or BF16",
                          dtype_name(t.dtype), detail::location(name_, t.name));
    }
    AlignedBuffer<float> out(t.elements());
    detail::convert_to_f32(t.dtype, file_.data() + data_offset_ + t.offset, out.size(), out.data());
    return out;
  }

  /// The whole file's bytes (the mapping, or the buffer holding the file).
  ByteSpan file_bytes() const noexcept { return ByteSpan{file_.data(), file_.size()}; }
  /// File offset of the data section: 8 + header length.
  std::size_t data_offset() const noexcept { return data_offset_; }
  /// True if the bytes are a read-only mapping of the file (rather than a copy).
  bool mapped() const noexcept { return file_.mapped(); }

 private:
  struct Tag {};

  SafetensorsFile(Tag, detail::MappedFile file, std::string name, const SafetensorsLimits& limits)
      : name_(std::move(name)), file_(std::move(file)) {
    parse(limits);
  }

  void parse(const SafetensorsLimits& limits);

  std::string name_;
  detail::MappedFile file_;
  std::size_t data_offset_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

inline void SafetensorsFile::parse(const SafetensorsLimits& limits) {
  const std::uint8_t* base = file_.data();
  const std::size_t file_size = file_.size();
  const std::string file_where = detail::location(name_);
  if (file_size < 8) {
    detail::fail_format("file shorter than the header length field", "at least 8 bytes",
                        std::to_string(file_size) + " bytes", file_where);
  }
  const std::uint64_t header_len = detail::load_le(base, 8);
  if (header_len > file_size - 8) {
    detail::fail_format("header length beyond end of file",
                        "at most " + std::to_string(file_size - 8), header_len, file_where);
  }
  if (header_len > limits.max_header_bytes) {
    detail::fail_format("header length above limit",
                        "at most " + std::to_string(limits.max_header_bytes), header_len,
                        file_where);
  }
  const auto n = static_cast<std::size_t>(header_len);

  // No raw NUL can occur in valid JSON, but the JSON lexer stops at one as if the input
  // ended, which would let a header hide bytes after it.
  if (const void* nul = std::memchr(base + 8, 0, n)) {
    const auto at = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nul) - (base + 8));
    detail::fail_format("header is not valid JSON", "a JSON object",
                        "a NUL byte at header byte " + std::to_string(at), file_where);
  }
  detail::HeaderParser parser(limits.max_tensors, limits.max_rank, limits.max_metadata_entries);
  if (!parser.parse(base + 8, n)) {
    const detail::HeaderProblem& p = parser.problem();
    detail::fail_format(p.what, p.expected, p.got, detail::location(name_, p.object));
  }

  data_offset_ = 8 + n;
  const std::size_t data_size = file_size - data_offset_;
  std::size_t total_elements = 0;
  for (auto& [tensor, e] : parser.tensors()) {
    const std::string where = detail::location(name_, tensor);
    const std::optional<std::size_t> nbytes = detail::checked_product(e.shape, size_of(e.dtype));
    if (!nbytes) {
      detail::fail_format(
          "tensor size overflows size_t",
          "at most " + std::to_string(std::numeric_limits<std::size_t>::max()) + " bytes",
          detail::dims_string(e.shape) + " x " + std::to_string(size_of(e.dtype)) + " bytes",
          where);
    }
    // With the byte count in range, the element count is too.
    const std::size_t elements = *nbytes / size_of(e.dtype);
    if (elements > limits.max_total_elements - total_elements) {
      detail::fail_format("tensor elements above limit",
                          "at most " + std::to_string(limits.max_total_elements) + " in all tensors",
                          std::to_string(total_elements) + " + " + std::to_string(elements), where);
    }
    total_elements += elements;
    if (e.begin > e.end) {
      detail::fail_format("data_offsets begin after end", "begin <= " + std::to_string(e.end),
                          e.begin, where);
    }
    if (e.end > data_size) {
      detail::fail_format("tensor data beyond end of data section",
                          "end <= " + std::to_string(data_size), e.end, where);
    }
    if (e.end - e.begin != *nbytes) {
      detail::fail_format("tensor bytes do not match shape", *nbytes, e.end - e.begin, where);
    }
    tensors_.emplace(tensor, TensorInfo{tensor, e.dtype, std::move(e.shape),
                                        static_cast<std::size_t>(e.begin), *nbytes});
  }

  // Non-empty ranges sorted by start: each must begin at or after the previous one's end
  // (which, with no overlap so far, is the furthest end yet).
  std::vector<const TensorInfo*> order;
  order.reserve(tensors_.size());
  for (const auto& kv : tensors_) {
    if (kv.second.bytes != 0) order.push_back(&kv.second);
  }
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->name < b->name;
  });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const TensorInfo& prev = *order[i - 1];
    const TensorInfo& cur = *order[i];
    if (cur.offset < prev.offset + prev.bytes) {
      detail::fail_format("tensor data overlaps another tensor",
                          "offset >= " + std::to_string(prev.offset + prev.bytes) + " (end of " +
                              detail::quote_text(prev.name) + ")",
                          cur.offset, detail::location(name_, cur.name));
    }
  }

  names_.reserve(tensors_.size());
  for (const auto& kv : tensors_) names_.push_back(kv.first);
  metadata_ = std::move(parser.metadata());
}

/// Builds a safetensors file. Tensors are added by name with dtype, shape (row-major) and
/// little-endian bytes, either copied (add) or referenced (add_borrowed); metadata is a
/// string map stored as `__metadata__`. The output is what the reference writer
/// (`safetensors.torch.save_file`) produces for the same tensors: header JSON padded with
/// spaces to a multiple of 8 bytes, so the data section starts 8-byte aligned; tensors
/// stored back to back, largest element size first (I64, F64, F32, I32, BF16, F16, I16,
/// I8, U8, BOOL), by name within a dtype — so every tensor starts at a multiple of its
/// element size and maps aligned, with no gaps (which the reference reader would reject).
/// Header entries appear in that same order; metadata keys in ascending order.
/// Errors: ConfigError for names (reserved `__metadata__`, repeated, not UTF-8) and null
/// data; ShapeError when bytes and shape disagree; FormatError when a file cannot be
/// written (the partial file is removed).
class SafetensorsWriter {
 public:
  /// Adds a tensor, copying `bytes` bytes from `data` (`data` may be null if bytes is 0).
  /// @throws ConfigError, ShapeError (see the class comment).
  SafetensorsWriter& add(std::string name, DType dtype, std::vector<std::size_t> shape,
                         const void* data, std::size_t bytes) {
    return insert(std::move(name), dtype, std::move(shape), data, bytes, /*copy=*/true);
  }

  /// Adds a tensor by reference: `data` must stay valid, and its contents are read when
  /// write() or to_bytes() runs (not now). @throws as add().
  SafetensorsWriter& add_borrowed(std::string name, DType dtype, std::vector<std::size_t> shape,
                                  const void* data, std::size_t bytes) {
    return insert(std::move(name), dtype, std::move(shape), data, bytes, /*copy=*/false);
  }

  /// Adds a copy of `product(shape)` elements of T at `data`, with T's dtype.
  template <class T>
  SafetensorsWriter& add(std::string name, std::vector<std::size_t> shape, const T* data) {
    static_assert(has_dtype_v<T>, "add<T>: T must be a type with a DType");
    const std::optional<std::size_t> nbytes = detail::checked_product(shape, sizeof(T));
    if (!nbytes) shape_overflow(name, shape, sizeof(T));
    return add(std::move(name), dtype_of<T>, std::move(shape), data, *nbytes);
  }

  /// Adds a copy of a `[rows, cols]` view (strided views are packed).
  template <class T>
  SafetensorsWriter& add(std::string name, const TensorView<T>& view) {
    using V = std::remove_const_t<T>;
    static_assert(has_dtype_v<V>, "add(TensorView<T>): T must be a type with a DType");
    std::vector<std::uint8_t> packed(view.size() * sizeof(V));
    for (std::size_t r = 0; r < view.rows() && view.cols() != 0; ++r) {
      std::memcpy(packed.data() + r * view.cols() * sizeof(V), view.row(r),
                  view.cols() * sizeof(V));
    }
    return add(std::move(name), dtype_of<V>, {view.rows(), view.cols()}, packed.data(),
               packed.size());
  }

  /// Sets (or replaces) a `__metadata__` entry. @throws ConfigError if either string is not
  /// valid UTF-8.
  SafetensorsWriter& set_metadata(std::string key, std::string value) {
    if (!detail::is_valid_utf8(key) || !detail::is_valid_utf8(value)) {
      ::dynasparse::detail::fail<ConfigError>("io", "metadata is not valid UTF-8", "UTF-8 text",
                                              detail::quote_text(key), "SafetensorsWriter");
    }
    metadata_[std::move(key)] = std::move(value);
    return *this;
  }

  /// Number of tensors added.
  std::size_t size() const noexcept { return entries_.size(); }

  /// The complete file in memory.
  std::vector<std::uint8_t> to_bytes() const {
    const Layout layout = plan();
    std::vector<std::uint8_t> out;
    out.reserve(8 + layout.header.size() + layout.data_bytes);
    emit(layout, [&out](const void* p, std::size_t n) {
      const auto* b = static_cast<const std::uint8_t*>(p);
      out.insert(out.end(), b, b + n);
    });
    return out;
  }

  /// Writes the file to `path` (streamed: tensors are not gathered in memory first) beside it
  /// under a temporary name, then renames it into place: a file already there, even one
  /// mapped by a SafetensorsFile, is replaced whole or, on failure, kept as it was.
  /// @throws FormatError if the file cannot be created or written.
  void write(const std::string& path) const {
    const Layout layout = plan();
    detail::FileWriter file(path);
    emit(layout, [&file](const void* p, std::size_t n) { file.write(p, n); });
    file.commit();
  }

 private:
  struct Entry {
    DType dtype = DType::F32;
    std::vector<std::size_t> shape;
    std::vector<std::uint8_t> owned;
    const std::uint8_t* borrowed = nullptr;
    std::size_t bytes = 0;
    const std::uint8_t* data() const noexcept {
      return borrowed != nullptr ? borrowed : owned.data();
    }
  };
  struct Layout {
    std::vector<std::pair<const std::string*, const Entry*>> order;
    std::string header;  // padded JSON
    std::size_t data_bytes = 0;
  };

  // The reference writer's order: descending dtype alignment, then name.
  static int layout_rank(DType t) noexcept {
    switch (t) {
      case DType::I64:
        return 0;
      case DType::F64:
        return 1;
      case DType::F32:
        return 2;
      case DType::I32:
        return 3;
      case DType::BF16:
        return 4;
      case DType::F16:
        return 5;
      case DType::I16:
        return 6;
      case DType::I8:
        return 7;
      case DType::U8:
        return 8;
      case DType::BOOL:
        return 9;
    }
    return 10;
  }

  [[noreturn]] static void shape_overflow(const std::string& name,
                                          const std::vector<std::size_t>& shape,
                                          std::size_t element) {
    ::dynasparse::detail::fail<ShapeError>(
        "io", "tensor size overflows size_t",
        "at most " + std::to_string(std::numeric_limits<std::size_t>::max()) + " bytes",
        detail::dims_string(shape) + " x " + std::to_string(element) + " bytes",
        detail::location("SafetensorsWriter", name));
  }

  SafetensorsWriter& insert(std::string name, DType dtype, std::vector<std::size_t> shape,
                            const void* data, std::size_t bytes, bool copy) {
    const std::string where = detail::location("SafetensorsWriter", name);
    if (name == "__metadata__") {
      ::dynasparse::detail::fail<ConfigError>("io", "tensor name is reserved",
                                              "any name but __metadata__", "\"__metadata__\"",
                                              "SafetensorsWriter");
    }
    if (!detail::is_valid_utf8(name)) {
      ::dynasparse::detail::fail<ConfigError>("io", "tensor name is not valid UTF-8", "UTF-8 text",
                                              detail::quote_text(name), "SafetensorsWriter");
    }
    if (entries_.count(name) != 0) {
      ::dynasparse::detail::fail<ConfigError>("io", "tensor name already added", "a new name",
                                              detail::quote_text(name), "SafetensorsWriter");
    }
    const std::optional<std::size_t> nbytes = detail::checked_product(shape, size_of(dtype));
    if (!nbytes) shape_overflow(name, shape, size_of(dtype));
    if (*nbytes != bytes) {
      ::dynasparse::detail::fail<ShapeError>("io", "tensor bytes do not match shape", *nbytes,
                                             bytes, where);
    }
    if (data == nullptr && bytes != 0) {
      ::dynasparse::detail::fail<ConfigError>("io", "null data with a non-zero size",
                                              "a valid pointer", bytes, where);
    }
    Entry e;
    e.dtype = dtype;
    e.shape = std::move(shape);
    e.bytes = bytes;
    const auto* src = static_cast<const std::uint8_t*>(data);
    if (copy) {
      if (bytes != 0) e.owned.assign(src, src + bytes);
    } else {
      e.borrowed = src;
    }
    entries_.emplace(std::move(name), std::move(e));
    return *this;
  }

  Layout plan() const {
    Layout layout;
    layout.order.reserve(entries_.size());
    for (const auto& kv : entries_) layout.order.emplace_back(&kv.first, &kv.second);
    std::sort(layout.order.begin(), layout.order.end(), [](const auto& a, const auto& b) {
      const int ra = layout_rank(a.second->dtype);
      const int rb = layout_rank(b.second->dtype);
      return ra != rb ? ra < rb : *a.first < *b.first;
    });
    std::string& h = layout.header;
    h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& kv : metadata_) {
        if (!first) h += ',';
        first = false;
        detail::append_json_string(h, kv.first);
        h += ':';
        detail::append_json_string(h, kv.second);
      }
      h += '}';
    }
    std::size_t offset = 0;
    for (const auto& [name, e] : layout.order) {
      if (h.size() > 1) h += ',';
      detail::append_json_string(h, *name);
      h += ":{\"dtype\":\"";
      h += dtype_name(e->dtype);
      h += "\",\"shape\":[";
      for (std::size_t i = 0; i < e->shape.size(); ++i) {
        if (i != 0) h += ',';
        h += std::to_string(e->shape[i]);
      }
      if (e->bytes > std::numeric_limits<std::size_t>::max() - offset) {
        ::dynasparse::detail::fail<ConfigError>("io", "total tensor bytes overflow size_t",
                                                "a representable size", "more",
                                                "SafetensorsWriter");
      }
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," +
           std::to_string(offset + e->bytes) + "]}";
      offset += e->bytes;
    }
    h += '}';
    h.append((8 - h.size() % 8) % 8, ' ');
    layout.data_bytes = offset;
    return layout;
  }

  template <class Sink>
  static void emit(const Layout& layout, Sink&& sink) {
    std::vector<std::uint8_t> len;
    detail::append_le(len, layout.header.size(), 8);
    sink(len.data(), len.size());
    sink(layout.header.data(), layout.header.size());
    for (const auto& kv : layout.order) {
      if (kv.second->bytes != 0) sink(kv.second->data(), kv.second->bytes);
    }
  }

  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace io
DYNASPARSE_NAMESPACE_END
