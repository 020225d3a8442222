// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tstitch/core/error.hpp"
#include "tstitch/io/atomic_write.hpp"
#include "tstitch/io/half.hpp"
#include "tstitch/io/json_keys.hpp"
#include "tstitch/io/mapped_file.hpp"
#include "tstitch/io/shape.hpp"

// Reader and a tiny writer for the safetensors format (https://github.com/huggingface/safetensors):
//
//   8 bytes        N, the header length, unsigned 64-bit little-endian
//   N bytes        UTF-8 JSON object: {"NAME": {"dtype": "F32", "shape": [2, 3],
//                  "data_offsets": [BEGIN, END]}, ..., "__metadata__": {"key": "value"}}
//   rest of file   the data section; BEGIN/END are relative to its start (file offset 8 + N)
//
// Tensor data is little-endian and row-major. The reader validates the whole header before it
// exposes any tensor, mirroring what the reference implementation (safetensors/src/tensor.rs,
// Metadata::validate and SafeTensors::read_metadata) enforces:
//   - N <= 100,000,000 and 8 + N <= file size;
//   - the header is a JSON object; "__metadata__" (optional, null allowed) maps strings to strings;
//   - every other entry has a known dtype (case-sensitive names), a shape of non-negative integers
//     and data_offsets of exactly two non-negative integers; unknown extra fields are ignored;
//   - END - BEGIN equals the element count times the dtype size (overflow-checked; sub-byte
//     dtypes must fill whole bytes);
//   - sorted by offsets, the tensors tile the data section exactly: no overlap, no hole, and no
//     trailing bytes after the last tensor (the spec forbids holes to prevent polyglot files).
//     Zero-size tensors may share an offset, as in the reference implementation.
// Stricter than the reference implementation (which keeps the last of duplicate JSON keys):
//   - the header nests at most 64 levels deep, checked before it is parsed (JSON code recurses
//     per level: a hostile depth would overflow the stack in a destructor or dump());
//   - duplicate keys anywhere in the header are rejected, as the spec requires;
//   - the header must start with '{' after optional whitespace (a UTF-8 BOM is rejected);
//   - shape extents, and the product of the non-zero ones, must fit in int64 (so that a zero-size
//     tensor's element count can be computed in int64, left to right).
// Every violation throws tstitch::io::format_error naming the file and, where one is involved,
// the tensor. Error messages quote at most a short, one-level prefix of an offending value.

namespace tstitch::io {

// Tensor data is reinterpreted in place; a big-endian host would need byte swapping.
static_assert(std::endian::native == std::endian::little,
              "tstitch::io safetensors support assumes a little-endian host");

/// A file is not valid safetensors. The message names the file and, where applicable, the tensor.
class format_error : public runtime_error {
public:
  using runtime_error::runtime_error;
};

/// The dtypes of the safetensors spec, with the spec's names (see dtype_name()).
enum class DType : std::uint8_t {
  BOOL,
  F4,
  F6_E2M3,
  F6_E3M2,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  F8_E4M3FNUZ,
  F8_E5M2FNUZ,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,
  F64,
  I64,
  U64,
};

namespace detail {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  unsigned bits;
};

inline constexpr std::array<DTypeEntry, 22> dtype_table{{
    {DType::BOOL, "BOOL", 8},
    {DType::F4, "F4", 4},
    {DType::F6_E2M3, "F6_E2M3", 6},
    {DType::F6_E3M2, "F6_E3M2", 6},
    {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},
    {DType::F8_E5M2, "F8_E5M2", 8},
    {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {DType::I16, "I16", 16},
    {DType::U16, "U16", 16},
    {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},
    {DType::I32, "I32", 32},
    {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},
    {DType::C64, "C64", 64},
    {DType::F64, "F64", 64},
    {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},
}};

} // namespace detail

/// The spec's name of a dtype, e.g. "BF16".
[[nodiscard]] constexpr std::string_view dtype_name(DType dtype) {
  return detail::dtype_table[static_cast<std::size_t>(dtype)].name;
}

/// Bits per element (4 and 6 for the sub-byte float formats).
[[nodiscard]] constexpr unsigned dtype_bits(DType dtype) {
  return detail::dtype_table[static_cast<std::size_t>(dtype)].bits;
}

/// The dtype with the spec's name `name` (case-sensitive, like the reference implementation).
[[nodiscard]] constexpr std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& entry : detail::dtype_table)
    if (entry.name == name)
      return entry.dtype;
  return std::nullopt;
}

