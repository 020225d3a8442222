// SPDX-License-Identifier: Apache-2.0
// PNG grids (stb_image_write) and .npy files.
#include <catch2/catch.hpp>

#include "tstitch/io/png.hpp" // first: it compiles stb_image_write's implementation

// The reader, for round trips: compiled here only, with internal linkage.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "support/bytes.hpp"
#include "support/files.hpp"
#include "tstitch/io/npy.hpp"

using namespace tstitch;

namespace {

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("tstitch_test_io_" + name);
}

using test::read_all;

} // namespace

TEST_CASE("to_byte maps [min, max] to 0..255 with rounding and clamping", "[png]") {
  CHECK(io::to_byte(-1.0f, -1.0f, 1.0f) == 0);
  CHECK(io::to_byte(1.0f, -1.0f, 1.0f) == 255);
  CHECK(io::to_byte(0.0f, -1.0f, 1.0f) == 128); // 127.5 rounds away from zero
  CHECK(io::to_byte(-0.5f, -1.0f, 1.0f) == 64); // 63.75
  CHECK(io::to_byte(7.0f, -1.0f, 1.0f) == 255);
  CHECK(io::to_byte(-7.0f, -1.0f, 1.0f) == 0);
  CHECK(io::to_byte(std::nanf(""), -1.0f, 1.0f) == 0);
}

TEST_CASE("A grey PNG grid reads back pixel for pixel", "[png]") {
  // Three 2x3 images in a grid of 2 columns, padding 1, scale 2: tiles 4x6 (h x w).
  Tensor images(3, Shape{1, 2, 3});
  for (std::int64_t i = 0; i < images.numel(); ++i)
    images[i] = -1.0f + 2.0f * static_cast<float>(i) / static_cast<float>(images.numel() - 1);
  io::GridOptions options;
  options.columns = 2;
  options.padding = 1;
  options.padding_value = 7;
  options.scale = 2;
  const auto path = temp_path("grid.png");
  io::write_png_grid(path, images, options);

  int w = 0, h = 0, c = 0;
  unsigned char* pixels = stbi_load(path.string().c_str(), &w, &h, &c, 0);
  REQUIRE(pixels != nullptr);
  CHECK(c == 1);
  REQUIRE(w == 2 * 6 + 3 * 1);
  REQUIRE(h == 2 * 4 + 3 * 1);
  auto at = [&](int y, int x) { return static_cast<int>(pixels[y * w + x]); };
  int mismatches = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      int expected = 7; // padding, and the empty fourth tile
      const int col = (x - 1) / 7, row = (y - 1) / 5;
      const int tx = (x - 1) % 7, ty = (y - 1) % 5;
      const int image = row * 2 + col;
      if (x >= 1 && y >= 1 && tx < 6 && ty < 4 && image < 3)
        expected = io::to_byte(images.view().at(image, 0, ty / 2, tx / 2), -1.0f, 1.0f);
      if (at(y, x) != expected && ++mismatches <= 3)
        FAIL_CHECK("pixel (" << y << ", " << x << ") = " << at(y, x) << ", expected " << expected);
    }
  CHECK(mismatches == 0);
  // Spot checks independent of to_byte: the first pixel of image 0 is -1 -> 0, the last pixel
  // of image 2 is +1 -> 255.
  CHECK(at(1, 1) == 0);
  CHECK(at(1 + 5 + 3, 1 + 5) == 255);
  stbi_image_free(pixels);
}

TEST_CASE("An RGB PNG keeps the channels apart", "[png]") {
  Tensor image(1, Shape{3, 1, 2});
  const float values[] = {1.0f, -1.0f, /*G*/ -1.0f, 0.0f, /*B*/ 0.5f, 1.0f};
  std::copy(std::begin(values), std::end(values), image.data());
  io::GridOptions options;
  options.padding = 0;
  const auto path = temp_path("rgb.png");
  io::write_png_grid(path, image, options);
  int w = 0, h = 0, c = 0;
  unsigned char* pixels = stbi_load(path.string().c_str(), &w, &h, &c, 0);
  REQUIRE(pixels != nullptr);
  REQUIRE((w == 2 && h == 1 && c == 3));
  const std::vector<int> got(pixels, pixels + 6);
  CHECK(got == std::vector<int>{255, 0, 191, 0, 128, 255});
  stbi_image_free(pixels);
}

