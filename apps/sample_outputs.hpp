// SPDX-License-Identifier: Apache-2.0
#pragma once

// tstitch-sample's output files: the format follows the file name's extension (.png, .jpg/.jpeg,
// .npy, .npz: uint8 [N, H, W, C] as the FID evaluators read), images carry the run's parameters (a
// PNG tEXt chunk, a JPEG comment) and an .npy gets a JSON sidecar beside it, so that the seed of
// any output can be read back. Every file is written atomically (temporary file, fsync, rename).
#include "tstitch/io/png.hpp" // first: it compiles stb_image_write, whose JPEG writer is used here

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tstitch/io/atomic_write.hpp"
#include "tstitch/io/npy.hpp"
#include "tstitch/io/npz.hpp"

namespace tstitch_sample {

enum class Format { png, jpeg, npy, npz, png_dir, unknown };

/// The format a file name asks for, by its extension (case-insensitive).
inline Format format_of(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  for (char& c : ext)
    c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (ext == ".png")
    return Format::png;
  if (ext == ".jpg" || ext == ".jpeg")
    return Format::jpeg;
  if (ext == ".npy")
    return Format::npy;
  if (ext == ".npz")
    return Format::npz;
  return Format::unknown;
}

inline const char* format_name(Format f) {
  switch (f) {
  case Format::png:
    return "PNG";
  case Format::jpeg:
    return "JPEG";
  case Format::npy:
    return ".npy";
  case Format::npz:
    return ".npz";
  case Format::png_dir:
    return "PNG directory";
  case Format::unknown:
    break;
  }
  return "unknown";
}

/// CRC-32 (ISO 3309, as PNG chunks use), bit by bit: chunks here are a few hundred bytes.
inline std::uint32_t crc32(std::string_view bytes) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (const char byte : bytes) {
    crc ^= static_cast<std::uint8_t>(byte);
    for (int bit = 0; bit < 8; ++bit)
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc ^ 0xFFFFFFFFu;
}

/// A PNG tEXt chunk (keyword, NUL, Latin-1 text), inserted after the 8-byte signature and the
/// 25-byte IHDR chunk, where every reader finds it.
inline void add_png_text(std::vector<std::uint8_t>& png, std::string_view keyword,
                         std::string_view text) {
  std::string body = "tEXt";
  body += keyword;
  body += '\0';
  body += text;
  const auto length = static_cast<std::uint32_t>(body.size() - 4);
  const std::uint32_t crc = crc32(body);
  // Big-endian length, type and data, big-endian CRC of type and data.
  std::vector<std::uint8_t> chunk(4 + body.size() + 4);
  for (std::size_t i = 0; i < 4; ++i) {
    chunk[i] = static_cast<std::uint8_t>(length >> (24 - 8 * i));
    chunk[4 + body.size() + i] = static_cast<std::uint8_t>(crc >> (24 - 8 * i));
  }
  std::copy(body.begin(), body.end(), chunk.begin() + 4);
  constexpr std::size_t after_ihdr = 8 + 25;
  png.insert(png.begin() + static_cast<std::ptrdiff_t>(after_ihdr), chunk.begin(), chunk.end());
}

/// Encodes an image as JPEG (stb, quality 95) with a comment segment (COM) after SOI.
inline std::vector<std::uint8_t> encode_jpeg(const tstitch::io::Image8& image,
                                             std::string_view comment) {
  std::vector<std::uint8_t> bytes;
  const auto append = [](void* context, void* data, int size) {
    auto* target = static_cast<std::vector<std::uint8_t>*>(context);
    const auto* begin = static_cast<const std::uint8_t*>(data);
    target->insert(target->end(), begin, begin + size);
  };
  if (stbi_write_jpg_to_func(append, &bytes, static_cast<int>(image.width),
                             static_cast<int>(image.height), static_cast<int>(image.channels),
                             image.pixels.data(), 95) == 0 ||
      bytes.size() < 2)
    throw tstitch::runtime_error(tstitch::detail::concat("JPEG encoding of a ", image.width, "x",
                                                         image.height, " image failed"));
  const std::string_view text = comment.substr(0, 65000); // a segment holds < 64 KiB
  const auto length = static_cast<std::uint16_t>(text.size() + 2);
  std::vector<std::uint8_t> segment{0xFF, 0xFE, static_cast<std::uint8_t>(length >> 8),
                                    static_cast<std::uint8_t>(length & 0xFF)};
  segment.insert(segment.end(), text.begin(), text.end());
  bytes.insert(bytes.begin() + 2, segment.begin(), segment.end());
  return bytes;
}

inline void write_bytes(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  tstitch::io::write_file_atomically(
      path, [&](tstitch::io::AtomicWriter& out) { out.write(bytes.data(), bytes.size()); });
}

/// The grid of `images` as PNG (with tEXt "seed" and "parameters") or JPEG (with the parameters
/// as its comment).
inline void write_image_grid(const std::filesystem::path& path, Format format,
                             tstitch::ConstView images, const tstitch::io::GridOptions& grid,
                             std::uint64_t seed, const std::string& parameters) {
  const tstitch::io::Image8 image = tstitch::io::image_grid(images, grid);
  if (format == Format::jpeg) {
    write_bytes(path, encode_jpeg(image, parameters));
    return;
  }
  std::vector<std::uint8_t> png = tstitch::io::encode_png(image);
  add_png_text(png, "parameters", parameters);
  add_png_text(png, "seed", std::to_string(seed));
  write_bytes(path, png);
}

/// The samples as an .npz holding arr_0, uint8 [N, H, W, C] (pixels converted as DiT's
/// sample_ddp.py does), the evaluation-set format of the ADM FID evaluator.
/// `region`: the part of each image kept (default: all of it).
inline void write_npz(const std::filesystem::path& path, tstitch::ConstView images,
                      std::optional<tstitch::io::ImageRegion> region = std::nullopt) {
  std::vector<std::uint8_t> pixels;
  tstitch::io::append_nhwc_uint8(images, pixels, region);
  const tstitch::Shape s = images.shape();
  const tstitch::io::ImageRegion r = region.value_or(tstitch::io::whole_image(s));
  tstitch::io::write_npz_uint8(path, pixels, images.batch(), r.height, r.width, s.channels);
}

/// --png-dir: sample `index` of `count` is DIR/000042.png (at least 6 digits, as DiT's
/// sample_ddp.py names them; more when the count needs them, so names sort in sample order).
inline std::filesystem::path png_dir_file(const std::filesystem::path& dir, std::int64_t index,
                                          std::int64_t count) {
  int digits = 6;
  for (std::int64_t n = 1000000; n < count; n *= 10)
    ++digits;
  std::string name = std::to_string(index);
  name.insert(0, name.size() < static_cast<std::size_t>(digits) ? digits - name.size() : 0, '0');
  return dir / (name + ".png");
}

/// Samples first, first + 1, ... (`images`) as one PNG each in `dir`: 8-bit pixels as in the .npz
/// (DiT's conversion), with the run's seed and parameters as tEXt chunks. Each file is atomic.
inline void write_png_samples(const std::filesystem::path& dir, tstitch::ConstView images,
                              std::int64_t first, std::int64_t count, std::uint64_t seed,
                              const std::string& parameters,
                              std::optional<tstitch::io::ImageRegion> region = std::nullopt) {
  const tstitch::Shape s = images.shape();
  const tstitch::io::ImageRegion r = region.value_or(tstitch::io::whole_image(s));
  for (std::int64_t n = 0; n < images.batch(); ++n) {
    tstitch::io::Image8 image;
    image.width = r.width;
    image.height = r.height;
    image.channels = s.channels;
    tstitch::io::append_nhwc_uint8(images.samples(n, 1), image.pixels, r);
    std::vector<std::uint8_t> png = tstitch::io::encode_png(image);
    add_png_text(png, "parameters", parameters);
    add_png_text(png, "seed", std::to_string(seed));
    write_bytes(png_dir_file(dir, first + n, count), png);
  }
}

/// The sidecar of an .npy output: the same name with ".json" appended.
inline std::filesystem::path sidecar_of(const std::filesystem::path& npy) {
  return npy.string() + ".json";
}

} // namespace tstitch_sample