inline std::ostream& operator<<(std::ostream& out, DType dtype) { return out << dtype_name(dtype); }

/// One tensor of a SafetensorsFile.
struct TensorInfo {
  DType dtype = DType::F32;
  /// Row-major extents; empty for a 0-d scalar.
  std::vector<std::int64_t> shape;
  /// data_offsets from the header, relative to the start of the data section.
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  /// The raw little-endian bytes, inside the file's mapping.
  std::span<const std::byte> bytes;

  /// Element count (1 for a scalar, 0 for an empty tensor). Throws tstitch::invalid_argument
  /// naming the shape for one the reader would refuse (negative or overflowing extents).
  [[nodiscard]] std::int64_t numel() const {
    const std::optional<std::uint64_t> count = detail::element_count(shape);
    if (!count)
      throw_invalid_argument("tensor shape", shape_string(shape),
                             "must have non-negative extents whose product fits in int64");
    return static_cast<std::int64_t>(*count);
  }
};

/// A validated safetensors file: memory-mapped (the default), read into memory of its own
/// (LoadMode::read; see LoadMode for the hazard of mapping a file another process may
/// truncate), or bytes already in memory (from_bytes).
///
/// Spans returned by info(), f32() point into the file's bytes: they stay valid while this object
/// (or the one it was moved into) lives, and, for from_bytes, while the caller's bytes do.
/// names() lists the tensors sorted by name.
///
/// Zero-copy and alignment: the format only aligns data to the header length. The reference
/// writer (and write_safetensors) pads the header to a multiple of 8 and orders tensors by
/// decreasing element size, so every tensor is aligned to its element size, but hand-made files
/// need not be. f32() returns a view only when the data is 4-byte aligned and throws otherwise;
/// read_f32() always works (it copies).
class SafetensorsFile {
public:
  /// The largest header accepted; the reference implementation's limit.
  static constexpr std::uint64_t max_header_size = 100'000'000;

  /// The deepest JSON nesting accepted in the header (the format needs 3: {"t": {"shape": []}}).
  static constexpr int max_nesting = 64;

  /// Maps (or reads, see LoadMode) and validates `path`. Throws tstitch::runtime_error if the
  /// file cannot be read (a FIFO or other non-regular file is refused without blocking) and
  /// tstitch::io::format_error if it is not valid safetensors.
  explicit SafetensorsFile(std::filesystem::path path, LoadMode mode = LoadMode::mmap)
      : path_(std::move(path)), file_(path_, mode) {
    parse(file_.bytes());
  }

  [[nodiscard]] static SafetensorsFile open(const std::filesystem::path& path,
                                            LoadMode mode = LoadMode::mmap) {
    return SafetensorsFile(path, mode);
  }

  /// Validates safetensors bytes already in memory (a fuzzer's input, an embedded resource),
  /// without copying them: they must outlive the result and stay unchanged. `name` stands for
  /// the path in error messages. Throws tstitch::io::format_error as the constructor does.
  [[nodiscard]] static SafetensorsFile from_bytes(std::span<const std::byte> bytes,
                                                  std::filesystem::path name = "<memory>") {
    SafetensorsFile result(std::move(name), InMemory{});
    result.parse(bytes);
    return result;
  }

  /// The path, or the name given to from_bytes.
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

  /// Throws tstitch::runtime_error "tstitch: <what> changed during the run: <path> (...)" if the
  /// file was rewritten or replaced since it was loaded (compared by device, inode, size and
  /// modification time). A long run calls it before trusting its results: in mmap mode a rewrite
  /// in place changes the tensors under it. Does nothing for from_bytes.
  void check_unchanged(std::string_view what = "file") const { file_.check_unchanged(what); }
  /// The file as it was when loaded (an empty path for from_bytes), to check it later.
  [[nodiscard]] const FileStamp& stamp() const { return file_.stamp(); }

