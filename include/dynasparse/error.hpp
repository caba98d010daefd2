// SPDX-License-Identifier: Apache-2.0
// Error types, the message format every module uses, DYNASPARSE_THROW and DYNASPARSE_ASSERT.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "dynasparse/config.hpp"

DYNASPARSE_NAMESPACE_BEGIN

/// Base of every error the library reports. Messages read
/// `dynasparse.<module>: <what>; expected <X>, got <Y> [<name>]`.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file or serialized structure is malformed (bad header, offsets, dtype, corrupt block-CSR).
class FormatError : public Error {
 public:
  using Error::Error;
};

/// Tensor shapes do not agree with each other or with a module's configuration.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// A configuration value is invalid (heads not dividing width, zero threads, ...).
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// The request is valid but this build or this machine cannot do it.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

/// Called with the error when exceptions are off; it must not return (if it does, the
/// library aborts). Replace it with set_error_handler().
using ErrorHandler = void (*)(const Error&) noexcept;

namespace detail {

inline void default_error_handler(const Error& e) noexcept {
  std::fprintf(stderr, "%s\n", e.what());
}

inline ErrorHandler& error_handler_slot() noexcept {
  static ErrorHandler handler = &default_error_handler;
  return handler;
}

template <class E>
[[noreturn]] inline void raise(const E& e) {
#if DYNASPARSE_HAS_EXCEPTIONS
  throw e;
#else
  error_handler_slot()(e);
  std::abort();
#endif
}

template <class T>
inline void append_value(std::ostringstream& os, const T& v) {
  os << v;
}

/// Builds `dynasparse.<module>: <what>; expected <X>, got <Y> [<name>]`.
template <class X, class Y>
inline std::string make_message(std::string_view module, std::string_view what, const X& expected,
                                const Y& got, std::string_view name = {}) {
  std::ostringstream os;
  os << "dynasparse." << module << ": " << what << "; expected ";
  append_value(os, expected);
  os << ", got ";
  append_value(os, got);
  if (!name.empty()) os << " [" << name << "]";
  return os.str();
}

/// Throws E (or calls the error handler) with the standard message.
template <class E, class X, class Y>
[[noreturn]] inline void fail(std::string_view module, std::string_view what, const X& expected,
                              const Y& got, std::string_view name = {}) {
  raise(E(make_message(module, what, expected, got, name)));
}

}  // namespace detail

/// Installs the handler used when exceptions are disabled; returns the previous one.
/// Not thread-safe against concurrent failures: set it once at start-up.
inline ErrorHandler set_error_handler(ErrorHandler handler) noexcept {
  ErrorHandler old = detail::error_handler_slot();
  detail::error_handler_slot() = handler ? handler : &detail::default_error_handler;
  return old;
}

DYNASPARSE_NAMESPACE_END

/// Raises an Error-derived value: throws it, or with exceptions off hands it to the error
/// handler and aborts.
#define DYNASPARSE_THROW(e) ::dynasparse::detail::raise(e)

/// Debug-only invariant check (on unless NDEBUG, or forced by DYNASPARSE_ENABLE_ASSERTS).
/// Define DYNASPARSE_ASSERT before including any dynasparse header to replace it.
#ifndef DYNASPARSE_ASSERT
#if !defined(NDEBUG) || defined(DYNASPARSE_ENABLE_ASSERTS)
#define DYNASPARSE_ASSERT(cond, msg)                                                  \
  ((cond) ? static_cast<void>(0)                                                      \
          : (std::fprintf(stderr, "%s:%d: dynasparse assertion failed: %s (%s)\n", __FILE__, \
                          __LINE__, #cond, msg),                                       \
             std::abort()))
#else
#define DYNASPARSE_ASSERT(cond, msg) static_cast<void>(0)
#endif
#endif