TEST_CASE("PNG errors name the problem", "[png]") {
  Tensor four(1, Shape{4, 2, 2});
  CHECK_THROWS_WITH(io::write_png_grid(temp_path("x.png"), four),
                    Catch::Contains("image channels = 4"));
  Tensor grey(1, Shape{1, 2, 2});
  const auto bad = temp_path("no_such_dir") / "x.png";
  CHECK_THROWS_WITH(io::write_png_grid(bad, grey), Catch::Contains("no_such_dir"));
  io::GridOptions options;
  options.columns = 0;
  CHECK_THROWS_WITH(io::image_grid(grey, options), Catch::Contains("grid columns = 0"));
}

TEST_CASE("PNG grid sizes are checked before they can overflow", "[png]") {
  Tensor grey(2, Shape{1, 2, 3});
  // A view may claim any shape: a negative width is refused, not multiplied.
  const ConstView negative(grey.data(), 1, Shape{1, 2, -3});
  CHECK_THROWS_WITH(io::image_grid(negative), Catch::Contains("image size = 2x-3"));
  io::GridOptions options;
  options.scale = std::int64_t{1} << 62; // width x scale wrapped around int64
  CHECK_THROWS_AS(io::image_grid(grey, options), tstitch::invalid_argument);
  CHECK_THROWS_WITH(io::image_grid(grey, options),
                    Catch::Contains("grid width = 2 tiles x 3 pixels x scale 4611686018427387904"));
  options.scale = 1;
  options.padding = std::int64_t{1} << 62; // (columns + 1) x padding wrapped around int64
  CHECK_THROWS_WITH(io::image_grid(grey, options),
                    Catch::Contains("grid width") &&
                        Catch::Contains("padding 4611686018427387904"));
}

TEST_CASE("grid_size checks a grid before its images exist; encode_png checks its image", "[png]") {
  // What a CLI checks before sampling: the size image_grid will make, or the error it will raise.
  io::GridOptions options;
  options.columns = 10;
  options.scale = 2;
  const io::GridSize size = io::grid_size(25, Shape{3, 16, 16}, options);
  CHECK(size.width == 10 * 32 + 11 * 2);
  CHECK(size.height == 3 * 32 + 4 * 2);
  CHECK_THROWS_WITH(io::grid_size(2147483647, Shape{3, 16, 16}, options),
                    Catch::Contains("grid height = 214748365 tiles"));
  // Each extent within 2^24 pixels, but more bytes than stb_image_write's int sizes hold.
  options.columns = 1 << 18;
  CHECK_THROWS_WITH(io::grid_size(std::int64_t{1} << 20, Shape{3, 16, 16}, options),
                    Catch::Contains("PNG size") && Catch::Contains("stb_image_write"));
  // An Image8 whose pixels do not match its size is refused, not read out of bounds.
  io::Image8 image;
  image.width = 4;
  image.height = 4;
  image.channels = 3;
  image.pixels.assign(10, 0);
  CHECK_THROWS_WITH(io::encode_png(image), Catch::Contains("PNG pixel bytes = 10"));
}

