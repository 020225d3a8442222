// SPDX-License-Identifier: Apache-2.0
#pragma once

// The evaluation-set format of the ADM (guided-diffusion) FID evaluator and of DiT's sample_ddp.py:
// an .npz (a ZIP archive) holding one stored, uncompressed entry `arr_0.npy`, a uint8 array
// [N, H, W, C]. The layout is computed up front from the shape alone, so many writers can put
// samples at their byte offsets in any order, CRC their own blocks, and one of them finishes the
// file with the header and trailer once the CRCs are combined in sample order:
//
//   [local file header][npy header][sample 0]...[sample N-1][central directory][(ZIP64 end)][end]
//
// The CRC-32 and sizes sit in the local header itself (no data descriptor), which every reader
// accepts. ZIP64 records appear only where a 32-bit field cannot hold the value: the entry size
// when it is >= 0xFFFFFFFF (that value itself means "see ZIP64"), and the ZIP64 end records when
// the central directory starts at or beyond that offset.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/io/atomic_write.hpp"
#include "tstitch/io/npy.hpp"

namespace tstitch::io {

// ---------------------------------------------------------------------------------------------
// CRC-32 (ISO-HDLC: reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF), as ZIP
// and zlib use it.
// ---------------------------------------------------------------------------------------------

namespace detail {

inline constexpr std::uint32_t crc32_polynomial = 0xEDB88320u;

/// Slicing-by-8 tables: table[0] is the byte-at-a-time table, table[k][b] the CRC contribution of
/// byte b followed by k zero bytes, so eight bytes are folded per step.
[[nodiscard]] constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc32_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> table{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit)
      crc = (crc >> 1) ^ (crc32_polynomial & (0u - (crc & 1u)));
    table[0][b] = crc;
  }
  for (std::size_t k = 1; k < 8; ++k)
    for (std::uint32_t b = 0; b < 256; ++b)
      table[k][b] = (table[k - 1][b] >> 8) ^ table[0][table[k - 1][b] & 0xFFu];
  return table;
}

inline constexpr auto crc32_tables = make_crc32_tables();

/// a * b modulo the CRC polynomial, both in the reflected representation (bit 31 is x^0).
[[nodiscard]] constexpr std::uint32_t crc32_multiply(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if ((a & (0x80000000u >> i)) != 0)
      product ^= b;
    b = (b >> 1) ^ (crc32_polynomial & (0u - (b & 1u))); // b *= x
  }
  return product;
}

/// x^(8 * bytes) modulo the CRC polynomial, by repeated squaring: log2(bytes) multiplications.
[[nodiscard]] constexpr std::uint32_t crc32_shift(std::uint64_t bytes) {
  std::uint32_t result = 0x80000000u; // x^0
  std::uint32_t power = 0x00800000u;  // x^8: one byte
  for (; bytes != 0; bytes >>= 1) {
    if ((bytes & 1u) != 0)
      result = crc32_multiply(result, power);
    power = crc32_multiply(power, power);
  }
  return result;
}

} // namespace detail

/// Continues a CRC-32 over more bytes: crc32_update(crc32(a), b) == crc32(a followed by b).
/// Start from 0 (the CRC of nothing).
[[nodiscard]] inline std::uint32_t crc32_update(std::uint32_t crc, const void* data,
                                                std::size_t size) {
  const auto& t = detail::crc32_tables;
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (; size >= 8; size -= 8, p += 8) {
    // Little-endian assembly of the first four bytes, so the result does not depend on the host.
    const std::uint32_t low = crc ^ (std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 |
                                     std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24);
    crc = t[7][low & 0xFFu] ^ t[6][(low >> 8) & 0xFFu] ^ t[5][(low >> 16) & 0xFFu] ^
          t[4][low >> 24] ^ t[3][p[4]] ^ t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
  }
  for (; size > 0; --size, ++p)
    crc = (crc >> 8) ^ t[0][(crc ^ *p) & 0xFFu];
  return ~crc;
}

/// The CRC-32 of `size` bytes ("123456789" -> 0xCBF43926).
[[nodiscard]] inline std::uint32_t crc32(const void* data, std::size_t size) {
  return crc32_update(0, data, size);
}
[[nodiscard]] inline std::uint32_t crc32(std::span<const std::uint8_t> bytes) {
  return crc32(bytes.data(), bytes.size());
}

