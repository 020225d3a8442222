// SPDX-License-Identifier: Apache-2.0
// The planner's quality table read from JSON (io/quality_table.hpp): the shipped Fashion table,
// and hostile files refused with the key and the value named.
#include <catch2/catch.hpp>

#include <string>

#include "tstitch/io/quality_table.hpp"

using namespace tstitch;
using plan::parse_quality_table;

TEST_CASE("io: a quality table reads its metric, steps and provenance", "[plan][io]") {
  const char* const text = R"({
    "metric": "FD-cls", "steps": 10, "date": "2026-12-07", "machine": "test", "command": "none",
    "fractions": [0.0, 0.5, 1.0], "values": {"FD-cls": [40.0, 39.0, 70.0], "FD-pca": [1, 2, 3]}
  })";
  const plan::QualityTable cls = parse_quality_table(text);
  REQUIRE(cls.metric == "FD-cls");
  REQUIRE(cls.steps == 10);
  REQUIRE(cls.entries.size() == 3);
  REQUIRE(cls.entries[1].fraction == 0.5);
  REQUIRE(cls.entries[1].value == 39.0);
  REQUIRE(cls.date == "2026-12-07");
  REQUIRE(parse_quality_table(text, "FD-pca").entries[2].value == 3.0);
}

TEST_CASE("io: hostile quality tables are refused, naming the key and value", "[plan][io]") {
  REQUIRE_THROWS_WITH(parse_quality_table("[1, 2]"), Catch::Contains("must be an object"));
  REQUIRE_THROWS_WITH(parse_quality_table("{\"metric\": \"m\", \"values\": {}}"),
                      Catch::Contains("\"fractions\""));
  REQUIRE_THROWS_WITH(
      parse_quality_table(R"({"metric": "m", "fractions": [0, 1], "values": {"m": [1]}})"),
      Catch::Contains("m length = 1"));
  REQUIRE_THROWS_WITH(
      parse_quality_table(R"({"metric": "m", "fractions": [0, 1.5], "values": {"m": [1, 2]}})"),
      Catch::Contains("fractions[1] = 1.5"));
  REQUIRE_THROWS_WITH(
      parse_quality_table(R"({"metric": "m", "fractions": [0.5, 0.5], "values": {"m": [1, 2]}})"),
      Catch::Contains("fractions[1] = 0.5") && Catch::Contains("increase"));
  REQUIRE_THROWS_WITH(
      parse_quality_table(R"({"metric": "m", "fractions": [0, 1], "values": {"m": [1, "x"]}})"),
      Catch::Contains("m[1]") && Catch::Contains("string"));
  REQUIRE_THROWS_WITH(
      parse_quality_table(R"({"metric": "m", "fractions": [0, 1], "values": {"m": [1, 1e999]}})"),
      Catch::Contains("not valid JSON") && Catch::Contains("1e999"));
  REQUIRE_THROWS_WITH(
      parse_quality_table(R"({"metric": "q", "fractions": [0, 1], "values": {"m": [1, 2]}})"),
      Catch::Contains("metric = \"q\""));
  REQUIRE_THROWS_WITH(parse_quality_table(R"({"metric": "m", "metric": "m"})"),
                      Catch::Contains("\"metric\"") && Catch::Contains("duplicate key"));
  REQUIRE_THROWS_WITH(parse_quality_table("{\"a\": [[[[[[1]]]]]]}"),
                      Catch::Contains("nesting = 5"));
  // A deep file is refused at the first level too deep, without recursion over the rest.
  REQUIRE_THROWS_WITH(parse_quality_table(std::string(60000, '[')), Catch::Contains("nesting"));
  REQUIRE_THROWS_WITH(parse_quality_table("{\"a\": 1} x"), Catch::Contains("not valid JSON"));
  REQUIRE_THROWS_WITH(parse_quality_table("{\"a\": \"unterminated"),
                      Catch::Contains("not valid JSON"));
  // nlohmann quotes the token it stopped at; a hostile token is cut short in the message.
  const std::string long_token = "{\"a\": " + std::string(5000, 'x') + "}";
  REQUIRE_THROWS_MATCHES(parse_quality_table(long_token), invalid_argument,
                         Catch::Predicate<invalid_argument>([](const invalid_argument& e) {
                           return std::string(e.what()).size() < 400;
                         }));
  REQUIRE_THROWS_WITH(parse_quality_table(std::string(70000, ' ')),
                      Catch::Contains("size (bytes) = 70000"));
  REQUIRE_THROWS_WITH(
      parse_quality_table(
          R"({"metric": "m", "steps": 2.5, "fractions": [0, 1], "values": {"m": [1, 2]}})"),
      Catch::Contains("\"steps\" = 2.5"));
  REQUIRE_THROWS_WITH(plan::load_quality_table("/nonexistent/q.json"),
                      Catch::Contains("/nonexistent/q.json"));
  REQUIRE_THROWS_WITH(plan::load_quality_table("/dev/null"), Catch::Contains("not a regular file"));
}

#ifdef TSTITCH_MODELS_DIR
TEST_CASE("io: the shipped Fashion quality table loads and matches its fractions", "[plan][io]") {
  const std::string path = std::string(TSTITCH_MODELS_DIR) + "/fashion_quality.json";
  const plan::QualityTable cls = plan::load_quality_table(path);
  REQUIRE(cls.metric == "FD-cls");
  REQUIRE(cls.steps == 50);
  REQUIRE(cls.entries.size() == 11);
  REQUIRE(cls.entries.front().value == 37.90);
  REQUIRE(cls.entries.back().value == 62.90);
  const plan::QualityTable pca = plan::load_quality_table(path, "FD-pca");
  REQUIRE(pca.entries.size() == 11);
  REQUIRE(!cls.date.empty());
  REQUIRE(!cls.machine.empty());
  REQUIRE(!cls.command.empty());
}
#endif