TEST_CASE("npy header follows NumPy format 1.0 with 64-byte alignment", "[npy]") {
  const std::vector<std::int64_t> shape{2, 1, 3, 4};
  const std::string header = io::npy_header(shape);
  CHECK(header.size() % 64 == 0);
  // NumPy's own bytes (numpy 2.4.6):
  //   b = io.BytesIO(); np.save(b, np.zeros((2, 1, 3, 4), np.float32)); b.getvalue()[:128]
  //   == b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3, 4), }"
  //      + 52 spaces + b"\n"
  const std::string numpy_bytes =
      std::string("\x93NUMPY\x01\x00v\x00", 10) +
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3, 4), }" + std::string(52, ' ') +
      "\n";
  CHECK(header == numpy_bytes);
  CHECK(header.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
  const auto length = static_cast<std::size_t>(static_cast<unsigned char>(header[8]) |
                                               (static_cast<unsigned char>(header[9]) << 8));
  CHECK(length + 10 == header.size());
  const std::string dict = header.substr(10);
  CHECK(dict.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 3, 4), }", 0) == 0);
  CHECK(dict.back() == '\n');
  CHECK(dict.find_first_not_of(' ', dict.find('}') + 1) == dict.size() - 1);
  // One dimension needs the tuple comma; zero dimensions are a scalar "()".
  const std::vector<std::int64_t> one{5}, none{};
  CHECK(io::npy_header(one).find("'shape': (5,), }") != std::string::npos);
  CHECK(io::npy_header(none).find("'shape': (), }") != std::string::npos);
}

TEST_CASE("write_npy checks the element count of the shape", "[npy]") {
  const auto path = temp_path("overflow.npy");
  // 2^62 x 4 wraps around int64 to 0, the number of values given.
  const std::vector<std::int64_t> huge{std::int64_t{1} << 62, 4};
  CHECK_THROWS_AS(io::write_npy(path, std::span<const float>{}, huge), tstitch::invalid_argument);
  CHECK_THROWS_WITH(io::write_npy(path, std::span<const float>{}, huge),
                    Catch::Contains("npy shape = [4611686018427387904, 4]"));
  // A 0 makes the array empty, but the other extents must still multiply within int64: a
  // reader that multiplies them in another order would overflow (read_npy refuses such a file).
  const std::vector<std::int64_t> empty{std::int64_t{1} << 62, 4, 0};
  CHECK_THROWS_WITH(io::write_npy(path, std::span<const float>{}, empty),
                    Catch::Contains("npy shape = [4611686018427387904, 4, 0]"));
  const std::vector<std::int64_t> empty_ok{std::int64_t{1} << 62, 1, 0};
  io::write_npy(path, std::span<const float>{}, empty_ok);
  CHECK(read_all(path).size() == io::npy_header(empty_ok).size());
  CHECK(io::read_npy(path).shape == empty_ok);
  const std::vector<float> six(6);
  const std::vector<std::int64_t> negative{-2, -3};
  CHECK_THROWS_WITH(io::write_npy(path, six, negative), Catch::Contains("npy shape[0] = -2"));
}

TEST_CASE("write_npy writes the header then the little-endian floats", "[npy]") {
  Tensor batch(2, Shape{1, 1, 3});
  for (std::int64_t i = 0; i < 6; ++i)
    batch[i] = 0.25f * static_cast<float>(i) - 1.0f;
  const auto path = temp_path("batch.npy");
  io::write_npy(path, batch);
  const std::string bytes = read_all(path);
  // 10 bytes of preamble + the 65-character dictionary + '\n' = 76: padded to 128.
  REQUIRE(bytes.size() == 128 + 6 * 4);
  CHECK(bytes.substr(0, 128) == io::npy_header(std::vector<std::int64_t>{2, 1, 1, 3}));
  CHECK(bytes.substr(10, 65).find("'shape': (2, 1, 1, 3)") != std::string::npos);
  // -1.0f is 0xBF800000: little-endian 00 00 80 BF.
  CHECK(bytes.substr(128, 4) == std::string("\x00\x00\x80\xBF", 4));
  float back[6];
  std::memcpy(back, bytes.data() + 128, sizeof back);
  for (int i = 0; i < 6; ++i)
    CHECK(back[i] == batch[i]);

  // A channel slice (batch stride != C*H*W) is written compactly.
  Tensor wide(2, Shape{2, 1, 2});
  for (std::int64_t i = 0; i < 8; ++i)
    wide[i] = static_cast<float>(i);
  io::write_npy(path, ConstView(wide.view()).channels(1, 1));
  const std::string sliced = read_all(path);
  REQUIRE(sliced.size() == 128 + 4 * 4); // shape (2, 1, 1, 2): the same header length
  float slice[4];
  std::memcpy(slice, sliced.data() + 128, sizeof slice);
  CHECK(std::vector<float>(slice, slice + 4) == std::vector<float>{2, 3, 6, 7});

  const std::vector<float> three{1, 2, 3};
  const std::vector<std::int64_t> four{4};
  CHECK_THROWS_WITH(io::write_npy(path, three, four), Catch::Contains("npy value count = 3"));
  CHECK_THROWS_WITH(
      io::write_npy(temp_path("no_such_dir") / "a.npy", three, std::vector<std::int64_t>{3}),
      Catch::Contains("no_such_dir"));
}