/// The CRC-32 of A followed by B from crc32(A), crc32(B) and B's length, without the bytes:
/// writers CRC their own blocks and the results are combined in order. Polynomial arithmetic
/// modulo the CRC polynomial: crc(A B) = crc(A) * x^(8 |B|) + crc(B) (the initial and final XOR
/// cancel), with x^(8 |B|) by repeated squaring, so a combine costs O(log |B|).
[[nodiscard]] constexpr std::uint32_t crc32_combine(std::uint32_t crc_a, std::uint32_t crc_b,
                                                    std::uint64_t size_b) {
  return detail::crc32_multiply(detail::crc32_shift(size_b), crc_a) ^ crc_b;
}

// ---------------------------------------------------------------------------------------------
// Pixels: DiT's conversion of decoded images in [-1, 1] to uint8.
// ---------------------------------------------------------------------------------------------

/// One value as DiT's sample_ddp.py converts it:
///     torch.clamp(127.5 * samples + 128.0, 0, 255).to(torch.uint8)
/// in float32: the product is rounded to float, then the sum; the clamp comes before the cast,
/// which truncates toward zero. The product passes through a volatile so that no compiler fuses it
/// with the add into an fma (one rounding instead of two: -0.8f would give 25, not torch's 26).
/// The +128 (not ADM's +127.5) makes the truncation round 127.5 x + 127.5 to nearest, ties up.
/// NaN has no uint8 value (torch's cast leaves it undefined): it throws, naming the value.
[[nodiscard]] inline std::uint8_t dit_pixel_to_uint8(float x) {
  if (std::isnan(x))
    throw_invalid_argument("pixel value", x, "must not be NaN to convert to uint8");
  const volatile float scaled = 127.5f * x;
  const float shifted = scaled + 128.0f;
  const float clamped = shifted < 0.0f ? 0.0f : (shifted > 255.0f ? 255.0f : shifted);
  return static_cast<std::uint8_t>(clamped);
}

/// A rectangle of an image: rows [top, top + height), columns [left, left + width).
struct ImageRegion {
  std::int64_t top = 0;
  std::int64_t left = 0;
  std::int64_t height = 0;
  std::int64_t width = 0;
};

/// The whole image of `shape`.
[[nodiscard]] inline ImageRegion whole_image(Shape shape) {
  return {0, 0, shape.height, shape.width};
}

/// The height x width region centred in images of `shape` (an odd margin leaves its extra row or
/// column after the region): e.g. Fashion-MNIST's 28 x 28 items inside the models' 32 x 32.
/// Throws invalid_argument naming the size when it is not positive or larger than the image.
[[nodiscard]] inline ImageRegion centred_region(Shape shape, std::int64_t height,
                                                std::int64_t width) {
  if (height < 1 || width < 1 || height > shape.height || width > shape.width)
    throw_invalid_argument("image region",
                           tstitch::detail::concat(height, "x", width, " in ", shape.height, "x",
                                                   shape.width, " images"),
                           "must be at least 1x1 and fit inside the image");
  return {(shape.height - height) / 2, (shape.width - width) / 2, height, width};
}

/// A batch (N, C, H, W) of images in [-1, 1] (any batch stride) as uint8 [N, h, w, C], the
/// channel-last order of DiT's `.permute(0, 2, 3, 1)`, appended to `out`; values converted by
/// dit_pixel_to_uint8 (NaN throws, naming the sample, channel and pixel, and appends nothing).
/// `region` (default: the whole image) picks the rows and columns kept.
inline void append_nhwc_uint8(ConstView batch, std::vector<std::uint8_t>& out,
                              std::optional<ImageRegion> region = std::nullopt) {
  const Shape s = batch.shape();
  const ImageRegion r = region.value_or(whole_image(s));
  if (r.top < 0 || r.left < 0 || r.height < 1 || r.width < 1 || r.top + r.height > s.height ||
      r.left + r.width > s.width)
    throw_invalid_argument(
        "image region",
        tstitch::detail::concat(r.height, "x", r.width, " at (", r.top, ", ", r.left, ")"),
        tstitch::detail::concat("must lie inside the ", s.height, "x", s.width, " images"));
  const auto channels = static_cast<std::size_t>(s.channels);
  const std::size_t plane = static_cast<std::size_t>(s.height * s.width);
  const std::size_t per_sample = static_cast<std::size_t>(r.height * r.width) * channels;
  const std::size_t start = out.size();
  out.resize(start + per_sample * static_cast<std::size_t>(batch.batch()));
  std::uint8_t* dst = out.data() + start;
  // A NaN leaves `out` as it was: the batch is appended whole or not at all.
  const auto refuse = [&](std::int64_t n, std::int64_t c, std::size_t p, float x) {
    out.resize(start);
    throw_invalid_argument(tstitch::detail::concat("sample ", n, " channel ", c, " pixel ", p), x,
                           "must not be NaN to convert to uint8");
  };
  for (std::int64_t n = 0; n < batch.batch(); ++n) {
    const float* sample = batch.data() + n * batch.batch_stride();
    for (std::int64_t c = 0; c < s.channels; ++c)
      for (std::int64_t y = 0; y < r.height; ++y)
        for (std::int64_t x = 0; x < r.width; ++x) {
          const auto p = static_cast<std::size_t>((r.top + y) * s.width + r.left + x);
          const float v = sample[static_cast<std::size_t>(c) * plane + p];
          if (std::isnan(v))
            refuse(n, c, p, v);
          dst[static_cast<std::size_t>(y * r.width + x) * channels + static_cast<std::size_t>(c)] =
              dit_pixel_to_uint8(v);
        }
    dst += per_sample;
  }
}

