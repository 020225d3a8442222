// SPDX-License-Identifier: Apache-2.0
#pragma once

// PNG output through stb_image_write (Debian libstb-dev). The implementation is compiled into
// every translation unit that includes this header, with internal linkage (STB_IMAGE_WRITE_STATIC),
// so the library stays header-only and two translation units never define the same symbol.
// Include this header before any other inclusion of stb_image_write.h in the same translation
// unit: stb's declarations are guarded, its implementation is not.
#ifdef INCLUDE_STB_IMAGE_WRITE_H
#error "tstitch/io/png.hpp must be included before <stb/stb_image_write.h> in a translation unit"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#undef STB_IMAGE_WRITE_IMPLEMENTATION

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/atomic_write.hpp"

namespace tstitch::io {

/// How a batch of images becomes one grid image.
struct GridOptions {
  std::int64_t columns = 10; ///< images per row (the last row may be short)
  float value_min = -1.0f;   ///< maps to 0 (diffusion images live in [-1, 1])
  float value_max = 1.0f;    ///< maps to 255
  std::int64_t padding = 2;  ///< pixels between tiles and around the grid
  std::uint8_t padding_value = 128;
  std::int64_t scale = 1; ///< each image pixel becomes scale x scale grid pixels
};

/// An 8-bit image: width x height x channels bytes, row-major, channels interleaved.
struct Image8 {
  std::int64_t width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels;
};

/// One value in [value_min, value_max] to a byte, rounding to nearest; values outside clamp, NaN
/// becomes 0.
[[nodiscard]] inline std::uint8_t to_byte(float v, float value_min, float value_max) {
  const float unit = (v - value_min) / (value_max - value_min);
  if (!(unit > 0.0f))
    return 0;
  if (unit >= 1.0f)
    return 255;
  return static_cast<std::uint8_t>(std::lround(unit * 255.0f));
}

/// stb_image_write holds a PNG's filtered rows, (width x channels + 1) x height bytes, in int
/// sizes; beyond this many bytes its arithmetic could overflow.
inline constexpr std::int64_t png_max_filtered_bytes = std::int64_t{1} << 30;

/// Throws tstitch::invalid_argument when a width x height x channels image is too large for
/// encode_png (extents of at most 2^24 keep the product from overflowing int64).
inline void check_png_size(std::int64_t width, std::int64_t height, std::int64_t channels) {
  const std::int64_t filtered = (width * channels + 1) * height;
  if (filtered > png_max_filtered_bytes)
    throw_invalid_argument("PNG size",
                           tstitch::detail::concat(width, "x", height, "x", channels, " (",
                                                   filtered, " bytes filtered)"),
                           tstitch::detail::concat("must be at most ", png_max_filtered_bytes,
                                                   " bytes for stb_image_write"));
}

/// The pixel size of the grid image_grid makes of `count` images of shape `s`; throws
/// tstitch::invalid_argument for options or sizes it cannot make (so a caller can check a grid
/// before making its images).
struct GridSize {
  std::int64_t width = 0, height = 0;
};
[[nodiscard]] inline GridSize grid_size(std::int64_t count, Shape s,
                                        const GridOptions& options = {}) {
  if (s.channels != 1 && s.channels != 3)
    throw_invalid_argument("image channels", s.channels,
                           "a PNG grid needs 1 (grey) or 3 (RGB) channels");
  require(count >= 1, "image count", count, "must be at least 1");
  require(options.columns >= 1, "grid columns", options.columns, "must be at least 1");
  require(options.scale >= 1, "grid scale", options.scale, "must be at least 1");
  require(options.padding >= 0, "grid padding", options.padding, "must be >= 0");
  if (!(options.value_max > options.value_min))
    throw_invalid_argument(
        "grid value range",
        tstitch::detail::concat("[", options.value_min, ", ", options.value_max, "]"),
        "value_max must exceed value_min");
  require(s.height >= 1 && s.width >= 1, "image size",
          tstitch::detail::concat(s.height, "x", s.width), "must be at least 1x1");
  const std::int64_t cols = std::min(options.columns, count);
  const std::int64_t rows = (count + cols - 1) / cols;
  // Every factor is checked against the limit before it is multiplied, so nothing overflows.
  constexpr std::int64_t limit = std::int64_t{1} << 24;
  const auto extent = [&](std::string_view name, std::int64_t tiles, std::int64_t pixels) {
    if (pixels > limit / options.scale || tiles > limit || options.padding > limit ||
        tiles * pixels * options.scale + (tiles + 1) * options.padding > limit)
      throw_invalid_argument(name,
                             tstitch::detail::concat(tiles, " tiles x ", pixels, " pixels x scale ",
                                                     options.scale, " + (", tiles,
                                                     " + 1) x padding ", options.padding),
                             tstitch::detail::concat("must be at most ", limit,
                                                     " pixels for a PNG written in memory"));
    return tiles * pixels * options.scale + (tiles + 1) * options.padding;
  };
  const GridSize size{extent("grid width", cols, s.width), extent("grid height", rows, s.height)};
  check_png_size(size.width, size.height, s.channels);
  return size;
}

/// Lays out images (N, C, H, W), C = 1 (grey) or 3 (RGB), as a grid: image n at row n / columns,
/// column n % columns.
[[nodiscard]] inline Image8 image_grid(ConstView images, const GridOptions& options = {}) {
  const Shape s = images.shape();
  const GridSize size = grid_size(images.batch(), s, options);
  const std::int64_t n = images.batch(), cols = std::min(options.columns, n);
  Image8 out;
  out.channels = s.channels;
  out.width = size.width;
  out.height = size.height;
  const std::int64_t tile_w = s.width * options.scale, tile_h = s.height * options.scale;
  out.pixels.assign(static_cast<std::size_t>(out.width * out.height * out.channels),
                    options.padding_value);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t left = options.padding + (i % cols) * (tile_w + options.padding);
    const std::int64_t top = options.padding + (i / cols) * (tile_h + options.padding);
    for (std::int64_t y = 0; y < tile_h; ++y)
      for (std::int64_t x = 0; x < tile_w; ++x)
        for (std::int64_t c = 0; c < s.channels; ++c) {
          const float v = images.at(i, c, y / options.scale, x / options.scale);
          out.pixels[static_cast<std::size_t>(((top + y) * out.width + left + x) * out.channels +
                                              c)] =
              to_byte(v, options.value_min, options.value_max);
        }
  }
  return out;
}