namespace {

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// A .npy file of the given version and dictionary (no padding) followed by `data`.
std::string npy_bytes(int major, const std::string& dict, const std::string& data) {
  std::string bytes = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  const std::size_t n = dict.size();
  bytes += static_cast<char>(n & 0xFF);
  bytes += static_cast<char>((n >> 8) & 0xFF);
  if (major > 1)
    bytes += std::string(2, '\0');
  return bytes + dict + data;
}

/// A version 1.0 dictionary with these values (written as they appear in the file).
std::string npy_dict(const std::string& descr, const std::string& fortran_order,
                     const std::string& shape) {
  return "{'descr': " + descr + ", 'fortran_order': " + fortran_order + ", 'shape': " + shape +
         ", }\n";
}

using tstitch::test::float_bytes;

} // namespace

TEST_CASE("read_npy reads back what write_npy writes, bit for bit", "[npy]") {
  Tensor batch(3, Shape{2, 1, 3});
  for (std::int64_t i = 0; i < batch.numel(); ++i)
    batch[i] = std::ldexp(static_cast<float>(i) - 7.3f, static_cast<int>(i % 5) - 2);
  batch[4] = -0.0f;
  batch[5] = std::numeric_limits<float>::denorm_min();
  const auto path = temp_path("roundtrip.npy");
  io::write_npy(path, batch);
  const Tensor back = io::read_npy_batch(path);
  CHECK(back.batch() == 3);
  CHECK(back.shape() == Shape{2, 1, 3});
  CHECK(std::memcmp(back.data(), batch.data(), sizeof(float) * 18) == 0);

  // Any rank: one dimension "(5,)", a scalar "()", an empty array.
  const std::vector<float> five{1, 2, 3, 4, 5}, one{9};
  io::write_npy(path, five, std::vector<std::int64_t>{5});
  io::NpyArray a = io::read_npy(path);
  CHECK(a.shape == std::vector<std::int64_t>{5});
  CHECK(a.values == five);
  io::write_npy(path, one, std::vector<std::int64_t>{});
  a = io::read_npy(path);
  CHECK(a.shape.empty());
  CHECK(a.values == one);
  io::write_npy(path, std::span<const float>{}, std::vector<std::int64_t>{4, 0});
  a = io::read_npy(path);
  CHECK(a.shape == std::vector<std::int64_t>{4, 0});
  CHECK(a.values.empty());
}

TEST_CASE("read_npy reads formats 2.0 and 3.0, other key orders and spacing", "[npy]") {
  const auto path = temp_path("v2.npy");
  for (const int major : {2, 3}) {
    write_bytes(path,
                npy_bytes(major, "{'shape': ( 1 , 2 ), 'fortran_order': False, 'descr': '<f4'}\n",
                          float_bytes({1.5f, -2.0f})));
    const io::NpyArray a = io::read_npy(path);
    CHECK(a.shape == std::vector<std::int64_t>{1, 2});
    CHECK(a.values == std::vector<float>{1.5f, -2.0f});
  }
  // An empty batch reads as a Tensor of batch 0.
  io::write_npy(path, std::span<const float>{}, std::vector<std::int64_t>{0, 3, 2, 2});
  const Tensor none = io::read_npy_batch(path);
  CHECK(none.batch() == 0);
  CHECK(none.shape() == Shape{3, 2, 2});
}

