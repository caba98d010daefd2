// SPDX-License-Identifier: Apache-2.0
// The dynasparse::compiled library, part one: Model's members, compiled once for the whole program
// instead of in every translation unit that uses Model (see DYNASPARSE_COMPILED in config.hpp).
#if !defined(DYNASPARSE_COMPILED)
#error "src/model.cpp is built with DYNASPARSE_COMPILED defined (the dynasparse::compiled target)"
#endif

#include "dynasparse/model/model_impl.hpp"
