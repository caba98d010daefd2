// SPDX-License-Identifier: Apache-2.0
#include "dynasparse/model/model_config.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

namespace ds = dynasparse;

TEST(ModelConfig, DefaultsFollowTheSeedAndRoundTripThroughJson) {
  ds::ModelConfig c;
  c.hidden = 512;
  EXPECT_EQ(c.num_heads(), 64u);  // hidden / 8
  EXPECT_EQ(c.head_dim(), 8u);
  c.formats["layers.0.ffn.up"] = "gsparse_i8";
  c.gate = ds::GatePosition::Output;
  c.gate_granularity = ds::HeadGate::Elementwise;
  const ds::ModelConfig back = ds::config_from_json(ds::to_json(c).dump());
  EXPECT_EQ(ds::to_json(back), ds::to_json(c));
  EXPECT_EQ(back.formats.at("layers.0.ffn.up"), "gsparse_i8");
}

TEST(ModelConfig, HostileOrInconsistentConfigsAreRejectedNamingTheField) {
  auto expect_error = [](const std::string& json, const std::string& fragment) {
    try {
      ds::config_from_json(json, "model.safetensors");
      ADD_FAILURE() << "accepted " << json;
    } catch (const ds::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error("{\"hidden\": 100, \"heads\": 3}", "[heads]");
  expect_error("{\"hidden\": 1e9}", "[hidden]");
  expect_error("{\"vocab\": 99999999999}", "[vocab]");
  expect_error("{\"layers\": -1}", "[layers]");
  expect_error("{\"hiden\": 64}", "unknown config key");
  expect_error("{\"norm\": \"batchnorm\"}", "expected layernorm|rmsnorm, got batchnorm [norm]");
  expect_error("{\"formats\": {\"layers.0.ffn.up\": \"dense_f16\"}}", "[formats.layers.0.ffn.up]");
  expect_error("{\"causal\": 1}", "[causal]");
  expect_error("[1, 2]", "config is not a JSON object");
  expect_error("{not json", "[model.safetensors]");
  expect_error("{\"gate_granularity\": \"perhead\"}", "[gate_granularity]");
  expect_error("{\"hidden\": 72, \"heads\": 8, \"positions\": \"rotary\"}", "[positions]");  // head_dim 9
  expect_error("{\"rope_base\": 0.5}", "[rope_base]");
  expect_error("{\"rope_base\": \"10000\"}", "[rope_base]");
  expect_error("{\"head_format\": \"gsparse_i8\"}",
               "expected dense_f32 or dense_i8, got \"gsparse_i8\" [head_format]");
  expect_error("{\"head_format\": 8}", "[head_format]");
}

TEST(ModelConfig, HeadFormatRoundTripsAndIsWrittenOnlyWhenInt8) {
  ds::ModelConfig c;
  EXPECT_EQ(c.head_format, "dense_f32");
  // A float head writes no key: files that readers without the key accept stay so.
  EXPECT_FALSE(ds::to_json(c).contains("head_format"));
  c.head_format = "dense_i8";
  EXPECT_EQ(ds::config_from_json(ds::to_json(c).dump()).head_format, "dense_i8");
  EXPECT_EQ(ds::config_from_json("{\"head_format\": \"dense_f32\"}").head_format, "dense_f32");
}

TEST(ModelConfig, RopeBaseRoundTripsAndIsCheckedForRotaryModels) {
  const ds::ModelConfig d = ds::config_from_json("{}");
  EXPECT_EQ(d.rope_base, 10000.0f);
  ds::ModelConfig c = ds::config_from_json("{\"positions\": \"rotary\", \"rope_base\": 500000}");
  EXPECT_EQ(c.positions, ds::PositionKind::Rotary);
  EXPECT_EQ(c.rope_base, 500000.0f);
  EXPECT_EQ(ds::config_from_json(ds::to_json(c).dump()).rope_base, 500000.0f);
  // A config built in code is checked by validate() too (rotary models only).
  c.rope_base = 0.0f;
  EXPECT_THROW(ds::validate(c), ds::ConfigError);
  c.positions = ds::PositionKind::Learned;
  EXPECT_NO_THROW(ds::validate(c));
}

}  // namespace
