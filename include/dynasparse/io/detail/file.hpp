// SPDX-License-Identifier: Apache-2.0
// Plumbing shared by the io/ readers and writers: read-only file mappings, checked size
// arithmetic, little-endian fields, error-message helpers and a failure-safe file writer.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "dynasparse/core/aligned_buffer.hpp"
#include "dynasparse/core/dtype.hpp"
#include "dynasparse/error.hpp"

// Tensor data is read in place, so the host must store numbers the way the files do.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "dynasparse io/ reads little-endian tensor data in place; big-endian hosts are "
              "not supported");
#endif

DYNASPARSE_NAMESPACE_BEGIN
namespace io::detail {

/// The system's text for an errno value ("No such file or directory").
inline std::string errno_text(int err) { return std::generic_category().message(err); }

/// Shortens text that came from a file before it goes into an error message.
inline std::string clip(std::string_view s, std::size_t max = 200) {
  if (s.size() <= max) return std::string(s);
  return std::string(s.substr(0, max)) + "...";
}

/// `"text"` with control and non-ASCII bytes escaped as backslash-x-hex, clipped; for the `got`
/// part of messages about strings read from files.
inline std::string quote_text(std::string_view s, std::size_t max = 64) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\') {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max) out += "...";
  out += '"';
  return out;
}

/// Text read from a file as a message shows it: as is when it is plain printable ASCII of
/// at most `max` bytes, otherwise quote_text (so an error stays one line).
inline std::string shown_text(std::string_view s, std::size_t max = 64) {
  if (s.size() > max) return quote_text(s, max);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7F) return quote_text(s, max);
  }
  return std::string(s);
}

/// `file: object`, or whichever of the two is non-empty: the bracketed part of a message.
inline std::string location(std::string_view file, std::string_view object = {}) {
  if (object.empty()) return clip(file);
  if (file.empty()) return clip(object);
  return clip(file) + ": " + clip(object);
}

/// Raises FormatError with module "io" and the standard message.
template <class X, class Y>
[[noreturn]] inline void fail_format(std::string_view what, const X& expected, const Y& got,
                                     std::string_view where) {
  ::dynasparse::detail::fail<FormatError>("io", what, expected, got, where);
}

/// `[2, 3, 4]`.
inline std::string dims_string(const std::vector<std::size_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i != 0) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

/// The product of `dims` times `factor`, or nullopt if it overflows std::size_t.
inline std::optional<std::size_t> checked_product(const std::vector<std::size_t>& dims,
                                                  std::size_t factor = 1) noexcept {
  std::size_t p = factor;
  for (std::size_t d : dims) {
    if (d != 0 && p > std::numeric_limits<std::size_t>::max() / d) return std::nullopt;
    p *= d;
  }
  return p;
}

inline std::uint64_t load_le(const std::uint8_t* p, std::size_t bytes) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

inline void append_le(std::vector<std::uint8_t>& out, std::uint64_t v, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

/// True if `s` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
inline bool is_valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (std::size_t k = 1; k <= n; ++k) {
      const auto t = static_cast<unsigned char>(s[i + k]);
      if ((t & 0xC0u) != 0x80u) return false;
      cp = (cp << 6) | (t & 0x3Fu);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

/// Appends `s` as a JSON string literal, escaping as serde_json (the reference safetensors
/// writer) does: quote, backslash, backspace, form feed, newline, carriage return and tab by
/// their two-character escapes, other control bytes as u00xx escapes; UTF-8 as is.
inline void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

/// Converts `n` elements of F32, F16 or BF16 at `src` (any alignment) to float.
/// Precondition: `t` is one of those three.
inline void convert_to_f32(DType t, const std::uint8_t* src, std::size_t n, float* dst) noexcept {
  if (n == 0) return;
  if (t == DType::F32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const auto bits = static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
    dst[i] = t == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
  }
}

/// The bytes of a whole file, memory-mapped read-only where possible, otherwise read into an
/// aligned buffer. Move-only; unmaps or frees in the destructor. The start is at least
/// 64-byte aligned either way (a page for mappings).
/// NOTE: like every mmap reader, a mapping of a file that another process truncates
/// afterwards faults (SIGBUS) on access to the lost pages; open files you do not control
/// with FileAccess::Read.
class MappedFile {
 public:
  MappedFile() noexcept = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        map_(std::exchange(o.map_, nullptr)),
        owned_(std::move(o.owned_)) {}
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      map_ = std::exchange(o.map_, nullptr);
      owned_ = std::move(o.owned_);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  /// Opens `path`: mapped if `map` and the platform and file system allow it, else read.
  /// @throws FormatError "cannot open file" (with the system's reason), for something other
  /// than a regular file, or when reading fails.
  static MappedFile open(const std::string& path, bool map) {
#if defined(_WIN32)
    (void)map;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) fail_format("cannot open file", "a readable file", errno_text(errno), path);
    std::vector<std::uint8_t> bytes = read_stream(f, path);
    return copy_of(bytes.data(), bytes.size());
#else
    int fd;
    do {
      // O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on regular files.
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) fail_format("cannot open file", "a readable file", errno_text(errno), path);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      fail_format("cannot open file", "a readable file", errno_text(errno), path);
    }
    if (!S_ISREG(st.st_mode)) {
      fail_format("not a regular file", "a regular file",
                  S_ISDIR(st.st_mode) ? "a directory" : "another kind of file", path);
    }
    if (st.st_size < 0 ||
        static_cast<std::uintmax_t>(st.st_size) > std::numeric_limits<std::size_t>::max()) {
      fail_format("file too large for the address space",
                  "at most " + std::to_string(std::numeric_limits<std::size_t>::max()) + " bytes",
                  std::to_string(st.st_size) + " bytes", path);
    }
    const auto size = static_cast<std::size_t>(st.st_size);
    MappedFile m;
    if (size == 0) return m;
    if (map) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p != MAP_FAILED) {
        m.map_ = p;
        m.data_ = static_cast<const std::uint8_t*>(p);
        m.size_ = size;
        return m;
      }
      // Some file systems cannot be mapped: read the file instead.
    }
    m.owned_.resize_discard(size);
    std::size_t done = 0;
    while (done < size) {
      const std::size_t chunk = std::min<std::size_t>(size - done, std::size_t{1} << 30);
      const ::ssize_t r = ::read(fd, m.owned_.data() + done, chunk);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        fail_format("cannot read file", std::to_string(size) + " bytes", errno_text(errno), path);
      }
      if (r == 0) break;
      done += static_cast<std::size_t>(r);
    }
    if (done != size) {
      fail_format("file shrank while being read", std::to_string(size) + " bytes",
                  std::to_string(done) + " bytes", path);
    }
    m.data_ = m.owned_.data();
    m.size_ = size;
    return m;
