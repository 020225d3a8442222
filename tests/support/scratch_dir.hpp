// SPDX-License-Identifier: Apache-2.0
#pragma once

// A fresh, empty directory for one test case, removed afterwards (tests that write files).
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "files.hpp"

namespace tstitch::test {

/// temp_directory_path()/tstitch_test_<name>_<pid>, emptied on construction, removed on
/// destruction.
class ScratchDir {
public:
  explicit ScratchDir(const std::string& name)
      : path(std::filesystem::temp_directory_path() /
             ("tstitch_test_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  /// The names of the files now in the directory (unordered).
  [[nodiscard]] std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path))
      names.push_back(entry.path().filename().string());
    return names;
  }

  /// Writes `bytes` to the file `name` in the directory; returns its path.
  std::filesystem::path write(std::string_view name, std::string_view bytes) const {
    const std::filesystem::path file = path / name;
    write_all(file, bytes);
    return file;
  }

  const std::filesystem::path path;
};

} // namespace tstitch::test
