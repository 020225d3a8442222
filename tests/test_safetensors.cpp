// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "support/bytes.hpp"
#include "support/scratch_dir.hpp"
#include "tstitch/io/half.hpp"
#include "tstitch/io/mapped_file.hpp"
#include "tstitch/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using tstitch::io::DType;
using tstitch::io::SafetensorsFile;

// -------------------------------------------------------------------------------------------------
// Half conversions
// -------------------------------------------------------------------------------------------------

using tstitch::io::bf16_to_f32;
using tstitch::io::f16_to_f32;
using tstitch::io::f32_to_bf16_rne;
using tstitch::io::f32_to_f16_rne;

// The conversions are constexpr; a few spot checks at compile time.
static_assert(f16_to_f32(0x3C00) == 1.0f);
static_assert(f16_to_f32(0x0001) == 0x1p-24f);
static_assert(f16_to_f32(0x7BFF) == 65504.0f);
static_assert(f32_to_f16_rne(1.0f) == 0x3C00);
static_assert(f32_to_f16_rne(65520.0f) == 0x7C00);
static_assert(f32_to_f16_rne(0x1p-25f) == 0x0000);
static_assert(bf16_to_f32(0x3F80) == 1.0f);
static_assert(f32_to_bf16_rne(1.0f) == 0x3F80);

std::uint32_t bits_of(float value) { return std::bit_cast<std::uint32_t>(value); }

/// For the exhaustive loops: one Catch assertion per loop, not per value (millions of them are
/// slow, above all under sanitizers), but the first mismatches are still reported in detail.
struct Mismatches {
  int count = 0;
  void check(bool ok, std::uint32_t input, std::uint32_t got, std::uint32_t want) {
    if (ok)
      return;
    if (++count <= 5)
      FAIL_CHECK("input bits 0x" << std::hex << input << ": got 0x" << got << ", want 0x" << want);
  }
};

/// The value of a binary float with `exponent_bits` / `mantissa_bits`, decoded from the IEEE
/// definition with ldexp (no bit tricks shared with the code under test). NaN codes give NaN.
double ieee_value(std::uint32_t code, int exponent_bits, int mantissa_bits) {
  const std::uint32_t mantissa = code & ((1u << mantissa_bits) - 1);
  const std::uint32_t exponent = (code >> mantissa_bits) & ((1u << exponent_bits) - 1);
  const bool negative = ((code >> (mantissa_bits + exponent_bits)) & 1u) != 0;
  const int bias = (1 << (exponent_bits - 1)) - 1;
  double magnitude = 0;
  if (exponent == (1u << exponent_bits) - 1)
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity()
                              : std::numeric_limits<double>::quiet_NaN();
  else if (exponent == 0)
    magnitude = std::ldexp(static_cast<double>(mantissa), 1 - bias - mantissa_bits);
  else
    magnitude = std::ldexp(static_cast<double>(mantissa + (1u << mantissa_bits)),
                           static_cast<int>(exponent) - bias - mantissa_bits);
  return std::copysign(magnitude, negative ? -1.0 : 1.0);
}
double half_value(std::uint16_t code) { return ieee_value(code, 5, 10); }
double bfloat_value(std::uint16_t code) { return ieee_value(code, 8, 7); }

/// Round-to-nearest-even into a 16-bit format by search: `finite` holds the values of the
/// non-negative codes 0, 1, ..., up to the largest finite one, followed by the value the next code
/// (+inf) would have with an unbounded exponent. IEEE rounds as if the exponent were unbounded and
/// overflows to inf when that result is beyond the largest finite value, which is exactly a search
/// over this table. Ties go to the even code.
std::uint16_t reference_round(float value, const std::vector<double>& finite) {
  const double magnitude = std::fabs(static_cast<double>(value));
  const auto sign = static_cast<std::uint16_t>(std::signbit(value) ? 0x8000u : 0u);
  if (magnitude >= finite.back())
    return static_cast<std::uint16_t>(sign | (finite.size() - 1));
  const auto above = std::upper_bound(finite.begin(), finite.end(), magnitude);
  const auto low = static_cast<std::size_t>(above - finite.begin()) - 1;
  const double below_distance = magnitude - finite[low]; // exact: both are close floats
  const double above_distance = finite[low + 1] - magnitude;
  std::size_t code = low;
  if (above_distance < below_distance || (above_distance == below_distance && low % 2 == 1))
    code = low + 1;
  return static_cast<std::uint16_t>(sign | code);
}

std::vector<double> value_table(std::uint16_t infinity_code, double infinity_stand_in,
                                double (*decode)(std::uint16_t)) {
  std::vector<double> table;
  for (std::uint32_t code = 0; code < infinity_code; ++code)
    table.push_back(decode(static_cast<std::uint16_t>(code)));
  table.push_back(infinity_stand_in);
  return table;
}

