// SPDX-License-Identifier: Apache-2.0
// Built with -fno-exceptions: the library must compile, report errors through the
// replaceable handler, and never return from a failed check.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dynasparse/dynasparse.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::printf("noexcept test failed: %s\n", what);
  std::exit(1);
}

void handler(const dynasparse::Error& e) noexcept {
  // The contract: print, then do not return. _Exit(0) lets the test see a success.
  std::printf("handled: %s\n", e.what());
  std::fflush(stdout);
  std::_Exit(0);
}

}  // namespace

int main() {
  const std::string info = dynasparse::build_info();
  if (info.find("exceptions=off") == std::string::npos) fail("build_info does not say exceptions=off");
  // Normal operation works without exceptions.
  std::vector<float> w(4 * 8, 0.25f), x(2 * 8, 1.0f), y(2 * 4);
  const dynasparse::quant::DenseI8 layer(dynasparse::ConstMatrixView(w.data(), 4, 8), {}, "fc");
  dynasparse::Workspace ws;
  layer.forward(dynasparse::ConstMatrixView(x.data(), 2, 8), dynasparse::MatrixView(y.data(), 2, 4), ws);
  if (y[0] < 1.99f || y[0] > 2.01f) fail("wrong result");
  dynasparse::set_error_handler(&handler);
  // A shape error must reach the handler (which exits 0); falling through is a failure.
  layer.forward(dynasparse::ConstMatrixView(x.data(), 2, 8), dynasparse::MatrixView(y.data(), 1, 4), ws);
  fail("the error handler was not called");
}