// ---------------------------------------------------------------------------------------------
// The .npz layout.
// ---------------------------------------------------------------------------------------------

/// Where everything sits in an .npz of one stored entry `arr_0.npy`, uint8 [N, H, W, C]. All
/// offsets are bytes from the start of the file. The CRC the methods take is `samples_crc`, the
/// CRC-32 of the samples' bytes in order (sample 0 first), e.g. crc32_combine over blocks; the
/// layout adds the npy header's own CRC in front.
class NpzLayout {
public:
  /// Throws tstitch::invalid_argument naming the extent for a zero or negative extent, and naming
  /// the shape when the file size would overflow 64 bits.
  NpzLayout(std::int64_t count, std::int64_t height, std::int64_t width, std::int64_t channels) {
    const std::array<std::pair<const char*, std::int64_t>, 4> extents{{{"npz sample count", count},
                                                                       {"npz height", height},
                                                                       {"npz width", width},
                                                                       {"npz channels", channels}}};
    for (const auto& [name, value] : extents)
      if (value < 1)
        throw_invalid_argument(name, value, "must be at least 1");
    shape_ = {count, height, width, channels};
    std::uint64_t sample = 1;
    bool fits = tstitch::io::detail::checked_multiply(sample, static_cast<std::uint64_t>(height)) &&
                tstitch::io::detail::checked_multiply(sample, static_cast<std::uint64_t>(width)) &&
                tstitch::io::detail::checked_multiply(sample, static_cast<std::uint64_t>(channels));
    std::uint64_t data = sample;
    fits = fits && tstitch::io::detail::checked_multiply(data, static_cast<std::uint64_t>(count));
    // Keep every offset below 2^63 so it also fits off_t / MPI_Offset.
    constexpr std::uint64_t limit = std::numeric_limits<std::int64_t>::max() - (1u << 20);
    if (!fits || data > limit)
      throw_invalid_argument("npz shape", shape_string(shape_),
                             "has more bytes than a file offset can hold");
    sample_bytes_ = sample;
    data_bytes_ = data;
    // The npy header of a '|u1' array: numpy's format 1.0 with the same padding as the float32
    // writer ('<f4' and '|u1' have the same length, so npy_header's padding stays right).
    npy_header_ = npy_header(shape_);
    const std::size_t descr = npy_header_.find("'<f4'");
    npy_header_.replace(descr, 5, "'|u1'");
    entry_bytes_ = npy_header_.size() + data_bytes_;
    zip64_entry_ = entry_bytes_ >= 0xFFFFFFFFu;
    local_header_bytes_ = 30 + name().size() + (zip64_entry_ ? 20 : 0);
    central_offset_ = local_header_bytes_ + entry_bytes_;
    zip64_end_ = central_offset_ >= 0xFFFFFFFFu || zip64_entry_;
    central_bytes_ = 46 + name().size() + (zip64_entry_ ? 20 : 0);
    file_bytes_ = central_offset_ + central_bytes_ + (zip64_end_ ? 56 + 20 : 0) + 22;
  }