/// Inputs for the narrowing tests: every value of the 16-bit format itself, every midpoint
/// between neighbours and the floats just next to it, and a stride through all 2^32 float bit
/// patterns (NaNs, float subnormals and huge values included).
std::vector<float> narrowing_inputs(const std::vector<double>& finite) {
  std::vector<float> inputs;
  for (std::size_t i = 0; i + 1 < finite.size(); ++i) {
    const auto midpoint = static_cast<float>((finite[i] + finite[i + 1]) / 2); // exact in float
    for (const float v : {static_cast<float>(finite[i]), midpoint, std::nextafter(midpoint, 0.0f),
                          std::nextafter(midpoint, INFINITY)}) {
      inputs.push_back(v);
      inputs.push_back(-v);
    }
  }
  for (std::uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 4093)
    inputs.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(bits)));
  for (const float v : {std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::denorm_min(), 0x1p-25f, 0x1p-26f})
    inputs.push_back(v);
  return inputs;
}

TEST_CASE("f16_to_f32 is exact for all 65536 halves", "[safetensors][half]") {
  Mismatches definition;
  Mismatches compiler;
  for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto h = static_cast<std::uint16_t>(code);
    const std::uint32_t got = bits_of(f16_to_f32(h));
    const double value = half_value(h);
    // NaN: sign and payload kept bit for bit (a signaling NaN stays signaling).
    const std::uint32_t want =
        std::isnan(value) ? ((code & 0x8000u) << 16) | 0x7F800000u | ((code & 0x3FFu) << 13)
                          : bits_of(static_cast<float>(value)); // incl. the sign of zero
    definition.check(got == want, code, got, want);
#ifdef __FLT16_MAX__
    // g++ on x86-64 has _Float16 with correctly rounded conversions: a second, independent
    // reference made by the compiler (NaNs are only required to stay NaN there).
    const float by_compiler = static_cast<float>(std::bit_cast<_Float16>(h));
    compiler.check(std::isnan(value) ? std::isnan(by_compiler) : got == bits_of(by_compiler), code,
                   got, bits_of(by_compiler));
#endif
  }
  CHECK(definition.count == 0);
  CHECK(compiler.count == 0);
}

TEST_CASE("bf16_to_f32 is exact for all 65536 bfloat16 values", "[safetensors][half]") {
  Mismatches definition;
  for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto h = static_cast<std::uint16_t>(code);
    const std::uint32_t got = bits_of(bf16_to_f32(h));
    const double value = bfloat_value(h);
    const std::uint32_t want = std::isnan(value) ? code << 16 : bits_of(static_cast<float>(value));
    definition.check(got == want, code, got, want);
  }
  CHECK(definition.count == 0);
}

/// The documented NaN results: quiet, sign and top payload bits kept.
std::uint16_t f16_nan(float v) {
  return static_cast<std::uint16_t>(((bits_of(v) >> 16) & 0x8000u) | 0x7E00u |
                                    ((bits_of(v) >> 13) & 0x3FFu));
}
std::uint16_t bf16_nan(float v) { return static_cast<std::uint16_t>((bits_of(v) >> 16) | 0x40u); }

TEST_CASE("f32_to_f16_rne rounds to nearest even", "[safetensors][half]") {
  const std::vector<double> finite = value_table(0x7C00, 65536.0, half_value);
  Mismatches round_trip;
  for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto h = static_cast<std::uint16_t>(code);
    const std::uint16_t got = f32_to_f16_rne(f16_to_f32(h));
    const bool nan = (code & 0x7C00u) == 0x7C00u && (code & 0x3FFu) != 0;
    const std::uint32_t want = nan ? (code | 0x200u) : code;
    round_trip.check(got == want, code, got, want);
  }
  CHECK(round_trip.count == 0);

  Mismatches definition;
  Mismatches compiler;
  const std::vector<float> inputs = narrowing_inputs(finite);
  for (const float v : inputs) {
    const std::uint16_t got = f32_to_f16_rne(v);
    const std::uint16_t want = std::isnan(v) ? f16_nan(v) : reference_round(v, finite);
    definition.check(got == want, bits_of(v), got, want);
#ifdef __FLT16_MAX__
    const auto by_compiler = std::bit_cast<std::uint16_t>(static_cast<_Float16>(v));
    compiler.check(std::isnan(v) || got == by_compiler, bits_of(v), got, by_compiler);
#endif
  }
  CHECK(inputs.size() > 1'000'000);
  CHECK(definition.count == 0);
  CHECK(compiler.count == 0);
}

