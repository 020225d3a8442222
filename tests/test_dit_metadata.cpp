// SPDX-License-Identifier: Apache-2.0
// DiT configs read from safetensors metadata as Python's writers spell them, and the errors for
// values that are not: each names the file, the key and the value found.
#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "support/dit_fixtures.hpp"
#include "tstitch/io/safetensors.hpp"
#include "tstitch/models/dit/config.hpp"
#include "tstitch/models/dit/metadata.hpp"
#include "tstitch/models/dit/weights.hpp"

using namespace tstitch;
using tstitch::testing::tiny_dit_config;

namespace {

using Metadata = std::map<std::string, std::string>;

/// The tiny config's metadata with `key` set to `value`.
Metadata with(const std::string& key, const std::string& value) {
  Metadata m = tiny_dit_config().to_metadata();
  m[key] = value;
  return m;
}

dit::Config read(const Metadata& m) { return dit::Config::from_metadata(m, "model.safetensors"); }

} // namespace

TEST_CASE("DiT metadata: every boolean spelling of Python's and tstitch's writers", "[dit]") {
  // json.dumps and tstitch: true/false; str(bool): True/False; str(int(bool)): 1/0.
  for (const char* yes : {"true", "True", "1"}) {
    CAPTURE(yes);
    CHECK(read(with("learn_sigma", yes)).learn_sigma);
  }
  for (const char* no : {"false", "False", "0"}) {
    CAPTURE(no);
    const dit::Config c = read(with("learn_sigma", no));
    CHECK_FALSE(c.learn_sigma);
    CHECK(c.out_channels() == c.in_channels);
  }
}

TEST_CASE("DiT metadata: integers as str(int) and integral floats as str(float)", "[dit]") {
  const dit::Config tiny = tiny_dit_config();
  // DiT's own mlp_ratio is the float 4.0, so str() gives "4.0".
  for (const char* four : {"4", "4.0", "4.00", "+4", "04"}) {
    CAPTURE(four);
    CHECK(read(with("mlp_ratio", four)).mlp_ratio == 4);
  }
  CHECK(read(with("depth", "3.0")).depth == 3);
  CHECK(read(with("num_classes", "1000")).num_classes == 1000);
  // Every key at once, as a Python script writing {k: str(v) for k, v in args.items()} would.
  Metadata python;
  python["depth"] = "2";
  python["hidden_size"] = "64";
  python["num_heads"] = "4";
  python["patch_size"] = "2";
  python["input_size"] = "8";
  python["in_channels"] = "4";
  python["num_classes"] = "10";
  python["mlp_ratio"] = "4.0";
  python["learn_sigma"] = "True";
  CHECK(read(python) == tiny);
  // mlp_ratio may be absent (default 4); the other keys may not.
  python.erase("mlp_ratio");
  CHECK(read(python) == tiny);
}

TEST_CASE("DiT metadata: the parsers' edge cases", "[dit]") {
  using dit::MetadataIntegerError;
  CHECK(dit::parse_metadata_integer("9223372036854775807").value == INT64_MAX);
  CHECK(dit::parse_metadata_integer("-9223372036854775808").value == INT64_MIN);
  CHECK(dit::parse_metadata_integer("-3").value == -3);
  CHECK(dit::parse_metadata_integer("9223372036854775808").error ==
        MetadataIntegerError::out_of_range);
  CHECK(dit::parse_metadata_integer("99999999999999999999999").error ==
        MetadataIntegerError::out_of_range);
  CHECK(dit::parse_metadata_integer("4.5").error == MetadataIntegerError::not_integral);
  CHECK(dit::parse_metadata_integer("4.05").error == MetadataIntegerError::not_integral);
  for (const char* bad : {"", " 4", "4 ", "\t4", "4\n", "4.", ".5", ".", "+", "-", "4e0", "0x10",
                          "four", "4,0", "4.0.0", "++4", "4.0 "}) {
    CAPTURE(bad);
    CHECK(dit::parse_metadata_integer(bad).error == MetadataIntegerError::not_a_number);
  }
  for (const char* bad : {"", "TRUE", "FALSE", "yes", "no", "t", "2", " true", "true ", "1.0"}) {
    CAPTURE(bad);
    CHECK_FALSE(dit::parse_metadata_bool(bad).has_value());
  }
}