  /// The entry's name inside the archive, as np.savez names a positional array.
  [[nodiscard]] static constexpr std::string_view name() { return "arr_0.npy"; }
  /// [N, H, W, C].
  [[nodiscard]] const std::array<std::int64_t, 4>& shape() const { return shape_; }
  [[nodiscard]] std::int64_t count() const { return shape_[0]; }
  /// H * W * C: the bytes of one sample.
  [[nodiscard]] std::uint64_t sample_bytes() const { return sample_bytes_; }
  /// N * H * W * C.
  [[nodiscard]] std::uint64_t data_bytes() const { return data_bytes_; }
  /// Where sample 0 starts: the size of header().
  [[nodiscard]] std::uint64_t data_offset() const {
    return local_header_bytes_ + npy_header_.size();
  }
  /// Where sample `index` starts; throws for an index outside [0, N].
  [[nodiscard]] std::uint64_t sample_offset(std::int64_t index) const {
    if (index < 0 || index > count())
      throw_invalid_argument("npz sample index", index,
                             tstitch::detail::concat("must be in [0, ", count(), "]"));
    return data_offset() + static_cast<std::uint64_t>(index) * sample_bytes_;
  }
  /// Where trailer() goes: right after the last sample.
  [[nodiscard]] std::uint64_t trailer_offset() const { return central_offset_; }
  /// The size of the finished file.
  [[nodiscard]] std::uint64_t file_size() const { return file_bytes_; }
  /// Whether the entry's sizes need ZIP64 fields (entry >= 0xFFFFFFFF bytes).
  [[nodiscard]] bool zip64_entry() const { return zip64_entry_; }
  /// Whether the archive ends with the ZIP64 end record and locator.
  [[nodiscard]] bool zip64_end() const { return zip64_end_; }
  /// The npy header (magic, version, dictionary) that starts the entry's data.
  [[nodiscard]] const std::string& npy_header_bytes() const { return npy_header_; }

  /// The CRC-32 of the whole entry (npy header, then the samples) from the samples' CRC.
  [[nodiscard]] std::uint32_t entry_crc(std::uint32_t samples_crc) const {
    return crc32_combine(crc32(npy_header_.data(), npy_header_.size()), samples_crc, data_bytes_);
  }

  /// The bytes at offset 0: the ZIP local file header (with the entry's CRC-32 and sizes) and the
  /// npy header; data_offset() bytes.
  [[nodiscard]] std::string header(std::uint32_t samples_crc) const {
    std::string out;
    out.reserve(static_cast<std::size_t>(data_offset()));
    put32(out, 0x04034b50u); // local file header signature
    put16(out, version_needed());
    put16(out, 0); // flags: sizes and CRC are here, no data descriptor
    put16(out, 0); // method: stored
    put16(out, dos_time);
    put16(out, dos_date);
    put32(out, entry_crc(samples_crc));
    put32(out, zip64_entry_ ? 0xFFFFFFFFu : static_cast<std::uint32_t>(entry_bytes_)); // packed
    put32(out, zip64_entry_ ? 0xFFFFFFFFu : static_cast<std::uint32_t>(entry_bytes_)); // original
    put16(out, static_cast<std::uint16_t>(name().size()));
    put16(out, zip64_entry_ ? 20 : 0);
    out += name();
    if (zip64_entry_) { // a local header's ZIP64 field holds both sizes: original, then packed
      put16(out, 0x0001);
      put16(out, 16);
      put64(out, entry_bytes_);
      put64(out, entry_bytes_);
    }
    out += npy_header_;
    return out;
  }