TEST_CASE("f32_to_bf16_rne rounds to nearest even", "[safetensors][half]") {
  const std::vector<double> finite = value_table(0x7F80, 0x1p128, bfloat_value);
  Mismatches round_trip;
  for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto h = static_cast<std::uint16_t>(code);
    const std::uint16_t got = f32_to_bf16_rne(bf16_to_f32(h));
    const bool nan = (code & 0x7F80u) == 0x7F80u && (code & 0x7Fu) != 0;
    const std::uint32_t want = nan ? (code | 0x40u) : code;
    round_trip.check(got == want, code, got, want);
  }
  CHECK(round_trip.count == 0);

  Mismatches definition;
  const std::vector<float> inputs = narrowing_inputs(finite);
  for (const float v : inputs) {
    const std::uint16_t got = f32_to_bf16_rne(v);
    const std::uint16_t want = std::isnan(v) ? bf16_nan(v) : reference_round(v, finite);
    definition.check(got == want, bits_of(v), got, want);
  }
  CHECK(inputs.size() > 1'000'000);
  CHECK(definition.count == 0);
}

// -------------------------------------------------------------------------------------------------
// Crafted files
// -------------------------------------------------------------------------------------------------

/// This process's crafted files, removed at exit.
const fs::path& scratch_dir() {
  static const tstitch::test::ScratchDir dir("safetensors");
  return dir.path;
}

/// A file in the scratch directory, removed when the test is done with it.
struct TempFile {
  fs::path path;
  explicit TempFile(std::string_view name) : path(scratch_dir() / name) {}
  TempFile(std::string_view name, std::string_view bytes) : TempFile(name) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    std::error_code ignored;
    fs::remove(path, ignored);
  }
};

using tstitch::test::le64;
using tstitch::test::st_file;

std::string entry(std::string_view dtype, std::string_view shape, std::uint64_t begin,
                  std::uint64_t end) {
  return tstitch::detail::concat(R"({"dtype":")", dtype, R"(","shape":)", shape,
                                 R"(,"data_offsets":[)", begin, ',', end, "]}");
}

std::string zeros(std::size_t n) { return std::string(n, '\0'); }

struct BadFile {
  std::string name;
  std::string bytes;
  std::vector<std::string> needles; // besides the file path
};