/// Encodes an image as PNG bytes.
[[nodiscard]] inline std::vector<std::uint8_t> encode_png(const Image8& image) {
  require(image.width >= 1 && image.height >= 1 && image.width <= (1 << 24) &&
              image.height <= (1 << 24) && (image.channels >= 1 && image.channels <= 4),
          "PNG image", tstitch::detail::concat(image.width, "x", image.height, "x", image.channels),
          "needs extents in [1, 2^24] and 1 to 4 channels");
  check_png_size(image.width, image.height, image.channels);
  require(image.pixels.size() ==
              static_cast<std::size_t>(image.width * image.height * image.channels),
          "PNG pixel bytes", image.pixels.size(),
          tstitch::detail::concat("must be width x height x channels = ",
                                  image.width * image.height * image.channels));
  std::vector<std::uint8_t> bytes;
  const auto append = [](void* context, void* data, int size) {
    auto* target = static_cast<std::vector<std::uint8_t>*>(context);
    const auto* begin = static_cast<const std::uint8_t*>(data);
    target->insert(target->end(), begin, begin + size);
  };
  const int ok =
      stbi_write_png_to_func(append, &bytes, static_cast<int>(image.width),
                             static_cast<int>(image.height), static_cast<int>(image.channels),
                             image.pixels.data(), static_cast<int>(image.width * image.channels));
  if (ok == 0)
    throw runtime_error(tstitch::detail::concat("tstitch: PNG encoding of a ", image.width, "x",
                                                image.height, "x", image.channels,
                                                " image failed"));
  return bytes;
}

/// Writes an image as a PNG file, atomically (a failed write leaves the old file); errors name
/// the path and the OS reason.
inline void write_png(const std::filesystem::path& path, const Image8& image) {
  const std::vector<std::uint8_t> bytes = encode_png(image);
  write_file_atomically(path, [&](AtomicWriter& out) { out.write(bytes.data(), bytes.size()); });
}

/// Writes images (N, C, H, W) as one PNG grid.
inline void write_png_grid(const std::filesystem::path& path, ConstView images,
                           const GridOptions& options = {}) {
  write_png(path, image_grid(images, options));
}

} // namespace tstitch::io