  /// The bytes at trailer_offset(): the central directory, the ZIP64 end record and locator
  /// where zip64_end(), and the end of central directory record; file_size() - trailer_offset()
  /// bytes.
  [[nodiscard]] std::string trailer(std::uint32_t samples_crc) const {
    std::string out;
    put32(out, 0x02014b50u);                             // central directory header signature
    put16(out, static_cast<std::uint16_t>(0x0300 | 45)); // made by: Unix, spec 4.5
    put16(out, version_needed());
    put16(out, 0); // flags
    put16(out, 0); // method: stored
    put16(out, dos_time);
    put16(out, dos_date);
    put32(out, entry_crc(samples_crc));
    put32(out, zip64_entry_ ? 0xFFFFFFFFu : static_cast<std::uint32_t>(entry_bytes_));
    put32(out, zip64_entry_ ? 0xFFFFFFFFu : static_cast<std::uint32_t>(entry_bytes_));
    put16(out, static_cast<std::uint16_t>(name().size()));
    put16(out, zip64_entry_ ? 20 : 0); // extra field length
    put16(out, 0);                     // comment length
    put16(out, 0);                     // disk number start
    put16(out, 0);                     // internal attributes: binary
    put32(out, 0100644u << 16);        // external attributes: a regular file, rw-r--r--
    put32(out, 0);                     // local header offset: always 0, never needs ZIP64
    out += name();
    if (zip64_entry_) { // only the fields set to 0xFFFFFFFF above, in the spec's order
      put16(out, 0x0001);
      put16(out, 16);
      put64(out, entry_bytes_);
      put64(out, entry_bytes_);
    }
    if (zip64_end_) {
      const std::uint64_t record = central_offset_ + central_bytes_;
      put32(out, 0x06064b50u); // ZIP64 end of central directory record
      put64(out, 44);          // its size after this field
      put16(out, static_cast<std::uint16_t>(0x0300 | 45));
      put16(out, 45);
      put32(out, 0); // this disk
      put32(out, 0); // the disk with the central directory
      put64(out, 1); // entries on this disk
      put64(out, 1); // entries in all
      put64(out, central_bytes_);
      put64(out, central_offset_);
      put32(out, 0x07064b50u); // ZIP64 end of central directory locator
      put32(out, 0);           // the disk with the ZIP64 end record
      put64(out, record);
      put32(out, 1); // disks in all
    }
    put32(out, 0x06054b50u); // end of central directory record
    put16(out, 0);           // this disk
    put16(out, 0);           // the disk with the central directory
    put16(out, 1);           // entries on this disk
    put16(out, 1);           // entries in all
    put32(out, static_cast<std::uint32_t>(central_bytes_));
    put32(out, zip64_end_ ? 0xFFFFFFFFu : static_cast<std::uint32_t>(central_offset_));
    put16(out, 0); // comment length
    return out;
  }

private:
  // 1980-01-01 00:00:00, the earliest DOS date: a fixed time keeps the file a function of its
  // samples alone (byte-identical across runs and writer counts).
  static constexpr std::uint16_t dos_time = 0;
  static constexpr std::uint16_t dos_date = (0 << 9) | (1 << 5) | 1;

  [[nodiscard]] std::uint16_t version_needed() const { return zip64_entry_ ? 45 : 20; }

  static void put16(std::string& out, std::uint32_t v) {
    out += static_cast<char>(v & 0xFFu);
    out += static_cast<char>((v >> 8) & 0xFFu);
  }
  static void put32(std::string& out, std::uint32_t v) {
    put16(out, v & 0xFFFFu);
    put16(out, v >> 16);
  }
  static void put64(std::string& out, std::uint64_t v) {
    put32(out, static_cast<std::uint32_t>(v));
    put32(out, static_cast<std::uint32_t>(v >> 32));
  }

  std::array<std::int64_t, 4> shape_{};
  std::string npy_header_;
  std::uint64_t sample_bytes_ = 0;
  std::uint64_t data_bytes_ = 0;
  std::uint64_t entry_bytes_ = 0;
  std::uint64_t local_header_bytes_ = 0;
  std::uint64_t central_offset_ = 0;
  std::uint64_t central_bytes_ = 0;
  std::uint64_t file_bytes_ = 0;
  bool zip64_entry_ = false;
  bool zip64_end_ = false;
};

/// Writes `data` (uint8 [N, H, W, C], C order) as an .npz holding `arr_0`, as np.savez would,
/// atomically (see write_file_atomically). Throws tstitch::invalid_argument for a bad shape or
/// when data.size() != N*H*W*C, and tstitch::runtime_error naming the path and the OS reason.
inline void write_npz_uint8(const std::filesystem::path& path, std::span<const std::uint8_t> data,
                            std::int64_t count, std::int64_t height, std::int64_t width,
                            std::int64_t channels) {
  const NpzLayout layout(count, height, width, channels);
  if (data.size() != layout.data_bytes())
    throw_invalid_argument("npz data size", data.size(),
                           tstitch::detail::concat("must equal N*H*W*C = ", layout.data_bytes(),
                                                   " for shape ", shape_string(layout.shape())));
  const std::uint32_t samples_crc = crc32(data);
  write_file_atomically(path, [&](AtomicWriter& out) {
    out.write(layout.header(samples_crc));
    out.write(data.data(), data.size());
    out.write(layout.trailer(samples_crc));
  });
}

} // namespace tstitch::io