#endif
  }

  /// An owned, aligned copy of `size` bytes at `data` (`data` may be null when size is 0).
  static MappedFile copy_of(const std::uint8_t* data, std::size_t size) {
    MappedFile m;
    if (size == 0) return m;
    m.owned_.resize_discard(size);
    std::memcpy(m.owned_.data(), data, size);
    m.data_ = m.owned_.data();
    m.size_ = size;
    return m;
  }

  /// Reads a stdio stream to its end (the path for platforms without mmap).
  static std::vector<std::uint8_t> read_stream(std::FILE* f, const std::string& path) {
    std::vector<std::uint8_t> bytes;
    std::vector<std::uint8_t> chunk(std::size_t{1} << 16);
    std::size_t n;
    while ((n = std::fread(chunk.data(), 1, chunk.size(), f)) > 0) {
      bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
    }
    const bool failed = std::ferror(f) != 0;
    const int err = errno;
    std::fclose(f);
    if (failed) fail_format("cannot read file", "a readable file", errno_text(err), path);
    return bytes;
  }

  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool mapped() const noexcept { return map_ != nullptr; }

 private:
  void release() noexcept {
#if !defined(_WIN32)
    if (map_ != nullptr) ::munmap(map_, size_);
#endif
    map_ = nullptr;
    data_ = nullptr;
    size_ = 0;
    owned_ = AlignedBuffer<std::uint8_t>();
  }

  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  void* map_ = nullptr;
  AlignedBuffer<std::uint8_t> owned_;
};

/// Writes a file in pieces. If it is destroyed before commit() (an error was raised), it
/// closes and removes the partial file. Errors are FormatError naming the path.
class FileWriter {
 public:
  explicit FileWriter(std::string path) : path_(std::move(path)) {
    // Written beside the target and renamed over it by commit(): a failed write leaves the
    // old file as it was, and writing over a file that is mapped (a model saved over the
    // file it was loaded from) does not truncate pages still in use.
    const auto salt = static_cast<unsigned long long>(
        std::chrono::steady_clock::now().time_since_epoch().count() ^
        static_cast<long long>(reinterpret_cast<std::uintptr_t>(this)));
    tmp_ = path_ + ".partial-" + std::to_string(salt % 1000000007ULL);
    file_ = std::fopen(tmp_.c_str(), "wb");
    if (file_ == nullptr) {
      fail_format("cannot open file for writing", "a writable path", errno_text(errno), path_);
    }
  }
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;
  ~FileWriter() { abandon(); }

  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, file_) != n) {
      const int err = errno;
      abandon();
      fail_format("cannot write file", std::to_string(n) + " more bytes", errno_text(err), path_);
    }
  }

  /// Flushes, closes and puts the file in place; it is complete afterwards. @throws
  /// FormatError naming the path if any step fails (the old file, if any, is then kept).
  void commit() {
    const bool flushed = std::fflush(file_) == 0;
    int err = errno;
    const bool closed = std::fclose(file_) == 0;
    if (flushed) err = errno;
    file_ = nullptr;
    if (!flushed || !closed) {
      std::remove(tmp_.c_str());
      fail_format("cannot write file", "a complete file", errno_text(err), path_);
    }
#if defined(_WIN32)
    std::remove(path_.c_str());  // rename does not replace an existing file there
#endif
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      err = errno;
      std::remove(tmp_.c_str());
      fail_format("cannot replace file", "a writable path", errno_text(err), path_);
    }
  }

 private:
  void abandon() noexcept {
    if (file_ == nullptr) return;
    std::fclose(file_);
    file_ = nullptr;
    std::remove(tmp_.c_str());
  }

  std::string path_, tmp_;
  std::FILE* file_ = nullptr;
};

}  // namespace io::detail
DYNASPARSE_NAMESPACE_END
