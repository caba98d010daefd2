// SPDX-License-Identifier: Apache-2.0
// The smallest host application: load a model, continue a prompt, print the text.
// Copy this file and CMakeLists.txt beside it into your project to start.
#include <dynasparse/dynasparse.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.safetensors PROMPT [NEW_TOKENS]\n", argv[0]);
    return 2;
  }
  try {
    dynasparse::LoadOptions load;
    load.allow_extra_tensors = true;  // test models carry golden data beside the weights
    const dynasparse::Model model = dynasparse::Model::load(argv[1], load);
    dynasparse::Session session = model.new_session();
    dynasparse::GenerateOptions options;
    options.max_new_tokens = argc > 3 ? std::stoul(argv[3]) : 32;
    options.sampling.temperature = 0.8f;
    options.sampling.top_p = 0.95f;
    options.sampling.seed = 1;
    const auto result = model.generate(dynasparse::ByteTokenizer::encode(argv[2]), options, session);
    std::printf("%s%s\n", argv[2], dynasparse::ByteTokenizer::decode(result.tokens).c_str());
  } catch (const dynasparse::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
  return 0;
}