  /// Tensor names, sorted.
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> result;
    result.reserve(tensors_.size());
    for (const auto& entry : tensors_)
      result.push_back(entry.first);
    return result;
  }

  [[nodiscard]] std::size_t size() const { return tensors_.size(); }
  [[nodiscard]] bool contains(std::string_view name) const {
    return tensors_.find(name) != tensors_.end();
  }

  /// The tensor `name`; throws tstitch::runtime_error naming file and tensor if there is none.
  [[nodiscard]] const TensorInfo& info(std::string_view name) const {
    const auto found = tensors_.find(name);
    if (found == tensors_.end())
      throw runtime_error(
          message(name, "no such tensor in the file (it has ", tensors_.size(), " tensors)"));
    return found->second;
  }

  /// The "__metadata__" map (empty if the file has none).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// Zero-copy view of an F32 tensor. Throws tstitch::runtime_error if the tensor is not F32 or
  /// its data is not 4-byte aligned in memory (then use read_f32()).
  [[nodiscard]] std::span<const float> f32(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    if (tensor.dtype != DType::F32)
      throw runtime_error(message(name, "has dtype ", tensor.dtype,
                                  "; f32() views F32 tensors only (read_f32() converts F16/BF16)"));
    if (tensor.bytes.empty())
      return {};
    const auto address = reinterpret_cast<std::uintptr_t>(tensor.bytes.data());
    if (address % alignof(float) != 0)
      throw runtime_error(message(name, "data at file offset ", data_offset_ + tensor.begin,
                                  " is not 4-byte aligned; use read_f32(), which copies"));
    // The mapping holds the bytes of little-endian IEEE floats, i.e. of the host's floats.
    return {reinterpret_cast<const float*>(tensor.bytes.data()), tensor.bytes.size() / 4};
  }

  /// A copy of an F32, F16 or BF16 tensor converted to float32 (exactly: every F16 and BF16 value
  /// is a float). Throws tstitch::runtime_error for other dtypes.
  [[nodiscard]] std::vector<float> read_f32(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    const std::byte* bytes = tensor.bytes.data();
    std::vector<float> values(static_cast<std::size_t>(tensor.numel()));
    // memcpy per element: the data may be unaligned.
    switch (tensor.dtype) {
    case DType::F32:
      if (!values.empty())
        std::memcpy(values.data(), bytes, tensor.bytes.size());
      break;
    case DType::F16:
    case DType::BF16:
      for (std::size_t i = 0; i < values.size(); ++i) {
        std::uint16_t bits = 0;
        std::memcpy(&bits, bytes + 2 * i, 2);
        values[i] = tensor.dtype == DType::F16 ? f16_to_f32(bits) : bf16_to_f32(bits);
      }
      break;
    default:
      throw runtime_error(message(name, "has dtype ", tensor.dtype,
                                  "; read_f32() converts F32, F16 and BF16 only"));
    }
    return values;
  }

  /// The tensor `name`, after checking that its shape is `shape`. Throws tstitch::runtime_error
  /// naming file, tensor, expected and actual shape.
  const TensorInfo& expect(std::string_view name, std::span<const std::int64_t> shape) const {
    const TensorInfo& tensor = info(name);
    if (!std::ranges::equal(tensor.shape, shape))
      throw runtime_error(message(name, "expected shape ", shape_string(shape), ", found ",
                                  shape_string(tensor.shape)));
    return tensor;
  }
  const TensorInfo& expect(std::string_view name, std::initializer_list<std::int64_t> shape) const {
    return expect(name, std::span<const std::int64_t>(shape.begin(), shape.size()));
  }