TEST_CASE("DiT metadata errors name the file, the key and the value", "[dit][errors]") {
  const auto rejects = [](const std::string& key, const std::string& value,
                          const std::string& why) {
    CAPTURE(key, value);
    CHECK_THROWS_AS(read(with(key, value)), tstitch::invalid_argument);
    CHECK_THROWS_WITH(read(with(key, value)),
                      Catch::Contains("model.safetensors") &&
                          Catch::Contains("'" + key + "' = '" + value + "'") &&
                          Catch::Contains(why));
  };
  for (const char* bad : {"TRUE", "yes", " true", "true ", "", "2"})
    rejects("learn_sigma", bad, "is not a boolean");
  for (const char* bad : {" 4", "4 ", "4e0", "0x4", "four", "4.", ""})
    rejects("mlp_ratio", bad, "is not an integer");
  rejects("depth", "2.5", "is not a whole number");
  rejects("hidden_size", "99999999999999999999", "outside the 64-bit integer range");

  // A hostile file's megabyte of metadata is shown cut, with its length.
  const std::string long_value(100000, '7');
  CHECK_THROWS_WITH(
      read(with("depth", long_value + "x")),
      Catch::Contains("'depth' = '" + std::string(64, '7') + "...' (100001 characters)"));

  // Absent keys, learn_sigma included.
  for (const char* key : {"depth", "learn_sigma"}) {
    Metadata m = tiny_dit_config().to_metadata();
    m.erase(key);
    CHECK_THROWS_WITH(read(m), Catch::Contains("model.safetensors") &&
                                   Catch::Contains(std::string("lacks '") + key + "'"));
  }

  // Values that read but make no valid config: the config's own message, with the file.
  CHECK_THROWS_AS(read(with("depth", "0")), tstitch::invalid_argument);
  CHECK_THROWS_WITH(read(with("depth", "0")),
                    Catch::Contains("model.safetensors: DiT metadata: dit config depth = 0") &&
                        Catch::Contains("must be in [1, "));
  CHECK_THROWS_WITH(read(with("num_heads", "5.0")), Catch::Contains("model.safetensors") &&
                                                        Catch::Contains("hidden_size = 64") &&
                                                        Catch::Contains("multiple of num_heads 5"));
}

TEST_CASE("DiT weights load with metadata as Python's safetensors writer stores str() values",
          "[dit]") {
  // safetensors' save_file takes only str values, so a script writes str(True) and str(4.0).
  const std::filesystem::path source =
      std::filesystem::temp_directory_path() / "tstitch_test_dit_metadata_source.safetensors";
  dit::Weights::random(tiny_dit_config(), 3).save(source);
  io::SafetensorsFile file(source);
  std::vector<io::TensorData> tensors;
  for (const std::string& name : file.names()) {
    const io::TensorInfo& info = file.info(name);
    tensors.push_back({name, info.dtype, info.shape,
                       std::vector<std::byte>(info.bytes.begin(), info.bytes.end())});
  }
  Metadata python = file.metadata();
  python["learn_sigma"] = "True";
  python["mlp_ratio"] = "4.0";
  python["depth"] = "2.0";
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / "tstitch_test_dit_metadata_python.safetensors";
  io::write_safetensors(path, tensors, python);
  CHECK(dit::Weights::load(path).config() == tiny_dit_config());
  // The same model: its forward gives the original's bits.
  dit::CpuModel a(dit::Weights::load(source)), b(dit::Weights::load(path));
  const Tensor ya = tstitch::testing::dit_forward(a, 2, 500.0, {1, 3});
  const Tensor yb = tstitch::testing::dit_forward(b, 2, 500.0, {1, 3});
  CHECK(std::equal(ya.data(), ya.data() + ya.numel(), yb.data()));

  python["learn_sigma"] = "yes";
  io::write_safetensors(path, tensors, python);
  CHECK_THROWS_WITH(dit::Weights::load(path),
                    Catch::Contains(path.string()) && Catch::Contains("'learn_sigma' = 'yes'"));
}