TEST_CASE("invalid safetensors files are rejected with the file and tensor named",
          "[safetensors]") {
  const std::string w8 = R"({"w":)" + entry("F32", "[2]", 0, 8) + "}"; // 8 data bytes
  const std::vector<BadFile> cases = {
      // --- the 8-byte header length -----------------------------------------------------------
      {"empty_file", "", {"0 bytes", "too short"}},
      {"short_file", std::string("\x10\x00\x00", 3), {"3 bytes", "too short"}},
      {"header_too_large", le64(100'000'001) + "{}", {"100000001", "limit"}},
      {"header_length_max_u64", le64(~std::uint64_t{0}) + "{}", {"18446744073709551615", "limit"}},
      {"header_beyond_file", le64(64) + "{}", {"header length 64 exceeds the file (10 bytes)"}},
      {"header_length_too_short", le64(w8.size() - 5) + w8 + zeros(8), {"not valid JSON"}},
      {"header_length_too_long",
       le64(w8.size() + 4) + w8 + "\x01\x02\x03\x04" + zeros(4),
       {"not valid JSON"}},
      // --- the header JSON --------------------------------------------------------------------
      {"header_not_json", st_file("hello, world"), {"not a JSON object", "'{'"}},
      {"header_invalid_json", st_file(R"({"w": })"), {"not valid JSON"}},
      {"header_trailing_garbage", st_file(R"({} {})"), {"not valid JSON"}},
      {"header_unterminated_string",
       st_file("{\"" + std::string(5000, 'x')),
       {"not valid JSON", "..."}},
      {"header_array", st_file("[1, 2]"), {"not a JSON object"}},
      {"header_empty", st_file(""), {"not a JSON object"}},
      {"header_bom", st_file("\xEF\xBB\xBF{}"), {"not a JSON object"}},
      {"header_bad_utf8",
       st_file("{\"w\xFF\":" + entry("F32", "[2]", 0, 8) + "}", zeros(8)),
       {"not valid JSON", "\\xff"}},
      // --- tensor entries ---------------------------------------------------------------------
      {"entry_not_object", st_file(R"({"w": 5})"), {"tensor 'w'", "not an object"}},
      {"missing_dtype",
       st_file(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", zeros(8)),
       {"tensor 'w'", "missing field 'dtype'"}},
      {"missing_shape",
       st_file(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", zeros(8)),
       {"tensor 'w'", "missing field 'shape'"}},
      {"missing_data_offsets",
       st_file(R"({"w":{"dtype":"F32","shape":[2]}})", zeros(8)),
       {"tensor 'w'", "missing field 'data_offsets'"}},
      {"dtype_not_string",
       st_file(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", zeros(8)),
       {"tensor 'w'", "dtype is a JSON number"}},
      {"unknown_dtype",
       st_file(R"({"w":)" + entry("F31", "[2]", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "unknown dtype 'F31'"}},
      {"lowercase_dtype",
       st_file(R"({"w":)" + entry("f32", "[2]", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "unknown dtype 'f32'"}},
      {"shape_not_array",
       st_file(R"({"w":)" + entry("F32", R"("2")", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "shape is a JSON string"}},
      {"shape_negative",
       st_file(R"({"w":)" + entry("F32", "[-2]", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "[-2]", "not a non-negative integer"}},
      {"shape_fractional",
       st_file(R"({"w":)" + entry("F32", "[2.5]", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "not a non-negative integer"}},
      {"shape_float",
       st_file(R"({"w":)" + entry("F32", "[2.0]", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "not a non-negative integer"}},
      {"shape_string_entry",
       st_file(R"({"w":)" + entry("F32", R"(["2"])", 0, 8) + "}", zeros(8)),
       {"tensor 'w'", "not a non-negative integer"}},
      {"shape_beyond_int64",
       st_file(R"({"w":)" + entry("F32", "[0,9223372036854775808]", 0, 0) + "}"),
       {"tensor 'w'", "beyond int64"}},
      {"shape_overflow",
       st_file(R"({"w":)" + entry("F32", "[4294967296,4294967296,4294967296]", 0, 8) + "}",
               zeros(8)),
       {"tensor 'w'", "overflows"}},
      // Empty, but 2^32 * 2^31 overflows numel()'s int64 product before the 0 is reached.
      {"shape_empty_overflow",
       st_file(R"({"w":)" + entry("F32", "[4294967296,2147483648,0]", 0, 0) + "}"),
       {"tensor 'w'", "[4294967296,2147483648,0]", "overflows int64"}},
      {"shape_size_mismatch",
       st_file(R"({"w":)" + entry("F32", "[2,3]", 0, 20) + "}", zeros(20)),
       {"tensor 'w'", "[2, 3] of F32 needs 24 bytes", "[0, 20) hold 20"}},
      {"subbyte_partial",
       st_file(R"({"w":)" + entry("F4", "[3]", 0, 1) + "}", zeros(1)),
       {"tensor 'w'", "whole number of bytes"}},
      {"offsets_not_pair",
       st_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", zeros(8)),
       {"tensor 'w'", "[0,8,8]", "not [begin, end]"}},
      {"offsets_negative",
       st_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", zeros(8)),
       {"tensor 'w'", "not [begin, end]"}},
      {"offsets_float",
       st_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", zeros(8)),
       {"tensor 'w'", "not [begin, end]"}},
      {"offsets_not_array",
       st_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":"0-8"}})", zeros(8)),
       {"tensor 'w'", "not [begin, end]"}},
      // --- offsets against the data section ---------------------------------------------------
      {"begin_after_end",
       st_file(R"({"w":)" + entry("F32", "[2]", 8, 0) + "}", zeros(8)),
       {"tensor 'w'", "[8, 0)", "end before they begin"}},
      {"offsets_out_of_bounds",
       st_file(R"({"w":)" + entry("F32", "[4]", 0, 16) + "}", zeros(8)),
       {"tensor 'w'", "[0, 16) exceed the data section (8 bytes)"}},
      {"offsets_huge",
       st_file(R"({"w":)" + entry("U8", "[1]", 18446744073709551615u - 1, 18446744073709551615u) +
                   "}",
               zeros(8)),
       {"tensor 'w'", "exceed the data section (8 bytes)"}},
      {"truncated_data",
       st_file(R"({"a":)" + entry("F32", "[2]", 0, 8) + R"(,"b":)" + entry("F32", "[2]", 8, 16) +
                   "}",
               zeros(12)),
       {"tensor 'b'", "[8, 16) exceed the data section (12 bytes)"}},
      {"overlapping",
       st_file(R"({"a":)" + entry("F32", "[2]", 0, 8) + R"(,"b":)" + entry("F32", "[2]", 4, 12) +
                   "}",
               zeros(12)),
       {"tensor 'b'", "[4, 12) overlap tensor 'a' at [0, 8)"}},
      {"empty_tensor_inside_another",
       st_file(R"({"a":)" + entry("F32", "[2]", 0, 8) + R"(,"z":)" + entry("F32", "[0]", 4, 4) +
                   "}",
               zeros(8)),
       {"tensor 'z'", "overlap tensor 'a'"}},
      {"hole",
       st_file(R"({"a":)" + entry("F32", "[1]", 0, 4) + R"(,"b":)" + entry("F32", "[1]", 8, 12) +
                   "}",
               zeros(12)),
       {"tensor 'b'", "leave the bytes [4, 8)", "no holes"}},
      {"hole_at_start",
       st_file(R"({"a":)" + entry("F32", "[1]", 4, 8) + "}", zeros(8)),
       {"tensor 'a'", "leave the bytes [0, 4)"}},
      {"trailing_bytes",
       st_file(R"({"a":)" + entry("F32", "[1]", 0, 4) + "}", zeros(8)),
       {"cover 4 bytes of the 8-byte data section"}},
      {"data_without_tensors", st_file("{}", zeros(4)), {"cover 0 bytes of the 4-byte"}},
      // --- duplicate keys ---------------------------------------------------------------------
      {"duplicate_name",
       st_file(R"({"w":)" + entry("F32", "[1]", 0, 4) + R"(,"w":)" + entry("F32", "[1]", 4, 8) +
                   "}",
               zeros(8)),
       {"tensor 'w'", "twice"}},
      {"duplicate_name_identical_entries", // the reference implementation accepts this one
       st_file(R"({"w":)" + entry("F32", "[1]", 0, 4) + R"(,"w":)" + entry("F32", "[1]", 0, 4) +
                   "}",
               zeros(4)),
       {"tensor 'w'", "twice"}},
      {"duplicate_field",
       st_file(R"({"w":{"dtype":"F16","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", zeros(4)),
       {"tensor 'w'", "field 'dtype' twice"}},
      {"duplicate_metadata",
       st_file(R"({"__metadata__":{},"__metadata__":{}})"),
       {"__metadata__ appears twice"}},
      {"duplicate_metadata_key",
       st_file(R"({"__metadata__":{"k":"1","k":"2"}})"),
       {"__metadata__ has the key 'k' twice"}},
      // --- __metadata__ -----------------------------------------------------------------------
      {"metadata_not_object",
       st_file(R"({"__metadata__":["a"]})"),
       {"__metadata__ is a JSON array"}},
      {"metadata_number_value",
       st_file(R"({"__metadata__":{"k":1}})"),
       {"value of 'k' is a JSON number", "not a string"}},
      {"metadata_object_value",
       st_file(R"({"__metadata__":{"k":{"x":"y"}}})"),
       {"value of 'k' is a JSON object"}},
  };

  for (const BadFile& bad : cases) {
    DYNAMIC_SECTION(bad.name) {
      const TempFile file(bad.name + ".safetensors", bad.bytes);
      try {
        const SafetensorsFile opened(file.path);
        FAIL("opened " << bad.name << " without an error");
      } catch (const tstitch::io::format_error& e) {
        const std::string what = e.what();
        CHECK_THAT(what, Contains(file.path.string()));
        CHECK(what.size() < 1000);
        for (const std::string& needle : bad.needles)
          CHECK_THAT(what, Contains(needle));
      }
      // The same bytes from memory: the same verdict, the given name in place of the path.
      try {
        const auto bytes = std::as_bytes(std::span<const char>(bad.bytes));
        const SafetensorsFile parsed = SafetensorsFile::from_bytes(bytes, "memory:" + bad.name);
        FAIL("parsed " << bad.name << " from memory without an error");
      } catch (const tstitch::io::format_error& e) {
        const std::string what = e.what();
        CHECK_THAT(what, Contains("memory:" + bad.name));
        for (const std::string& needle : bad.needles)
          CHECK_THAT(what, Contains(needle));
      }
    }
  }
}

TEST_CASE("format errors are tstitch runtime errors", "[safetensors]") {
  const TempFile file("kinds.safetensors", "abc");
  CHECK_THROWS_AS(SafetensorsFile(file.path), tstitch::runtime_error);
  CHECK_THROWS_AS(SafetensorsFile(file.path), std::runtime_error);
  CHECK_THROWS_AS(SafetensorsFile(file.path), tstitch::error);
}

TEST_CASE("unreadable paths throw runtime_error naming the path", "[safetensors]") {
  const fs::path missing = scratch_dir() / "does_not_exist.safetensors";
  CHECK_THROWS_WITH(SafetensorsFile(missing),
                    Contains(missing.string()) && Contains("No such file"));
  CHECK_THROWS_WITH(SafetensorsFile(scratch_dir()),
                    Contains(scratch_dir().string()) &&
                        Contains("not a regular file (a directory)"));
}

TEST_CASE("valid corner cases are accepted", "[safetensors]") {
  SECTION("no tensors, no data") {
    const TempFile file("empty_header.safetensors", st_file("{}"));
    const SafetensorsFile st(file.path);
    CHECK(st.size() == 0);
    CHECK(st.names().empty());
    CHECK(st.metadata().empty());
  }
  SECTION("header padded with spaces, leading whitespace, unknown fields, null __metadata__") {
    const TempFile file("lenient.safetensors",
                        st_file("\n {\"__metadata__\":null,\"w\":{\"dtype\":\"F32\",\"shape\":[1],"
                                "\"data_offsets\":[0,4],\"extra\":[1,{\"x\":2}]}}    ",
                                zeros(4)));
    const SafetensorsFile st(file.path);
    CHECK(st.metadata().empty());
    CHECK(st.read_f32("w") == std::vector<float>{0.0f});
  }
  SECTION("zero-size tensors may share offsets with their neighbours") {
    const TempFile file("zero_size.safetensors",
                        st_file(R"({"a":)" + entry("F32", "[0]", 0, 0) + R"(,"b":)" +
                                    entry("F32", "[1]", 0, 4) + R"(,"c":)" +
                                    entry("F16", "[3,0,2]", 4, 4) + R"(,"d":)" +
                                    entry("F32", "[0]", 4, 4) + R"(,"e":)" +
                                    entry("F32", "[4294967296,0,2147483647]", 4, 4) + "}",
                                zeros(4)));
    const SafetensorsFile st(file.path);
    CHECK(st.names() == std::vector<std::string>{"a", "b", "c", "d", "e"});
    CHECK(st.info("c").numel() == 0);
    CHECK(st.info("e").numel() == 0); // non-zero extents multiply to 2^63 - 2^32 < 2^63
    CHECK(st.info("c").shape == std::vector<std::int64_t>{3, 0, 2});
    CHECK(st.read_f32("c").empty());
    CHECK(st.f32("d").empty());
  }
  SECTION("sub-byte dtypes that fill whole bytes are listed but not readable as float") {
    const TempFile file("f4.safetensors",
                        st_file(R"({"q":)" + entry("F4", "[2,2]", 0, 2) + "}", zeros(2)));
    const SafetensorsFile st(file.path);
    CHECK(st.info("q").dtype == DType::F4);
    CHECK(st.info("q").bytes.size() == 2);
    CHECK_THROWS_WITH(st.read_f32("q"), Contains("tensor 'q'") && Contains("dtype F4"));
  }
}

using tstitch::test::float_bytes;

TEST_CASE("misaligned data: f32() refuses, read_f32() copies", "[safetensors]") {
  // A header of 10 bytes puts the data section at file offset 18, 2 bytes off float alignment.
  const std::string header = R"({"w":)" + entry("F32", "[2]", 0, 8) + "}";
  const std::string padded = header + std::string((4 - (8 + header.size()) % 4 + 2) % 4, ' ');
  REQUIRE((8 + padded.size()) % 4 == 2);
  const TempFile file("misaligned.safetensors", st_file(padded, float_bytes({1.5f, -3.0f})));
  const SafetensorsFile st(file.path);
  try {
    (void)st.f32("w");
    FAIL("f32() returned a misaligned view");
  } catch (const tstitch::io::format_error&) {
    FAIL("a misaligned tensor is valid safetensors, not a format error");
  } catch (const tstitch::runtime_error& e) {
    CHECK_THAT(std::string(e.what()), Contains(file.path.string()) && Contains("tensor 'w'") &&
                                          Contains("aligned") && Contains("read_f32"));
  }
  CHECK(st.read_f32("w") == std::vector<float>{1.5f, -3.0f});

  // F16 and BF16 at odd addresses (after a 1-byte U8 tensor) convert without unaligned loads.
  const std::string odd = R"({"b":)" + entry("U8", "[1]", 0, 1) + R"(,"h":)" +
                          entry("F16", "[2]", 1, 5) + R"(,"z":)" + entry("BF16", "[1]", 5, 7) + "}";
  const std::string odd_data = std::string("\x07\x00\x3C\x00\xC0\x80\x3F", 7);
  const TempFile odd_file("odd_f16.safetensors", st_file(odd, odd_data));
  const SafetensorsFile odd_st(odd_file.path);
  CHECK(odd_st.read_f32("h") == std::vector<float>{1.0f, -2.0f});
  CHECK(odd_st.read_f32("z") == std::vector<float>{1.0f});
}

// -------------------------------------------------------------------------------------------------
// Files written by the official safetensors package (tools/make_safetensors_fixtures.py)
// -------------------------------------------------------------------------------------------------

const fs::path fixture_dir = fs::path(TSTITCH_TEST_DATA_DIR) / "safetensors";

TEST_CASE("files written by the official safetensors package read correctly", "[safetensors]") {
  const fs::path path = fixture_dir / "official_mixed.safetensors";
  const SafetensorsFile st(path);

  CHECK(st.names() == std::vector<std::string>{"blocks.0.attn.qkv.weight",
                                               "blocks.0.mlp.fc1.weight", "empty",
                                               "final_layer.linear.bias", "scalar", "steps"});
  CHECK(st.metadata() ==
        std::map<std::string, std::string>{
            {"format", "pt"}, {"note", "tstitch fixture \u00fc\u00f1\u00ee\u00e7\u00f8d\u00e9"}});

  SECTION("F32, zero-copy") {
    const auto& info = st.expect("blocks.0.attn.qkv.weight", {2, 3});
    CHECK(info.dtype == DType::F32);
    const std::span<const float> view = st.f32("blocks.0.attn.qkv.weight");
    CHECK(static_cast<const void*>(view.data()) == static_cast<const void*>(info.bytes.data()));
    const std::vector<float> expected = {0.0f, 1.0f, -2.5f, 0.1f, 3.0e38f, -1.0e-40f};
    REQUIRE(view.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
      CHECK(bits_of(view[i]) == bits_of(expected[i]));
    CHECK(st.read_f32("blocks.0.attn.qkv.weight") == expected);
  }
  SECTION("F16") {
    CHECK(st.expect("blocks.0.mlp.fc1.weight", {8}).dtype == DType::F16);
    const std::vector<float> values = st.read_f32("blocks.0.mlp.fc1.weight");
    const std::vector<float> expected = {1.0f,     -2.0f,    0.5f,     65504.0f,
                                         0x1p-14f, 0x1p-24f, INFINITY, -0.0f};
    REQUIRE(values.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
      CHECK(bits_of(values[i]) == bits_of(expected[i]));
    CHECK_THROWS_WITH(st.f32("blocks.0.mlp.fc1.weight"),
                      Contains("blocks.0.mlp.fc1.weight") && Contains("F16"));
  }
  SECTION("BF16") {
    CHECK(st.expect("final_layer.linear.bias", {2, 3}).dtype == DType::BF16);
    const std::vector<float> values = st.read_f32("final_layer.linear.bias");
    const std::vector<float> expected = {1.0f, -2.0f, 3.140625f, 0x1p100f, -INFINITY, 0x1p-130f};
    REQUIRE(values.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i)
      CHECK(bits_of(values[i]) == bits_of(expected[i]));
  }
  SECTION("0-d scalar and empty tensor") {
    const auto& scalar = st.expect("scalar", {});
    CHECK(scalar.shape.empty());
    CHECK(scalar.numel() == 1);
    CHECK(st.f32("scalar")[0] == 42.5f);
    const auto& empty = st.expect("empty", {0, 4});
    CHECK(empty.numel() == 0);
    CHECK(empty.bytes.empty());
    CHECK(st.f32("empty").empty());
    CHECK(st.read_f32("empty").empty());
  }
  SECTION("other dtypes are listed, but reading them as float throws naming file and tensor") {
    const auto& steps = st.expect("steps", {3});
    CHECK(steps.dtype == DType::I64);
    std::vector<std::int64_t> raw(3);
    std::memcpy(raw.data(), steps.bytes.data(), 24);
    CHECK(raw == std::vector<std::int64_t>{1, -2, 3});
    CHECK_THROWS_WITH(st.read_f32("steps"),
                      Contains(path.string()) && Contains("tensor 'steps'") && Contains("I64"));
    CHECK_THROWS_AS(st.f32("steps"), tstitch::runtime_error);
  }
  SECTION("missing tensors and wrong shapes are named") {
    CHECK_FALSE(st.contains("blocks.1.attn.qkv.weight"));
    CHECK_THROWS_WITH(st.info("blocks.1.attn.qkv.weight"),
                      Contains(path.string()) && Contains("tensor 'blocks.1.attn.qkv.weight'"));
    CHECK_THROWS_AS(st.info("nope"), tstitch::runtime_error);
    CHECK_THROWS_WITH(st.expect("blocks.0.attn.qkv.weight", {3, 2}),
                      Contains(path.string()) && Contains("tensor 'blocks.0.attn.qkv.weight'") &&
                          Contains("expected shape [3, 2], found [2, 3]"));
  }
}

TEST_CASE("an official file with metadata and no tensors", "[safetensors]") {
  const auto st = SafetensorsFile::open(fixture_dir / "official_no_tensors.safetensors");
  CHECK(st.size() == 0);
  CHECK(st.metadata() == std::map<std::string, std::string>{{"only", "metadata"}});
}

// -------------------------------------------------------------------------------------------------
// Writer
// -------------------------------------------------------------------------------------------------

TEST_CASE("write_safetensors round-trips bit for bit", "[safetensors]") {
  using namespace tstitch::io;
  std::vector<float> specials;
  for (const std::uint32_t bits : {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FA00001u,
                                   0xFFC12345u, 0x00000001u, 0x7F7FFFFFu, 0x3DCCCCCDu, 0xC0490FDBu})
    specials.push_back(std::bit_cast<float>(bits));
  const std::vector<float> halves = {1.0f, 0.1f, -65519.0f, 70000.0f, 1e-8f, -0.0f};
  const std::vector<float> bfloats = {1.0f, 0.1f, -3.0e38f, 1e-40f};
  const float scalar = 7.25f;
  std::vector<std::byte> raw(16);
  for (std::size_t i = 0; i < raw.size(); ++i)
    raw[i] = static_cast<std::byte>(i);
  const std::vector<TensorData> tensors = {
      bf16_tensor("b", {2, 2}, bfloats),
      f16_tensor("h", {2, 3}, halves),
      f32_tensor("specials", {2, 5}, specials),
      f32_tensor("scalar", {}, std::span<const float>(&scalar, 1)),
      f32_tensor("empty", {3, 0}, {}),
      TensorData{"u8", DType::U8, {16}, raw},
  };
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"unicode", "\u00fc\u2603"}, {"blank", ""}};

  const TempFile file("roundtrip.safetensors");
  write_safetensors(file.path, tensors, metadata);
  SafetensorsFile st(file.path);

  CHECK(st.names() == std::vector<std::string>{"b", "empty", "h", "scalar", "specials", "u8"});
  CHECK(st.metadata() == metadata);
  REQUIRE(st.expect("specials", {2, 5}).dtype == DType::F32);
  const std::span<const float> got = st.f32("specials");
  REQUIRE(got.size() == specials.size());
  for (std::size_t i = 0; i < specials.size(); ++i)
    CHECK(bits_of(got[i]) == bits_of(specials[i])); // NaN payloads, -0 and subnormals included
  CHECK(st.f32("scalar")[0] == 7.25f);
  CHECK(st.expect("empty", {3, 0}).bytes.empty());

  const std::vector<float> h = st.read_f32("h");
  for (std::size_t i = 0; i < halves.size(); ++i)
    CHECK(bits_of(h[i]) == bits_of(f16_to_f32(f32_to_f16_rne(halves[i]))));
  CHECK(h[3] == INFINITY); // 70000 overflows binary16
  const std::vector<float> b = st.read_f32("b");
  for (std::size_t i = 0; i < bfloats.size(); ++i)
    CHECK(bits_of(b[i]) == bits_of(bf16_to_f32(f32_to_bf16_rne(bfloats[i]))));
  CHECK(std::ranges::equal(st.info("u8").bytes, raw));

  // Layout like the reference writer: header padded to 8 bytes, tensors aligned to their size.
  const tstitch::io::MappedFile mapped(file.path);
  std::uint64_t header_size = 0;
  std::memcpy(&header_size, mapped.data(), 8);
  CHECK(header_size % 8 == 0);
  for (const std::string& name : st.names()) {
    const auto& info = st.info(name);
    const auto address = reinterpret_cast<std::uintptr_t>(info.bytes.data());
    CHECK(address % (dtype_bits(info.dtype) / 8) == 0);
  }

  SECTION("spans stay valid after a move") {
    const SafetensorsFile moved = std::move(st);
    CHECK(bits_of(moved.f32("specials")[4]) == 0x7FA00001u);
  }
  SECTION("rewriting a mapped file replaces it without disturbing the open mapping") {
    const std::vector<float> one = {5.0f};
    write_safetensors(file.path, std::vector<TensorData>{f32_tensor("new", {1}, one)});
    CHECK(bits_of(st.f32("specials")[4]) == 0x7FA00001u); // old mapping still intact
    const SafetensorsFile fresh(file.path);
    CHECK(fresh.names() == std::vector<std::string>{"new"});
    CHECK_FALSE(fs::exists(file.path.string() + ".tmp"));
  }
}

TEST_CASE("write_safetensors rejects inconsistent tensors", "[safetensors]") {
  using namespace tstitch::io;
  const std::vector<float> three = {1.0f, 2.0f, 3.0f};
  CHECK_THROWS_AS(f32_tensor("w", {2, 2}, three), tstitch::invalid_argument);
  CHECK_THROWS_AS(f16_tensor("w", {-3}, three), tstitch::invalid_argument);
  const TempFile file("bad_write.safetensors");
  CHECK_THROWS_WITH(
      write_safetensors(file.path, std::vector<TensorData>{f32_tensor("w", {3}, three),
                                                           f32_tensor("w", {3}, three)}),
      Contains("w") && Contains("appears twice"));
  CHECK_THROWS_AS(
      write_safetensors(file.path, std::vector<TensorData>{f32_tensor("__metadata__", {3}, three)}),
      tstitch::invalid_argument);
  CHECK_THROWS_AS(write_safetensors(file.path, std::vector<TensorData>{TensorData{
                                                   "short", DType::F32, {2}, {std::byte{0}}}}),
                  tstitch::invalid_argument);
  CHECK_FALSE(fs::exists(file.path));
}

} // namespace