TEST_CASE("read_npy names the file and what is wrong with it", "[npy][errors]") {
  const auto path = temp_path("bad.npy");
  const std::string good = npy_dict("'<f4'", "False", "(2,)");
  const std::string two = float_bytes({1.0f, 2.0f});
  auto fails_with = [&](const std::string& bytes, const std::string& message) {
    write_bytes(path, bytes);
    CHECK_THROWS_AS(io::read_npy(path), tstitch::runtime_error);
    CHECK_THROWS_WITH(io::read_npy(path), Catch::Contains("bad.npy") && Catch::Contains(message));
  };
  write_bytes(path, npy_bytes(1, good, two));
  CHECK(io::read_npy(path).values == std::vector<float>{1.0f, 2.0f});

  CHECK_THROWS_WITH(io::read_npy(temp_path("no_such_file.npy")),
                    Catch::Contains("no_such_file.npy") && Catch::Contains("cannot open"));
  fails_with("PK\x03\x04 a zip file", "not a .npy file");
  fails_with(std::string("\x93NUMPY", 6), "not a .npy file");
  fails_with(npy_bytes(4, good, two), "unsupported .npy version 4.0");
  fails_with(npy_bytes(1, good, two).substr(0, 9), "truncated in the header length");
  fails_with(npy_bytes(1, good, two).substr(0, 30), "truncated in the header (58 bytes");
  // A 4-byte header length of 4 GiB - 1 in a 30-byte file: refused before anything is allocated.
  std::string huge_header = npy_bytes(2, good, two).substr(0, 30);
  huge_header.replace(8, 4, std::string(4, '\xFF'));
  fails_with(huge_header, "truncated in the header (4294967295 bytes announced, 18 in the file)");
  // (descr, fortran_order, shape) of the dictionary, and what the error must say.
  const std::string bad_dicts[][4] = {
      {"'<f8'", "False", "(2,)", "dtype '<f8' is not read"},
      {"'>f4'", "False", "(2,)", "dtype '>f4' is not read"},
      {"'<f4'", "True", "(2,)", "fortran_order True is not read"},
      {"'<f4'", "False", "(2, x)", "shape (2, x): 'x' is not an extent"},
      {"'<f4'", "False", "(-2,)", "'-2' is not an extent"},
      {"'<f4'", "False", "(2,,)", "'' is not an extent"},
      {"'<f4'", "False", "2", "shape 2 is not a tuple"},
      {"'<f4'", "False", "(,)", "shape (,): '' is not an extent"},
      {"'<f4'", "False", "(4611686018427387904, 4)",
       "bad.npy': shape [4611686018427387904, 4] has more elements than int64 can count"},
      // 2^61 values: 2^63 bytes, which must not wrap around to the 8 bytes there are.
      {"'<f4'", "False", "(2305843009213693952,)", "(truncated)"}};
  for (const auto& [descr, order, shape, message] : bad_dicts) {
    CAPTURE(descr, order, shape);
    fails_with(npy_bytes(1, npy_dict(descr, order, shape), two), message);
  }
  fails_with(npy_bytes(1, "{'descr': '<f4', 'fortran_order': False, }\n", two),
             "no 'shape': entry");
  fails_with(npy_bytes(1, good, two.substr(0, 7)),
             "shape [2] needs 2 float32 values but the file holds 7 bytes of data (truncated)");
  fails_with(npy_bytes(1, good, two + "x"), "holds 9 bytes of data (bytes after the data)");

  write_bytes(path, npy_bytes(1, good, two));
  CHECK_THROWS_AS(io::read_npy_batch(path), tstitch::runtime_error);
  CHECK_THROWS_WITH(io::read_npy_batch(path),
                    Catch::Contains("bad.npy") && Catch::Contains("shape [2] is not a batch"));
}
