// SPDX-License-Identifier: Apache-2.0
// A text file renamed .safetensors must be called what it is, not have its first 8 bytes quoted
// as a header length.
#include <catch2/catch.hpp>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include <unistd.h>

#include "tstitch/io/safetensors.hpp"

namespace fs = std::filesystem;
using tstitch::io::SafetensorsFile;

TEST_CASE("A text file is 'not a safetensors file'", "[safetensors][errors]") {
  const std::string text = "# My model\nThese are notes, not weights.\n";
  const fs::path path = fs::temp_directory_path() / ("tstitch_test_not_safetensors_" +
                                                     std::to_string(::getpid()) + ".safetensors");
  std::ofstream(path) << text;
  CHECK_THROWS_WITH(SafetensorsFile::open(path), Catch::Contains(path.string()) &&
                                                     Catch::Contains("not a safetensors file") &&
                                                     Catch::Contains("exceeds the limit"));
  fs::remove(path);

  const auto bytes = std::as_bytes(std::span(text.data(), text.size()));
  CHECK_THROWS_WITH(SafetensorsFile::from_bytes(bytes), Catch::Contains("not a safetensors file"));
  // A short text whose length field fits the limit but not the file.
  const std::string small = std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8) + "hello";
  CHECK_THROWS_WITH(
      SafetensorsFile::from_bytes(std::as_bytes(std::span(small.data(), small.size()))),
      Catch::Contains("not a safetensors file") && Catch::Contains("exceeds the file"));
}

TEST_CASE("A truncated safetensors file is not called another kind of file",
          "[safetensors][errors]") {
  // The header length is too large for the file, but a JSON header follows: a cut-off file.
  const std::string cut = std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8) + "{\"w\": ";
  CHECK_THROWS_WITH(SafetensorsFile::from_bytes(std::as_bytes(std::span(cut.data(), cut.size()))),
                    !Catch::Contains("not a safetensors file") &&
                        Catch::Contains("header length 64 exceeds the file"));
}
