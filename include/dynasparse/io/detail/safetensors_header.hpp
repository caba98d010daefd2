// SPDX-License-Identifier: Apache-2.0
// The safetensors header's JSON, read as a stream of SAX events into plain records: every
// type, key and count is checked as it arrives, so no JSON tree is ever built.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dynasparse/core/dtype.hpp"
#include "dynasparse/io/detail/file.hpp"

DYNASPARSE_NAMESPACE_BEGIN
namespace io::detail {

/// One tensor entry as written in the header (offsets not yet checked against the file).
struct HeaderEntry {
  DType dtype = DType::F32;
  std::vector<std::size_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

/// The first problem found in a header: the parts of a FormatError message.
struct HeaderProblem {
  std::string what;
  std::string expected;
  std::string got;
  std::string object;  // tensor name, `__metadata__` or `__metadata__.<key>`; may be empty
};

/// A nlohmann SAX consumer for the header grammar
///   { "__metadata__"?: { string: string, ... },
///     name: { "dtype": string, "shape": [uint, ...], "data_offsets": [uint, uint] }, ... }
/// Unknown or repeated keys, wrong types, more tensors, metadata entries or shape entries than
/// allowed, and nesting beyond that grammar stop the parse at once (the handler returns
/// false), so memory stays proportional to what the limits admit, whatever the input.
class HeaderParser {
 public:
  using json = nlohmann::json;

  HeaderParser(std::size_t max_tensors, std::size_t max_rank, std::size_t max_metadata_entries)
      : max_tensors_(max_tensors), max_rank_(max_rank), max_metadata_(max_metadata_entries) {}

  /// Parses `size` bytes of JSON. Returns false and fills problem() on any violation.
  bool parse(const std::uint8_t* data, std::size_t size) {
    const char* first = reinterpret_cast<const char*>(data);
    const bool ok = json::sax_parse(first, first + size, this, json::input_format_t::json,
                                    /*strict=*/true);
    if (!ok && !failed_) fail("header is not valid JSON", "a JSON object", "an incomplete one", "");
    return ok && !failed_;
  }

  const HeaderProblem& problem() const noexcept { return problem_; }
  std::map<std::string, HeaderEntry>& tensors() noexcept { return tensors_; }
  std::map<std::string, std::string>& metadata() noexcept { return metadata_; }

  // --- nlohmann SAX interface ---
  bool null() { return value(Kind::Null); }
  bool boolean(bool) { return value(Kind::Boolean); }
  bool number_integer(std::int64_t v) {
    if (v >= 0) return number_unsigned(static_cast<std::uint64_t>(v));  // only "-0"
    return value(Kind::Negative, 0, std::to_string(v));
  }
  bool number_unsigned(std::uint64_t v) { return value(Kind::Unsigned, v, std::to_string(v)); }
  bool number_float(double, const std::string& raw) { return value(Kind::Float, 0, raw); }
  bool string(std::string& s) { return value(Kind::String, 0, s); }
  bool binary(json::binary_t&) { return value(Kind::Null); }  // not produced by JSON input
  bool start_object(std::size_t) { return value(Kind::Object); }
  bool start_array(std::size_t) { return value(Kind::Array); }
  bool key(std::string& k);
  bool end_object();
  bool end_array();
  bool parse_error(std::size_t position, const std::string&, const json::exception&) {
    return fail("header is not valid JSON", "a JSON object",
                "a syntax error near header byte " + std::to_string(position), "");
  }

 private:
  enum class Kind { Null, Boolean, Negative, Unsigned, Float, String, Object, Array };
  enum class State {
    Start,          // before the root value
    Root,           // inside the root object, expecting a key or the end
    MetadataOpen,   // after "__metadata__":
    Metadata,       // inside the metadata object
    MetadataValue,  // after a metadata key
    EntryOpen,      // after a tensor name
    Entry,          // inside a tensor entry
    DtypeValue,     // after "dtype":
    ShapeOpen,      // after "shape":
    Shape,          // inside the shape array
    OffsetsOpen,    // after "data_offsets":
    Offsets,        // inside the data_offsets array
    Done
  };