private:
  using json = nlohmann::json;

  struct InMemory {};
  SafetensorsFile(std::filesystem::path name, InMemory) : path_(std::move(name)) {}

  /// "tstitch: <path>: tensor '<name>': <parts>".
  template <class... Parts>
  [[nodiscard]] std::string message(std::string_view tensor, const Parts&... parts) const {
    return tstitch::detail::concat("tstitch: ", path_.string(), ": tensor '", tensor,
                                   "': ", parts...);
  }
  /// A format_error about tensor `tensor`.
  template <class... Parts>
  [[noreturn]] void fail(std::string_view tensor, const Parts&... parts) const {
    throw format_error(message(tensor, parts...));
  }
  /// A format_error about the file as a whole: "tstitch: <path>: <parts>".
  template <class... Parts> [[noreturn]] void fail_file(const Parts&... parts) const {
    throw format_error(tstitch::detail::concat("tstitch: ", path_.string(), ": ", parts...));
  }

  /// nlohmann's parse errors quote the raw bytes last read, which may be binary, invalid UTF-8
  /// or (an unterminated string) megabytes long: escape everything outside printable ASCII and
  /// cut the message short so it stays readable text.
  static std::string escaped(std::string_view text) {
    constexpr std::size_t max_length = 400;
    std::string out;
    for (const char c : text.substr(0, max_length)) {
      const auto byte = static_cast<unsigned char>(c);
      if (byte >= 0x20 && byte < 0x7F) {
        out += c;
      } else {
        constexpr std::string_view hex = "0123456789abcdef";
        out += "\\x";
        out += hex[byte >> 4];
        out += hex[byte & 0xF];
      }
    }
    if (text.size() > max_length)
      out += "...";
    return out;
  }

  /// At most a short, one-level prefix of `value` for an error message, in dump()'s compact form
  /// for flat arrays ("[2,-1]"); nested values show as "[...]" or "{...}" and long arrays end in
  /// ",...". Never recurses: a hostile value may be deep or huge.
  static std::string preview(const json& value) {
    constexpr std::size_t max_items = 8;
    constexpr std::size_t max_string = 32;
    const auto scalar = [](const json& item) -> std::string {
      if (item.is_array())
        return "[...]";
      if (item.is_object())
        return "{...}";
      if (item.is_string()) {
        const auto& text = item.get_ref<const std::string&>();
        return '"' + escaped(std::string_view(text).substr(0, max_string)) +
               (text.size() > max_string ? "...\"" : "\"");
      }
      return item.dump(); // a number, boolean or null
    };
    if (!value.is_array())
      return scalar(value);
    std::string out = "[";
    std::size_t count = 0;
    for (const json& item : value) {
      if (count == max_items) {
        out += ",...";
        break;
      }
      if (count++ > 0)
        out += ',';
      out += scalar(item);
    }
    return out + ']';
  }

  /// Refuses nesting deeper than max_nesting before the header is parsed, so that no recursive
  /// JSON code (destructor, dump(), comparison) ever runs over a hostile depth. Brackets inside
  /// strings do not count; where the text is not JSON the parser will refuse it anyway.
  void check_nesting(std::string_view text) const {
    int depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (in_string) {
        if (c == '\\')
          ++i; // skip the escaped character (\" does not end the string)
        else if (c == '"')
          in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        if (++depth > max_nesting)
          fail_file("header nests JSON deeper than ", max_nesting, " levels (at byte ", i, ")");
      } else if (c == ']' || c == '}') {
        --depth;
      }
    }
  }

  static std::optional<std::uint64_t> as_count(const json& value) {
    if (value.is_number_unsigned())
      return value.get<std::uint64_t>();
    if (value.is_number_integer() && value.get<std::int64_t>() >= 0) // "-0"
      return static_cast<std::uint64_t>(value.get<std::int64_t>());
    return std::nullopt;
  }

  void parse(std::span<const std::byte> file) {
    if (file.size() < 8)
      fail_file("file is ", file.size(), " bytes, too short for the 8-byte header length");
    std::uint64_t header_size = 0;
    std::memcpy(&header_size, file.data(), 8);
    // A header length that fits neither, with no '{' after it, is another kind of file (a text
    // file renamed .safetensors): say so rather than quote its first bytes as a length.
    const char* kind = file.size() > 8 && static_cast<char>(file[8]) == '{'
                           ? ""
                           : "not a safetensors file (no JSON header after the 8-byte length): ";
    if (header_size > max_header_size)
      fail_file(kind, "header length ", header_size, " exceeds the limit of ", max_header_size,
                " bytes");
    if (header_size > file.size() - 8)
      fail_file(kind, "header length ", header_size, " exceeds the file (", file.size(), " bytes)");
    data_offset_ = 8 + header_size;
    const auto* header = reinterpret_cast<const char*>(file.data() + 8);
    const std::string_view header_text(header, static_cast<std::size_t>(header_size));
    const json root = parse_header(header_text);

    const std::span<const std::byte> data = file.subspan(static_cast<std::size_t>(data_offset_));
    for (const auto& [name, value] : root.items()) {
      if (name == "__metadata__")
        read_metadata(value);
      else
        tensors_.emplace(name, read_tensor(name, value, data));
    }
    check_coverage(data.size());
  }

  /// Parses the header, rejecting duplicate keys (nlohmann::json would keep the last silently).
  json parse_header(std::string_view text) const {
    const auto first = text.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos || text[first] != '{')
      fail_file("header is not a JSON object (it must start with '{')");
    check_nesting(text);

    detail::DuplicateKeyFinder keys;
    const json::parser_callback_t track_keys = [&](int depth, json::parse_event_t event,
                                                   json& parsed) {
      keys.on_event(depth, event, parsed);
      return true;
    };

    json root;
    try {
      root = json::parse(text.begin(), text.end(), track_keys);
    } catch (const json::exception& e) {
      fail_file("header is not valid JSON: ", escaped(e.what()));
    }
    if (const auto& duplicate = keys.duplicate()) {
      const auto& [context, key] = *duplicate;
      if (context.empty() && key == "__metadata__")
        fail_file("__metadata__ appears twice in the header");
      if (context.empty())
        fail(key, "appears twice in the header");
      if (context == "__metadata__")
        fail_file("__metadata__ has the key '", key, "' twice");
      fail(context, "has the field '", key, "' twice");
    }
    if (!root.is_object()) // unreachable after the '{' check; kept as a guard
      fail_file("header is not a JSON object");
    return root;
  }

  void read_metadata(const json& value) {
    if (value.is_null()) // the reference implementation reads null as "no metadata"
      return;
    if (!value.is_object())
      fail_file("__metadata__ is a JSON ", value.type_name(), ", not an object of strings");
    for (const auto& [key, text] : value.items()) {
      if (!text.is_string())
        fail_file("__metadata__ value of '", key, "' is a JSON ", text.type_name(),
                  ", not a string");
      metadata_.emplace(key, text.get<std::string>());
    }
  }

  TensorInfo read_tensor(const std::string& name, const json& entry,
                         std::span<const std::byte> data) const {
    if (!entry.is_object())
      fail(name, "entry is a JSON ", entry.type_name(), ", not an object");
    const auto field = [&](const char* key) -> const json& {
      const auto found = entry.find(key);
      if (found == entry.end())
        fail(name, "missing field '", key, "'");
      return *found;
    };

    TensorInfo tensor;
    const json& dtype = field("dtype");
    if (!dtype.is_string())
      fail(name, "dtype is a JSON ", dtype.type_name(), ", not a string");
    const auto parsed = parse_dtype(dtype.get_ref<const std::string&>());
    if (!parsed)
      fail(name, "unknown dtype '", dtype.get_ref<const std::string&>(), "'");
    tensor.dtype = *parsed;

    const json& shape = field("shape");
    if (!shape.is_array())
      fail(name, "shape is a JSON ", shape.type_name(), ", not an array");
    std::uint64_t numel = 1;
    std::uint64_t nonzero_product = 1;
    constexpr auto int64_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    for (const json& extent : shape) {
      const auto value = as_count(extent);
      if (!value)
        fail(name, "shape ", preview(shape), " has an entry that is not a non-negative integer");
      if (*value > int64_max)
        fail(name, "shape ", preview(shape), " has an extent beyond int64");
      // A later 0 makes the tensor empty, but numel() multiplies in int64 from the left.
      if (*value != 0 &&
          (!detail::checked_multiply(nonzero_product, *value) || nonzero_product > int64_max))
        fail(name, "shape ", preview(shape), " has non-zero extents whose product overflows int64");
      tensor.shape.push_back(static_cast<std::int64_t>(*value));
      numel *= *value; // cannot overflow: at most the product of the non-zero extents
    }

    const json& offsets = field("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !as_count(offsets[0]) ||
        !as_count(offsets[1]))
      fail(name, "data_offsets ", preview(offsets),
           " is not [begin, end] of non-negative integers");
    tensor.begin = *as_count(offsets[0]);
    tensor.end = *as_count(offsets[1]);
    const std::string range = tstitch::detail::concat('[', tensor.begin, ", ", tensor.end, ')');

    std::uint64_t bits = numel;
    if (!detail::checked_multiply(bits, dtype_bits(tensor.dtype)))
      fail(name, "shape ", shape_string(tensor.shape), " of ", tensor.dtype,
           " overflows the byte count");
    if (bits % 8 != 0)
      fail(name, "shape ", shape_string(tensor.shape), " of ", tensor.dtype,
           " does not fill a whole number of bytes");
    if (tensor.begin > tensor.end)
      fail(name, "data offsets ", range, " end before they begin");
    if (tensor.end > data.size())
      fail(name, "data offsets ", range, " exceed the data section (", data.size(), " bytes)");
    if (tensor.end - tensor.begin != bits / 8)
      fail(name, "shape ", shape_string(tensor.shape), " of ", tensor.dtype, " needs ", bits / 8,
           " bytes but data offsets ", range, " hold ", tensor.end - tensor.begin);

    tensor.bytes = data.subspan(static_cast<std::size_t>(tensor.begin),
                                static_cast<std::size_t>(tensor.end - tensor.begin));
    return tensor;
  }

  /// The tensors, sorted by offsets, must tile the data section: no overlaps, holes or tail.
  void check_coverage(std::size_t data_size) const {
    std::vector<std::pair<const std::string*, const TensorInfo*>> order;
    order.reserve(tensors_.size());
    for (const auto& [name, tensor] : tensors_)
      order.emplace_back(&name, &tensor);
    std::ranges::sort(order, [](const auto& a, const auto& b) {
      return std::tie(a.second->begin, a.second->end, *a.first) <
             std::tie(b.second->begin, b.second->end, *b.first);
    });
    std::uint64_t covered = 0;
    const std::string* previous = nullptr;
    for (const auto& [name, tensor] : order) {
      if (tensor->begin < covered)
        fail(*name, "data offsets [", tensor->begin, ", ", tensor->end, ") overlap tensor '",
             *previous, "' at [", tensors_.at(*previous).begin, ", ", covered, ")");
      if (tensor->begin > covered)
        fail(*name, "data offsets [", tensor->begin, ", ", tensor->end, ") leave the bytes [",
             covered, ", ", tensor->begin,
             ") before them unused (the data section must have no holes)");
      covered = tensor->end;
      previous = name;
    }
    if (covered != data_size)
      fail_file("the tensors cover ", covered, " bytes of the ", data_size,
                "-byte data section (the data section must have no holes or trailing bytes)");
  }

  std::filesystem::path path_;
  MappedFile file_; // empty for from_bytes
  std::uint64_t data_offset_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// -------------------------------------------------------------------------------------------------