  static std::string describe(Kind kind, const std::string& text) {
    switch (kind) {
      case Kind::Null:
        return "null";
      case Kind::Boolean:
        return "a boolean";
      case Kind::Negative:
      case Kind::Unsigned:
      case Kind::Float:
        return clip(text, 40);
      case Kind::String:
        return quote_text(text);
      case Kind::Object:
        return "an object";
      case Kind::Array:
        return "an array";
    }
    return "?";
  }

  bool fail(std::string what, std::string expected, std::string got, std::string object) {
    failed_ = true;
    problem_ =
        HeaderProblem{std::move(what), std::move(expected), std::move(got), std::move(object)};
    return false;
  }

  bool value(Kind kind, std::uint64_t u = 0, const std::string& text = {});
  bool array_element(Kind kind, std::uint64_t u, const std::string& text, const char* field,
                     std::size_t keep, std::size_t& count, std::uint64_t* out64,
                     std::vector<std::size_t>* out);

  std::size_t max_tensors_;
  std::size_t max_rank_;
  std::size_t max_metadata_;
  State state_ = State::Start;
  bool failed_ = false;
  HeaderProblem problem_;
  std::map<std::string, HeaderEntry> tensors_;
  std::map<std::string, std::string> metadata_;
  bool has_metadata_ = false;
  std::string name_;      // current tensor name
  std::string meta_key_;  // current metadata key
  HeaderEntry* entry_ = nullptr;
  unsigned seen_ = 0;  // bit 0 dtype, bit 1 shape, bit 2 data_offsets
  std::size_t count_ = 0;
};

inline bool HeaderParser::value(Kind kind, std::uint64_t u, const std::string& text) {
  switch (state_) {
    case State::Start:
      if (kind != Kind::Object) {
        return fail("header is not a JSON object", "an object", describe(kind, text), "");
      }
      state_ = State::Root;
      return true;
    case State::MetadataOpen:
      if (kind != Kind::Object) {
        return fail("metadata is not an object", "an object", describe(kind, text), "__metadata__");
      }
      state_ = State::Metadata;
      return true;
    case State::MetadataValue:
      if (kind != Kind::String) {
        return fail("metadata value is not a string", "a string", describe(kind, text),
                    "__metadata__." + meta_key_);
      }
      metadata_.emplace(meta_key_, text);
      state_ = State::Metadata;
      return true;
    case State::EntryOpen:
      if (kind != Kind::Object) {
        return fail("tensor entry is not an object", "an object", describe(kind, text), name_);
      }
      state_ = State::Entry;
      seen_ = 0;
      return true;
    case State::DtypeValue: {
      if (kind != Kind::String) {
        return fail("dtype is not a string", "a string", describe(kind, text), name_);
      }
      const std::optional<DType> t = parse_dtype(text);
      if (!t) {
        return fail("unknown dtype", "one of F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL",
                    describe(kind, text), name_);
      }
      entry_->dtype = *t;
      state_ = State::Entry;
      return true;
    }
    case State::ShapeOpen:
    case State::OffsetsOpen: {
      const bool shape = state_ == State::ShapeOpen;
      if (kind != Kind::Array) {
        return fail(shape ? "shape is not an array" : "data_offsets is not an array", "an array",
                    describe(kind, text), name_);
      }
      state_ = shape ? State::Shape : State::Offsets;
      count_ = 0;
      return true;
    }
    case State::Shape:
      return array_element(kind, u, text, "shape", max_rank_, count_, nullptr, &entry_->shape);
    case State::Offsets: {
      std::uint64_t* out = count_ == 0 ? &entry_->begin : &entry_->end;
      return array_element(kind, u, text, "data_offsets", 2, count_, out, nullptr);
    }
    case State::Root:
    case State::Metadata:
    case State::Entry:
    case State::Done:
      break;
  }
  // The JSON grammar puts only keys (or the end) in these states, and nothing after Done.
  return fail("unexpected JSON value", "a key", describe(kind, text), name_);
}

inline bool HeaderParser::array_element(Kind kind, std::uint64_t u, const std::string& text,
                                        const char* field, std::size_t keep, std::size_t& count,
                                        std::uint64_t* out64, std::vector<std::size_t>* out) {
  if (kind != Kind::Unsigned) {
    return fail(std::string(field) + " entry is not a non-negative integer",
                "a non-negative integer", describe(kind, text), name_);
  }
  // Entries past `keep` are counted, not stored, so the error can say how many there were.
  if (++count > keep) return true;
  if (out64 != nullptr) *out64 = u;
  if (out != nullptr) {
    if (u > std::numeric_limits<std::size_t>::max()) {
      return fail("shape entry exceeds size_t",
                  "at most " + std::to_string(std::numeric_limits<std::size_t>::max()),
                  std::to_string(u), name_);
    }
    out->push_back(static_cast<std::size_t>(u));
  }
  return true;
}

inline bool HeaderParser::key(std::string& k) {
  switch (state_) {
    case State::Root:
      if (k == "__metadata__") {
        if (has_metadata_) {
          return fail("duplicate key in header", "each key once", "\"__metadata__\" twice",
                      "__metadata__");
        }
        has_metadata_ = true;
        state_ = State::MetadataOpen;
        return true;
      }
      if (tensors_.count(k) != 0) {
        return fail("duplicate tensor name in header", "each name once", quote_text(k) + " twice",
                    k);
      }
      if (tensors_.size() >= max_tensors_) {
        return fail("too many tensors in header", "at most " + std::to_string(max_tensors_),
                    "at least " + std::to_string(max_tensors_ + 1), "");
      }
      entry_ = &tensors_[k];
      name_ = k;
      state_ = State::EntryOpen;
      return true;
    case State::Metadata:
      if (metadata_.count(k) != 0) {
        return fail("duplicate metadata key", "each key once", quote_text(k) + " twice",
                    "__metadata__");
      }
      if (metadata_.size() >= max_metadata_) {
        return fail("too many metadata entries", "at most " + std::to_string(max_metadata_),
                    "at least " + std::to_string(max_metadata_ + 1), "__metadata__");
      }
      meta_key_ = k;
      state_ = State::MetadataValue;
      return true;
    case State::Entry: {
      unsigned bit;
      State next;
      if (k == "dtype") {
        bit = 1;
        next = State::DtypeValue;
      } else if (k == "shape") {
        bit = 2;
        next = State::ShapeOpen;
      } else if (k == "data_offsets") {
        bit = 4;
        next = State::OffsetsOpen;
      } else {
        return fail("unknown key in tensor entry", "dtype, shape or data_offsets", quote_text(k),
                    name_);
      }
      if ((seen_ & bit) != 0) {
        return fail("duplicate key in tensor entry", "each key once", quote_text(k) + " twice",
                    name_);
      }
      seen_ |= bit;
      state_ = next;
      return true;
    }
    default:
      return fail("unexpected JSON key", "a value", quote_text(k), name_);
  }
}

inline bool HeaderParser::end_object() {
  switch (state_) {
    case State::Root:
      state_ = State::Done;
      return true;
    case State::Metadata:
      state_ = State::Root;
      return true;
    case State::Entry: {
      static const char* const keys[] = {"dtype", "shape", "data_offsets"};
      for (unsigned i = 0; i < 3; ++i) {
        if ((seen_ & (1u << i)) == 0) {
          return fail("tensor entry lacks a key", std::string("\"") + keys[i] + "\"", "no such key",
                      name_);
        }
      }
      state_ = State::Root;
      return true;
    }
    default:
      return fail("unexpected end of JSON object", "a value", "'}'", name_);
  }
}

inline bool HeaderParser::end_array() {
  if (state_ == State::Shape) {
    if (count_ > max_rank_) {
      return fail("tensor rank above limit", "at most " + std::to_string(max_rank_),
                  std::to_string(count_), name_);
    }
    state_ = State::Entry;
    return true;
  }
  if (state_ == State::Offsets) {
    if (count_ != 2) {
      return fail("data_offsets does not hold two entries", "2", std::to_string(count_), name_);
    }
    state_ = State::Entry;
    return true;
  }
  return fail("unexpected end of JSON array", "a value", "']'", name_);
}

}  // namespace io::detail
DYNASPARSE_NAMESPACE_END