// Writer
// -------------------------------------------------------------------------------------------------

/// One tensor for write_safetensors: raw little-endian, row-major bytes of `dtype`.
struct TensorData {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

namespace detail {

inline void check_value_count(std::string_view name, std::span<const std::int64_t> shape,
                              std::size_t values) {
  std::uint64_t numel = 1;
  bool fits = true;
  for (const std::int64_t extent : shape) {
    require(extent >= 0, "shape of tensor '" + std::string(name) + "'", shape_string(shape),
            "must not have negative extents");
    fits = fits && checked_multiply(numel, static_cast<std::uint64_t>(extent));
  }
  require(fits && numel == values, "values of tensor '" + std::string(name) + "'", values,
          "must hold one value per element of the shape " + shape_string(shape));
}

template <class Convert>
TensorData encode_16bit(std::string name, DType dtype, std::vector<std::int64_t> shape,
                        std::span<const float> values, Convert convert) {
  check_value_count(name, shape, values.size());
  std::vector<std::byte> bytes(2 * values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t bits = convert(values[i]);
    std::memcpy(bytes.data() + 2 * i, &bits, 2);
  }
  return {std::move(name), dtype, std::move(shape), std::move(bytes)};
}

} // namespace detail

/// An F32 tensor holding `values` (one per element of `shape`, row-major).
[[nodiscard]] inline TensorData f32_tensor(std::string name, std::vector<std::int64_t> shape,
                                           std::span<const float> values) {
  detail::check_value_count(name, shape, values.size());
  std::vector<std::byte> bytes(4 * values.size());
  if (!values.empty())
    std::memcpy(bytes.data(), values.data(), bytes.size());
  return {std::move(name), DType::F32, std::move(shape), std::move(bytes)};
}

/// An F16 tensor holding `values` rounded to nearest even.
[[nodiscard]] inline TensorData f16_tensor(std::string name, std::vector<std::int64_t> shape,
                                           std::span<const float> values) {
  return detail::encode_16bit(std::move(name), DType::F16, std::move(shape), values,
                              f32_to_f16_rne);
}

/// A BF16 tensor holding `values` rounded to nearest even.
[[nodiscard]] inline TensorData bf16_tensor(std::string name, std::vector<std::int64_t> shape,
                                            std::span<const float> values) {
  return detail::encode_16bit(std::move(name), DType::BF16, std::move(shape), values,
                              f32_to_bf16_rne);
}

/// Writes a safetensors file laid out like the reference writer: tensors ordered by decreasing
/// element size, then name, and the header padded with spaces to a multiple of 8 bytes, so each
/// tensor is aligned to its element size. The file is written next to `path` and renamed over
/// it, so a reader that has the old file mapped never sees it truncated.
/// Throws tstitch::invalid_argument for inconsistent tensors, tstitch::runtime_error on I/O errors.
inline void write_safetensors(const std::filesystem::path& path,
                              std::span<const TensorData> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<const TensorData*> order;
  for (const TensorData& tensor : tensors)
    order.push_back(&tensor);
  std::ranges::sort(order, [](const TensorData* a, const TensorData* b) {
    const unsigned a_bits = dtype_bits(a->dtype);
    const unsigned b_bits = dtype_bits(b->dtype);
    return a_bits != b_bits ? a_bits > b_bits : a->name < b->name;
  });

  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const TensorData* tensor : order) {
    require(tensor->name != "__metadata__", "tensor name", tensor->name, "is reserved");
    require(!header.contains(tensor->name), "tensor name", tensor->name, "appears twice");
    std::uint64_t bits = dtype_bits(tensor->dtype);
    bool fits = true;
    for (const std::int64_t extent : tensor->shape) {
      require(extent >= 0, "shape of tensor '" + tensor->name + "'", shape_string(tensor->shape),
              "must not have negative extents");
      fits = fits && detail::checked_multiply(bits, static_cast<std::uint64_t>(extent));
    }
    require(fits && bits % 8 == 0 && bits / 8 == tensor->bytes.size(),
            "bytes of tensor '" + tensor->name + "'", tensor->bytes.size(),
            tstitch::detail::concat("must match shape ", shape_string(tensor->shape), " of ",
                                    tensor->dtype));
    const std::uint64_t end = offset + tensor->bytes.size();
    header[tensor->name] = {{"dtype", std::string(dtype_name(tensor->dtype))},
                            {"shape", tensor->shape},
                            {"data_offsets", {offset, end}}};
    offset = end;
  }

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) { // names or metadata that are not UTF-8
    throw invalid_argument(tstitch::detail::concat("tstitch: ", path.string(), ": ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t header_size = text.size();

  write_file_atomically(path, [&](AtomicWriter& out) {
    out.write(&header_size, 8);
    out.write(text);
    for (const TensorData* tensor : order)
      out.write(tensor->bytes.data(), tensor->bytes.size());
  });
}

} // namespace tstitch::io
